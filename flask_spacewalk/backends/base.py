"""What the backends share: datastore writes, held queue entries.

The protocol's four replacing writes differ only in two switches (create a
missing key or not, check a cas or not); a backend implements them all with
one :meth:`CasDatastore._write`.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..runtime.protocols import Value


class CasDatastore(ABC):
    """A datastore's exceptions and its replacing writes, built on ``_write``."""

    casException: type[Exception] = errors.CasMismatch
    lockedException: type[Exception] = errors.DocumentLocked
    existsException: type[Exception] = errors.DocumentExists

    @abstractmethod
    def read_with_cas(self, key: str) -> tuple[Value | None, int]:
        """The value of ``key`` and its cas; ``(None, 0)`` when missing."""

    @abstractmethod
    def _write(self, key: str, value: Value, cas: int | None, create: bool) -> int:
        """Write ``value`` under ``key`` and return the new cas.

        A ``cas`` of 0 or None writes unconditionally; a stale one, or one
        for a key that is gone, raises :attr:`casException`.

        :param create: create ``key`` when missing; otherwise return 0.
        """

    def read_many(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas, as :meth:`read_with_cas` gives them, in
        the order given; in one round trip where the store allows (not part
        of ZeroG's protocol: callers fall back to ``read_with_cas``)."""
        return [self.read_with_cas(key) for key in keys]

    def update(self, key: str, value: Value) -> bool:
        """Replace an existing key; ``False`` when it is missing."""
        return self._write(key, value, None, create=False) != 0

    def update_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        """Replace an existing key if ``cas`` is current."""
        new_cas = self._write(key, value, cas, create=False)
        return new_cas != 0, new_cas

    def set(self, key: str, value: Value) -> bool:
        """Create or replace ``key`` unconditionally."""
        self._write(key, value, None, create=True)
        return True

    def set_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        """Create or replace ``key`` if ``cas`` is current (or 0/None)."""
        return True, self._write(key, value, cas, create=True)


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


# -- job listing -----------------------------------------------------------------

#: Only keys with this prefix hold jobs (``zerog_job_<uuid>``).
JOB_KEY_PREFIX = "zerog_job_"
#: A job's statuses, derived from its document by :func:`job_status`.
STATUSES = ("queued", "running", "finished", "failed")
#: A query with more job types than this reads the createdAt index and
#: keeps the wanted types as a residual condition instead of reading one
#: jobType index range per type.
MAX_TYPE_PROBES = 8


@dataclass(frozen=True)
class JobQuery:
    """What :meth:`~flask_spacewalk.runtime.protocols.JobLister.list_jobs`
    lists: jobs newest first (``createdAt`` desc, then uuid desc).

    ``createdAt`` values are naive ISO-8601 strings written by
    ``datetime.isoformat()`` (the fraction left out when it is zero), so
    their string order is their time order; ``since`` must be written the
    same way.

    :param job_types: Only these job types (None: any).
    :param statuses: Only these statuses, of :data:`STATUSES` (None: any).
    :param since: Only jobs with ``createdAt >= since``.
    :param after: The keyset cursor: only jobs before ``(createdAt, uuid)``
        in the listing order.
    :param limit: At most this many jobs.
    """

    job_types: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    since: str | None = None
    after: tuple[str, str] | None = None
    limit: int = 50

    def plan(self) -> tuple[str, tuple[str | None, ...]]:
        """The index to read and its ranges: ``("status", statuses)``,
        ``("type", job_types)`` or ``("all", (None,))``.

        One range is read per value, newest first, and the ranges are
        merged. A status filter is always read from the status index
        (statuses are few); job types are read from the jobType index
        unless there are more than :data:`MAX_TYPE_PROBES`. A filter not
        read from its index is a residual condition, checked on each entry
        of the ranges read: cheap when most entries pass it.
        """
        if self.statuses is not None:
            return "status", tuple(sorted(self.statuses))
        if self.job_types is not None and len(self.job_types) <= MAX_TYPE_PROBES:
            return "type", tuple(sorted(self.job_types))
        return "all", (None,)


def job_status(document: Any) -> str:
    """A job document's status, one of :data:`STATUSES`.

    ``queued``: resultCode -1, not running; ``running``: resultCode -1 and
    ``running`` true; ``finished``: 0 <= resultCode < 400; ``failed``: any
    other resultCode (a cancelled job has 410), or none that is a number.
    The backends' indexes compute the same thing in SQL and Lua.
    """
    code = document.get("resultCode") if isinstance(document, dict) else None
    if not isinstance(code, (int, float)) or isinstance(code, bool):
        return "failed"
    if code == -1:
        return "running" if document.get("running") is True else "queued"
    return "finished" if 0 <= code < 400 else "failed"


def job_summary(uuid: str, document: dict[str, Any]) -> dict[str, Any]:
    """The listing's fields of a job document."""
    completeness = document.get("completeness", 0)
    code = document.get("resultCode", -1)
    return {
        "uuid": uuid,
        "jobType": document.get("jobType"),
        "status": job_status(document),
        "createdAt": document.get("createdAt"),
        "updatedAt": document.get("updatedAt"),
        "completeness": float(completeness) if isinstance(completeness, (int, float)) else 0.0,
        "result": int(code) if isinstance(code, (int, float)) else -1,
    }


def newest_first(
    ranges: Iterable[list[tuple[str, str, dict[str, Any]]]], limit: int
) -> list[dict[str, Any]]:
    """Merge ranges of ``(createdAt, uuid, document)`` into the first
    ``limit`` summaries, newest first.

    Python compares str by code point, which is the byte order of SQLite's
    BINARY collation, PostgreSQL's "C" and Redis's lex ranges.
    """
    rows = sorted((row for rows in ranges for row in rows), key=lambda r: (r[0], r[1]),
                  reverse=True)
    return [job_summary(uuid, doc) for _, uuid, doc in rows[:limit]]
