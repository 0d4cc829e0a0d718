"""The check of POST bodies against a leaf's Params.

:class:`ParamsValidator` checks a POST body against the leaf's post-schema
(:func:`~flask_spacewalk.post_schema.post_schema`; strict JSON types, formats
asserted by :data:`FORMAT_CHECKER`) and then loads it with marshmallow,
unknown fields rejected. So a body that POST accepts always validates against
the schema, and one that validates is accepted unless a check the schema
cannot express rejects it: a custom validator, a schema hook, or the address
checks of ``Email``, ``Url`` and ``IP`` fields. Both checks' errors are given
as marshmallow-like messages by field. Nothing here imports Flask.
"""

from __future__ import annotations

import math
import typing as t

import jsonschema
from jsonschema import Draft7Validator, FormatChecker
from marshmallow import RAISE, Schema, ValidationError, fields

from .errors import ParamsInvalid
from .post_schema import (
    DATE_PATTERN,
    DATE_TIME_PATTERN,
    FLOAT_MAX,
    NAIVE_DATE_TIME_PATTERN,
    TIME_PATTERN,
    UUID_FIELD_PATTERN,
    post_schema,
    schema_instance,
)

__all__ = ["FORMAT_CHECKER", "MAX_MESSAGES", "ParamsValidator"]

#: The most messages a 422 gives for one field; a last message
#: ``"... and N more."`` counts the others.
MAX_MESSAGES = 20

#: The format checker POST bodies are validated with: jsonschema's own for
#: draft 7, what a client's stock validator asserts too. The post-schema's
#: patterns carry what it would not assert (``date-time`` needs an optional
#: package, ``uuid`` is no draft-07 format).
FORMAT_CHECKER: FormatChecker = getattr(Draft7Validator, "FORMAT_CHECKER", None) or (
    jsonschema.draft7_format_checker  # the older jsonschema 4 releases
)


class ParamsValidator:
    """Checks POST bodies for one leaf. Build it once, at start-up.

    :param params_schema: the leaf's Params, a class or an instance.
    """

    def __init__(self, params_schema: type[Schema] | Schema) -> None:
        self.schema = schema_instance(params_schema)
        #: The published post-schema, as :func:`post_schema` gives it.
        self.json_schema = post_schema(self.schema)
        self._validator = Draft7Validator(
            _inline_root(self.json_schema), format_checker=FORMAT_CHECKER
        )

    def validate(self, body: t.Any) -> dict[str, t.Any]:
        """Check a parsed JSON body and load it.

        The body must validate against the post-schema and load with
        marshmallow, unknown fields rejected whatever ``Params.Meta.unknown``
        says. A body that is not an object is rejected under ``"_schema"``.

        :param body: the parsed JSON body.
        :return: what marshmallow's ``load`` gives, load defaults filled in.
        :raise ParamsInvalid: with every message of both checks, by data key.
        """
        errors = _Messages()
        non_finite = dict.fromkeys(_non_finite(body, ()))  # in body order
        for path in non_finite:
            errors.add(path, "Special numeric values (nan or infinity) are not permitted.")
        for error in self._validator.iter_errors(body):
            for path, message in _schema_messages(error):
                if path not in non_finite:  # said better above
                    errors.add(path, message)
        if not isinstance(body, dict):
            errors.add((), "Invalid input type.")
            raise ParamsInvalid(errors.by_field())
        # marshmallow sees only the fields the schema took: on the others it
        # would repeat the schema's messages in other words, and some fields
        # raise on values the schema keeps out (TimeDelta on a huge integer).
        found = errors.fields()
        taken = {key: value for key, value in body.items() if key not in found}
        try:
            loaded: dict[str, t.Any] = self.schema.load(
                _integral(self.schema, taken), unknown=RAISE
            )
        except ValidationError as exc:
            for path, message in _marshmallow_messages(exc.messages, ()):
                if (str(path[0]) if path else "_schema") not in found:
                    errors.add(path, message)
        if errors:
            raise ParamsInvalid(errors.by_field())
        return loaded


