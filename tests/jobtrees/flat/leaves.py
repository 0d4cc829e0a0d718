from .root import FlatRoot


class Top(FlatRoot):
    NAME = "Top"
    LEAF_NAME = "top"

    def run(self):
        return 200
