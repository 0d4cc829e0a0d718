from flask_spacewalk import BaseJob


class Root(BaseJob):
    """Forgot BRANCH_NAME."""

    NAME = "Root"


class Orphan(Root):
    LEAF_NAME = "orphan"

    def run(self):
        return 200
