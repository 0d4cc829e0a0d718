from marshmallow import Schema, fields

from . import DeepRoot, Timed


class Alpha(DeepRoot):
    NAME = "Alpha"
    DESCRIPTION = "The first branch"
    BRANCH_NAME = "alpha"


class AlphaBase(Alpha):
    """Transparent base of some alpha leaves."""

    def run(self):
        return 200


class FizzBuzz(AlphaBase):
    NAME = "FizzBuzz Job"
    DESCRIPTION = "Solve FizzBuzz"
    LEAF_NAME = "fizz_buzz"

    class Params(Schema):
        n = fields.Integer(load_default=50)
        fizzDivisor = fields.Integer(load_default=3)


class Echo(Alpha):
    NAME = "Echo"
    DESCRIPTION = "Echoes its message"
    LEAF_NAME = "echo"

    class Params(Schema):
        message = fields.String(required=True)

    def run(self):
        return 200


class Bang(AlphaBase):
    NAME = "Bang"
    DESCRIPTION = "No parameters"
    LEAF_NAME = "bang"


class Inner(Alpha):
    NAME = "Inner"
    DESCRIPTION = "A branch in a branch"
    BRANCH_NAME = "inner"


class Deepest(Inner):
    NAME = "Deepest"
    DESCRIPTION = "The deepest leaf"
    LEAF_NAME = "deepest"

    def run(self):
        return 200


class Timely(Timed, Alpha):
    """A mixin from another branch: still hangs under alpha."""

    NAME = "Timely"
    LEAF_NAME = "timely"
