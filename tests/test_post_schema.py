"""Params -> post-schema, and the check of POST bodies against it."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import gc
import importlib.metadata
import json
import math
import re
import sys
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, FormatChecker
from marshmallow import EXCLUDE, INCLUDE, Schema, ValidationError, fields, validate

from flask_spacewalk import post_schema as post_schema_module
from flask_spacewalk.errors import ParamsInvalid, SpacewalkError
from flask_spacewalk.post_schema import post_schema
from flask_spacewalk.validation import FORMAT_CHECKER, MAX_MESSAGES, ParamsValidator

MARSHMALLOW_3 = importlib.metadata.version("marshmallow").startswith("3.")
FLOAT_MAX = sys.float_info.max


class FizzBuzzParams(Schema):
    n = fields.Integer(load_default=50)
    fizzDivisor = fields.Integer(load_default=3)
    buzzDivisor = fields.Integer(load_default=5)


class Point(Schema):
    x = fields.Integer(required=True, validate=validate.Range(-100, 100))
    y = fields.Integer(load_default=0, strict=True)
    label = fields.String(allow_none=True, validate=validate.Length(max=5))


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.Enum):
    SMALL = 1
    LARGE = 2


class AllTypes(Schema):
    """Every field type whose checks the schema expresses exactly."""

    class Meta:
        unknown = EXCLUDE

    text = fields.String(validate=validate.Length(1, 10))
    code = fields.String(data_key="Code", validate=validate.Regexp(r"[A-Z]{2}\d"))
    choice = fields.String(allow_none=True, validate=validate.OneOf(["a", "b"]))
    other = fields.String(validate=validate.NoneOf(["x"]))
    count = fields.Integer(required=True, validate=validate.Range(0, 10, max_inclusive=False))
    exact = fields.Integer(strict=True, validate=validate.Equal(3))
    ratio = fields.Float(validate=validate.Range(0, 1, min_inclusive=False))
    price = fields.Decimal(validate=validate.Range(min=0))
    flag = fields.Boolean(load_default=False)
    when = fields.DateTime()
    aware = fields.AwareDateTime()
    naive = fields.NaiveDateTime()
    day = fields.Date()
    at = fields.Time()
    ident = fields.UUID()
    ip4 = fields.IPv4()
    ip6 = fields.IPv6()
    tags = fields.List(
        fields.String(validate=validate.Length(max=3)), validate=validate.Length(max=3)
    )
    letters = fields.List(fields.String(), validate=validate.ContainsOnly(["a", "b"]))
    pair = fields.Tuple((fields.Integer(), fields.String(allow_none=True)))
    scores = fields.Dict(
        keys=fields.String(validate=validate.Length(1, 3)),
        values=fields.Float(),
        validate=validate.Length(max=2),
    )
    point = fields.Nested(Point)
    points = fields.Nested(Point, many=True, validate=validate.Length(max=2))
    maybe = fields.Nested(Point, allow_none=True, only=("x",))
    color = fields.Enum(Color, load_default=Color.RED)
    size = fields.Enum(Size, by_value=True)
    anything = fields.Raw()
    nothing = fields.Raw(allow_none=True)
    out = fields.Integer(dump_only=True)


def must_be_even(n: int) -> None:
    # marshmallow 4 needs a raise: a validator's False return means nothing.
    if n % 2:
        raise ValidationError("Must be even.")


class Checked(Schema):
    """Fields with checks that only marshmallow makes."""

    email = fields.Email()
    url = fields.Url()
    relative = fields.Url(relative=True)
    ip = fields.IP()
    delta = fields.TimeDelta()
    even = fields.Integer(validate=must_be_even)
    word = fields.String(validate=validate.Regexp("[a-z]+$", flags=re.IGNORECASE))
    year = fields.DateTime(format="%Y")
    method = fields.Method(deserialize="load_method")
    plain = fields.Integer(validate=validate.Range(0, 5))

    def load_method(self, value: Any) -> Any:
        return value


CHECKED_ONLY_BY_MARSHMALLOW = {
    "email",
    "url",
    "relative",
    "ip",
    "delta",
    "even",
    "word",
    "year",
    "method",
}


@functools.cache
def validator_for(params: type[Schema]) -> ParamsValidator:
    return ParamsValidator(params)


def errors_of(params: type[Schema] | Schema, body: Any) -> dict[str, list[str]]:
    with pytest.raises(ParamsInvalid) as info:
        ParamsValidator(params).validate(body)
    return info.value.errors


def prop(params: type[Schema] | Schema, name: str) -> dict[str, Any]:
    return post_schema(params)["definitions"]["Params"]["properties"][name]


def one_field(field: fields.Field, name: str = "f") -> type[Schema]:
    return Schema.from_dict({name: field})


# -- the published schema ----------------------------------------------------


def test_fizz_buzz_is_the_seed_schema_with_integer_types() -> None:
    assert post_schema(FizzBuzzParams) == {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {
            "Params": {
                "properties": {
                    "buzzDivisor": {"title": "buzzDivisor", "type": "integer", "default": 5},
                    "fizzDivisor": {"title": "fizzDivisor", "type": "integer", "default": 3},
                    "n": {"title": "n", "type": "integer", "default": 50},
                },
                "type": "object",
                "additionalProperties": False,
            }
        },
        "$ref": "#/definitions/Params",
    }


@pytest.mark.parametrize("params", [FizzBuzzParams, AllTypes, Checked, Point()])
def test_published_schema_is_valid_draft_07_json(params: Any) -> None:
    schema = post_schema(params)
    Draft7Validator.check_schema(schema)
    assert json.loads(json.dumps(schema, allow_nan=False)) == schema
    assert post_schema(params) == schema  # deterministic
    assert list(schema["definitions"])[0] == "Params"


def test_fizz_buzz_load_fills_defaults() -> None:
    loaded = ParamsValidator(FizzBuzzParams).validate({"n": 20})
    assert loaded == {"n": 20, "fizzDivisor": 3, "buzzDivisor": 5}


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (fields.String(), {"type": "string"}),
        (fields.Integer(strict=False), {"type": "integer"}),
        (fields.Integer(strict=True), {"type": "integer"}),
        (fields.Float(), {"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX}),
        (fields.Decimal(), {"type": "number"}),
        (fields.Boolean(), {"type": "boolean"}),
        (
            fields.Date(),
            {"type": "string", "format": "date", "pattern": post_schema_module.DATE_PATTERN},
        ),
        (
            fields.UUID(),
            {"type": "string", "format": "uuid", "pattern": post_schema_module.UUID_FIELD_PATTERN},
        ),
        (fields.Email(), {"type": "string", "format": "email"}),
        (fields.Url(), {"type": "string", "format": "uri"}),
        (fields.Url(relative=True), {"type": "string", "format": "uri-reference"}),
        (fields.IPv4(), {"type": "string", "format": "ipv4"}),
        (fields.List(fields.Integer()), {"type": "array", "items": {"type": "integer"}}),
        (fields.Dict(), {"type": "object"}),
        (
            fields.Dict(values=fields.Boolean()),
            {"type": "object", "additionalProperties": {"type": "boolean"}},
        ),
        (
            fields.Tuple((fields.Integer(), fields.String())),
            {
                "type": "array",
                "items": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (fields.Raw(), {"type": ["array", "boolean", "number", "object", "string"]}),
        (fields.Raw(allow_none=True), {}),
        (fields.DateTime(format="rfc"), {}),
        (fields.Function(deserialize=lambda v: v), {}),
    ],
)
def test_field_types(field: fields.Field, expected: dict[str, Any]) -> None:
    assert prop(one_field(field), "f") == {"title": "f", **expected}


def test_date_time_and_time_are_patterns_both_marshmallows_read() -> None:
    when = prop(AllTypes, "when")
    assert when["format"] == "date-time"
    assert "pattern" in when
    at = prop(AllTypes, "at")
    assert "format" not in at  # draft-07 "time" requires an offset


@pytest.mark.skipif(not MARSHMALLOW_3, reason="marshmallow 4's Number is abstract")
@pytest.mark.filterwarnings("ignore:`Number` field should not be instantiated:DeprecationWarning")
def test_number_field_marshmallow_3() -> None:
    params = one_field(fields.Number())
    assert prop(params, "f") == {
        "title": "f",
        "type": "number",
        "minimum": -FLOAT_MAX,
        "maximum": FLOAT_MAX,
    }
    assert ParamsValidator(params).validate({"f": 7.5}) == {"f": 7.5}
    assert errors_of(params, {"f": "7.5"}) == {"f": ["Not a valid number."]}


@pytest.mark.parametrize(
    ("validator", "expected"),
    [
        (validate.Range(1, 5), {"minimum": 1, "maximum": 5}),
        (
            validate.Range(1, 5, min_inclusive=False, max_inclusive=False),
            {"exclusiveMinimum": 1, "exclusiveMaximum": 5},
        ),
        (validate.Range(min=0), {"minimum": 0}),
        (validate.OneOf([1, 2]), {"enum": [1, 2]}),
        (validate.Equal(3), {"enum": [3]}),
        (validate.NoneOf([0]), {"not": {"enum": [0]}}),
    ],
)
def test_number_validators(validator: Any, expected: dict[str, Any]) -> None:
    params = one_field(fields.Integer(validate=validator))
    assert prop(params, "f") == {"title": "f", "type": "integer", **expected}


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (
            fields.String(validate=validate.Length(2, 4)),
            {"type": "string", "minLength": 2, "maxLength": 4},
        ),
        (
            fields.String(validate=validate.Length(equal=3)),
            {"type": "string", "minLength": 3, "maxLength": 3},
        ),
        (
            fields.List(fields.String(), validate=validate.Length(max=2)),
            {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        ),
        (
            fields.Dict(validate=validate.Length(min=1)),
            {"type": "object", "minProperties": 1},
        ),
        (
            fields.String(validate=validate.OneOf(["a", "b"])),
            {"type": "string", "enum": ["a", "b"]},
        ),
        (
            fields.String(validate=validate.Regexp(r"^[a-z]+$")),
            {"type": "string", "pattern": "^[a-z]+$"},
        ),
        (
            fields.String(validate=validate.Regexp(r"a|b")),
            {"type": "string", "pattern": "^(?:a|b)"},
        ),
        (
            fields.String(validate=validate.Regexp("a", flags=re.IGNORECASE)),
            {"type": "string"},
        ),
        (
            fields.String(validate=[validate.Length(max=5), validate.Length(max=3)]),
            {"type": "string", "maxLength": 5, "allOf": [{"maxLength": 3}]},
        ),
        (
            fields.List(fields.String(), validate=validate.ContainsOnly(["a"])),
            {"type": "array", "items": {"type": "string", "enum": ["a"]}},
        ),
        (
            fields.Float(validate=lambda x: x > 0),
            {"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX},
        ),
    ],
)
def test_validator_keywords(field: fields.Field, expected: dict[str, Any]) -> None:
    assert prop(one_field(field), "f") == {"title": "f", **expected}


def test_regexp_matches_from_the_start_as_marshmallow_does() -> None:
    params = one_field(fields.String(validate=validate.Regexp("b")))
    assert errors_of(params, {"f": "ab"}) == {"f": ["String does not match expected pattern."]}
    assert ParamsValidator(params).validate({"f": "ba"}) == {"f": "ba"}


def test_required_is_listed_only_when_non_empty() -> None:
    params = Schema.from_dict(
        {"a": fields.String(required=True), "b": fields.String(data_key="B", required=True)}
    )
    assert post_schema(params)["definitions"]["Params"]["required"] == ["a", "B"]
    assert "required" not in post_schema(FizzBuzzParams)["definitions"]["Params"]
    assert errors_of(params, {"a": "x"}) == {"B": ["Missing data for required field."]}


def test_allow_none_accepts_null_in_the_schema() -> None:
    params = Schema.from_dict(
        {
            "n": fields.Integer(allow_none=True),
            "c": fields.String(allow_none=True, validate=validate.OneOf(["a"])),
            "p": fields.Nested(Point, allow_none=True),
            "d": fields.Integer(load_default=None),  # allow_none by default
            "s": fields.String(),
        }
    )
    properties = post_schema(params)["definitions"]["Params"]["properties"]
    assert properties["n"]["type"] == ["integer", "null"]
    assert properties["c"]["enum"] == ["a", None]
    assert properties["p"]["anyOf"] == [
        {"$ref": "#/definitions/Point"},
        {"type": "null"},
    ]
    assert properties["d"] == {"title": "d", "type": ["integer", "null"], "default": None}
    body = {"n": None, "c": None, "p": None}
    assert ParamsValidator(params).validate(body) == {**body, "d": None}
    assert errors_of(params, {"s": None}) == {"s": ["Field may not be null."]}


def test_data_key_names_the_property_the_errors_but_not_the_loaded_value() -> None:
    params = Schema.from_dict({"fizz_divisor": fields.Integer(data_key="fizzDivisor")})
    assert prop(params, "fizzDivisor") == {"title": "fizzDivisor", "type": "integer"}
    assert ParamsValidator(params).validate({"fizzDivisor": 3}) == {"fizz_divisor": 3}
    assert errors_of(params, {"fizz_divisor": 3}) == {"fizz_divisor": ["Unknown field."]}
    assert errors_of(params, {"fizzDivisor": "3"}) == {"fizzDivisor": ["Not a valid integer."]}


def test_nested_schemas_get_their_own_definitions() -> None:
    schema = post_schema(AllTypes)
    definitions = schema["definitions"]
    assert list(definitions) == ["Params", "Point", "Point2"]
    assert definitions["Point"]["additionalProperties"] is False
    assert definitions["Point"]["required"] == ["x"]
    assert list(definitions["Point2"]["properties"]) == ["x"]  # only=("x",)
    properties = definitions["Params"]["properties"]
    assert properties["point"] == {"title": "point", "$ref": "#/definitions/Point"}
    assert properties["points"]["items"] == {"$ref": "#/definitions/Point"}
    errors = errors_of(AllTypes, {"count": 1, "point": {"y": 2.5, "z": 1}})
    assert errors == {
        "point": [
            "y: Not a valid integer.",
            "x: Missing data for required field.",
            "z: Unknown field.",
        ]
    }


def test_nested_names_are_distinct_and_recursion_is_a_reference() -> None:
    other = Schema.from_dict({"z": fields.String()}, name="Params")
    tree = Schema.from_dict(
        {
            "value": fields.Integer(),
            "children": fields.List(fields.Nested(lambda: tree())),
            "other": fields.Nested(other),
        },
        name="Tree",
    )
    definitions = post_schema(tree)["definitions"]
    assert list(definitions) == ["Params", "Params2"]
    properties = definitions["Params"]["properties"]
    assert properties["children"]["items"] == {"$ref": "#/definitions/Params"}
    assert properties["other"]["$ref"] == "#/definitions/Params2"
    body = {"children": [{"value": 1, "children": [{"value": 2.5}]}]}
    assert errors_of(tree, body) == {"children": ["0.children.0.value: Not a valid integer."]}


def test_pluck_publishes_the_plucked_field() -> None:
    params = Schema.from_dict({"xs": fields.Pluck(Point, "x", many=True)})
    assert prop(params, "xs") == {
        "title": "xs",
        "type": "array",
        "items": {"type": "integer", "minimum": -100, "maximum": 100},
    }
    loaded = ParamsValidator(params).validate({"xs": [1, 2.0]})
    assert loaded == {"xs": [{"x": 1}, {"x": 2}]}


def test_description_comes_from_metadata() -> None:
    field = fields.Integer(metadata={"description": "How far to count.", "x-junk": object()})
    assert prop(one_field(field), "f") == {
        "title": "f",
        "description": "How far to count.",
        "type": "integer",
    }


def test_enum_by_name_and_by_value() -> None:
    assert prop(AllTypes, "color") == {
        "title": "color",
        "type": "string",
        "enum": ["RED", "GREEN"],
        "default": "RED",
    }
    assert prop(AllTypes, "size") == {"title": "size", "enum": [1, 2]}
    loaded = validator_for(AllTypes).validate({"count": 0, "size": 2})
    assert loaded["color"] is Color.RED
    assert loaded["size"] is Size.LARGE
    assert errors_of(AllTypes, {"count": 0, "color": "red"}) == {
        "color": ["Must be one of: RED, GREEN."]
    }


def test_dump_only_fields_are_not_part_of_the_post_schema() -> None:
    assert "out" not in post_schema(AllTypes)["definitions"]["Params"]["properties"]
    assert errors_of(AllTypes, {"count": 0, "out": 1}) == {"out": ["Unknown field."]}


def test_default_is_the_load_default() -> None:
    calls = []

    def make() -> list[int]:
        calls.append(1)
        return [1, 2]

    params = Schema.from_dict(
        {
            "dumped": fields.Integer(dump_default=7),
            "loaded": fields.Integer(dump_default=7, load_default=8),
            "made": fields.List(fields.Integer(), load_default=make),
            "when": fields.Date(load_default=dt.date(2021, 11, 20)),
        }
    )
    properties = post_schema(params)["definitions"]["Params"]["properties"]
    assert "default" not in properties["dumped"]
    assert properties["loaded"]["default"] == 8
    assert properties["made"]["default"] == [1, 2]
    assert calls == [1]
    assert properties["when"]["default"] == "2021-11-20"


@pytest.mark.skipif(
    not MARSHMALLOW_3, reason="marshmallow 4 removed the default= and missing= keywords"
)
@pytest.mark.filterwarnings(
    "ignore:The '(default|missing)' argument to fields is deprecated:DeprecationWarning"
)
def test_old_default_and_missing_keywords_marshmallow_3() -> None:
    params = Schema.from_dict(
        {
            "n": fields.Integer(default=50, missing=50),
            "dumped": fields.Integer(default=7),
            "loaded": fields.Integer(missing=3),
        }
    )
    properties = post_schema(params)["definitions"]["Params"]["properties"]
    assert properties["n"] == {"title": "n", "type": "integer", "default": 50}
    assert "default" not in properties["dumped"]
    assert properties["loaded"]["default"] == 3
    assert ParamsValidator(params).validate({}) == {"n": 50, "loaded": 3}


# -- POST validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"n": 7.5}, {"n": ["Not a valid integer."]}),
        ({"n": "5"}, {"n": ["Not a valid integer."]}),
        ({"n": True}, {"n": ["Not a valid integer."]}),
        ({"n": None}, {"n": ["Field may not be null."]}),
        ({"bogus": 1}, {"bogus": ["Unknown field."]}),
        ([], {"_schema": ["Invalid input type."]}),
        ("n=5", {"_schema": ["Invalid input type."]}),
        (None, {"_schema": ["Invalid input type."]}),
    ],
)
def test_traps(body: Any, errors: dict[str, list[str]]) -> None:
    assert errors_of(FizzBuzzParams, body) == errors


@pytest.mark.parametrize("field", [fields.Raw(), fields.Float(), fields.List(fields.Raw())])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_not_json(field: fields.Field, value: float) -> None:
    # Python's json module reads them; the schema's number checks take them.
    body = {"f": [value] if isinstance(field, fields.List) else value}
    message = "Special numeric values (nan or infinity) are not permitted."
    errors = errors_of(one_field(field), body)
    assert errors == {"f": [f"0: {message}" if isinstance(field, fields.List) else message]}


def test_boolean_takes_only_true_and_false() -> None:
    params = one_field(fields.Boolean())
    for value in (1, 0, "true", "yes", None):
        assert errors_of(params, {"f": value}) == {
            "f": ["Field may not be null." if value is None else "Not a valid boolean."]
        }
    assert ParamsValidator(params).validate({"f": False}) == {"f": False}


def test_strict_integer_takes_an_integral_float() -> None:
    params = one_field(fields.Integer(strict=True))
    assert ParamsValidator(params).validate({"f": 5.0}) == {"f": 5}


@pytest.mark.parametrize("unknown", [EXCLUDE, INCLUDE])
def test_unknown_fields_are_rejected_whatever_meta_says(unknown: str) -> None:
    params = type("Params", (FizzBuzzParams,), {"Meta": type("Meta", (), {"unknown": unknown})})
    assert errors_of(params, {"n": 1, "bogus": 1}) == {"bogus": ["Unknown field."]}
    assert errors_of(params(), {"n": 1, "bogus": 1}) == {"bogus": ["Unknown field."]}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("when", "2021-02-29T00:00:00Z", "Not a valid datetime."),
        ("when", "2021-01-01t00:00:00z", "Not a valid datetime."),
        ("when", "2021-01-01T00:00:60Z", "Not a valid datetime."),
        ("when", "2021-01-01T00:00:00Z\n", "Not a valid datetime."),
        ("aware", "2021-01-01T00:00:00", "Not a valid datetime."),
        ("day", "2021-02-29", "Not a valid date."),
        ("day", "2021-1-1", "Not a valid date."),
        ("at", "24:00", "Not a valid time."),
        ("at", "12:00\n", "Not a valid time."),
        ("naive", "2021-01-01T00:00:00Z", "Not a valid datetime."),
        ("naive", "2100-02-29T00:00:00", "Not a valid datetime."),
        ("ident", "not-a-uuid", "Not a valid UUID."),
        ("ident", "12345678123412341234123456789abc", "Not a valid UUID."),
        ("ident", "{12345678-1234-1234-1234-123456789abc}", "Not a valid UUID."),
        ("ratio", 10**400, "Must be greater than 0 and less than or equal to 1."),
        ("scores", {"a": 10**400}, "a: Number too large."),
        ("ip4", "1.2.3.256", "Not a valid IPv4 address."),
        ("text", "", "Length must be between 1 and 10."),
        ("count", 10, "Must be greater than or equal to 0 and less than 10."),
        ("ratio", 0, "Must be greater than 0 and less than or equal to 1."),
        ("choice", "c", "Must be one of: a, b."),
        ("exact", 4, "Must be equal to 3."),
        ("other", "x", "Invalid input."),
        ("pair", [1], "Length must be 2."),
        ("scores", {"": 1.0}, "Length must be between 1 and 3."),
    ],
)
def test_field_errors(name: str, value: Any, message: str) -> None:
    body = {"count": 1, name: value}
    assert errors_of(AllTypes, body) == {name: [message]}


def test_formats_accepted() -> None:
    body = {
        "count": 1,
        "when": "2020-02-29T23:59:59.123456+05:30",
        "aware": "2021-01-01T00:00:00Z",
        "day": "2021-11-20",
        "at": "12:30:00",
        "ident": "D5DE4383-ea62-47a0-85fd-419762c457c6",
        "naive": "2000-02-29T00:00:00.5",
        "scores": {"a": -FLOAT_MAX},
    }
    loaded = validator_for(AllTypes).validate(body)
    assert loaded["when"].utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert loaded["at"] == dt.time(12, 30)


def test_custom_validator_is_marshmallow_s_alone() -> None:
    validator = validator_for(Checked)
    assert Draft7Validator(validator.json_schema).is_valid({"even": 3})
    assert errors_of(Checked, {"even": 3}) == {"even": ["Must be even."]}
    assert validator.validate({"even": 4}) == {"even": 4}


def test_both_checks_report_each_on_its_own_fields() -> None:
    assert errors_of(Checked, {"plain": 9, "even": 3, "delta": 10**400}) == {
        "plain": ["Must be greater than or equal to 0 and less than or equal to 5."],
        "delta": ["Number too large."],  # marshmallow 4 would raise OverflowError
        "even": ["Must be even."],
    }


def test_messages_per_field_are_capped_with_a_count_of_the_rest() -> None:
    errors = errors_of(AllTypes, {"count": 1, "anything": [math.inf] * 25, "tags": ["toolong"] * 5})
    message = "Special numeric values (nan or infinity) are not permitted."
    assert errors["anything"] == [
        *(f"{i}: {message}" for i in range(MAX_MESSAGES)), "... and 5 more."
    ]
    assert len(errors["tags"]) == 6  # one per item and the list's own: under the cap


def test_a_field_with_exactly_the_cap_has_no_count() -> None:
    errors = errors_of(AllTypes, {"count": 1, "anything": [math.inf] * MAX_MESSAGES})
    assert len(errors["anything"]) == MAX_MESSAGES
    assert not any(m.startswith("...") for m in errors["anything"])


def test_marshmallow_messages_are_capped_too() -> None:
    params = one_field(fields.List(fields.Integer(validate=must_be_even)))
    errors = errors_of(params, {"f": list(range(1, 100, 2))})
    assert errors["f"] == [f"{i}: Must be even." for i in range(MAX_MESSAGES)] + [
        "... and 30 more."
    ]


def hostile_bodies(size: int) -> dict[str, Any]:
    """Bodies of about ``size`` bytes of JSON that give a message per item."""
    items = size // 8
    deep: Any = [math.inf] * (items // 2)
    for _ in range(90):
        deep = [deep]
    return {
        "non-finite items": {"count": 1, "anything": [math.inf] * items},
        "unknown keys": {"count": 1, **{f"k{i}": 1 for i in range(items // 2)}},
        "bad nested items": {"count": 1, "points": [{"x": "a", "z": 1}] * (items // 4)},
        "bad list items": {"count": 1, "tags": ["toolong"] * (items // 2)},
        "bad mapping values": {"count": 1, "scores": {f"k{i}": "x" for i in range(items // 3)}},
        "deeply nested": {"count": 1, "anything": deep},
        "custom validator": {"f": [100_001] * items},
    }


def validation_seconds(body: dict[str, Any], repeat: int = 3) -> float:
    """The best of ``repeat`` validations of ``body``, in CPU seconds of this
    process (other processes loading the machine barely change it), with the
    garbage collector off (its pauses grow faster than the body)."""
    params = one_field(fields.List(fields.Integer(validate=must_be_even))) if "f" in body else (
        AllTypes
    )
    validator = validator_for(params)
    best = math.inf
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.process_time()
            with pytest.raises(ParamsInvalid):
                validator.validate(body)
            best = min(best, time.process_time() - start)
    finally:
        gc.enable()
    return best


def test_validation_takes_time_linear_in_the_body_size() -> None:
    """500 KB of hostile body costs about 10 times 50 KB, not 100 times.

    (A bound of 35 leaves room for a loaded machine; quadratic work, the
    bug this guards against, measured over 100 here.)
    """
    small, large = hostile_bodies(50_000), hostile_bodies(500_000)
    for shape in small:
        sizes = [len(json.dumps(body[shape], allow_nan=True)) for body in (small, large)]
        assert 300_000 < sizes[1] < 1_000_000 and 9 < sizes[1] / sizes[0] < 11, (shape, sizes)
        large_cost = validation_seconds(large[shape], repeat=2)
        ratio = large_cost / validation_seconds(small[shape], repeat=7)
        assert ratio < 35, (shape, ratio)


def test_params_invalid_is_a_spacewalk_error() -> None:
    exc = ParamsInvalid({"n": ["Not a valid integer."]})
    assert isinstance(exc, SpacewalkError)
    assert exc.errors == {"n": ["Not a valid integer."]}


# -- the agreement rule ------------------------------------------------------

NOT_NULL = ["array", "boolean", "number", "object", "string"]
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
# Values near the edges of what the test schemas take.
TRICKY = st.sampled_from(
    [
        7.5, "5", True, False, 0, 1, -1, 3, 3.0, 10, 10.0, 100, 101, -101, 0.5, -0.0,
        1e308, 2**53 + 1, None, "", "a", "x", "RED", "red", "1.5", [], {}, [1, "a"],
        ["a", "a"], {"x": 1}, {"x": 7.5}, {"x": 1, "y": 2.0}, {"x": 1, "bogus": 1},
        {"abcd": 1.0}, "2020-02-30T00:00:00Z", "2020-01-01T00:00:00Z", "2020-01-01",
        "2020-01-01T00:00:00z", "2020-01-01T00:00:00", "2020-1-1", "12:00", "12:00\n",
        "1:00", "AB1", "ab1", "AB\u0661", "00000000-0000-0000-0000-000000000000",
        "127.0.0.1", "::1", "a@b.c", "a@b", "http://example.com", "/relative",
        10**400, -(10**400), "2100-02-29T00:00:00Z", "2000-02-29T00:00:00",
        "12345678123412341234123456789abc", "urn:uuid:12345678-1234-1234-1234-123456789abc",
    ]
)  # fmt: skip
FORMATS = {
    "date": st.dates().map(dt.date.isoformat),
    "uuid": st.uuids().map(str),
    "email": st.emails(),
    "ipv4": st.ip_addresses(v=4).map(str),
    "ipv6": st.ip_addresses(v=6).map(str),
}


def from_schema(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that mostly fit ``node``; the caller filters the rest out."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: from_schema(defs[name], defs))
    if "anyOf" in node:
        return st.one_of([from_schema(n, defs) for n in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    types = node.get("type", ["null", *NOT_NULL])
    types = [types] if isinstance(types, str) else types
    return st.one_of([typed(kind, node, defs) for kind in types])


def typed(kind: str, node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    ints = st.integers(
        None if low is None else math.ceil(low), None if high is None else math.floor(high)
    )
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":  # 5.0 is an integer too
        return ints | ints.filter(lambda i: abs(i) < 2**53).map(float)
    if kind == "number":
        floats = st.floats(
            low,
            high,
            exclude_min="exclusiveMinimum" in node,
            exclude_max="exclusiveMaximum" in node,
            allow_nan=False,
            allow_infinity=False,
        )
        return floats | ints
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"])
        return FORMATS.get(
            node.get("format"),
            st.text(min_size=node.get("minLength", 0), max_size=node.get("maxLength", 8)),
        )
    if kind == "array":
        items = node.get("items", {})
        if isinstance(items, list):
            return st.tuples(*(from_schema(i, defs) for i in items)).map(list)
        return st.lists(
            from_schema(items, defs) if items else JSON,
            min_size=node.get("minItems", 0),
            max_size=node.get("maxItems", 3),
        )
    if "properties" in node:
        required = node.get("required", [])
        return st.fixed_dictionaries(
            {k: from_schema(v, defs) for k, v in node["properties"].items() if k in required},
            optional={
                k: from_schema(v, defs) for k, v in node["properties"].items() if k not in required
            },
        )
    values = node.get("additionalProperties", True)
    return st.dictionaries(
        from_schema(node["propertyNames"], defs)
        if "propertyNames" in node
        else st.text(max_size=5),
        from_schema(values, defs) if isinstance(values, dict) else JSON,
        max_size=node.get("maxProperties", 3),
    )


def valid_bodies(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    validator = Draft7Validator(schema, format_checker=FORMAT_CHECKER)
    return from_schema(schema, schema["definitions"]).filter(validator.is_valid)


def bodies(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid bodies, bodies with one field changed or dropped, and any JSON."""
    names = st.sampled_from([*schema["definitions"]["Params"]["properties"], "bogus"])
    values = TRICKY | JSON

    def mutate(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        changed = st.tuples(names, values).map(lambda kv: {**body, kv[0]: kv[1]})
        if not body:
            return changed
        dropped = st.sampled_from(sorted(body)).map(
            lambda name: {k: v for k, v in body.items() if k != name}
        )
        return changed | dropped

    valid = from_schema(schema, schema["definitions"])
    return st.one_of(valid, valid.flatmap(mutate), st.dictionaries(names, values, max_size=6), JSON)


CASES = [
    pytest.param(FizzBuzzParams, set(), id="fizz-buzz"),
    pytest.param(AllTypes, set(), id="all-types"),
    pytest.param(Point, set(), id="point"),
    pytest.param(Checked, CHECKED_ONLY_BY_MARSHMALLOW, id="checked"),
]
AGREEMENT = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize(("params", "unexpressed"), CASES)
@AGREEMENT
@given(data=st.data())
def test_agreement_rule(params: type[Schema], unexpressed: set[str], data: Any) -> None:
    validator = validator_for(params)
    schema = validator.json_schema
    body = data.draw(bodies(schema), label="body")
    try:
        validator.validate(body)
    except ParamsInvalid as exc:
        accepted, errors = False, exc.errors
        assert errors
        assert all(
            isinstance(m, list) and m and all(isinstance(s, str) for s in m)
            for m in errors.values()
        )
    else:
        accepted, errors = True, {}
    validates = Draft7Validator(schema, format_checker=FORMAT_CHECKER).is_valid(body)
    if accepted:
        assert validates
        # and with every format jsonschema knows asserted, too
        assert Draft7Validator(schema, format_checker=FormatChecker()).is_valid(body)
    elif validates:
        assert set(errors) <= unexpressed, errors


@pytest.mark.parametrize(("params", "unexpressed"), CASES[:3])
@AGREEMENT
@given(data=st.data())
def test_every_valid_body_is_accepted(
    params: type[Schema], unexpressed: set[str], data: Any
) -> None:
    validator = validator_for(params)
    body = data.draw(valid_bodies(validator.json_schema), label="body")
    loaded = validator.validate(body)
    assert set(loaded) >= {
        name
        for name, field in validator.schema.load_fields.items()
        if (field.data_key or name) in body
    }


# -- the root reference, resolved once ------------------------------------------


def test_inline_root_keeps_the_checks_of_a_root_reference() -> None:
    from flask_spacewalk.validation import _inline_root

    tree = Schema.from_dict(
        {"value": fields.Integer(), "children": fields.List(fields.Nested(lambda: tree()))},
        name="Tree",
    )
    schema = post_schema(tree)
    inlined = _inline_root(schema)
    assert "$ref" not in inlined and inlined["definitions"] is schema["definitions"]
    assert inlined["$schema"] == schema["$schema"]
    plain, fast = Draft7Validator(schema), Draft7Validator(inlined)
    for body in ({"value": 1}, {"children": [{"children": [{"value": "x"}]}]}, {"nope": 1}, []):
        # same errors, same places: the messages are built from these
        assert [(e.validator, list(e.absolute_path)) for e in plain.iter_errors(body)] == [
            (e.validator, list(e.absolute_path)) for e in fast.iter_errors(body)
        ]
    assert errors_of(tree, {"children": [{"value": 2.5}]}) == {
        "children": ["0.value: Not a valid integer."]
    }


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},  # no reference
        {"$ref": "http://example.com/s.json", "definitions": {}},  # not a local definition
        {"$ref": "#/definitions/A", "definitions": []},  # definitions not an object
        {"$ref": "#/definitions/A", "definitions": {"A": {}}, "title": "x"},  # other keywords
        {"$ref": "#/definitions/A~1B", "definitions": {"A/B": {}}},  # an escaped pointer
        {"$ref": "#/definitions/A", "definitions": {"B": {}}},  # no such definition
        {"$ref": "#/definitions/A", "definitions": {"A": {"definitions": {}}}},  # its own
    ],
)
def test_inline_root_leaves_other_schemas_as_they_are(schema: dict[str, Any]) -> None:
    from flask_spacewalk.validation import _inline_root

    assert _inline_root(schema) is schema


def test_inline_root_without_a_dialect_adds_none() -> None:
    from flask_spacewalk.validation import _inline_root

    schema = {"$ref": "#/definitions/A", "definitions": {"A": {"type": "object"}}}
    assert _inline_root(schema) == {"type": "object", "definitions": schema["definitions"]}
