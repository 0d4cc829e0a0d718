"""A tree with free-form parameters, for the door's checks in tests/test_views.py.

Imported in place, as the package ``jobtrees.raw_tree``, like ``api_tree``.
"""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from flask_spacewalk import BaseJob


class RawRoot(BaseJob):
    NAME = "Raw"
    DESCRIPTION = "Jobs that take any JSON"
    BRANCH_NAME = "raw"


class Keep(RawRoot):
    NAME = "Keep"
    DESCRIPTION = "Stores whatever it is given and answers it as its data"
    LEAF_NAME = "keep"

    class Params(Schema):
        value = fields.Raw(allow_none=True)
        mapping = fields.Dict()

    def run(self) -> int:
        return 200

    def get_data(self) -> Any:
        return {"value": self.value}
