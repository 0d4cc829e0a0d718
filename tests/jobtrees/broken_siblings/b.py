from . import Root


class SameBranch(Root):
    BRANCH_NAME = "same"
