"""A second tree for the browser tests of the console (tests/console_app.py).

The example jobs stay as the README shows them; these add what the tests
need besides: messages that hold markup, a validator JSON Schema cannot
express (so the server's 422 reaches the form), and every kind of field.
"""
from __future__ import annotations

import enum
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from flask_spacewalk import BaseJob


def even(value: int) -> None:
    if value % 2:
        raise ValidationError("Must be an even number.")


class ConsoleRoot(BaseJob):
    NAME = "Console <test> jobs"
    BRANCH_NAME = "console_tests"
    DESCRIPTION = "Jobs the <em>browser</em> tests run"

    def run(self) -> Any:
        return 200


class Shout(ConsoleRoot):
    NAME = "Shout"
    LEAF_NAME = "shout"
    DESCRIPTION = "Logs its message as an event, a warning and an error"

    class Params(Schema):
        message = fields.String(required=True, validate=validate.Length(min=1, max=300))
        times = fields.Integer(load_default=2, validate=[validate.Range(min=0, max=10), even])

    def run(self) -> Any:
        for _ in range(self.times // 2):
            self.job_log_info(self.message)
        self.job_log_warning(self.message)
        self.job_log_error(400, self.message)
        return 200

    def get_data(self) -> Any:
        return {"message": self.message, "times": self.times}


class Forms(ConsoleRoot):
    NAME = "Forms"
    BRANCH_NAME = "forms"
    # markup, for the docs page's test too
    DESCRIPTION = 'Jobs with many kinds of parameters <img src=x onerror="window.__pwned = 3">'


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Point(Schema):
    x = fields.Integer(required=True)
    y = fields.Integer(load_default=0, validate=validate.Range(min=-100, max=100))


PARAMS = ("name", "code", "mode", "count", "ratio", "flag", "tags", "point", "path",
          "color", "note")


class Everything(Forms):
    NAME = "Everything"
    LEAF_NAME = "everything"
    DESCRIPTION = "Every kind of field; its data is the parameters it got"

    class Params(Schema):
        name = fields.String(required=True, validate=validate.Length(min=1, max=8))
        code = fields.String(validate=validate.Regexp(r"[A-Z]{3}"))
        mode = fields.String(load_default="fast", validate=validate.OneOf(["fast", "slow"]))
        count = fields.Integer(required=True, validate=validate.Range(min=-5, max=5))
        ratio = fields.Float(validate=validate.Range(min=0, max=1, max_inclusive=False))
        flag = fields.Boolean(load_default=False)
        tags = fields.List(
            fields.String(validate=validate.Length(max=4)), validate=validate.Length(max=3)
        )
        point = fields.Nested(Point)
        path = fields.List(fields.Nested(Point))
        color = fields.Enum(Color, by_value=True)
        note = fields.String(allow_none=True, load_default=None)

    def get_data(self) -> Any:
        data = {}
        for name in PARAMS:
            value = getattr(self, name, None)
            if value is not None:
                data[name] = value.value if isinstance(value, enum.Enum) else value
        return data


class Crash(ConsoleRoot):
    NAME = "Crash"
    LEAF_NAME = "crash"
    DESCRIPTION = "Raises at once; its error holds the traceback"

    MAX_ERRORS = 1  # the first error ends the job

    def run(self) -> Any:
        raise ValueError("the input was bad")


class Divide(ConsoleRoot):
    NAME = "Divide"
    LEAF_NAME = "divide"
    DESCRIPTION = "Divides 12 by its divisor: fails on 0, until retried with another"

    MAX_ERRORS = 1  # the first error ends the job

    class Params(Schema):
        divisor = fields.Integer(required=True)
        label = fields.String(load_default="twelve")

    def run(self) -> Any:
        self.job_log_info(f"{self.label} / {self.divisor} = {12 // self.divisor}")
        return 200

    def get_data(self) -> Any:
        return {"label": self.label, "divisor": self.divisor}
