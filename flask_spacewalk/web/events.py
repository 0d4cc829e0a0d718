"""``GET R/events/<uuid>``: a job followed as Server-Sent Events (SPEC section 9).

A stream sends the job's new log records (``log``), its progress when it
changes (``progress``) and, once the job has a result, ``end``; then the
server closes it. Each event's ``id`` is a :class:`StreamPosition`: how
many records of each log list the client has, and a tag of the last
progress it got. Log lists only grow, so counts resume exactly (no repeats,
no gaps) even when records share a timeStamp, and the tag says whether the
progress changed since.

The stream stands on :meth:`~flask_spacewalk.runtime.changes.JobWatch.wait`
alone: between events it holds no datastore transaction and no request
context, only a thread of the server (gthread under gunicorn).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Response, request
from werkzeug.exceptions import BadRequest

from ..errors import SpacewalkError
from ..runtime.job import NO_RESULT

if TYPE_CHECKING:
    from ..runtime.changes import JobWatch
    from .state import SpacewalkState

__all__ = [
    "KEEPALIVE_INTERVAL",
    "LOG_KINDS",
    "RETRY_MS",
    "JobStream",
    "StreamPosition",
    "event_stream",
    "events_view",
    "progress_tag",
    "read_last_event_id",
]

log = logging.getLogger(__name__)

#: Seconds of silence after which a stream sends a comment line: proxies
#: keep it open, and a write to a client that went away ends it.
KEEPALIVE_INTERVAL = 15.0
#: The reconnection delay the stream asks of clients (``retry:``), in ms.
RETRY_MS = 2000
#: Each log list of a job document and the ``kind`` its records get, in the
#: order that breaks ties between records of one timeStamp.
LOG_KINDS = (("events", "event"), ("warnings", "warning"), ("errors", "error"))

#: An id of :meth:`StreamPosition.encode`: three counts, then the tag.
_ID = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})\.([0-9a-f]{12})?")

#: A stored job's document and cas by uuid; 404 when the uuid names no job
#: of the tree.
Lookup = Callable[[str], tuple[dict[str, Any], int]]
#: A document's progress object, as ``GET R/progress`` answers it.
ProgressOf = Callable[[dict[str, Any], int], dict[str, Any]]


class StreamPosition(NamedTuple):
    """How far a client has followed a job: the ``id`` of an event."""

    events: int = 0
    warnings: int = 0
    errors: int = 0
    #: :func:`progress_tag` of the last progress sent; ``""`` before any.
    progress: str = ""

    def encode(self) -> str:
        """The event id: opaque to clients."""
        return f"{self.events}.{self.warnings}.{self.errors}.{self.progress}"

    @classmethod
    def parse(cls, text: str) -> StreamPosition:
        """The position an id of :meth:`encode` names.

        :raises ValueError: ``text`` is no such id.
        """
        match = _ID.fullmatch(text)
        if match is None:
            raise ValueError(text)
        events, warnings, errors, tag = match.groups()
        return cls(int(events), int(warnings), int(errors), tag or "")

    def count(self, name: str) -> int:
        """How many records of the log list ``name`` the client has."""
        return int(getattr(self, name))

    def after(self, name: str) -> StreamPosition:
        """The position once the next record of the log list ``name`` is sent."""
        events, warnings, errors = (
            self.count(list_name) + (list_name == name) for list_name, _ in LOG_KINDS
        )
        return StreamPosition(events, warnings, errors, self.progress)


def progress_tag(progress: dict[str, Any]) -> str:
    """A short digest of a progress object: equal objects, equal tags."""
    text = json.dumps(progress, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def read_last_event_id(document: dict[str, Any]) -> StreamPosition:
    """The position the request's ``Last-Event-ID`` resumes from (the start
    without one).

    :raises BadRequest: the id is not one this job's stream can have given:
        malformed, or counting more records than the job has.
    """
    text = request.headers.get("Last-Event-ID", "").strip()
    if not text:
        return StreamPosition()
    try:
        position = StreamPosition.parse(text)
    except ValueError:
        raise BadRequest(
            f"Last-Event-ID {text[:64]!r} is not an event id of this stream"
        ) from None
    for name, _ in LOG_KINDS:
        if position.count(name) > len(_records(document, name)):
            raise BadRequest(f"Last-Event-ID {text!r} is ahead of the job's log")
    return position


class JobStream:
    """The events a client at :attr:`position` has yet to get, document by
    document; no I/O, so the view and the tests share it."""

    def __init__(self, position: StreamPosition, progress_of: ProgressOf):
        self.position = position
        self.progress_of = progress_of
        #: Set once ``end`` was given.
        self.ended = False

    def advance(self, document: dict[str, Any], cas: int) -> list[str]:
        """The events ``document`` adds, encoded: new log records in
        timeStamp order, then ``progress`` if it changed, then ``end`` if
        the job has a result."""
        chunks = [self._log_event(kind, record) for kind, record in self._new_records(document)]
        progress = self.progress_of(document, cas)
        tag = progress_tag(progress)
        if tag != self.position.progress:
            self.position = self.position._replace(progress=tag)
            chunks.append(self._event("progress", progress))
        if document.get("resultCode", NO_RESULT) != NO_RESULT:
            self.ended = True
            chunks.append(self._event("end", progress))
        return chunks

    def _new_records(self, document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        # A merge, not a sort: each list keeps its stored order (the counts
        # in the ids need it), the next record of the three is the earliest,
        # and ties go in list order.
        pending = [
            (kind, _records(document, name)[self.position.count(name):])
            for name, kind in LOG_KINDS
        ]
        found: list[tuple[str, dict[str, Any]]] = []
        heads = [0] * len(pending)
        while True:
            candidates = [
                (_when(records[heads[order]]), order)
                for order, (_, records) in enumerate(pending)
                if heads[order] < len(records)
            ]
            if not candidates:
                return found
            _, order = min(candidates)
            kind, records = pending[order]
            found.append((kind, records[heads[order]]))
            heads[order] += 1

    def _log_event(self, kind: str, record: dict[str, Any]) -> str:
        self.position = self.position.after(f"{kind}s")
        data = {"kind": kind, "msg": record.get("msg"), "timeStamp": record.get("timeStamp")}
        if kind == "error":
            data["errorCode"] = record.get("errorCode")
        return self._event("log", data)

    def _event(self, event: str, data: Any) -> str:
        text = json.dumps(data, separators=(",", ":"), default=str)
        return f"id: {self.position.encode()}\nevent: {event}\ndata: {text}\n\n"


def event_stream(
    watch: JobWatch, uuid: str, cas: int, stream: JobStream, first: list[str], stream_max: float
) -> Iterator[str]:
    """The text of one stream: the ``first`` events (of the document at
    ``cas``), those of each change after it, a comment after
    :data:`KEEPALIVE_INTERVAL` of silence, until the job ends, is gone, or
    ``stream_max`` seconds pass."""
    now = time.monotonic()
    deadline = now + stream_max
    yield f"retry: {RETRY_MS}\n\n" + "".join(first)
    last_sent = now
    current: dict[str, Any] | None = None
    while not stream.ended:
        if current is not None:
            try:
                chunks = stream.advance(current, cas)
            except Exception:
                # too late for an error answer: log it, end the stream; the
                # client's reconnect gets the JSON error
                log.exception("event stream of job %s ends", uuid)
                return
            if chunks:
                yield "".join(chunks)
                last_sent = time.monotonic()
            if stream.ended:
                break
        now = time.monotonic()
        if now >= deadline:
            return
        if now - last_sent >= KEEPALIVE_INTERVAL:
            yield ": keep-alive\n\n"
            last_sent = now
        timeout = min(deadline, last_sent + KEEPALIVE_INTERVAL) - now
        try:
            found, new_cas = watch.wait(uuid, cas, timeout)
        except SpacewalkError as exc:
            # a datastore gone mid-stream: the client reconnects, and its
            # next request answers 503 until it is back
            log.warning("event stream of job %s ends: %s", uuid, exc)
            return
        if found is None:
            return  # purged: a reconnect answers 404
        current = found if new_cas != cas else None
        cas = new_cas


def events_view(state: SpacewalkState, lookup: Lookup, progress_of: ProgressOf) -> Callable[
    [str], Response
]:
    """The view of ``GET R/events/<uuid>``: 404 and 400 answers come before
    the stream starts, as JSON."""

    def view(uuid: str) -> Response:
        document, cas = lookup(uuid)
        stream = JobStream(read_last_event_id(document), progress_of)
        # the first events before the answer: a job whose progress() fails
        # is a JSON error, not a cut stream
        first = stream.advance(document, cas)
        body = event_stream(state.watch(), uuid, cas, stream, first, state.settings.stream_max)
        return Response(
            body,
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return view


def _records(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    records = document.get(name)
    if not isinstance(records, list):
        return []
    return [record if isinstance(record, dict) else {"msg": str(record)} for record in records]


def _when(record: dict[str, Any]) -> datetime.datetime:
    # stored with or without a fraction of a second; anything unreadable
    # goes after the readable ones rather than failing the stream
    try:
        when = datetime.datetime.fromisoformat(str(record.get("timeStamp")))
    except ValueError:
        return datetime.datetime.max
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return when
