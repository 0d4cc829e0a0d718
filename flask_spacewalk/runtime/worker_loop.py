"""The worker: reserve a queue entry, load its job, run it, record the outcome.

The semantics are ZeroG's (SPEC section 5), with its constants as class
attributes so a deployment can override them. Two things are added: the
lease of the entry is renewed in the background while a job runs, so a long
job is never handed to a second worker, and a job that already has its final
result is never run again (a worker that died between recording a result and
deleting the entry leaves such an entry behind).

With a ``heartbeat``, the worker keeps a record of itself in the datastore
and obeys the operator's drain and retire requests
(:mod:`~flask_spacewalk.runtime.heartbeat`).

The worker keeps the loop, the leases, the signals and the cancel watch,
and runs the periodic purge of old jobs a batch at a time between jobs;
every transition of a job (start, run, finish, recovery, the settling of
its entry) is :class:`~flask_spacewalk.runtime.lifecycle.Lifecycle`'s.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any, Callable

from .. import defaults
from ..errors import (
    DatastoreUnavailable,
    EntryNotReserved,
    InvalidJobDocument,
    JobNotFound,
    QueueError,
    SpacewalkError,
    UnknownJobType,
)
from .adapters import as_datastore, as_queue
from .cancel import (
    CancelWatch,
    StopReason,
    cancel_key,
    main_thread_interrupter,
    on_interrupt_signal,
)
from .delivery import DeliverySender
from .durations import DurationRecorder
from .heartbeat import Activity, Heartbeat
from .job import RuntimeJob, make_key
from .lifecycle import DEFAULT_REQUEUE_DELAY, ERROR_RETRY_DELAY, Claim, Lifecycle
from .outcome import NO_RESULT
from .protocols import (
    Datastore,
    DocumentEntry,
    Queue,
    QueueEntry,
    SpacewalkDatastore,
    SpacewalkQueue,
)
from .queue_control import PauseWatch
from .registry import JobRegistry
from .retention import BATCH, PURGE_INTERVAL, PeriodicPurge
from .status import JobStatus
from .webhooks import WebhookRecorder

log = logging.getLogger(__name__)


#: Longest wait for a stuck job's cancellation to be recorded before exiting.
GIVE_UP_TIMEOUT = 10.0
#: The most entries a worker claims at once (``--batch``): each one claimed
#: and not run is a job a crash delays by its lease.
MAX_BATCH = 1000


class WorkerShutdown(BaseException):
    """Raised inside a running job when the shutdown grace period is over."""


class LeaseKeeper:
    """Renews the lease of the entry being worked on, in the background.

    One thread per worker serves every entry in turn (starting a thread per
    job cost about a fifth of a no-op job). While :meth:`holding` an entry,
    the job's own :meth:`RuntimeJob.keep_alive` calls :meth:`touch`, which
    is throttled so that frequent progress reports cost no extra writes, and
    the thread renews the lease every ``ttr / 3`` seconds and calls
    :attr:`watcher`, when set, every ``poll_interval`` seconds (the worker's
    watch for a cancel request and a timeout), and at the times
    :meth:`call_at` asks for.
    """

    def __init__(self, ttr: float, poll_interval: float | None = None):
        self.interval = max(0.05, ttr / 3)
        self._wake = self.interval if poll_interval is None else min(self.interval, poll_interval)
        self._min_gap = max(0.01, ttr / 10)
        self._lock = threading.Lock()  # guards the entry and its touches
        self._changed = threading.Condition(threading.Lock())
        self._entry: QueueEntry | None = None
        self._last = self._renew_at = 0.0
        self._call_at: float | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        self.lost = False
        self.watcher: Callable[[], None] | None = None
        self._waiting: list[QueueEntry] = []
        self._waiting_renew_at = 0.0

    @contextlib.contextmanager
    def holding(self, entry: QueueEntry) -> Iterator[LeaseKeeper]:
        """Keep ``entry``'s lease until the block ends."""
        with self._lock:
            self._entry = entry
            self.lost = False
            self.watcher = None
            self._call_at = None
            self._last = time.monotonic()
            self._renew_at = self._last + self.interval
        self._start()
        try:
            yield self
        finally:
            with self._lock:
                self._entry = None
                self.watcher = None

    @contextlib.contextmanager
    def waiting(self, entries: list[QueueEntry]) -> Iterator[None]:
        """Keep the leases of ``entries`` too (a batch's claims not run yet:
        the caller takes them off the list as it runs them) until the block
        ends, renewing them every ``ttr / 3`` seconds whatever runs."""
        with self._lock:
            self._waiting = entries
            self._waiting_renew_at = time.monotonic() + self.interval
        self._start()
        try:
            yield
        finally:
            with self._lock:
                self._waiting = []

    def _touch_waiting(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for entry in waiting:
            try:
                entry.touch()
            except EntryNotReserved:
                # its job may run twice (at least once, as after any lease lost)
                log.warning("lost the lease of waiting queue entry %s", entry.id)
            except QueueError as exc:
                log.warning("cannot renew waiting queue entry %s: %s", entry.id, exc)

    def touch(self, force: bool = False) -> None:
        """Renew the lease unless it was renewed a moment ago."""
        with self._lock:
            entry = self._entry
            now = time.monotonic()
            if entry is None or self.lost or (not force and now - self._last < self._min_gap):
                return
            try:
                entry.touch()
            except EntryNotReserved:
                self.lost = True
                log.warning("lost the lease of queue entry %s", entry.id)
                return
            except QueueError as exc:
                # An outage: the next tick tries again; the lease may run
                # out meanwhile, which hands the job to another worker.
                log.warning("cannot renew queue entry %s: %s", entry.id, exc)
                return
            self._last = now

    def call_at(self, when: float) -> None:
        """Call the watcher at ``when`` (a ``time.monotonic()`` time) too,
        if that comes before its next regular call (a run's deadline)."""
        with self._changed:
            if self._call_at is None or when < self._call_at:
                self._call_at = when
                self._changed.notify_all()

    def close(self) -> None:
        """Stop the thread (the keeper starts it again if used again)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None and self._pid == os.getpid():
            thread.join()
        self._closed = False

    def _start(self) -> None:
        if self._thread is None or self._pid != os.getpid():  # none, or the parent's
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="spacewalk-lease", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._closed:
                    return
                wait = self._wake
                if self._call_at is not None:
                    wait = max(0.0, min(wait, self._call_at - time.monotonic()))
                self._changed.wait(wait)
                if self._closed:
                    return
                if self._call_at is not None and time.monotonic() >= self._call_at:
                    self._call_at = None
            if self._waiting and time.monotonic() >= self._waiting_renew_at:
                self._touch_waiting()
                self._waiting_renew_at = time.monotonic() + self.interval
            entry = self._entry
            if entry is None:
                continue
            if time.monotonic() >= self._renew_at:
                self.touch(force=True)
                self._renew_at = time.monotonic() + self.interval
            watcher = self.watcher
            if watcher is not None:
                try:
                    watcher()
                except Exception:  # never let it end the lease renewals
                    log.exception("watcher of queue entry %s failed", entry.id)


class Worker:
    """Reserves entries from one queue and runs their jobs, one at a time.

    :param registry: the job classes this worker runs.
    :param make_datastore: builds this process's datastore (called lazily,
        after any fork).
    :param make_queue: builds this process's queue from its name.
    :param queue_name: ``<service>_jobs``.
    :param ttr: the lease renewal assumes entries have this time-to-run.
    :param job_context: a context manager factory every job runs in (a
        Flask app context, for instance).
    :param max_jobs: exit after this many jobs (the supervisor starts a
        fresh process), for job code that leaks.
    :param max_memory: exit after a job once the resident set is above this
        many bytes.
    :param parent_pid: stop when this process (the supervisor) is gone.
    :param cancel_grace: seconds a cancelled job has to reach a progress
        call before it is stopped by force (see :func:`install_cancel_handler`).
    :param retention: delete the jobs of this worker's types that ended
        this many seconds ago (``SPACEWALK_RETENTION``), a batch between two
        jobs, one worker of the fleet every :attr:`PURGE_INTERVAL` seconds
        (:class:`~flask_spacewalk.runtime.retention.PeriodicPurge`); None
        keeps every job.
    :param heartbeat: seconds between two writes of this worker's record,
        which also reads the drain and retire requests; None: keep no record
        and take no requests (a worker run inside a test, say). It is also
        the time between two reads of whether the queue is paused
        (:data:`~flask_spacewalk.defaults.HEARTBEAT` when None), and between
        two flushes of the run durations (:attr:`durations`) to the
        datastore; they are flushed when :meth:`run` returns too.
    :param service: the service name the record shows (default: the queue
        name without its ``_jobs``).
    :param batch: claim up to this many ready entries at a time, in one
        transaction, and run their jobs one after another, keeping all their
        leases (docs/runtime.rst, "Batched claims"); a crash re-runs the
        unfinished ones when their leases run out. Only a queue that shares
        the datastore's database (SQLite, PostgreSQL, Redis) claims in
        batches; another claims one entry at a time.
    """

    #: Delete an unloadable entry once it was reserved more often than this.
    MAX_RESERVES = 3
    #: ... or timed out more often than this.
    MAX_TIMEOUTS = 2
    #: Seconds before an unloadable entry is tried again.
    LOAD_RETRY_DELAY = 30.0
    #: Seconds before a job that raised is run again.
    ERROR_RETRY_DELAY = ERROR_RETRY_DELAY
    #: Seconds before a ``NO_RESULT`` job runs again when it gave no delay.
    DEFAULT_REQUEUE_DELAY = DEFAULT_REQUEUE_DELAY
    #: How long one reserve call waits before the loop checks its flags.
    RESERVE_TIMEOUT = 1.0
    #: Longest pause after the datastore or queue fails.
    MAX_BACKOFF = 30.0
    #: Seconds between two reads of a running job's cancel request.
    CANCEL_POLL_INTERVAL = 1.0
    #: Longest wait, after stopping a cancelled or timed-out job by force,
    #: for the job to return before the process records its end and exits
    #: (the wait is the cancel grace when that is shorter).
    CANCEL_EXIT_DELAY = 5.0
    #: Exit code of a process that gave up on a job stuck after its cancel
    #: or timeout.
    EXIT_STUCK_JOB = 3
    #: The signal that stops a cancelled or timed-out job by force.
    CANCEL_SIGNAL = signal.SIGUSR1
    #: Seconds between two purges of old jobs, across the fleet.
    PURGE_INTERVAL = PURGE_INTERVAL
    #: Old jobs deleted between two jobs.
    PURGE_BATCH = BATCH

    def __init__(
        self,
        registry: JobRegistry,
        make_datastore: Callable[[], Datastore],
        make_queue: Callable[[str], Queue],
        queue_name: str,
        *,
        ttr: float = defaults.JOB_TTR,
        job_context: Callable[[], ContextManager[Any]] | None = None,
        max_jobs: int | None = None,
        max_memory: int | None = None,
        parent_pid: int | None = None,
        cancel_grace: float = defaults.CANCEL_GRACE,
        retention: float | None = None,
        heartbeat: float | None = None,
        service: str | None = None,
        webhooks: WebhookRecorder | None = None,
        batch: int = 1,
    ):
        check_batch(batch)
        if cancel_grace <= 0:
            raise ValueError("cancel_grace must be > 0")
        if retention is not None and not retention > 0:
            raise ValueError("retention must be > 0 seconds, or None")
        self.registry = registry
        self.make_datastore = make_datastore
        self.make_queue = make_queue
        self.queue_name = queue_name
        self.ttr = ttr
        self.job_context = job_context or contextlib.nullcontext
        self.max_jobs = max_jobs
        self.batch = batch
        self._warned_batch = False
        self.max_memory = max_memory
        self.parent_pid = parent_pid
        self.cancel_grace = cancel_grace
        #: Records each job end's webhook deliveries; a thread of this
        #: process sends them (:mod:`~flask_spacewalk.runtime.delivery`).
        self.webhooks = webhooks
        self._sender: DeliverySender | None = None
        self.retention = retention
        #: The durations of this process's runs that recorded a result.
        self.durations = DurationRecorder()
        self._run_seconds: float | None = None
        #: Set by :func:`install_cancel_handler`: stop cancelled and timed-out
        #: jobs by force.
        self.force_cancel = False
        self.jobs_done = 0
        self.stopping = False
        self._datastore: SpacewalkDatastore | None = None
        self._queue: SpacewalkQueue | None = None
        self._lifecycle: Lifecycle | None = None
        self._purge: PeriodicPurge | None = None
        self._backoff = 0.0
        self._lease = LeaseKeeper(ttr, self.CANCEL_POLL_INTERVAL)
        self.heartbeat_interval = heartbeat
        self.service = service or queue_name.removesuffix("_jobs")
        #: What this worker runs, for its record.
        self.activity = Activity()
        #: Set when a retire request stopped the worker.
        self.retired = False
        self._heartbeat: Heartbeat | None = None
        self._beat = float(defaults.HEARTBEAT if heartbeat is None else heartbeat)
        self._pause_watch = PauseWatch(queue_name, self._beat)

    @property
    def datastore(self) -> SpacewalkDatastore:
        if self._datastore is None:
            self._datastore = as_datastore(self.make_datastore())
        return self._datastore

    @property
    def queue(self) -> SpacewalkQueue:
        if self._queue is None:
            self._queue = as_queue(self.make_queue(self.queue_name))
        return self._queue

    @property
    def lifecycle(self) -> Lifecycle:
        """The owner of every transition of this worker's jobs (made at
        first use, with the retry delays as then set on the worker)."""
        if self._lifecycle is None:
            self._lifecycle = Lifecycle(
                self.datastore,
                self.queue,
                self.registry,
                error_retry_delay=self.ERROR_RETRY_DELAY,
                default_requeue_delay=self.DEFAULT_REQUEUE_DELAY,
                job_context=self._timed_run,
                webhooks=self.webhooks,
            )
        return self._lifecycle

    @contextlib.contextmanager
    def _timed_run(self) -> Iterator[None]:
        """The job context, timing exactly the ``run()`` call inside it (a
        forked child of the job exits inside, never reaching ``finally``)."""
        started = time.monotonic()
        try:
            with self.job_context():
                yield
        finally:
            self._run_seconds = time.monotonic() - started

    # -- the loop ------------------------------------------------------------

    def run(self, *, burst: bool = False) -> None:
        """Run jobs until stopped, recycled, retired, or (``burst``) the
        queue is empty (or the worker drained)."""
        if self.heartbeat_interval is not None:
            self._heartbeat = Heartbeat(
                self.datastore, self.heartbeat_interval, service=self.service,
                queue=self.queue_name, activity=self.activity, memory=resident_memory,
                on_retire=self._retire,
            )  # fmt: skip
            self._heartbeat.start()
        if self.webhooks is not None and self.webhooks.webhooks:
            self._sender = DeliverySender(self.datastore, self.webhooks.webhooks)
            self.webhooks.on_record = self._sender.wake
            self._sender.start()
        try:
            with self.durations.flushing(self._beat, lambda: self.datastore):
                self._run_loop(burst)
        finally:
            self._lease.close()
            if self._heartbeat is not None:
                self._heartbeat.stop()
            if self._sender is not None:
                self._sender.stop()

    def _run_loop(self, burst: bool) -> None:
        while not self.stopping:
            purging = self._purge_step()
            if self._drained(0 if burst else self.RESERVE_TIMEOUT):
                if burst or self._orphaned():
                    return
                continue
            if self._pause_watch.paused(self.datastore):
                if burst or self._orphaned():
                    return
                time.sleep(min(self.RESERVE_TIMEOUT, self._pause_watch.time_left()))
                continue
            # never waiting past the next look at the pause, so that a
            # pause stops the reserves within a heartbeat
            timeout = min(self.RESERVE_TIMEOUT, self._pause_watch.time_left())
            try:
                claims = self._claim(0 if burst or purging else timeout)
            except QueueError as exc:
                self._pause(f"queue {self.queue_name} unavailable: {exc}")
                continue
            if not claims:
                if not purging and (burst or self._orphaned()):
                    return
                continue
            if self._run_claims(claims):
                return

    def _claim(self, timeout: float) -> list[Claim]:
        """The next entries, up to :attr:`batch`, claimed with their jobs
        in one transaction where the queue shares the datastore's database;
        else the next entry as reserved."""
        claims = self.lifecycle.claim(self.batch, timeout)
        if claims is not None:
            return claims
        if self.batch > 1 and not self._warned_batch:
            self._warned_batch = True
            log.warning("queue %s cannot claim in batches (only a queue in the datastore's "
                        "database can); claiming one entry at a time", self.queue_name)
        entry = self.queue.reserve(timeout=timeout)
        return [] if entry is None else [Claim(entry)]

    def _run_claims(self, claims: list[Claim]) -> bool:
        """Run the jobs of ``claims`` one after another, keeping the leases
        of those waiting, and give back those not run when the worker
        stops, drains or recycles meanwhile.

        :return: whether the worker leaves its loop (recycled, orphaned).
        """
        pending = list(claims)
        waiting = [claim.entry for claim in pending]
        leave = False
        with self._lease.waiting(waiting):
            try:
                while pending and not self.stopping and not self._holding_back():
                    claim = pending.pop(0)
                    waiting.remove(claim.entry)
                    self._run_claim(claim, pending[0] if pending else None)
                    self.jobs_done += 1
                    if self._should_recycle() or self._orphaned():
                        leave = True
                        break
            finally:
                # released, not left to their leases: another worker runs
                # them now (a crash leaves them until their leases run out)
                for claim in pending:
                    self.lifecycle.release_claim(claim)
        return leave

    def _holding_back(self) -> bool:
        """Whether claimed entries are to be given back instead of run: a
        drain or retire request came (perhaps while the claim waited), or
        the queue was paused meanwhile."""
        heartbeat = self._heartbeat
        if heartbeat is not None and (heartbeat.draining or heartbeat.retiring):
            return True
        return self._pause_watch.paused(self.datastore)

    def _purge_step(self) -> bool:
        """One batch of the periodic purge of old jobs, when one is due or
        running: between two jobs, so a job waits one batch at most.

        :return: whether the purge goes on (the queue is then not waited on).
        """
        if self.retention is None:
            return False
        if self._purge is None:
            types = frozenset(cls.JOB_TYPE for cls in self.registry.get_registered_classes())
            self._purge = PeriodicPurge(self.lifecycle, types, self.retention, self.queue_name,
                                        interval=self.PURGE_INTERVAL,
                                        batch=self.PURGE_BATCH)  # fmt: skip
        return self._purge.step()

    def stop(self) -> None:
        """Finish the current job, then leave :meth:`run`."""
        self.stopping = True

    def _retire(self) -> None:
        """Stop for good: a retire request was read (the heartbeat's thread)."""
        self.retired = True
        self.stop()

    def _drained(self, wait: float) -> bool:
        """Whether the worker is draining; if so, wait up to ``wait`` seconds
        for that to change (or for a stop) first."""
        heartbeat = self._heartbeat
        if heartbeat is None:
            return False
        heartbeat.changed.clear()
        if not heartbeat.draining:
            return False
        heartbeat.changed.wait(wait)
        return True

    def _pause(self, reason: str) -> None:
        self._backoff = min(self.MAX_BACKOFF, max(0.1, self._backoff * 2))
        log.warning("%s; retrying in %.1f s", reason, self._backoff)
        time.sleep(self._backoff)

    def _back_off(self, entry: QueueEntry, reason: str) -> None:
        """Give ``entry`` back, ready when this pause ends, and pause.

        The job comes back as soon as the backend does, at most
        :attr:`MAX_BACKOFF` seconds later, and the delays grow as for any
        outage, so a fleet of workers does not spin through the queue.
        """
        delay = min(self.MAX_BACKOFF, max(0.1, self._backoff * 2))
        self.lifecycle.release(entry, delay)
        self._pause(reason)

    def _orphaned(self) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("supervisor %d is gone; stopping", self.parent_pid)
            return True
        return False

    def _should_recycle(self) -> bool:
        if self.max_jobs is not None and self.jobs_done >= self.max_jobs:
            log.info("recycling after %d jobs", self.jobs_done)
            return True
        resident = resident_memory() if self.max_memory is not None else 0
        if self.max_memory is not None and resident > self.max_memory:
            log.info("recycling at %d bytes resident", resident)
            return True
        return False

    # -- one entry -----------------------------------------------------------

    def process_entry(self, entry: QueueEntry) -> None:
        """Load, run and settle the job behind one reserved entry."""
        try:
            self._run_claim(Claim(entry), None)
        finally:
            self.activity.job = self.activity.job_type = None

    def _run_claim(self, claim: Claim, then_start: Claim | None) -> None:
        """Load, run and settle the job of ``claim``; with ``then_start``
        (the next claim of a batch), the transaction that records the result
        marks that one's job running too, where the queue can."""
        try:
            self._run_job(claim, then_start)
        except Exception:
            # The last resort: a bug in job code the worker calls outside
            # run() (an overridden record_result, say) must not end the
            # worker; the entry's lease brings the job back.
            log.exception("entry %s: processing failed; its lease will return it",
                          claim.entry.id)
        finally:
            self.activity.job = self.activity.job_type = None

    def _run_job(self, claim: Claim, then_start: Claim | None) -> None:
        entry = claim.entry
        lifecycle = self.lifecycle
        with self._lease.holding(entry) as lease:
            loaded = self._load(claim, lease)
            if loaded is None:
                return
            job, watch = loaded
            self.activity.job, self.activity.job_type = job.uuid, job.jobType
            if job.resultCode != NO_RESULT and not job.running:
                log.info("job %s already finished; dropping entry %s", job.uuid, entry.id)
                lifecycle.skip(job, entry)
                return
            lease.watcher = watch.poll
            self._run_seconds = None
            try:
                # Only a worker that died mid-run leaves the flag set (or
                # the claim, which marked it for this run).
                outcome = None
                if job.running and not claim.started:
                    outcome = lifecycle.recover(job, watch)
                if outcome is None:
                    outcome = lifecycle.run(job, watch, started=claim.started)
            except WorkerShutdown:
                lifecycle.release(entry, job=job)
                raise
            except DatastoreUnavailable as exc:
                # A store that reads but refuses writes (out of memory, disk
                # full, read-only): not the job's fault, so no error delay.
                self._back_off(entry, f"job {job.uuid}: datastore unavailable: {exc}")
                return
            except SpacewalkError as exc:
                # The job's document could not be written: leave the entry
                # to come back, so the job runs again rather than vanishes.
                log.error("job %s: bookkeeping failed: %s", job.uuid, exc)
                lifecycle.release(entry, self.ERROR_RETRY_DELAY)
                return
            finally:
                lease.watcher = None
        self._backoff = 0.0  # the job was marked running: the store takes writes
        outage = lifecycle.finish(job, outcome, watch, entry, then_start=then_start)
        if job.resultCode != NO_RESULT:
            self.activity.jobs_done += 1
            if JobStatus.of({"resultCode": job.resultCode}) is JobStatus.FAILED:
                self.activity.jobs_failed += 1
        if outage is None and self._run_seconds is not None and job.resultCode != NO_RESULT:
            self.durations.observe(
                job.jobType, self._run_seconds, JobStatus.of({"resultCode": job.resultCode}).value
            )
        if outage is not None:
            # the entry comes back with its lease; the next ones would fail
            # alike, so wait instead of running them in vain
            self._pause(f"cannot record outcome: {outage}")

    def _load(
        self, claim: Claim, lease: LeaseKeeper
    ) -> tuple[RuntimeJob, CancelWatch] | None:
        entry = claim.entry
        try:
            if claim.started and claim.uuid is not None:
                # read (and marked running) by the claim's transaction
                uuid, data, cas, requested = (claim.uuid, claim.document, claim.cas,
                                              claim.cancel_requested)  # fmt: skip
            else:
                # read now: a claim that waited its turn may be stale
                uuid = json.loads(entry.body)
                if not isinstance(uuid, str):
                    raise InvalidJobDocument(f"queue body {entry.body!r} is not a uuid")
                # The job and its cancel request in one round trip (two
                # reads on a ZeroG datastore): the check before marking the
                # job running then needs no read of its own. A queue in the
                # same database (PostgreSQL) read both with the claim.
                keys = [make_key(uuid), cancel_key(uuid)]
                read = entry.documents(self.datastore, keys) if isinstance(
                    entry, DocumentEntry) else None
                (data, cas), (request, _) = read or self.datastore.read_many(keys)
                requested = request is not None
            watch = self._watch(uuid, entry, lease)
            job = self.registry.stored_job(
                uuid, data, cas, self.datastore, self.queue, watch.keepalive
            )
            if not claim.started:
                # a started job's next check must read: it runs from now on
                watch.prime(requested)
            return job, watch
        except DatastoreUnavailable as exc:
            # Not the job's fault: never count this towards deleting it.
            self.lifecycle.unstart(claim)
            self._back_off(entry, f"datastore unavailable: {exc}")
            return None
        except (ValueError, JobNotFound, UnknownJobType, InvalidJobDocument) as exc:
            reason = str(exc)
        except Exception:  # job code in __init__ or a schema hook may raise anything
            reason = traceback.format_exc()
        self.lifecycle.unstart(claim)
        try:
            stats = entry.stats()
        except QueueError as exc:
            log.warning("cannot read stats of entry %s: %s", entry.id, exc)
            return None
        if stats["reserves"] > self.MAX_RESERVES or stats["timeouts"] > self.MAX_TIMEOUTS:
            log.error("entry %s: %s; deleting it after %s", entry.id, reason, stats)
            self.lifecycle.drop(entry)
        else:
            log.warning("entry %s: %s; retrying in %s s", entry.id, reason, self.LOAD_RETRY_DELAY)
            self.lifecycle.release(entry, self.LOAD_RETRY_DELAY)
        return None

    def _watch(self, uuid: str, entry: QueueEntry, lease: LeaseKeeper) -> CancelWatch:
        interrupt = main_thread_interrupter(self.CANCEL_SIGNAL) if self.force_cancel else None
        def give_up(reason: StopReason) -> None:
            self._give_up(uuid, entry, reason, watch.timeout)

        watch = CancelWatch(
            self.datastore,
            uuid,
            lease.touch,
            grace=self.cancel_grace,
            interrupt=interrupt,
            give_up=give_up if interrupt else None,
            exit_delay=min(self.cancel_grace, self.CANCEL_EXIT_DELAY),
            call_at=lease.call_at,
        )
        return watch

    def _give_up(
        self, uuid: str, entry: QueueEntry, reason: StopReason, timeout: float | None
    ) -> None:
        """Record the end of a job that does not stop, and exit the process:
        its cancellation, or its timeout (then ``continue_running()``
        decides, and a cancel request stored meanwhile wins).

        Runs in the lease thread while the main thread is stuck in the job,
        perhaps holding this process's connections: the end is written
        through a datastore of its own, in a thread of its own, and the
        process exits after a bounded wait whatever happened.
        """
        what = "cancellation" if reason is StopReason.CANCEL else "timeout"
        log.error("job %s: still running %.1f s after being stopped; recording its %s "
                  "and exiting", uuid, min(self.cancel_grace, self.CANCEL_EXIT_DELAY), what)

        def settle() -> None:
            lifecycle = Lifecycle(self.make_datastore(), self.queue, self.registry,
                                  error_retry_delay=self.ERROR_RETRY_DELAY,
                                  webhooks=self.webhooks)
            if reason is StopReason.TIMEOUT and timeout is not None:
                lifecycle.time_out_stuck(uuid, entry, timeout)
            else:
                lifecycle.cancel_stuck(uuid, entry)

        thread = threading.Thread(target=settle, name="spacewalk-give-up", daemon=True)
        thread.start()
        thread.join(GIVE_UP_TIMEOUT)
        os._exit(self.EXIT_STUCK_JOB)


def check_batch(batch: Any) -> int:
    """``batch``, when it is a number of entries a worker may claim at once.

    :raises ValueError: it is not an integer from 1 to :data:`MAX_BATCH`.
    """
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise ValueError(f"batch must be an integer, not {type(batch).__name__}")
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be between 1 and {MAX_BATCH}, not {batch}")
    return batch


def resident_memory() -> int:
    """This process's resident set size in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        # ru_maxrss is the peak, in KiB on Linux: a cautious stand-in.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def install_shutdown_handler(worker: Worker, grace: float) -> None:
    """On SIGTERM or SIGINT, let the running job finish within ``grace`` s.

    Past the grace period the job is interrupted with :class:`WorkerShutdown`
    and its entry released, so another worker runs it soon.
    """

    def on_term(signum: int, frame: Any) -> None:
        if worker.stopping:
            return
        worker.stop()
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(0.001, grace))

    def on_alarm(signum: int, frame: Any) -> None:
        raise WorkerShutdown(f"job did not finish within {grace} s of shutdown")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


def install_cancel_handler(worker: Worker) -> None:
    """Let ``worker`` stop cancelled and timed-out jobs by force (call in
    the main thread).

    A job that reaches no progress call within ``worker.cancel_grace``
    seconds of its cancel request gets :class:`JobCancelled` raised by a
    :attr:`Worker.CANCEL_SIGNAL` handler (which also ends a ``time.sleep``),
    and a run that reaches its class's ``TIMEOUT`` gets
    :class:`~flask_spacewalk.runtime.outcome.JobTimedOut` at once. If it
    still runs a short while later (stuck in C code, or swallowing every
    exception), the worker records the cancellation or the timeout and
    *exits the process*: only for a process a supervisor restarts.
    """
    signal.signal(worker.CANCEL_SIGNAL, on_interrupt_signal)
    worker.force_cancel = True
