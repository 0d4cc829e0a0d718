"""What a stored document may hold, and its JSON text.

Every datastore writes a value through :func:`encode_value`, so a document
round-trips through each of them alike: standard JSON only (no NaN or
Infinity), text that is Unicode (no lone surrogates) and that PostgreSQL
keeps (no NUL), string keys, and a bounded depth. The lifecycle checks a
job's queue options with it before anything is queued.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from .. import errors
from .protocols import Value

__all__ = ["MAX_DEPTH", "encode_value"]

#: The deepest nesting of objects and lists a stored value may have, the
#: value itself being level 1: well below what the stores' JSON parsers and
#: Python's recursion take (about 1,000 levels each).
MAX_DEPTH = 100

_CONTAINERS = (dict, list, tuple)
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Python refuses to write ints of more digits than its limit (4,300 by
#: default); only ints of more bits than this are tried.
_LONG_INT_BITS = 1000


#: Built once: json.dumps builds a new encoder at every call given options.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_value(value: Value) -> str:
    """``value`` as the JSON text a datastore stores, or an error naming
    what cannot be stored and where.

    Every datastore encodes its values here, so that a value is refused, or
    stored and read back the same, on every backend.

    :raise UnstorableValue: the value holds something standard JSON or one
        of the stores cannot hold (see :class:`~flask_spacewalk.errors.UnstorableValue`).
    """
    try:
        text = _ENCODER.encode(value)
    except (ValueError, TypeError, RecursionError) as exc:
        _refuse(value, str(exc) or type(exc).__name__)
    # json.dumps lets through what the text cannot show (a key that is not
    # a str becomes one, deep nesting): one walk over the containers checks
    # both. NUL and surrogates it writes as escapes, which the text shows;
    # only a value whose text shows one is walked again, to name the field.
    if not _nesting_ok(value, 1) or "\\u0000" in text or "\\ud" in text:
        _refuse(value, None)
    return text


def _nesting_ok(value: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str or (
                isinstance(item, _CONTAINERS) and not _nesting_ok(item, depth + 1)
            ):
                return False
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, _CONTAINERS) and not _nesting_ok(item, depth + 1):
                return False
    return True


def _refuse(value: Any, fallback: str | None) -> None:
    """Raise :exc:`UnstorableValue` for the first problem in ``value``;
    ``fallback`` is the message when the walk finds none (None: nothing to
    refuse, a str that only looked suspicious in the text)."""
    found = _problem(value, 1)
    if found is not None:
        parts, problem = found
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
        raise errors.UnstorableValue(path.lstrip("."), problem)
    if fallback is not None:
        raise errors.UnstorableValue("", fallback)


def _problem(value: Any, depth: int) -> tuple[list[str | int], str] | None:
    """The path (innermost part last) and problem of the first value in
    ``value`` that cannot be stored, or None."""
    if isinstance(value, str):
        return _text_problem(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value.bit_length() > _LONG_INT_BITS:
            try:
                str(value)
            except ValueError as exc:
                return [], f"an int too long for JSON text ({exc})"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (
            [], f"{value!r} is not a JSON number (NaN and Infinity are not standard JSON)")
    if isinstance(value, _CONTAINERS):
        if depth > MAX_DEPTH:
            return [], f"nested deeper than {MAX_DEPTH} levels of objects and lists"
        items: Iterable[tuple[Any, Any]] = (
            value.items() if isinstance(value, dict) else enumerate(value)
        )
        for key, item in items:
            if isinstance(value, dict):
                if not isinstance(key, str):
                    return [], f"the key {key!r} is a {type(key).__name__}, not a str"
                text = _text_problem(key)
                if text is not None:
                    return [], f"the key {key!r} {text[1]}"
            found = _problem(item, depth + 1)
            if found is not None:
                found[0].insert(0, key)
                return found
        return None
    return [], (
        f"a {type(value).__name__} is not a JSON value (a document holds dicts, lists,"
        " str, int, float, bool and None)"
    )


def _text_problem(text: str) -> tuple[list[str | int], str] | None:
    if "\x00" in text:
        return [], "a str holding a NUL character (\\x00), which PostgreSQL cannot store"
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        return [], (
            f"a str holding the lone surrogate {surrogate.group()!r}, which is not"
            " Unicode text"
        )
    return None
