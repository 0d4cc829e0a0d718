from flask_spacewalk import BaseJob


class Root(BaseJob):
    NAME = "Root"
    BRANCH_NAME = "r"
