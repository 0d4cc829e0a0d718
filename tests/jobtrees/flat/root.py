"""A job directory without __init__.py: relative imports still work."""
from flask_spacewalk import BaseJob


class FlatRoot(BaseJob):
    NAME = "Flat"
    DESCRIPTION = "A root in a folder without __init__.py"
    BRANCH_NAME = "flat"
