"""The job tree of tests/test_views.py and tests/test_extension.py.

Unlike the other trees here, this one is imported in place, as the package
``jobtrees.api_tree`` (``tests`` is on ``sys.path``). The submodules are
imported below in a fixed order, so the classes are always defined in the
same order whichever test imports the package first: the listing order the
tests expect (tools, special, empty) is that order, not the alphabetical one.
"""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from flask_spacewalk import BaseJob, BaseJobSchema


class ApiJobSchema(BaseJobSchema):
    """What the test jobs store beside their parameters."""

    runs = fields.Integer()
    seen = fields.Raw(allow_none=True)


class ApiRoot(BaseJob):
    NAME = "API test jobs"
    DESCRIPTION = "The root of the API test tree"
    BRANCH_NAME = "svc"

    BASE_SCHEMA = ApiJobSchema

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.runs = kwargs.get("runs", 0)
        self.seen = kwargs.get("seen")

    def run(self) -> Any:
        self.update_attrs(runs=self.runs + 1)
        return 200


class Ping(ApiRoot):
    NAME = "Ping"
    DESCRIPTION = "A root leaf without parameters"
    LEAF_NAME = "ping"


class Echo(ApiRoot):
    NAME = "Echo"
    DESCRIPTION = "A root leaf with a required parameter"
    LEAF_NAME = "echo"

    class Params(Schema):
        message = fields.String(required=True)

    def get_data(self) -> Any:
        return {"message": self.message}


from . import tools, special, empty  # noqa: E402,F401,I001  (the order is the point)