def _inline_root(schema: dict[str, t.Any]) -> dict[str, t.Any]:
    """``schema`` with a root that only refers to one of its definitions
    replaced by that definition, the definitions kept for the other
    references: the same checks (draft 7 ignores a ``$ref``'s siblings), but
    the root's reference is not looked up again for every body, which was
    about 40 % of a small body's check."""
    ref = schema.get("$ref")
    prefix = "#/definitions/"
    definitions = schema.get("definitions")
    if (
        not isinstance(ref, str)
        or not ref.startswith(prefix)
        or not isinstance(definitions, dict)
        or set(schema) - {"$schema", "$ref", "definitions"}
    ):
        return schema
    name = ref[len(prefix):]
    target = definitions.get(name)
    if (
        any(char in name for char in "~%/")  # an escaped pointer: left to jsonschema
        or not isinstance(target, dict)
        or {"$schema", "definitions"} & set(target)
    ):
        return schema
    inlined = {**target, "definitions": definitions}
    if "$schema" in schema:
        inlined["$schema"] = schema["$schema"]
    return inlined


class _Messages:
    """Messages by field, each said once, at most :data:`MAX_MESSAGES` a field.

    Every operation costs the same however many messages came before, so a
    hostile body (a long array of bad items) costs time linear in its size,
    and the answer stays short: the messages past the cap are only counted.
    """

    def __init__(self) -> None:
        self._kept: dict[str, list[str]] = {}
        self._more: dict[str, int] = {}
        # (path, message): both checks often say the same thing
        self._seen: set[tuple[tuple[t.Any, ...], str]] = set()

    def add(self, path: tuple[t.Any, ...], message: str) -> None:
        """Add ``message`` about the value at ``path`` (its field first)."""
        if (path, message) in self._seen:
            return
        self._seen.add((path, message))
        key = str(path[0]) if path else "_schema"
        kept = self._kept.setdefault(key, [])
        if len(kept) >= MAX_MESSAGES:
            self._more[key] = self._more.get(key, 0) + 1
            return
        if len(path) > 1:  # a deeper path goes in front of the message
            message = f"{'.'.join(map(str, path[1:]))}: {message}"
        if message not in kept:  # at most MAX_MESSAGES to look through
            kept.append(message)

    def __bool__(self) -> bool:
        return bool(self._kept)

    def fields(self) -> set[str]:
        """The fields with a message."""
        return set(self._kept)

    def by_field(self) -> dict[str, list[str]]:
        """The messages by field, a last ``"... and N more."`` where some were cut."""
        return {
            key: [*kept, f"... and {self._more[key]} more."] if key in self._more else kept
            for key, kept in self._kept.items()
        }


_TYPE_MESSAGES = {
    "integer": "Not a valid integer.",
    "number": "Not a valid number.",
    "string": "Not a valid string.",
    "boolean": "Not a valid boolean.",
    "array": "Not a valid list.",
    "object": "Not a valid mapping type.",
}
_FORMAT_MESSAGES = {
    "date-time": "Not a valid datetime.",
    "date": "Not a valid date.",
    "email": "Not a valid email address.",
    "ipv4": "Not a valid IPv4 address.",
    "ipv6": "Not a valid IPv6 address.",
}
_PATTERN_MESSAGES = {
    DATE_PATTERN: "Not a valid date.",
    DATE_TIME_PATTERN: "Not a valid datetime.",
    NAIVE_DATE_TIME_PATTERN: "Not a valid datetime.",
    TIME_PATTERN: "Not a valid time.",
    UUID_FIELD_PATTERN: "Not a valid UUID.",
}
_SIZES = ("Length", "Items", "Properties")
_LOWER = {"minimum": "greater than or equal to", "exclusiveMinimum": "greater than"}
_UPPER = {"maximum": "less than or equal to", "exclusiveMaximum": "less than"}
_LENGTHS = {f"{end}{kind}" for end in ("min", "max") for kind in _SIZES}


def _bound_message(keyword: str, schema: dict[str, t.Any]) -> str:
    """marshmallow's Range or Length message, both bounds named when set."""
    if keyword in _LOWER or keyword in _UPPER:
        bounds = [
            f"{op} {schema[k]}" for k, op in (*_LOWER.items(), *_UPPER.items()) if k in schema
        ]
        return f"Must be {' and '.join(bounds)}."
    kind = keyword[3:]
    low, high = schema.get(f"min{kind}"), schema.get(f"max{kind}")
    if low is not None and low == high:
        return f"Length must be {low}."
    if low is not None and high is not None:
        return f"Length must be between {low} and {high}."
    if low is not None:
        return f"Shorter than minimum length {low}."
    return f"Longer than maximum length {high}."


