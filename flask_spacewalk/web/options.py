"""The starting options of ``POST L/job`` (SPEC section 7): ``delay`` or
``runAt``, and ``priority``, read from the query string into the queue
kwargs the lifecycle stores in ``queueKwargs`` and gives ``queue.put``."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest

from ..backends.base import MAX_PRIORITY

#: The longest delay a POST may ask for, in seconds: 30 days (SPEC section
#: 7); runtime/outcome.py's MAX_DELAY is what a run may ask for.
MAX_START_DELAY = 2_592_000
#: The priority of a job started without one.
DEFAULT_PRIORITY = 2**31
#: The query parameters ``POST L/job`` takes.
START_OPTIONS = ("delay", "runAt", "priority")

_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", re.ASCII)


def read_start_options(now: dt.datetime | None = None) -> dict[str, Any]:
    """The queue kwargs the request's query string asks for: ``delay``
    (seconds, a ``runAt`` turned into the seconds left, a past one being 0)
    and ``priority``, each only when given.

    :param now: the time ``runAt`` is counted from (default: now, UTC).
    :raises BadRequest: an unknown or repeated parameter, a bad value, or
        both ``delay`` and ``runAt``.
    """
    if not request.query_string:
        return {}  # the usual POST: no query string to parse
    args = request.args
    unknown = sorted(name for name in args if name not in START_OPTIONS)
    if unknown:
        named = ", ".join(_quote(name) if len(name) > 40 else name for name in unknown[:5])
        raise BadRequest(
            f"unknown query parameter {named}: POST takes only {', '.join(START_OPTIONS)}"
        )
    for name in args:
        if len(args.getlist(name)) > 1:
            raise BadRequest(f"{name} is given more than once")
    if "delay" in args and "runAt" in args:
        raise BadRequest("give delay or runAt, not both")
    kwargs: dict[str, Any] = {}
    if "delay" in args:
        kwargs["delay"] = _delay(args["delay"])
    elif "runAt" in args:
        kwargs["delay"] = _run_at(args["runAt"], now or dt.datetime.now(dt.timezone.utc))
    if "priority" in args:
        kwargs["priority"] = _priority(args["priority"])
    return kwargs


def _delay(text: str) -> float | int:
    # a plain decimal number: float() would also take "nan", " 5" and "1_0"
    if not _NUMBER.fullmatch(text):
        raise BadRequest(f"delay must be a number of seconds, not {_quote(text)}")
    delay = float(text) + 0.0  # -0.0 is 0.0
    if not 0 <= delay <= MAX_START_DELAY:
        raise BadRequest(
            f"delay must be between 0 and {MAX_START_DELAY} seconds, not {_quote(text)}"
        )
    # kept as given in queueKwargs: "delay=5" as the int 5
    return int(text) if text.isdigit() else delay


def _run_at(text: str, now: dt.datetime) -> float:
    try:
        # fromisoformat() overlooks a trailing NUL; an ISO-8601 date is ASCII
        if not (text.isascii() and text.isprintable()):
            raise ValueError(text)
        # Python before 3.11 reads no "Z"
        when = dt.datetime.fromisoformat(
            text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        )
    except ValueError:
        raise BadRequest(
            "runAt must be an ISO-8601 date-time such as 2030-01-31T12:00:00Z,"
            f" not {_quote(text)}"
        ) from None
    if when.tzinfo is None:
        # A time without an offset is ambiguous between the client's, the
        # server's and UTC: refused rather than guessed (RFC 3339's rule).
        raise BadRequest(f"runAt needs a time zone offset (Z or +hh:mm): {_quote(text)}")
    delay = max((when - now).total_seconds(), 0.0)
    if delay > MAX_START_DELAY:
        raise BadRequest(f"runAt must be at most {MAX_START_DELAY} seconds (30 days) from now")
    return delay


def _priority(text: str) -> int:
    # int() would take " 7", "+7" and "7_000": only plain digits are an integer here
    # and int() refuses over 4,300 digits: a long one is too large anyway
    digits = text.lstrip("0") or "0"
    if not text.isascii() or not text.isdigit() or len(digits) > len(str(MAX_PRIORITY)) \
            or int(digits) > MAX_PRIORITY:
        raise BadRequest(
            f"priority must be an integer from 0 to {MAX_PRIORITY}, not {_quote(text)}"
        )
    return int(digits)


def _quote(text: str) -> str:
    """``text`` for an error message: quoted, and cut short (a query string
    may be as long as the server lets it be)."""
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}..."
