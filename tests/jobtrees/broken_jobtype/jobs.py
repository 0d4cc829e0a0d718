from . import Root


class XY(Root):
    BRANCH_NAME = "x_y"


class Z(XY):
    LEAF_NAME = "z"

    def run(self):
        return 200


class X(Root):
    BRANCH_NAME = "x"


class YZ(X):
    LEAF_NAME = "y_z"

    def run(self):
        return 200
