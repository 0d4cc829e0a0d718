"""A root with two branches, a nested branch, an empty branch and mixins."""
from flask_spacewalk import BaseJob


class DeepRoot(BaseJob):
    NAME = "Deep"
    DESCRIPTION = "The root of the deep tree"
    BRANCH_NAME = "deep"


class Timed(DeepRoot):
    """Transparent: sets neither name, so its subclasses hang under the root."""

    DESCRIPTION = "A timed job"

    def run(self):
        return 200


class Status(Timed):
    NAME = "Status"
    LEAF_NAME = "status"
