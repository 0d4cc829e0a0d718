from outside_root import OutsideRoot


class Visitor(OutsideRoot):
    NAME = "Visitor"
    LEAF_NAME = "visitor"

    def run(self):
        return 200
