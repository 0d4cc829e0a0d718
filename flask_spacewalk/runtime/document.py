"""Fast serialization of job documents.

Every save dumps the whole document and every load of a job loads it, and
marshmallow costs a few microseconds a field; the ZeroG fields are the same
for every job and simple, so they are written and read by hand here, and
marshmallow handles only the job's own fields (Params and ``BASE_SCHEMA``
extras). A schema that changes how a ZeroG field is dumped or loaded
(another field type, a ``data_key``, a validator, a hook) gets plain
marshmallow, and so does any value the hand-written code is not sure of (a
number in a string, a record with other keys): the result is the same
either way, which the tests check.
"""
from __future__ import annotations

import datetime
import math
import re
from typing import Any, Callable

from marshmallow import Schema

from .records import ErrorRecord, EventRecord, WarningRecord

#: Dumps one value as marshmallow's field of that name would.
_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "documentType": str,
    "jobType": str,
    "schemaVersion": float,
    "createdAt": lambda value: value.isoformat(),
    "updatedAt": lambda value: value.isoformat(),
    "cas": int,
    "uuid": str,
    "logId": str,
    "queueName": str,
    "queueKwargs": dict,
    "queueJobId": int,
    "events": lambda records: [_record(r) for r in records],
    "errors": lambda records: [_record(r) for r in records],
    "warnings": lambda records: [_record(r) for r in records],
    "running": bool,
    "errorCount": int,
    "completeness": float,
    "tickcount": float,
    "tickval": float,
    "resultCode": int,
}


def _record(record: Any) -> dict[str, Any]:
    if not isinstance(record, EventRecord):
        raise TypeError("not a record")  # let marshmallow handle it
    return record.dump()


def _hook_tags(schema: Schema) -> set[str]:
    # marshmallow keys its hooks by tag ("pre_dump"), or, before 3.19, by
    # (tag, many).
    return {
        key[0] if isinstance(key, tuple) else key
        for key, hooks in schema._hooks.items()
        if hooks
    }


def _has_dump_hooks(schema: Schema) -> bool:
    return bool(_hook_tags(schema) & {"pre_dump", "post_dump"})


class DocumentDumper:
    """Dumps jobs of one schema class to their stored documents."""

    def __init__(self, schema: Schema, base: Schema):
        self.schema = schema
        base_fields = base.dump_fields
        fields = schema.dump_fields
        self.fast = (
            not _has_dump_hooks(schema)
            and set(base_fields) <= set(fields)
            and all(
                type(fields[name]) is type(base_fields[name])
                and fields[name].data_key is None
                and fields[name].attribute is None
                for name in base_fields
            )
        )
        extra = [name for name in fields if name not in base_fields]
        self.base_names = tuple(name for name in _ENCODERS if name in base_fields)
        self.extra_schema = type(schema)(only=extra) if self.fast and extra else None
        #: The job attributes the document is dumped from.
        self.attributes = frozenset(
            field.attribute or name for name, field in fields.items()
        )

    def dump(self, job: Any) -> dict[str, Any]:
        """``job``'s document, exactly as ``schema.dump(job)`` gives it."""
        if not self.fast:
            return self.schema.dump(job)  # type: ignore[no-any-return]
        document: dict[str, Any] = {}
        values = vars(job)
        try:
            for name in self.base_names:
                if name in values:
                    value = values[name]
                    document[name] = None if value is None else _ENCODERS[name](value)
        except (AttributeError, TypeError, ValueError):
            # An unusual value (a dict in place of an event, say):
            # marshmallow knows what to do with it.
            return self.schema.dump(job)  # type: ignore[no-any-return]
        if self.extra_schema is not None:
            document.update(self.extra_schema.dump(job))
        return document


class _Slow(Exception):
    """A value the loader leaves to marshmallow."""


_NAIVE_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{6})?")


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Slow
    return value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise _Slow
    return value


def _float(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Slow
    return float(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Slow
    return value


def _datetime(value: Any) -> datetime.datetime:
    # what isoformat() writes of a naive datetime, as ZeroG and this
    # project store it; anything else (an offset, a date) is marshmallow's
    if type(value) is not str or not _NAIVE_ISO.fullmatch(value):
        raise _Slow
    return datetime.datetime.fromisoformat(value)


def _dict(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Slow
    return dict(value)


def _records(make: Callable[..., EventRecord], keys: frozenset[str]) -> Callable[[Any], list[Any]]:
    def load(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _Slow
        records = []
        for item in value:
            if type(item) is not dict or item.keys() != keys:
                raise _Slow
            records.append(make(**{**item, "msg": _str(item["msg"]),
                                   "timeStamp": _datetime(item["timeStamp"])}))
        return records

    return load


def _error(errorCode: Any, msg: str, timeStamp: datetime.datetime) -> ErrorRecord:
    return ErrorRecord(_int(errorCode), msg, timeStamp)


#: Loads one stored value as marshmallow's field of that name would, or
#: raises _Slow.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "documentType": _str,
    "jobType": _str,
    "schemaVersion": _float,
    "createdAt": _datetime,
    "updatedAt": _datetime,
    "cas": _int,
    "uuid": _str,
    "logId": _str,
    "queueName": _str,
    "queueKwargs": _dict,
    "queueJobId": _int,
    "events": _records(EventRecord, frozenset({"msg", "timeStamp"})),
    "errors": _records(_error, frozenset({"errorCode", "msg", "timeStamp"})),
    "warnings": _records(WarningRecord, frozenset({"msg", "timeStamp"})),
    "running": _bool,
    "errorCount": _int,
    "completeness": _float,
    "tickcount": _float,
    "tickval": _float,
    "resultCode": _int,
}


def _same_field(field: Any, base: Any) -> bool:
    """Whether ``field`` loads as the base schema's ``base`` does."""
    inner, base_inner = getattr(field, "inner", None), getattr(base, "inner", None)
    return (
        type(field) is type(base)
        and field.data_key is None
        and field.attribute is None
        and not field.validators
        and field.allow_none == base.allow_none
        and type(inner) is type(base_inner)
        and getattr(inner, "nested", None) is getattr(base_inner, "nested", None)
    )


class DocumentLoader:
    """Loads stored documents of one schema class into job keywords."""

    def __init__(self, schema: Schema, base: Schema):
        self.schema = schema
        base_fields = base.load_fields
        fields = schema.load_fields
        self.fast = (
            not _hook_tags(schema)
            and set(base_fields) <= set(fields)
            and set(base_fields) <= set(_DECODERS)
            and all(_same_field(fields[name], base_fields[name]) for name in base_fields)
        )
        self.base_names = frozenset(base_fields)
        extra = [name for name in fields if name not in base_fields]
        self.extra_schema = type(schema)(only=extra) if self.fast and extra else None

    def load(self, document: dict[str, Any]) -> dict[str, Any]:
        """What ``schema.load(document)`` gives."""
        if not self.fast:
            return self.schema.load(document)  # type: ignore[no-any-return]
        loaded: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        try:
            for name, value in document.items():
                if name in self.base_names:
                    loaded[name] = _DECODERS[name](value)
                else:
                    rest[name] = value
        except _Slow:
            return self.schema.load(document)  # type: ignore[no-any-return]
        if self.extra_schema is not None:
            loaded.update(self.extra_schema.load(rest))
        elif rest:  # unknown keys: marshmallow says what becomes of them
            return self.schema.load(document)  # type: ignore[no-any-return]
        return loaded
