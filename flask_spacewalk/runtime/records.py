"""Events, warnings and errors: the log entries a job keeps in its document.

Stored as ZeroG stores them: ``{"msg", "timeStamp"}``, errors with an
``errorCode`` too; ``timeStamp`` is naive UTC ISO-8601.
"""
from __future__ import annotations

import datetime
from typing import Any

from marshmallow import Schema, fields, post_load


def utcnow() -> datetime.datetime:
    """The current UTC time as a naive datetime, as ZeroG writes it."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class EventRecord:
    """Something a job reports: ``msg`` at ``timeStamp``."""

    __slots__ = ("msg", "timeStamp")

    def __init__(self, msg: Any, timeStamp: datetime.datetime | None = None):
        self.msg = str(msg)
        self.timeStamp = timeStamp or utcnow()

    def dump(self) -> dict[str, Any]:
        """The record as stored and served."""
        return {"msg": self.msg, "timeStamp": self.timeStamp.isoformat()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventRecord) and (
            type(other) is type(self) and self.dump() == other.dump()
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dump()!r})"


class WarningRecord(EventRecord):
    """A warning a job reports."""

    __slots__ = ()


class ErrorRecord(EventRecord):
    """An error a job reports, with an HTTP-like ``errorCode``."""

    __slots__ = ("errorCode",)

    def __init__(
        self,
        errorCode: int,
        msg: Any,
        timeStamp: datetime.datetime | None = None,
    ):
        super().__init__(msg, timeStamp)
        self.errorCode = int(errorCode)

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["errorCode"] = self.errorCode
        return data


class EventSchema(Schema):
    """ZeroG's event schema."""

    timeStamp = fields.DateTime(format="iso")
    msg = fields.String(required=True)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> EventRecord:
        return EventRecord(**data)


class WarningSchema(EventSchema):
    """ZeroG's warning schema."""

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> WarningRecord:
        return WarningRecord(**data)


class ErrorSchema(EventSchema):
    """ZeroG's error schema."""

    errorCode = fields.Integer(required=True)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> ErrorRecord:
        return ErrorRecord(**data)


def make_event(msg: Any) -> EventRecord:
    """A new event stamped now."""
    return EventRecord(msg)


def make_warning(msg: Any) -> WarningRecord:
    """A new warning stamped now."""
    return WarningRecord(msg)


def make_error(errorCode: int, msg: Any) -> ErrorRecord:
    """A new error stamped now."""
    return ErrorRecord(errorCode, msg)
