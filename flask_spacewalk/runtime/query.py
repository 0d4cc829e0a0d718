"""What the job listing asks a datastore for, and how its answer is made.

A datastore that lists jobs (``list_jobs``, see
:class:`~flask_spacewalk.runtime.protocols.JobLister`) takes a
:class:`JobQuery`, reads the ranges of its indexes that :meth:`JobQuery.plan`
names, and merges them with :func:`newest_first`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .status import JobStatus

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
    :param statuses: Only these statuses, values of
        :class:`~flask_spacewalk.runtime.status.JobStatus` (None: any).
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

    def __post_init__(self) -> None:
        # JobStatus members become their plain words: a database driver
        # may write an Enum by its name
        if self.statuses is not None:
            object.__setattr__(self, "statuses", frozenset(str(s) for s in self.statuses))

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


def job_summary(uuid: str, document: Any) -> dict[str, Any]:
    """The listing's fields of a job document (of any value an index may
    still name: what is not a dict has none of them)."""
    if not isinstance(document, dict):
        document = {}
    completeness = document.get("completeness", 0)
    code = document.get("resultCode", -1)
    return {
        "uuid": uuid,
        "jobType": document.get("jobType"),
        "status": JobStatus.of(document).value,
        "createdAt": document.get("createdAt"),
        "updatedAt": document.get("updatedAt"),
        "completeness": float(completeness) if isinstance(completeness, (int, float)) else 0.0,
        "result": int(code) if isinstance(code, (int, float)) else -1,
    }


def newest_first(
    ranges: Iterable[list[tuple[str, str, Any]]], limit: int
) -> list[dict[str, Any]]:
    """Merge ranges of ``(createdAt, uuid, document)`` into the first
    ``limit`` summaries, newest first.

    Python compares str by code point, which is the byte order of SQLite's
    BINARY collation, PostgreSQL's "C" and Redis's lex ranges.
    """
    rows = sorted((row for rows in ranges for row in rows), key=lambda r: (r[0], r[1]),
                  reverse=True)
    return [job_summary(uuid, doc) for _, uuid, doc in rows[:limit]]