def _schema_messages(error: t.Any) -> t.Iterator[tuple[tuple[t.Any, ...], str]]:
    """(instance path, marshmallow-like message) pairs of a jsonschema error."""
    path = tuple(error.absolute_path)
    keyword, value, schema = error.validator, error.validator_value, error.schema
    if keyword == "required":
        for name in value:
            if name not in error.instance:
                yield (*path, name), "Missing data for required field."
    elif keyword == "additionalProperties":
        for name in error.instance:
            if name not in schema.get("properties", {}):
                yield (*path, name), "Unknown field."
    elif keyword == "anyOf":  # a nullable field: the null branch says nothing
        for sub in error.context:
            if not (sub.validator == "type" and sub.validator_value == "null"):
                yield from _schema_messages(sub)
    elif keyword == "type":
        types = [value] if isinstance(value, str) else [v for v in value if v != "null"]
        if error.instance is None and path:
            yield path, "Field may not be null."
        elif types == ["object"] and "properties" in schema:
            yield path, "Invalid input type."  # marshmallow's word for Nested
        else:
            yield path, _TYPE_MESSAGES.get(types[0], error.message)
    elif keyword == "format":
        yield path, _FORMAT_MESSAGES.get(value, f"Not a valid {value}.")
    elif keyword == "pattern":
        default = _FORMAT_MESSAGES.get(
            schema.get("format"), "String does not match expected pattern."
        )
        yield path, _PATTERN_MESSAGES.get(value, default)
    elif keyword in ("minimum", "maximum") and abs(value) == FLOAT_MAX:
        yield path, "Number too large."
    elif keyword in _LOWER or keyword in _UPPER or keyword in _LENGTHS:
        yield path, _bound_message(keyword, schema)
    elif keyword == "enum":
        choices = [v for v in value if v is not None]
        if len(choices) == 1:
            yield path, f"Must be equal to {choices[0]}."
        else:
            yield path, f"Must be one of: {', '.join(map(str, choices))}."
    elif keyword == "not":
        yield path, "Invalid input."
    else:
        yield path, error.message


def _marshmallow_messages(
    messages: t.Any, path: tuple[t.Any, ...]
) -> t.Iterator[tuple[tuple[t.Any, ...], str]]:
    if isinstance(messages, dict):
        for key, value in messages.items():
            # A nested schema's own "_schema" errors belong to the field.
            sub = path if key == "_schema" and path else (*path, key)
            yield from _marshmallow_messages(value, sub)
    elif isinstance(messages, list):
        for message in messages:
            yield from _marshmallow_messages(message, path)
    else:
        yield path, str(messages)


def _non_finite(value: t.Any, path: tuple[t.Any, ...]) -> t.Iterator[tuple[t.Any, ...]]:
    # Python's json module reads NaN and Infinity, which are not JSON and
    # which the schema's number checks let through.
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


def _integral(schema: Schema, data: t.Any) -> t.Any:
    """``data`` with integral floats made ints wherever an Integer field is.

    JSON Schema counts ``5.0`` as an integer; ``Integer(strict=True)`` does
    not, and the schema cannot tell the two apart.
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for attr, field in schema.load_fields.items():
        key = attr if field.data_key is None else field.data_key
        if key in out:
            out[key] = _integral_value(field, out[key])
    return out


def _integral_value(field: fields.Field[t.Any], value: t.Any) -> t.Any:
    if isinstance(field, fields.Enum) and field.by_value is not False:
        field = field.field
    if isinstance(field, fields.Integer):
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(field, fields.Pluck):
        return value
    if isinstance(field, fields.Nested):
        if field.many and isinstance(value, list):
            return [_integral(field.schema, item) for item in value]
        return _integral(field.schema, value)
    if isinstance(field, fields.List) and isinstance(value, list):
        return [_integral_value(field.inner, item) for item in value]
    if isinstance(field, fields.Tuple) and isinstance(value, list):
        head = [_integral_value(f, v) for f, v in zip(field.tuple_fields, value)]
        return head + value[len(head) :]
    if isinstance(field, fields.Mapping) and isinstance(value, dict) and field.value_field:
        return {k: _integral_value(field.value_field, v) for k, v in value.items()}
    return value
