from .. import DeepRoot


class Beta(DeepRoot):
    NAME = "Beta"
    DESCRIPTION = "The second branch"
    BRANCH_NAME = "beta"
