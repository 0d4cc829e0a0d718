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
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .. import errors
from ..runtime.encoding import MAX_DEPTH as MAX_DEPTH
from ..runtime.encoding import encode_value as encode_value
from ..runtime.protocols import Datastore, Value

# the listing's names lived here once: re-exported for code that imported them
from ..runtime.query import MAX_TYPE_PROBES as MAX_TYPE_PROBES
from ..runtime.query import JobQuery as JobQuery
from ..runtime.status import JOB_KEY_PREFIX as JOB_KEY_PREFIX
from ..runtime.status import STATUSES as STATUSES
from ..runtime.status import JobIndex, job_index


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


#: The least urgent priority a queue takes; 0 is the most urgent, and
#: every queue takes beanstalkd's range (32-bit unsigned).
MAX_PRIORITY = 2**32 - 1


def check_priority(priority: int) -> int:
    """``priority``, if every queue can take it.

    :raise ValueError: it is not an integer from 0 to :data:`MAX_PRIORITY`.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an integer, not {type(priority).__name__}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between 0 and {MAX_PRIORITY}")
    return priority


def check_count(count: int) -> int:
    """``count``, if ``reserve_in`` can claim that many entries.

    :raise ValueError: it is not a positive integer.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    return count


T = TypeVar("T")


def wait_for_entries(
    attempt: Callable[[], tuple[T | None, float | None]],
    timeout: float | None,
    sleep: Callable[[float], None],
    fallback: float,
) -> T | None:
    """``attempt()``'s first value that is not None, looking again after
    each ``sleep(seconds)`` (which a put ends early) for up to ``timeout``
    seconds (forever if None); None if none came.

    ``attempt`` also gives the seconds to the next delay or lease that runs
    out (None if there is none): the next look comes then, or after
    ``fallback`` seconds at the latest, so that a lost wake-up only delays.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found, next_event = attempt()
        if found is not None:
            return found
        wait = fallback if next_event is None else min(fallback, next_event)
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait = min(wait, remaining)
        if wait > 0:
            sleep(wait)


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



def delivery_filter(status: str | None, uuid: str | None, mark: str) -> tuple[str, list[str]]:
    """The ``WHERE`` clause (or ``""``) and its arguments of a delivery log
    listing in SQL, with ``mark`` as the driver's placeholder."""
    conditions, args = [], []
    if status is not None:
        conditions.append(f"status = {mark}")
        args.append(status)
    if uuid is not None:
        conditions.append(f"uuid = {mark}")
        args.append(uuid)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), args


def entry_stats(
    id: int, tube: str, pri: int, ttr: float, delay: float, created_at: float,
    ready_at: float, lease_until: float | None, reserves: int, timeouts: int,
    releases: int, *, now: float,
) -> dict[str, Any]:
    """beanstalkd's ``stats-job`` of an SQL queue's entry, from its columns
    as read at ``now`` (the SQLite and PostgreSQL queues keep the same)."""
    if lease_until is not None:
        state, left = "reserved", lease_until - now
    elif ready_at > now:
        state, left = "delayed", ready_at - now
    else:
        state, left = "ready", 0.0
    return {
        "id": id,
        "tube": tube,
        "state": state,
        "pri": pri,
        "age": int(now - created_at),
        "delay": _whole(delay),
        "ttr": _whole(ttr),
        "time-left": round(left, 3),
        "reserves": reserves,
        "timeouts": timeouts,
        "releases": releases,
    }


def _whole(value: float) -> float:
    """``value`` as an int when it is whole, as beanstalkd reports it."""
    return int(value) if float(value).is_integer() else value
