from . import DeepRoot


class Empty(DeepRoot):
    NAME = "Empty"
    DESCRIPTION = "A branch without leaves"
    BRANCH_NAME = "empty"
