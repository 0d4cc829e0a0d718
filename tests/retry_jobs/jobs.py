"""The tree the retry and bulk tests serve (tests/test_retry.py,
tests/test_bulk.py), and their worker processes run."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from flask_spacewalk import BaseJob, BaseJobSchema


def not_seven(value: int) -> None:
    # a rule JSON Schema cannot express: only marshmallow says no
    if value == 7:
        raise ValidationError("Must not be 7.")


class OpsSchema(BaseJobSchema):
    runs = fields.Integer()
    quotient = fields.Integer(allow_none=True)


class OpsRoot(BaseJob):
    NAME = "Operations"
    BRANCH_NAME = "ops"
    DESCRIPTION = "jobs the retry and bulk tests run"
    BASE_SCHEMA = OpsSchema

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.runs = kwargs.get("runs", 0)
        self.quotient = kwargs.get("quotient")

    def run(self) -> Any:
        return 200


class Divide(OpsRoot):
    NAME = "Divide"
    LEAF_NAME = "divide"
    DESCRIPTION = "divides dividend by divisor; a divisor of 0 fails the job"

    MAX_ERRORS = 1  # the first error ends the job: failed with 500

    class Params(Schema):
        divisor = fields.Integer(required=True, validate=[validate.Range(min=-100, max=100),
                                                          not_seven])
        dividend = fields.Integer(load_default=12)
        label = fields.String(load_default="twelve", validate=validate.Length(max=10))

    def run(self) -> Any:
        self.update_attrs(runs=self.runs + 1)
        self.update_attrs(quotient=self.dividend // self.divisor)
        return 200


class Other(OpsRoot):
    NAME = "Other"
    LEAF_NAME = "other"
    DESCRIPTION = "ends with the code it is given"

    class Params(Schema):
        code = fields.Integer(load_default=200)

    def run(self) -> Any:
        self.update_attrs(runs=self.runs + 1)
        return self.code
