from . import Root


class Reserved(Root):
    BRANCH_NAME = "info"


class Both(Root):
    BRANCH_NAME = "both"
    LEAF_NAME = "both"


class Lazy(Root):
    LEAF_NAME = "lazy"


class Twin(Root):
    LEAF_NAME = "lazy"

    def run(self):
        return 200
