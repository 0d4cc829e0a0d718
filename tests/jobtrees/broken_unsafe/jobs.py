from . import Root


class Spaced(Root):
    LEAF_NAME = "a b"

    def run(self):
        return 200


class Dots(Root):
    BRANCH_NAME = ".."


class Slashed(Root):
    LEAF_NAME = "x/y"

    def run(self):
        return 200


class Blank(Root):
    LEAF_NAME = ""

    def run(self):
        return 200


class NotText(Root):
    BRANCH_NAME = 7
