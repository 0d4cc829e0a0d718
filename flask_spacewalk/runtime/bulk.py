"""Acting on the jobs a listing query selects: the batches of the API's bulk
retry and cancel (``POST R/jobs/retry``, ``POST R/jobs/cancel``).

:func:`act_on_jobs` reads the listing index a batch at a time (never the
whole store), reads each batch's documents in one round trip and hands each
job to an action, which re-checks it as it writes (the lifecycle's
transitions are guarded writes): a job that changed since it was read is
counted but left alone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from .job import make_key
from .protocols import SpacewalkDatastore
from .query import JobQuery

#: Jobs read from the listing index, and documents read, per round trip.
BATCH = 500

#: An action on one stored job: its document and cas as read; whether it
#: changed the job.
Action = Callable[[dict[str, Any], int], bool]


@dataclass
class BulkResult:
    """What :func:`act_on_jobs` came to."""

    #: The jobs read (each one the query selects).
    matched: int = 0
    #: Those the action changed.
    done: int = 0
    #: ``(createdAt, uuid)`` of the last job read when more may follow:
    #: the next call's ``query.after``; None when the query is exhausted.
    next: tuple[str, str] | None = None


def act_on_jobs(
    datastore: SpacewalkDatastore,
    query: JobQuery,
    action: Action | None,
    batch: int = BATCH,
) -> BulkResult:
    """Call ``action`` on each of the first ``query.limit`` jobs ``query``
    selects, newest first; with no ``action`` (a dry run) only count them.

    A job whose document is gone, or is no dict, by the time it is read
    counts as matched and not done.

    :raises NotSupported: the datastore cannot list jobs.
    """
    result = BulkResult()
    after, left = query.after, query.limit
    while left > 0:
        size = min(batch, left)
        # one more than the batch: whether anything follows it
        jobs = datastore.list_jobs(dataclasses.replace(query, after=after, limit=size + 1))
        page = jobs[:size]
        result.matched += len(page)
        left -= len(page)
        if action is not None and page:
            stored = datastore.read_many([make_key(job["uuid"]) for job in page])
            for document, cas in stored:
                if isinstance(document, dict) and action(document, cas):
                    result.done += 1
        if len(jobs) <= size:
            return result
        after = (page[-1]["createdAt"], page[-1]["uuid"])
    result.next = after
    return result
