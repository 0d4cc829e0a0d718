"""Fast serialization of job documents.

Every save dumps the whole document, and marshmallow costs about 4 us a
field; the ZeroG fields are the same for every job and simple, so they are
written by hand here, and marshmallow dumps only the job's own fields
(Params and ``BASE_SCHEMA`` extras). A schema that changes how a ZeroG field
is dumped (another field type, a ``data_key``, a dump hook) gets the plain
marshmallow dump: the output is the same either way, which the tests check.
"""
from __future__ import annotations

from typing import Any, Callable

from marshmallow import Schema

from .records import EventRecord

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


def _has_dump_hooks(schema: Schema) -> bool:
    # marshmallow keys its hooks by tag ("pre_dump"), or, before 3.19, by
    # (tag, many).
    for key, hooks in schema._hooks.items():
        tag = key[0] if isinstance(key, tuple) else key
        if tag in ("pre_dump", "post_dump") and hooks:
            return True
    return False


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
