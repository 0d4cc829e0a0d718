from . import Root


class Both(Root):
    BRANCH_NAME = "b"
    LEAF_NAME = "l"

    def run(self):
        return 200
