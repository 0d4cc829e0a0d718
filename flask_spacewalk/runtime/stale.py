"""Queued jobs whose queue entry is gone, and putting them back.

A queue that loses entries (beanstalkd restarted without a binlog, a Redis
without persistence, an entry deleted by hand) leaves their documents saying
``queued`` for ever: no worker will see them. :func:`requeue_stale` finds
them through the listing index (status ``queued``, oldest ``createdAt``
first excluded by the cutoff, in batches) and has
:meth:`Lifecycle.requeue_stale <flask_spacewalk.runtime.lifecycle.Lifecycle.requeue_stale>`
enqueue each again.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .job import make_key
from .lifecycle import Lifecycle
from .protocols import SpacewalkDatastore, SpacewalkQueue
from .query import JobQuery
from .records import utcnow
from .registry import JobRegistry
from .status import JobStatus

log = logging.getLogger(__name__)

#: Jobs read from the listing index per query.
BATCH = 500


@dataclass
class StaleJob:
    """A queued job with no queue entry, and what was done about it.

    :param queue_job_id: the ``queueJobId`` its document names (None when
        it has none; -1 when it was marked unenqueueable at POST).
    :param new_id: the id of its new entry; None in a dry run or when it
        changed while being requeued (then ``skipped`` says why).
    """

    uuid: str
    job_type: str
    updated_at: str
    queue_job_id: Any
    new_id: int | None = None
    skipped: str | None = None


def requeue_stale(
    datastore: SpacewalkDatastore,
    queue: SpacewalkQueue,
    registry: JobRegistry,
    older_than: float,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    now: datetime.datetime | None = None,
) -> Iterator[StaleJob]:
    """Enqueue again the queued jobs of ``registry``'s types that were not
    written for ``older_than`` seconds and whose queue entry is gone.

    A job whose entry still exists (ready, delayed or reserved) is left
    alone, so it is never queued twice; a job that changes while it is
    requeued (a worker, a cancel, another requeue) is skipped. The new entry
    keeps the job's ``queueKwargs`` (priority, lease) and what is left of
    its delay.

    :param dry_run: find and report, change nothing.
    :return: the stale jobs, as they are found (and requeued).
    :raises SpacewalkError: the datastore or queue failed (a job being
        requeued then stays stale, found again by the next call).
    :raises NotSupported: the datastore cannot list jobs, or the queue
        cannot tell whether an entry exists (ZeroG's: see
        :mod:`~flask_spacewalk.runtime.adapters`).
    """
    now = now or utcnow()
    lifecycle = Lifecycle(datastore, queue, registry)
    cutoff = (now - datetime.timedelta(seconds=older_than)).isoformat()
    types = frozenset(job_class.JOB_TYPE for job_class in registry.get_registered_classes())
    # The listing's cursor is exclusive: (cutoff, "") reads only the jobs
    # created before the cutoff, newest of them first.
    after = (cutoff, "")
    while True:
        rows = datastore.list_jobs(
            JobQuery(types, frozenset({JobStatus.QUEUED.value}), None, after, batch)
        )
        for row in rows:
            if row["updatedAt"] is not None and row["updatedAt"] >= cutoff:
                continue
            stale = _check(lifecycle, registry, row["uuid"], cutoff, now, dry_run)
            if stale is not None:
                yield stale
        if len(rows) < batch:
            return
        after = (rows[-1]["createdAt"], rows[-1]["uuid"])


def _check(
    lifecycle: Lifecycle,
    registry: JobRegistry,
    uuid: str,
    cutoff: str,
    now: datetime.datetime,
    dry_run: bool,
) -> StaleJob | None:
    datastore, queue = lifecycle.datastore, lifecycle.queue
    data, cas = datastore.read_with_cas(make_key(uuid))
    if not isinstance(data, dict) or JobStatus.of(data) is not JobStatus.QUEUED:
        return None  # ended or started since it was listed
    updated_at = str(data.get("updatedAt"))
    if updated_at >= cutoff:
        return None
    queue_job_id = data.get("queueJobId")
    if isinstance(queue_job_id, int) and queue.has_entry(queue_job_id, uuid):
        return None
    stale = StaleJob(uuid, str(data.get("jobType")), updated_at, queue_job_id)
    if dry_run:
        return stale
    kwargs = _queue_kwargs(data.get("queueKwargs"), updated_at, now)
    job = registry.stored_job(uuid, data, cas, datastore, queue)
    if not lifecycle.requeue_stale(job, **kwargs):
        stale.skipped = "it changed while being requeued"
        return stale
    stale.new_id = job.queueJobId
    return stale


def _queue_kwargs(stored: Any, updated_at: str, now: datetime.datetime) -> dict[str, Any]:
    """The stored ``queueKwargs`` with what is left of the delay."""
    kwargs = dict(stored) if isinstance(stored, dict) else {}
    delay = kwargs.get("delay")
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        try:
            queued_at = datetime.datetime.fromisoformat(updated_at)
        except ValueError:
            queued_at = now
        kwargs["delay"] = max(0.0, delay - (now - queued_at).total_seconds())
    return kwargs

