"""``GET R/jobs``: the tree's stored jobs, newest first, a page at a time.

The query string is checked here and becomes a
:class:`~flask_spacewalk.runtime.query.JobQuery`; the datastore's
``list_jobs`` reads its indexes (see ``docs/api.rst``). The cursor is the
last job of a page, ``(createdAt, uuid)``, as URL-safe base64 of a small
JSON object: opaque to clients, and it stays valid whatever is stored or
deleted meanwhile.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

from flask import Response, request
from werkzeug import exceptions
from werkzeug.exceptions import BadRequest

from ..errors import NotSupported
from ..runtime.query import JobQuery
from ..runtime.status import JOB_ID_PATTERN, STATUSES
from .http import json_response

if TYPE_CHECKING:
    from .state import SpacewalkState

DEFAULT_LIMIT = 50
#: Larger ``limit`` values are lowered to this.
MAX_LIMIT = 500
_INTEGER = re.compile(r"[+-]?[0-9]+")
#: The key of the checksum a cursor carries: it tells the cursors this API
#: gave from any other text, and is no secret (a cursor grants nothing).
_CURSOR_CHECK = b"flask-spacewalk listing cursor"
#: Longer than any cursor :func:`encode_cursor` writes for a stored job.
_CURSOR_MAX = 8192


def jobs_view(state: SpacewalkState) -> Callable[[], Response]:
    """The view of ``GET R/jobs`` for ``state``'s tree."""
    tree_types = frozenset(cls.JOB_TYPE for cls in state.registry.get_registered_classes())
    progress = f"{state.tree.root.path}/progress/"

    def view() -> Response:
        args = request.args
        limit = read_limit(single_arg("limit"))
        query = read_query(tree_types, limit + 1)
        datastore, _ = state.connections()
        try:
            jobs = datastore.list_jobs(query)
        except NotSupported as exc:
            raise exceptions.NotImplemented(str(exc)) from exc
        headers = {}
        next_cursor = None
        if len(jobs) > limit:
            jobs = jobs[:limit]
            next_cursor = encode_cursor(jobs[-1]["createdAt"], jobs[-1]["uuid"])
            kept = [(k, v) for k, v in args.items(multi=True) if k != "cursor"]
            query_string = urlencode([*kept, ("cursor", next_cursor)])
            headers["Link"] = f'<{request.script_root}{request.path}?{query_string}>; rel="next"'
        prefix = request.script_root + progress
        items = [dict(job, progress=prefix + job["uuid"]) for job in jobs]
        return json_response({"jobs": items, "next": next_cursor}, headers=headers)

    return view


def read_query(tree_types: frozenset[str], limit: int) -> JobQuery:
    """The query of the request's filters (``jobType``, ``status``,
    ``since``) and ``cursor``, for at most ``limit`` jobs of a tree whose job
    types are ``tree_types``.

    :raises BadRequest: a bad value, or one given twice that must not be.
    """
    args = request.args
    job_types = _names(args.getlist("jobType"), tree_types, "jobType",
                       "a job type of this tree")  # fmt: skip
    statuses = _names(args.getlist("status"), frozenset(STATUSES), "status",
                      "one of " + ", ".join(STATUSES))  # fmt: skip
    since = _since(single_arg("since"))
    cursor = single_arg("cursor")
    after = None if cursor is None else decode_cursor(cursor)
    # Only this tree's jobs: its job types are the filter when the request
    # names none.
    return JobQuery(job_types or tree_types, statuses, since, after, limit)


def single_arg(name: str) -> str | None:
    """The query parameter ``name``, None when absent.

    :raises BadRequest: it is given more than once.
    """
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"give {name} at most once")
    return values[0] if values else None


def _names(
    values: list[str], known: frozenset[str], name: str, what: str
) -> frozenset[str] | None:
    """The set a repeatable, comma-separated parameter names, or None."""
    if not values:
        return None
    names = frozenset(part.strip() for value in values for part in value.split(","))
    unknown = sorted(names - known)
    if unknown:
        raise BadRequest(f"{name} {', '.join(map(repr, unknown))} is not {what}")
    return names


def read_limit(text: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """``limit``: ``default`` when absent, ``maximum`` when larger.

    :raises BadRequest: it is no whole number of at least 1.
    """
    if text is None:
        return default
    digits = text.strip().lstrip("+").lstrip("0")
    if not _INTEGER.fullmatch(text.strip()) or text.strip().startswith("-") or not digits:
        raise BadRequest(f"limit must be a whole number of at least 1, not {text[:40]!r}")
    # int() refuses over 4,300 digits; a number longer than the maximum is capped anyway
    return maximum if len(digits) > len(str(maximum)) else min(int(digits), maximum)


def _since(text: str | None) -> str | None:
    """``since`` as a stored ``createdAt`` is written: naive UTC ISO-8601."""
    if text is None:
        return None
    try:
        # fromisoformat() overlooks a trailing NUL; an ISO-8601 date is ASCII
        if not (text.isascii() and text.isprintable()):
            raise ValueError(text)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(
            "since must be an ISO-8601 date-time such as 2024-05-01T12:00:00Z,"
            f" not {text[:40]!r}"
        ) from None
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
            raise BadRequest(
                f"since is out of range once converted to UTC (years 1 to 9999): {text!r}"
            ) from None
    # isoformat() leaves out a zero fraction, as createdAt does; the string
    # order of the two is then their time order
    return moment.isoformat()


def encode_cursor(created_at: str, uuid: str) -> str:
    """The cursor of the page after the job ``(created_at, uuid)``: the
    position as URL-safe base64 of a small JSON object, a dot, and a
    checksum of it."""
    text = json.dumps({"c": created_at, "u": uuid}, separators=(",", ":"))
    position = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return f"{position}.{_checksum(position)}"


def decode_cursor(cursor: str) -> tuple[str, str]:
    """``(createdAt, uuid)`` of a cursor :func:`encode_cursor` made.

    A cursor is only a position, never a permission: its checksum tells a
    cursor of this API from a mistyped, truncated or hand-made one, and its
    position must be one the listing can hold (a job id as keys have it, a
    ``createdAt`` the stores can compare).

    :raise BadRequest: it is not such a cursor.
    """
    position, _, checksum = cursor.rpartition(".")
    data: Any = None
    if (
        len(cursor) <= _CURSOR_MAX
        and cursor.isascii()
        and hmac.compare_digest(checksum, _checksum(position))
    ):
        try:
            data = json.loads(base64.urlsafe_b64decode(position + "=" * (-len(position) % 4)))
        except (binascii.Error, ValueError):
            pass
    if (
        isinstance(data, dict)
        and set(data) == {"c", "u"}
        and isinstance(data["c"], str)
        and isinstance(data["u"], str)
        and JOB_ID_PATTERN.fullmatch(data["u"])
        and _comparable(data["c"])
    ):
        return data["c"], data["u"]
    raise BadRequest("cursor is not one this API gave; use the next of a previous page")


def _checksum(position: str) -> str:
    return hmac.new(_CURSOR_CHECK, position.encode(), hashlib.sha256).hexdigest()[:16]


def _comparable(text: str) -> bool:
    """Whether every store can compare ``text``: no NUL (PostgreSQL), no
    lone surrogate (not UTF-8)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text
