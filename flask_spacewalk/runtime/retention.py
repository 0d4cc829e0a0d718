"""Retention: deleting the jobs that ended long enough ago.

With ``SPACEWALK_RETENTION`` set, workers delete the ``finished``,
``failed`` and ``cancelled`` jobs last written (``updatedAt``) before the
cutoff, at most once a minute across the fleet (:class:`PeriodicPurge`);
``flask spacewalk purge`` does it on demand (:func:`purge`).

Jobs are found through the listing's status index, never by a scan: since
``updatedAt >= createdAt``, a job last written before the cutoff was
created before it, so each status's range is read from the cutoff
backwards, a batch at a time, and only the jobs last written before the
cutoff are kept. Each batch is read again with its cas and handed to
:meth:`Lifecycle.purge <flask_spacewalk.runtime.lifecycle.Lifecycle.purge>`,
which deletes only the jobs unchanged since, in one short transaction: a
job that a retry made live again, or that another purge deleted, is
skipped, with a warning naming it and why.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import NotSupported, SpacewalkError
from .lifecycle import Lifecycle
from .protocols import SpacewalkDatastore
from .query import JobQuery
from .records import utcnow
from .status import ENDED, JOB_KEY_PREFIX, JobStatus

log = logging.getLogger(__name__)

#: Jobs read, then deleted in one transaction, per batch. On SQLite a POST
#: may wait for that transaction (about 1.5 ms at 100, docs/performance.rst),
#: and a worker's next job for one batch.
BATCH = 100
#: Seconds from the end of one periodic purge to the start of the next,
#: whichever worker runs it.
PURGE_INTERVAL = 60.0
#: The datastore key of a service's purge lease is this and its queue name.
LEASE_PREFIX = "spacewalk_retention_"
#: The statuses a purge may delete, as words.
PURGEABLE = frozenset(status.value for status in ENDED)


@dataclass
class PurgeCount:
    """What a purge found and did.

    :param matched: jobs of the wanted statuses last written before the
        cutoff.
    :param deleted: those deleted (none in a dry run).
    :param skipped: those that changed between their read and their
        delete, left as they are.
    """

    matched: int = 0
    deleted: int = 0
    skipped: int = 0

    def __iadd__(self, other: PurgeCount) -> PurgeCount:
        self.matched += other.matched
        self.deleted += other.deleted
        self.skipped += other.skipped
        return self


def cutoff(older_than: float, now: datetime.datetime | None = None) -> str:
    """The ``updatedAt`` before which jobs are purged: ``older_than``
    seconds before ``now`` (naive UTC), written as job documents are."""
    return ((now or utcnow()) - datetime.timedelta(seconds=older_than)).isoformat()


def purge(
    lifecycle: Lifecycle,
    job_types: frozenset[str],
    before: str,
    statuses: Iterable[str] = PURGEABLE,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
) -> Iterator[PurgeCount]:
    """Delete the jobs of ``job_types`` and ``statuses`` last written
    before ``before`` (see :func:`cutoff`), a batch at a time.

    :param dry_run: count the jobs, delete nothing.
    :return: each batch's count, as it is done: the caller may stop or
        pause between two.
    :raises ValueError: a status that is not ``finished``, ``failed`` or
        ``cancelled``.
    :raises SpacewalkError: the datastore failed (what was deleted stays
        deleted; the next purge finds the rest).
    :raises NotSupported: the datastore cannot list jobs.
    """
    wanted = frozenset(str(status) for status in statuses)
    if not wanted or not wanted <= PURGEABLE:
        raise ValueError(f"only ended jobs are purged ({', '.join(sorted(PURGEABLE))}),"
                         f" not {', '.join(sorted(wanted - PURGEABLE)) or 'none'}")
    return _batches(lifecycle, job_types, before, wanted, dry_run, batch)


def _batches(
    lifecycle: Lifecycle,
    job_types: frozenset[str],
    before: str,
    wanted: frozenset[str],
    dry_run: bool,
    batch: int,
) -> Iterator[PurgeCount]:
    datastore = lifecycle.datastore
    # The listing's cursor is exclusive: (before, "") reads only the jobs
    # created before the cutoff, newest of them first.
    after = (before, "")
    while True:
        rows = datastore.list_jobs(JobQuery(job_types, wanted, None, after, batch))
        if not rows:
            return
        count = PurgeCount()
        old = {row["uuid"]: row["jobType"] for row in rows if _older(row["updatedAt"], before)}
        found = []
        documents = datastore.read_many([JOB_KEY_PREFIX + uuid for uuid in old])
        for uuid, (document, cas) in zip(old, documents):
            # as it is now, with the cas the delete is guarded by
            if (isinstance(document, dict) and JobStatus.of(document).value in wanted
                    and _older(document.get("updatedAt"), before)):
                found.append((uuid, cas, document.get("queueJobId")))
        count.matched = len(found)
        if found and not dry_run:
            deleted = lifecycle.purge(found)
            count.deleted = len(deleted)
            for uuid, _, _ in found:
                if uuid not in deleted:
                    count.skipped += 1
                    log.warning("job %s %s: not purged: %s", old[uuid], uuid,
                                _why_skipped(datastore, uuid))
        yield count
        if len(rows) < batch:
            return
        after = (rows[-1]["createdAt"], rows[-1]["uuid"])


def _older(updated_at: Any, before: str) -> bool:
    # A document without a str updatedAt is judged by its createdAt, which
    # the listing read before the cutoff.
    return not isinstance(updated_at, str) or updated_at < before


def _why_skipped(datastore: SpacewalkDatastore, uuid: str) -> str:
    """Why a job read for a purge was not deleted: it changed meanwhile."""
    try:
        document = datastore.read(JOB_KEY_PREFIX + uuid)
    except SpacewalkError:
        return "it changed since it was read"
    if document is None:
        return "it was deleted since it was read (by another purge?)"
    status = JobStatus.of(document).value
    return f"it was written since it was read (retried or rerun? now {status})"


class PeriodicPurge:
    """A worker's share of retention: one purge of the jobs ended more
    than ``retention`` seconds ago, started at most every ``interval``
    seconds by one worker of the fleet, and run a batch at a time by
    :meth:`step`, which the worker calls between jobs.

    The fleet agrees through a lease record in the datastore,
    ``spacewalk_retention_<queue>``: ``{"holder", "nextAt"}`` (naive UTC).
    A worker whose clock has passed ``nextAt`` claims the lease with a
    compare-and-swap write (a create when there is no record) setting
    ``nextAt`` an interval ahead: of workers racing, one wins. The holder
    renews it after each batch, so no other worker starts while its purge
    runs, and the next purge starts an interval after its last batch. A
    holder that dies leaves the lease to run out. A worker reads the
    record again only when its last read said a purge would be due (an
    interval at most).

    :param job_types: the job types the worker runs; only those are purged.
    :param name: the service's queue name, which names the lease.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        job_types: frozenset[str],
        retention: float,
        name: str,
        *,
        interval: float = PURGE_INTERVAL,
        batch: int = BATCH,
    ):
        self.lifecycle = lifecycle
        self.job_types = job_types
        self.retention = retention
        self.key = LEASE_PREFIX + name
        self.interval = interval
        self.batch = batch
        self._purge: Iterator[PurgeCount] | None = None
        self._total = PurgeCount()
        self._cas = 0
        self._next_look = 0.0  # time.monotonic() of the next read of the lease
        self._disabled = False

    def step(self) -> bool:
        """Purge one batch, if this worker holds the lease or may take it.

        Never raises: a failure ends this purge with a warning, and the
        next is due an interval later.

        :return: whether the purge goes on (call again soon).
        """
        try:
            if self._purge is None and not self._claim():
                return False
            assert self._purge is not None
            count = next(self._purge, None)
            if count is None:
                self._end()
                return False
            self._total += count
            if not self._renew():
                self._end("another worker took the lease over (this one stalled)")
                return False
            return True
        except NotSupported as exc:
            self._disabled = True
            self._end(f"{exc}; periodic purges are off")
        except SpacewalkError as exc:
            self._end(str(exc))
        except Exception:  # a bug must not end the worker: log it and go on
            log.exception("retention: the purge failed")
            self._end("see the error above")
        return False

    def _claim(self) -> bool:
        """Start a purge if the lease is free (one read, and one write to
        take it); False when it is another worker's or not due yet."""
        now = time.monotonic()
        if self._disabled or now < self._next_look:
            return False
        self._next_look = now + self.interval
        datastore = self.lifecycle.datastore
        wall = utcnow()
        record, cas = datastore.read_with_cas(self.key)
        next_at = record.get("nextAt") if isinstance(record, dict) else None
        if isinstance(next_at, str) and next_at > wall.isoformat():
            try:
                wait = (datetime.datetime.fromisoformat(next_at) - wall).total_seconds()
            except ValueError:
                wait = self.interval
            self._next_look = now + min(self.interval, wait)
            return False
        try:
            if cas:
                claimed, self._cas = datastore.update_with_cas(self.key, self._record(), cas)
                if not claimed:
                    return False
            else:
                datastore.create(self.key, self._record())
                self._cas = datastore.read_with_cas(self.key)[1]
        except (datastore.casException, datastore.existsException):
            return False  # another worker took it
        self._purge = purge(self.lifecycle, self.job_types, cutoff(self.retention),
                            batch=self.batch)  # fmt: skip
        return True

    def _renew(self) -> bool:
        """Move ``nextAt`` an interval ahead; False when the lease is lost."""
        datastore = self.lifecycle.datastore
        try:
            renewed, self._cas = datastore.update_with_cas(self.key, self._record(), self._cas)
        except datastore.casException:
            return False
        return renewed

    def _record(self) -> dict[str, Any]:
        next_at = utcnow() + datetime.timedelta(seconds=self.interval)
        return {"holder": f"{socket.gethostname()}:{os.getpid()}", "nextAt": next_at.isoformat()}

    def _end(self, failure: str | None = None) -> None:
        self._purge = None
        self._next_look = time.monotonic() + self.interval
        total, self._total = self._total, PurgeCount()
        if failure is not None:
            log.warning("retention: purge stopped after deleting %d job(s): %s",
                        total.deleted, failure)
        elif total.matched:
            log.info("retention: deleted %d job(s) ended more than %g s ago, %d skipped",
                     total.deleted, self.retention, total.skipped)
