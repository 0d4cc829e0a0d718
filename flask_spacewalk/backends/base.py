"""What the backends share: datastore writes, held queue entries.

The protocol's four replacing writes differ only in two switches (create a
missing key or not, check a cas or not); a backend implements them all with
one :meth:`CasDatastore._write`, and ``create`` with
:meth:`CasDatastore._create`. Each public write computes the document's
:class:`~flask_spacewalk.runtime.status.JobIndex` once and hands it to the
backend, which stores it in its listing indexes as given.
"""
from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import errors
from ..runtime.protocols import Datastore, Value

# the listing's names lived here once: re-exported for code that imported them
from ..runtime.query import MAX_TYPE_PROBES as MAX_TYPE_PROBES
from ..runtime.query import JobQuery as JobQuery
from ..runtime.status import JOB_KEY_PREFIX as JOB_KEY_PREFIX
from ..runtime.status import STATUSES as STATUSES
from ..runtime.status import JobIndex, job_index

#: The deepest nesting of objects and lists a stored value may have, the
#: value itself being level 1: well below what the stores' JSON parsers and
#: Python's recursion take (about 1,000 levels each).
MAX_DEPTH = 100

_CONTAINERS = (dict, list, tuple)
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Python refuses to write ints of more digits than its limit (4,300 by
#: default); only ints of more bits than this are tried.
_LONG_INT_BITS = 1000


def encode_value(value: Value) -> str:
    """``value`` as the JSON text a datastore stores, or an error naming
    what cannot be stored and where.

    Every datastore encodes its values here, so that a value is refused, or
    stored and read back the same, on every backend.

    :raise UnstorableValue: the value holds something standard JSON or one
        of the stores cannot hold (see :class:`~flask_spacewalk.errors.UnstorableValue`).
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        _refuse(value, str(exc) or type(exc).__name__)
    # json.dumps lets through what the text cannot show (a key that is not
    # a str becomes one, deep nesting) and writes NUL and surrogates as
    # escapes; only a value that may hold one of these is walked in full.
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


class CasDatastore(ABC):
    """A datastore's exceptions and its writes, built on ``_write`` and
    ``_create``.

    Every write, ZeroG's included, goes through the public methods here,
    which compute the listing's entry of the value (:func:`job_index`, None
    when it is no job document) and pass it on.
    """

    casException: type[Exception] = errors.CasMismatch
    lockedException: type[Exception] = errors.DocumentLocked
    existsException: type[Exception] = errors.DocumentExists

    @abstractmethod
    def read_with_cas(self, key: str) -> tuple[Value | None, int]:
        """The value of ``key`` and its cas; ``(None, 0)`` when missing."""

    @abstractmethod
    def _write(
        self, key: str, value: Value, cas: int | None, create: bool, index: JobIndex | None
    ) -> int:
        """Write ``value`` under ``key`` and return the new cas.

        A ``cas`` of 0 or None writes unconditionally; a stale one, or one
        for a key that is gone, raises :attr:`casException`.

        :param create: create ``key`` when missing; otherwise return 0.
        :param index: what the job listing indexes of ``value`` (None: take
            ``key`` out of the listing).
        """

    @abstractmethod
    def _create(self, key: str, value: Value, index: JobIndex | None) -> None:
        """Store a new ``key``; raise :attr:`existsException` when it exists.

        :param index: as for :meth:`_write`.
        """

    def read_many(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas, as :meth:`read_with_cas` gives them, in
        the order given; in one round trip where the store allows (not part
        of ZeroG's protocol: callers fall back to ``read_with_cas``)."""
        return [self.read_with_cas(key) for key in keys]

    def create(self, key: str, value: Value) -> bool:
        """Store a new key; raise :attr:`existsException` when it exists."""
        self._create(key, value, job_index(key, value))
        return True

    def update(self, key: str, value: Value) -> bool:
        """Replace an existing key; ``False`` when it is missing."""
        return self._write(key, value, None, False, job_index(key, value)) != 0

    def update_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        """Replace an existing key if ``cas`` is current."""
        new_cas = self._write(key, value, cas, False, job_index(key, value))
        return new_cas != 0, new_cas

    def set(self, key: str, value: Value) -> bool:
        """Create or replace ``key`` unconditionally."""
        self._write(key, value, None, True, job_index(key, value))
        return True

    def set_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        """Create or replace ``key`` if ``cas`` is current (or 0/None)."""
        return True, self._write(key, value, cas, True, job_index(key, value))


class BaseQueue:
    """What the queues of this package have where their store offers
    nothing better."""

    def put_with_document(
        self,
        datastore: Datastore,
        key: str,
        document: Callable[[int], dict[str, Any]],
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> tuple[int, int] | None:
        """None: this queue cannot write a datastore; the job is stored, then
        queued."""
        return None


def same_body(body: str, data: Any) -> bool:
    """Whether a queue entry's JSON ``body`` encodes ``data``."""
    try:
        return bool(json.loads(body) == data)
    except ValueError:
        return False


def lease_seconds(ttr: float | None, default_ttr: float) -> float:
    """The lease a ``put`` gives its entry: ``ttr``, or the queue's default.

    :raise ValueError: the lease is not positive.
    """
    ttr = default_ttr if ttr is None else ttr
    if ttr <= 0:
        raise ValueError("ttr must be positive")
    return ttr


class HeldEntry:
    """A reserved queue entry of a backend that tracks holders itself.

    Its holder may delete, release or touch it until another worker
    reserves it, and after that these raise
    :exc:`~flask_spacewalk.errors.EntryNotReserved`. A holder whose lease ran
    out may still act while nobody else has taken the entry: ``touch`` then
    reserves it again. After its own ``release`` a holder may still
    ``delete`` the entry (as beanstalkd lets anyone delete a ready entry),
    but ``touch`` and ``release`` raise.

    Subclasses implement ``delete``, ``release`` and ``touch``; the queue
    provides ``queueName`` and ``_entry_stats(id)``.
    """

    def __init__(self, queue: Any, id: int, body: str, reserves: int, releases: int) -> None:
        self.id = id
        self.body = body
        self._queue = queue
        # The entry's counts when this holder reserved it: another reserve
        # or a release changes them, and so ends this holder's rights.
        self._reserves = reserves
        self._releases = releases

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} of {self._queue.queueName!r}>"

    def stats(self) -> dict[str, Any]:
        """beanstalkd's ``stats-job``: ``state``, ``reserves``, ``age``...

        ``age`` is whole seconds; ``time-left`` is seconds to the end of the
        lease or delay, to the millisecond.
        """
        return self._queue._entry_stats(self.id)  # type: ignore[no-any-return]

