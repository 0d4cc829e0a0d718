"""A branch with leaves defined out of alphabetical order and a nested branch."""
from __future__ import annotations

import enum

from marshmallow import Schema, fields, validate

from . import ApiRoot


class Tools(ApiRoot):
    NAME = "Tools"
    DESCRIPTION = "The first branch"
    BRANCH_NAME = "tools"


class Zeta(Tools):
    NAME = "Zeta"
    DESCRIPTION = "Defined first, listed first"
    LEAF_NAME = "zeta"


class Counter(Tools):
    NAME = "Counter"
    DESCRIPTION = "One optional integer"
    LEAF_NAME = "counter"

    class Params(Schema):
        count = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10))


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Point(Schema):
    x = fields.Integer(required=True)
    y = fields.Integer(load_default=0, validate=validate.Range(min=-100, max=100))


class KitchenSinkParams(Schema):
    """Many field types, for the agreement rule (JSON Schema vs POST)."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=8))
    code = fields.String(validate=validate.Regexp(r"[A-Z]{3}"))
    mode = fields.String(load_default="fast", validate=validate.OneOf(["fast", "slow"]))
    count = fields.Integer(required=True, validate=validate.Range(min=-5, max=5))
    ratio = fields.Float(validate=validate.Range(min=0, max=1, max_inclusive=False))
    big = fields.Float(validate=validate.Range(min=-1e6))
    flag = fields.Boolean(load_default=False)
    tags = fields.List(
        fields.String(validate=validate.Length(max=4)), validate=validate.Length(max=3)
    )
    scores = fields.List(fields.Integer(validate=validate.Range(min=0)))
    point = fields.Nested(Point)
    path = fields.List(fields.Nested(Point), validate=validate.Length(min=1))
    color = fields.Enum(Color, by_value=True)
    shade = fields.Enum(Color)
    note = fields.String(allow_none=True, load_default=None)
    level = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=9))
    weights = fields.Dict(keys=fields.String(), values=fields.Float())
    when = fields.DateTime()
    day = fields.Date()
    ident = fields.UUID()


class KitchenSink(Tools):
    NAME = "Kitchen sink"
    DESCRIPTION = "Every kind of parameter"
    LEAF_NAME = "kitchen_sink"

    Params = KitchenSinkParams


class Inner(Tools):
    NAME = "Inner"
    DESCRIPTION = "A branch in a branch"
    BRANCH_NAME = "inner"


class Deepest(Inner):
    NAME = "Deepest"
    DESCRIPTION = "The deepest leaf"
    LEAF_NAME = "deepest"

    class Params(Schema):
        depth = fields.Integer(load_default=3)


class Alpha(Tools):
    NAME = "Alpha"
    DESCRIPTION = "Defined last, listed last"
    LEAF_NAME = "alpha"
