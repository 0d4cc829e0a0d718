"""The ``Prefer: wait=N`` header of RFC 7240 (SPEC section 9).

:func:`read_wait` finds the ``wait`` preference among every ``Prefer``
header of the request, each a comma-separated list of preferences with
optional parameters (``Prefer: respond-async, wait=10; foo=bar``). As RFC
7240 asks, what cannot be understood is ignored, never an error: a
``wait`` whose value is not a whole number of seconds (``wait=-1``,
``wait=1.5``, ``wait=soon``, ``wait`` alone) is no wait, and the request is
answered at once without ``Preference-Applied``. Only the first ``wait``
counts (RFC 7240 section 2). A longer wait than the app allows
(``SPACEWALK_MAX_WAIT``) is cut to that.
"""
from __future__ import annotations

import re

from flask import request

__all__ = ["preference_applied", "read_wait"]

# RFC 9110's token; a value is a token or a quoted string (RFC 7240 section 2)
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_NAME = re.compile(rf"\s*({_TOKEN})")
_VALUE = re.compile(rf"(?:\s*=\s*({_TOKEN}|\"(?:[^\"\\]|\\.)*\"))?\s*(?:;.*)?$", re.DOTALL)
#: More digits than this is more than any cap: no need to read them all.
_MAX_DIGITS = 9


def read_wait(max_wait: float) -> int | None:
    """The seconds the request prefers to wait, at most ``max_wait`` (in
    whole seconds); None when it states no ``wait`` preference this module
    understands."""
    # get, not getlist: the WSGI environ holds one value per header (a
    # server joins repeated ones), and getlist walks every header to find it
    header = request.headers.get("Prefer")
    if header is None:
        return None
    cap = max(int(max_wait), 0)
    for preference in _split(header):
        name = _NAME.match(preference)
        if name is None or name.group(1).lower() != "wait":
            continue
        match = _VALUE.match(preference, name.end())
        value = (match.group(1) or "") if match else ""
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if not value.isascii() or not value.isdigit():
            return None  # the first wait counts, understood or not
        value = value.lstrip("0") or "0"
        if len(value) > _MAX_DIGITS:
            return cap
        return min(int(value), cap)
    return None


def preference_applied(wait: int) -> dict[str, str]:
    """The ``Preference-Applied`` header of a request that waited."""
    return {"Preference-Applied": f"wait={wait}"}


def _split(header: str) -> list[str]:
    """The comma-separated preferences of one header, commas inside quoted
    strings kept."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in header:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]
