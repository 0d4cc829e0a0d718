"""The tree the live answer tests serve (tests/test_wait.py) and their
workers run: a job that sleeps, in steps, then keeps a result."""
from __future__ import annotations

import time
from typing import Any

from marshmallow import Schema, fields, validate

from flask_spacewalk import BaseJob, BaseJobSchema


class WaitSchema(BaseJobSchema):
    answer = fields.Integer(allow_none=True)


class WaitRoot(BaseJob):
    NAME = "Waiting"
    BRANCH_NAME = "wait"
    DESCRIPTION = "jobs the live answer tests wait for"
    BASE_SCHEMA = WaitSchema


class Nap(WaitRoot):
    NAME = "Nap"
    LEAF_NAME = "nap"
    DESCRIPTION = "sleeps for seconds, in steps (a completeness each), then answers 42"

    class Params(Schema):
        seconds = fields.Float(load_default=0.05, validate=validate.Range(min=0, max=10))
        steps = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.answer = kwargs.get("answer")

    def run(self) -> Any:
        for step in range(self.steps):
            time.sleep(self.seconds / self.steps)
            if step + 1 < self.steps:
                self.set_completeness((step + 1) / self.steps)
        self.update_attrs(answer=42)
        return 200

    def get_data(self) -> Any:
        return {"answer": self.answer}
