from . import Root


class Jobs(Root):
    LEAF_NAME = "jobs"

    def run(self):
        return 200


class Docs(Root):
    BRANCH_NAME = "docs"


class Console(Root):
    LEAF_NAME = "console"

    def run(self):
        return 200
