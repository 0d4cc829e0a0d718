"""A leaf's Params as the published post-schema (its JSON Schema).

Three things are called a schema here, each by its own name: a leaf's
``Params`` (the marshmallow schema of its POST parameters), its
*post-schema* (the draft-07 JSON Schema made from ``Params``, which
``GET <leaf>/post-schema`` shows), and the job's *document schema*
(``BaseJobSchema`` and ``BASE_SCHEMA``: what is stored, in ``runtime/``).

:func:`post_schema` turns a marshmallow Params schema into the draft-07 JSON
Schema that ``GET <leaf>/post-schema`` shows; POST bodies are checked against
it by :class:`~flask_spacewalk.validation.ParamsValidator`.

Field types the schema cannot describe get a schema without ``type`` (it
accepts anything) rather than a wrong one. Nothing here imports Flask.
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import json
import re
import sys
import typing as t

from marshmallow import Schema, fields, missing, validate
from marshmallow_jsonschema import JSONSchema
from marshmallow_jsonschema.exceptions import UnsupportedValueError

__all__ = [
    "DATE_PATTERN",
    "DATE_TIME_PATTERN",
    "FLOAT_MAX",
    "NAIVE_DATE_TIME_PATTERN",
    "TIME_PATTERN",
    "UUID_FIELD_PATTERN",
    "post_schema",
    "schema_instance",
]

DRAFT_07 = "http://json-schema.org/draft-07/schema#"

# -- formats ------------------------------------------------------------------

# Dates, date-times and times as both marshmallow 3 (its own ISO regexes)
# and marshmallow 4 (Python's ``fromisoformat``) read them, a subset of
# RFC 3339 (which adds lowercase "t"/"z", leap seconds, long fractions), with
# the calendar spelled out: a validator that asserts no format still checks
# them. ``$(?!\n)`` is a true end in Python's ``re`` (where ``$`` also
# matches before a final newline) and in ECMA 262. The public patterns are
# also how validation.py words a field's error, so they are named.
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    "(?:(?!0000)[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    f"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)"
)
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]"
_SECONDS = r":[0-5][0-9](?:\.[0-9]{1,6})?"
_END = r"$(?!\n)"
DATE_PATTERN = f"^{_DATE}{_END}"
DATE_TIME_PATTERN = f"^{_DATE}T{_TIME}{_SECONDS}(?:Z|[+-]{_TIME}){_END}"
NAIVE_DATE_TIME_PATTERN = f"^{_DATE}T{_TIME}{_SECONDS}{_END}"
TIME_PATTERN = f"^{_TIME}(?:{_SECONDS})?{_END}"
# The canonical spelling only: uuid.UUID also reads braces, "urn:uuid:" and
# bare hex, which no draft-07 check describes.
UUID_FIELD_PATTERN = f"^[0-9a-fA-F]{{8}}(?:-[0-9a-fA-F]{{4}}){{3}}-[0-9a-fA-F]{{12}}{_END}"
# marshmallow refuses numbers a float cannot hold ("Number too large.").
FLOAT_MAX = sys.float_info.max

_ISO = (None, "iso", "iso8601")
_NOT_NULL = ["array", "boolean", "number", "object", "string"]
_DOC_KEYS = ("description", "examples", "$comment")
# Keywords that reject null however the type is written: a nullable field
# with one of these is wrapped in anyOf instead of growing a "null" type.
_NULL_SENSITIVE = {"$ref", "allOf", "anyOf", "not"}


# -- Params -> JSON Schema ----------------------------------------------------


def post_schema(params_schema: type[Schema] | Schema) -> dict[str, t.Any]:
    """The draft-07 JSON Schema of a leaf's Params, as ``post-schema`` shows it.

    The top definition is named ``Params`` whatever the class is called;
    nested schemas get their own definitions. Each property has the field's
    data key as ``title`` and, as ``default``, the value that loading fills in
    when the field is absent.

    :param params_schema: the Params schema, a class or an instance.
    """
    builder = _Builder(schema_instance(params_schema))
    return {
        "$schema": DRAFT_07,
        "definitions": builder.definitions,
        "$ref": "#/definitions/Params",
    }


def schema_instance(schema: type[Schema] | Schema) -> Schema:
    """``schema`` itself, or an instance of it when it is a class."""
    return schema() if isinstance(schema, type) else schema


def _load_fields(schema: Schema) -> list[tuple[str, fields.Field[t.Any]]]:
    """The fields a POST may carry, in declaration order.

    Older marshmallow 3 releases keep ``Schema.fields`` in a set's order
    unless ``Meta.ordered`` is on: the post-schema would change run to run.
    """
    order = {name: index for index, name in enumerate(schema.declared_fields)}
    return sorted(
        schema.load_fields.items(), key=lambda item: (order.get(item[0], len(order)), item[0])
    )


class _Converter(JSONSchema):
    """marshmallow-jsonschema's mapping of one scalar field to type and format."""

    def convert(self, parent: Schema, field: fields.Field[t.Any]) -> dict[str, t.Any]:
        bare = copy.copy(field)
        bare.validators = []  # validators are translated by _keywords, exactly
        try:
            converted = self._get_schema_for_field(  # type: ignore[no-untyped-call]
                parent, bare
            )
        except (UnsupportedValueError, NotImplementedError):
            return {}
        return {k: converted[k] for k in ("type", "format") if k in converted}


