from ..root import FlatRoot


class More(FlatRoot):
    NAME = "More"
    LEAF_NAME = "more"

    def run(self):
        return 200
