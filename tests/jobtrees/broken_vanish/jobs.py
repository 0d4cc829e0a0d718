from marshmallow import Schema, fields

from . import Root


class Forgotten(Root):
    """Meant as a leaf, but LEAF_NAME was forgotten."""

    NAME = "Forgotten"

    def run(self):
        return 200


class OnlyParams(Root):
    class Params(Schema):
        n = fields.Integer()


class SharedParams(Schema):
    n = fields.Integer()


class Assigned(Root):
    Params = SharedParams


class Shared(Root):
    """Fine: a transparent base whose run() its leaf uses."""

    def run(self):
        return 200


class Uses(Shared):
    LEAF_NAME = "uses"


class Helper(Root):
    """Its only subclass is no leaf either: both would vanish."""

    def run(self):
        return 200


class Between(Helper):
    """Defines neither Params nor run(): reported through Helper."""


class Plain(Root):
    """Fine: a mixin without Params or run() vanishes harmlessly."""


class Grouping(Root):
    """Fine: a branch with run() shows in the tree, as an empty branch."""

    BRANCH_NAME = "grouping"

    def run(self):
        return 200