class _Builder:
    """Builds the definitions of one Params schema and those it nests."""

    def __init__(self, params: Schema) -> None:
        self.definitions: dict[str, dict[str, t.Any]] = {}
        self._names: dict[tuple[t.Any, ...], str] = {}
        self._converter = _Converter()
        self.definition(params, "Params")

    def definition(self, schema: Schema, name: str | None = None) -> str:
        loadable = _load_fields(schema)
        # The same class with other only/exclude is another definition.
        key = (type(schema), tuple(attr for attr, _ in loadable))
        if key in self._names:
            return self._names[key]
        base = name or type(schema).__name__
        name, n = base, 1
        while name in self.definitions:
            n += 1
            name = f"{base}{n}"
        self._names[key] = name
        # Registered before the properties are built: a schema may nest itself.
        body = self.definitions[name] = {}
        properties, required = {}, []
        for attr, field in loadable:
            data_key = attr if field.data_key is None else field.data_key
            properties[data_key] = self._property(schema, data_key, field)
            if field.required:
                required.append(data_key)
        body.update(properties=properties, type="object")
        if required:
            body["required"] = required
        body["additionalProperties"] = False
        return name

    def _property(
        self, parent: Schema, data_key: str, field: fields.Field[t.Any]
    ) -> dict[str, t.Any]:
        prop: dict[str, t.Any] = {"title": data_key}
        for key in _DOC_KEYS:
            doc = _json(field.metadata.get(key, missing))
            if doc is not missing:
                prop[key] = doc
        prop.update(self._nullable(parent, field))
        default = _default(field)
        if default is not missing:
            prop["default"] = default
        return prop

    def _nullable(self, parent: Schema, field: fields.Field[t.Any]) -> dict[str, t.Any]:
        schema = self._constraints(parent, field)
        # marshmallow takes null for an allow_none field without running its
        # validators, whatever the type.
        if not field.allow_none or not schema:
            return schema
        if _NULL_SENSITIVE & schema.keys():
            return {"anyOf": [schema, {"type": "null"}]}
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            schema["type"] = [*types, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema

    def _constraints(self, parent: Schema, field: fields.Field[t.Any]) -> dict[str, t.Any]:
        schema: dict[str, t.Any]
        if isinstance(field, fields.Pluck):
            plucked = field.schema.fields[field.field_name]
            schema = self._nullable(field.schema, plucked)
            if field.many:
                schema = {"type": "array", "items": schema}
        elif isinstance(field, fields.Nested):
            schema = {"$ref": f"#/definitions/{self.definition(field.schema)}"}
            if field.many:
                schema = {"type": "array", "items": schema}
        elif isinstance(field, fields.List):
            schema = {"type": "array", "items": self._nullable(parent, field.inner)}
        elif isinstance(field, fields.Tuple):
            items = [self._nullable(parent, f) for f in field.tuple_fields]
            schema = {"type": "array", "items": items}
            schema.update(minItems=len(items), maxItems=len(items))
        elif isinstance(field, fields.Mapping):
            schema = {"type": "object"}
            if field.value_field is not None:
                values = self._nullable(parent, field.value_field)
                schema["additionalProperties"] = values
            if field.key_field is not None:
                names = self._nullable(parent, field.key_field)
                # JSON keys are strings: only a string schema describes them.
                if names.get("type") == "string":
                    schema["propertyNames"] = names
        elif isinstance(field, fields.Enum):
            schema = _enum(field)
        elif type(field) is fields.Raw:
            schema = {} if field.allow_none else {"type": list(_NOT_NULL)}
        else:
            schema = _scalar(field, self._converter.convert(parent, field))
        for validator in field.validators:
            for keyword, value in _keywords(validator, field):
                if keyword == "items":
                    _merge(schema["items"], "enum", value)
                else:
                    _merge(schema, keyword, value)
        if getattr(field, "num_type", None) is float:
            if not {"minimum", "exclusiveMinimum"} & schema.keys():
                schema["minimum"] = -FLOAT_MAX
            if not {"maximum", "exclusiveMaximum"} & schema.keys():
                schema["maximum"] = FLOAT_MAX
        return schema


def _scalar(field: fields.Field[t.Any], converted: dict[str, t.Any]) -> dict[str, t.Any]:
    """Fix what marshmallow-jsonschema gets wrong for a scalar field."""
    schema = dict(converted)
    if isinstance(schema.get("type"), list):  # nullability is added later
        schema["type"] = next(v for v in schema["type"] if v != "null")
    if schema.get("format") != "uuid":
        schema.pop("format", None)  # "float", "decimal": not draft-07 formats
    if isinstance(field, (fields.DateTime, fields.Time, fields.Date)):
        if field.format not in _ISO:  # "rfc", "timestamp", strftime formats
            return {}
        # Date and Time are DateTime subclasses in marshmallow 3.
        if isinstance(field, fields.Date):
            return {"type": "string", "format": "date", "pattern": DATE_PATTERN}
        if isinstance(field, fields.Time):
            # The draft-07 "time" format requires an offset; neither
            # marshmallow reads one the same way.
            return {"type": "string", "pattern": TIME_PATTERN}
        if isinstance(field, fields.NaiveDateTime) and field.timezone is None:
            # RFC 3339 date-times all have an offset: no format fits.
            return {"type": "string", "pattern": NAIVE_DATE_TIME_PATTERN}
        return {"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN}
    if isinstance(field, fields.UUID):
        schema["pattern"] = UUID_FIELD_PATTERN
    elif isinstance(field, fields.Email):
        schema["format"] = "email"
    elif isinstance(field, fields.Url):
        schema["format"] = "uri-reference" if field.relative else "uri"
    elif isinstance(field, fields.IPv4):
        schema["format"] = "ipv4"
    elif isinstance(field, fields.IPv6):
        schema["format"] = "ipv6"
    elif isinstance(field, fields.TimeDelta):  # a number of units, not text
        schema = {"type": "number", "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX}
    return schema


def _enum(field: fields.Enum[t.Any]) -> dict[str, t.Any]:
    if field.by_value is False:
        return {"type": "string", "enum": list(field.enum.__members__)}
    values = _json([field.field._serialize(m.value, None, None) for m in field.enum])
    return {} if values is missing else {"enum": values}


def _keywords(validator: t.Any, field: fields.Field[t.Any]) -> list[tuple[str, t.Any]]:
    """The JSON Schema keywords of one marshmallow validator on ``field``.

    Validators are matched by exact class: a subclass may check something
    else. What the schema cannot express gives nothing; marshmallow still
    runs it.
    """
    kind = type(validator)
    if kind is validate.Range and isinstance(field, fields.Number):
        out = []
        for bound, inclusive, names in (
            (validator.min, validator.min_inclusive, ("minimum", "exclusiveMinimum")),
            (validator.max, validator.max_inclusive, ("maximum", "exclusiveMaximum")),
        ):
            number = _json(bound)
            if bound is not None and isinstance(number, (int, float)):
                out.append((names[0] if inclusive else names[1], number))
        return out
    if kind is validate.Length:
        lengths = _length_keywords(field)
        if lengths is None:
            return []
        if validator.equal is not None:
            return [(lengths[0], validator.equal), (lengths[1], validator.equal)]
        return [
            (name, bound)
            for name, bound in zip(lengths, (validator.min, validator.max))
            if bound is not None
        ]
    if kind is validate.Regexp and _is_text(field):
        pattern = _anchored(validator.regex)
        return [] if pattern is None else [("pattern", pattern)]
    if kind in (validate.OneOf, validate.Equal, validate.NoneOf) and _is_plain(field):
        if kind is validate.OneOf:
            values = _json(list(validator.choices))
        elif kind is validate.Equal:
            values = _json([validator.comparable])
        else:
            values = _json(list(validator.iterable))
        if values is missing:
            return []
        return [("not", {"enum": values})] if kind is validate.NoneOf else [("enum", values)]
    if kind is validate.ContainsOnly and isinstance(field, fields.List):
        values = _json(list(validator.choices))
        if _is_plain(field.inner) and values is not missing:
            return [("items", values)]
    return []


def _length_keywords(field: fields.Field[t.Any]) -> tuple[str, str] | None:
    if _is_text(field):
        return "minLength", "maxLength"
    if isinstance(field, (fields.List, fields.Tuple)) or (
        isinstance(field, fields.Nested) and field.many
    ):
        return "minItems", "maxItems"
    if isinstance(field, fields.Mapping):
        return "minProperties", "maxProperties"
    return None


def _is_text(field: fields.Field[t.Any]) -> bool:
    # marshmallow 3's UUID is a String that loads a uuid.UUID.
    return isinstance(field, fields.String) and not isinstance(field, fields.UUID)


def _is_plain(field: fields.Field[t.Any]) -> bool:
    """Whether the loaded value equals the JSON value, so enum means OneOf."""
    return (
        _is_text(field)
        or isinstance(field, (fields.Number, fields.Boolean))
        or type(field) is fields.Raw
    )


def _anchored(regex: re.Pattern[t.Any]) -> str | None:
    # marshmallow matches at the start, JSON Schema searches anywhere. Flags
    # cannot be carried in a JSON Schema pattern.
    if not isinstance(regex.pattern, str) or regex.flags & ~re.UNICODE:
        return None
    if regex.pattern.startswith("^") and "|" not in regex.pattern:
        return regex.pattern
    return f"^(?:{regex.pattern})"


def _merge(schema: dict[str, t.Any], keyword: str, value: t.Any) -> None:
    # Two validators on one keyword (two Ranges, OneOf on an Enum) must both hold.
    if keyword in schema:
        schema.setdefault("allOf", []).append({keyword: value})
    else:
        schema[keyword] = value


def _default(field: fields.Field[t.Any]) -> t.Any:
    """The JSON form of the value loading fills in, or ``missing``."""
    value = field.load_default
    if value is missing:
        return missing
    if callable(value):
        value = value()
    if not isinstance(field, fields.Number):  # as_string is for dumping only
        # A default already in its JSON form may not serialize: keep it as is.
        with contextlib.suppress(Exception):
            value = field._serialize(value, field.name, None)
    return _json(value)


def _json(value: t.Any) -> t.Any:
    """``value`` as a fresh copy of plain JSON data, or ``missing``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_decimal))
    except (TypeError, ValueError):
        return missing


def _decimal(value: t.Any) -> int | float:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)
