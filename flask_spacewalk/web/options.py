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

#: The longest delay, in seconds: 30 days (SPEC section 7).
MAX_DELAY = 2_592_000
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
    args = request.args
    unknown = sorted(name for name in args if name not in START_OPTIONS)
    if unknown:
        raise BadRequest(
            f"unknown query parameter {', '.join(unknown)}: POST takes only"
            f" {', '.join(START_OPTIONS)}"
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
        raise BadRequest(f"delay must be a number of seconds, not {text!r}")
    delay = float(text) + 0.0  # -0.0 is 0.0
    if not 0 <= delay <= MAX_DELAY:
        raise BadRequest(f"delay must be between 0 and {MAX_DELAY} seconds, not {text!r}")
    # kept as given in queueKwargs: "delay=5" as the int 5
    return int(text) if text.isdigit() else delay


def _run_at(text: str, now: dt.datetime) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"runAt must be an ISO-8601 date-time such as 2030-01-31T12:00:00Z, not {text!r}"
        ) from None
    if when.tzinfo is None:
        # A time without an offset is ambiguous between the client's, the
        # server's and UTC: refused rather than guessed (RFC 3339's rule).
        raise BadRequest(f"runAt needs a time zone offset (Z or +hh:mm): {text!r}")
    delay = max((when - now).total_seconds(), 0.0)
    if delay > MAX_DELAY:
        raise BadRequest(f"runAt must be at most {MAX_DELAY} seconds (30 days) from now")
    return delay


def _priority(text: str) -> int:
    # int() would take " 7", "+7" and "7_000": only plain digits are an integer here
    if not text.isascii() or not text.isdigit():
        raise BadRequest(f"priority must be an integer from 0 to {MAX_PRIORITY}, not {text!r}")
    priority = int(text)
    if priority > MAX_PRIORITY:
        raise BadRequest(f"priority must be an integer from 0 to {MAX_PRIORITY}, not {text!r}")
    return priority
