"""A root defined outside modules_dir, with a leaf beside it."""
from flask_spacewalk import BaseJob


class OutsideRoot(BaseJob):
    NAME = "Outside"
    BRANCH_NAME = "outside"


class Native(OutsideRoot):
    NAME = "Native"
    LEAF_NAME = "native"

    def run(self):
        return 200
