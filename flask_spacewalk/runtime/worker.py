"""The worker: reserve a queue entry, load its job, run it, record the outcome.

The semantics are ZeroG's (SPEC section 5), with its constants as class
attributes so a deployment can override them. Two things are added: the
lease of the entry is renewed in the background while a job runs, so a long
job is never handed to a second worker, and a job that already has its final
result is never run again (a worker that died between recording a result and
deleting the entry leaves such an entry behind).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import reprlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any, Callable

from .. import defaults
from ..errors import (
    DatastoreUnavailable,
    EntryNotReserved,
    InvalidJobDocument,
    JobNotFound,
    QueueError,
    QueueUnavailable,
    SpacewalkError,
    UnknownJobType,
    UnstorableValue,
)
from .adapters import as_datastore, as_queue
from .cancel import (
    CANCELLED,
    CancelWatch,
    JobCancelled,
    apply_cancelled,
    cancel_key,
    clear_cancel,
    main_thread_interrupter,
    on_interrupt_signal,
)
from .job import (
    INTERNAL_ERROR,
    NO_RESULT,
    ErrorContinue,
    ErrorFinish,
    RuntimeJob,
    WarningContinue,
    WarningFinish,
    make_key,
)
from .protocols import Datastore, Queue, QueueEntry, SpacewalkDatastore, SpacewalkQueue
from .registry import JobRegistry

log = logging.getLogger(__name__)


#: Longest wait for a stuck job's cancellation to be recorded before exiting.
GIVE_UP_TIMEOUT = 10.0
#: The result codes a run may return: 32-bit signed ints.
MIN_CODE, MAX_CODE = -(2**31), 2**31 - 1
#: The longest requeue delay a run may ask for, in seconds (68 years: the
#: 32-bit bound that queues count delays within).
MAX_DELAY = float(2**31 - 1)


class WorkerShutdown(BaseException):
    """Raised inside a running job when the shutdown grace period is over."""


class _CancelSeen(Exception):
    """A cancel request was read while a job's result was being recorded."""


class _ResultStored(Exception):
    """Another run's result was found while a job's result was being recorded."""


@dataclass(frozen=True)
class Outcome:
    """What became of one run of a job.

    ``result`` is the final code, or :data:`NO_RESULT` to run again after
    ``delay`` seconds. ``recorded`` is true when the job recorded its result
    itself (the ``*_finish`` interrupts). ``cancelled`` means the job is to
    be recorded cancelled.
    """

    result: int
    delay: float = 0.0
    recorded: bool = False
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.result != NO_RESULT


def interpret_result(value: Any, default_delay: float) -> Outcome:
    """Read ``run()``'s return value as ZeroG does.

    A code, or a ``(code, delay)`` pair, the code converted with ``int()``
    (``True`` is 1, ``"404"`` is 404); anything that is not a code counts
    as 200, a missing delay or one that is not a number as
    ``default_delay``, a negative one as 0.

    :raise ValueError: what ZeroG's ``int()`` or its queue would fail on: a
        code that is a float NaN or Infinity, or an int outside 32 bits
        (:data:`MIN_CODE` .. :data:`MAX_CODE`); with ``NO_RESULT``, a delay
        that is NaN, Infinity or above :data:`MAX_DELAY`.
    """
    delay: Any = default_delay
    if isinstance(value, (tuple, list)):
        code: Any = value[0] if value else None
        if len(value) > 1 and value[1] is not None:
            delay = value[1]
    else:
        code = value
    try:
        result = int(code)
    except OverflowError:
        raise ValueError(f"the result code {code!r} is not a number") from None
    except (TypeError, ValueError):
        if isinstance(code, float):  # NaN
            raise ValueError(f"the result code {code!r} is not a number") from None
        result = 200
    if not MIN_CODE <= result <= MAX_CODE:
        raise ValueError(f"the result code {reprlib.repr(result)} is outside 32 bits"
                         f" ({MIN_CODE}..{MAX_CODE})")
    try:
        seconds = float(delay)
    except OverflowError:  # an int of more than 308 digits
        seconds = math.inf
    except (TypeError, ValueError):
        seconds = default_delay
    if not (math.isfinite(seconds) and seconds <= MAX_DELAY):
        if result == NO_RESULT:
            raise ValueError(f"the delay {reprlib.repr(delay)} is not a number of seconds"
                             f" up to {MAX_DELAY:.0f}")
        seconds = default_delay  # ignored: the job is over
    return Outcome(result, max(0.0, seconds))


class LeaseKeeper:
    """Renews the lease of the entry being worked on, in the background.

    One thread per worker serves every entry in turn (starting a thread per
    job cost about a fifth of a no-op job). While :meth:`holding` an entry,
    the job's own :meth:`RuntimeJob.keep_alive` calls :meth:`touch`, which
    is throttled so that frequent progress reports cost no extra writes, and
    the thread renews the lease every ``ttr / 3`` seconds and calls
    :attr:`watcher`, when set, every ``poll_interval`` seconds (the worker's
    watch for a cancel request).
    """

    def __init__(self, ttr: float, poll_interval: float | None = None):
        self.interval = max(0.05, ttr / 3)
        self._wake = self.interval if poll_interval is None else min(self.interval, poll_interval)
        self._min_gap = max(0.01, ttr / 10)
        self._lock = threading.Lock()  # guards the entry and its touches
        self._changed = threading.Condition(threading.Lock())
        self._entry: QueueEntry | None = None
        self._last = self._renew_at = 0.0
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        self.lost = False
        self.watcher: Callable[[], None] | None = None

    @contextlib.contextmanager
    def holding(self, entry: QueueEntry) -> Iterator[LeaseKeeper]:
        """Keep ``entry``'s lease until the block ends."""
        with self._lock:
            self._entry = entry
            self.lost = False
            self.watcher = None
            self._last = time.monotonic()
            self._renew_at = self._last + self.interval
        self._start()
        try:
            yield self
        finally:
            with self._lock:
                self._entry = None
                self.watcher = None

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
                self._changed.wait(self._wake)
                if self._closed:
                    return
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
    """

    #: Delete an unloadable entry once it was reserved more often than this.
    MAX_RESERVES = 3
    #: ... or timed out more often than this.
    MAX_TIMEOUTS = 2
    #: Seconds before an unloadable entry is tried again.
    LOAD_RETRY_DELAY = 30.0
    #: Seconds before a job that raised is run again.
    ERROR_RETRY_DELAY = 30.0
    #: Seconds before a ``NO_RESULT`` job runs again when it gave no delay.
    DEFAULT_REQUEUE_DELAY = 10.0
    #: How long one reserve call waits before the loop checks its flags.
    RESERVE_TIMEOUT = 1.0
    #: Longest pause after the datastore or queue fails.
    MAX_BACKOFF = 30.0
    #: Seconds between two reads of a running job's cancel request.
    CANCEL_POLL_INTERVAL = 1.0
    #: Longest wait, after stopping a cancelled job by force, for the job to
    #: return before the process records the cancellation and exits (the
    #: wait is the cancel grace when that is shorter).
    CANCEL_EXIT_DELAY = 5.0
    #: Exit code of a process that gave up on a job stuck after its cancel.
    EXIT_STUCK_JOB = 3
    #: The signal that stops a cancelled job by force.
    CANCEL_SIGNAL = signal.SIGUSR1

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
    ):
        if cancel_grace <= 0:
            raise ValueError("cancel_grace must be > 0")
        self.registry = registry
        self.make_datastore = make_datastore
        self.make_queue = make_queue
        self.queue_name = queue_name
        self.ttr = ttr
        self.job_context = job_context or contextlib.nullcontext
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.parent_pid = parent_pid
        self.cancel_grace = cancel_grace
        #: Set by :func:`install_cancel_handler`: stop cancelled jobs by force.
        self.force_cancel = False
        self.jobs_done = 0
        self.stopping = False
        self._datastore: SpacewalkDatastore | None = None
        self._queue: SpacewalkQueue | None = None
        self._backoff = 0.0
        self._lease = LeaseKeeper(ttr, self.CANCEL_POLL_INTERVAL)

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

    # -- the loop ------------------------------------------------------------

    def run(self, *, burst: bool = False) -> None:
        """Run jobs until stopped, recycled, or (``burst``) the queue is empty."""
        try:
            self._run_loop(burst)
        finally:
            self._lease.close()

    def _run_loop(self, burst: bool) -> None:
        while not self.stopping:
            try:
                entry = self.queue.reserve(timeout=0 if burst else self.RESERVE_TIMEOUT)
            except QueueError as exc:
                self._pause(f"queue {self.queue_name} unavailable: {exc}")
                continue
            if entry is None:
                if burst or self._orphaned():
                    return
                continue
            try:
                self.process_entry(entry)
            except Exception:
                # The last resort: a bug in job code the worker calls outside
                # run() (an overridden record_result, say) must not end the
                # worker; the entry's lease brings the job back.
                log.exception("entry %s: processing failed; its lease will return it", entry.id)
            self.jobs_done += 1
            if self._should_recycle() or self._orphaned():
                return

    def stop(self) -> None:
        """Finish the current job, then leave :meth:`run`."""
        self.stopping = True

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
        self._settle(entry, release=True, delay=delay)
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
        if self.max_memory is not None and resident_memory() > self.max_memory:
            log.info("recycling at %d bytes resident", resident_memory())
            return True
        return False

    # -- one entry -----------------------------------------------------------

    def process_entry(self, entry: QueueEntry) -> None:
        """Load, run and settle the job behind one reserved entry."""
        with self._lease.holding(entry) as lease:
            loaded = self._load(entry, lease)
            if loaded is None:
                return
            job, watch = loaded
            if job.resultCode != NO_RESULT and not job.running:
                log.info("job %s already finished; dropping entry %s", job.uuid, entry.id)
                self._settle(entry)
                clear_cancel(self.datastore, job.uuid)  # left by a cancel that raced
                return
            lease.watcher = watch.poll
            try:
                outcome = self._run_or_recover(job, watch)
            except WorkerShutdown:
                self._settle(entry, lambda: _stop_running(job), release=True)
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
                self._settle(entry, release=True, delay=self.ERROR_RETRY_DELAY)
                return
            finally:
                lease.watcher = None
        self._backoff = 0.0  # the job was marked running: the store takes writes
        self._finish(job, entry, outcome, watch)

    def _load(
        self, entry: QueueEntry, lease: LeaseKeeper
    ) -> tuple[RuntimeJob, CancelWatch] | None:
        try:
            uuid = json.loads(entry.body)
            if not isinstance(uuid, str):
                raise InvalidJobDocument(f"queue body {entry.body!r} is not a uuid")
            watch = self._watch(uuid, entry, lease)
            read_many = getattr(self.datastore, "read_many", None)
            if read_many is None:  # a ZeroG datastore
                return self.registry.get_job(
                    uuid, self.datastore, self.queue, watch.keepalive
                ), watch
            # The job and its cancel request in one round trip: the check
            # before marking the job running then needs no read of its own.
            (data, cas), (request, _) = read_many([make_key(uuid), cancel_key(uuid)])
            job = self.registry.stored_job(
                uuid, data, cas, self.datastore, self.queue, watch.keepalive
            )
            watch.prime(request is not None)
            return job, watch
        except DatastoreUnavailable as exc:
            # Not the job's fault: never count this towards deleting it.
            self._back_off(entry, f"datastore unavailable: {exc}")
            return None
        except (ValueError, JobNotFound, UnknownJobType, InvalidJobDocument) as exc:
            reason = str(exc)
        except Exception:  # job code in __init__ or a schema hook may raise anything
            reason = traceback.format_exc()
        try:
            stats = entry.stats()
        except QueueError as exc:
            log.warning("cannot read stats of entry %s: %s", entry.id, exc)
            return None
        if stats["reserves"] > self.MAX_RESERVES or stats["timeouts"] > self.MAX_TIMEOUTS:
            log.error("entry %s: %s; deleting it after %s", entry.id, reason, stats)
            self._settle(entry)
        else:
            log.warning("entry %s: %s; retrying in %s s", entry.id, reason, self.LOAD_RETRY_DELAY)
            self._settle(entry, release=True, delay=self.LOAD_RETRY_DELAY)
        return None

    def _watch(self, uuid: str, entry: QueueEntry, lease: LeaseKeeper) -> CancelWatch:
        interrupt = main_thread_interrupter(self.CANCEL_SIGNAL) if self.force_cancel else None
        return CancelWatch(
            self.datastore,
            uuid,
            lease.touch,
            grace=self.cancel_grace,
            interrupt=interrupt,
            give_up=(lambda: self._give_up(uuid, entry)) if interrupt else None,
            exit_delay=min(self.cancel_grace, self.CANCEL_EXIT_DELAY),
        )

    def _give_up(self, uuid: str, entry: QueueEntry) -> None:
        """Record a stuck cancelled job's cancellation and exit the process.

        Runs in the lease thread while the main thread is stuck in the job,
        perhaps holding this process's connections: the cancellation is
        written through a datastore of its own, in a thread of its own, and
        the process exits after a bounded wait whatever happened.
        """
        log.error("job %s: still running %.1f s after being stopped; recording its "
                  "cancellation and exiting", uuid, min(self.cancel_grace, self.CANCEL_EXIT_DELAY))

        def settle() -> None:
            datastore = self.make_datastore()
            job = self.registry.get_job(uuid, datastore, self.queue)
            job.record_change(apply_cancelled, job)
            clear_cancel(datastore, uuid)
            entry.delete()

        thread = threading.Thread(target=settle, name="spacewalk-give-up", daemon=True)
        thread.start()
        thread.join(GIVE_UP_TIMEOUT)
        os._exit(self.EXIT_STUCK_JOB)

    def _run_or_recover(self, job: RuntimeJob, watch: CancelWatch) -> Outcome:
        if job.running:
            # Only a worker that died mid-run leaves this flag set.
            if watch.check():
                return Outcome(CANCELLED, cancelled=True)
            job.record_error(INTERNAL_ERROR, "worker died while running the job (killed?)")
            result = job.continue_running()
            if result != NO_RESULT:
                job.record_event("Killed - finished")
                _log_run(job, "its last run was killed (worker died)", Outcome(result))
                return Outcome(result)
            job.record_event("Killed - restarting")
            log.warning("job %s %s: its last run was killed (worker died); running it again",
                        job.jobType, job.uuid)
        return self.run_job(job, watch)

    def run_job(self, job: RuntimeJob, watch: CancelWatch | None = None) -> Outcome:
        """Run ``job`` once and record what its run means (not the result).

        With a ``watch``, the job is marked running only if it has no result
        and no cancel request yet, and its cancellation stops it.
        """
        if watch is None:
            job.update_attrs(running=True)
        else:
            skipped = self._mark_running(job, watch)
            if skipped is not None:
                return skipped
        worker_pid = os.getpid()
        try:
            with self.job_context(), watch.running() if watch else contextlib.nullcontext():
                try:
                    value = job.run()
                except BaseException as exc:
                    end_forked_child(worker_pid, exc)
                    raise
                end_forked_child(worker_pid, None)
        except JobCancelled:
            log.info("job %s: cancelled while running", job.uuid)
            return Outcome(CANCELLED, cancelled=True)
        except (ErrorFinish, WarningFinish) as exc:
            job.record_event("Error - finished")
            outcome = Outcome(job.resultCode, recorded=True)
            _log_run(job, f"{_interrupt_name(exc)}: {exc}", outcome)
            return outcome
        except (ErrorContinue, WarningContinue) as exc:
            job.record_event("Error - restarting")
            outcome = Outcome(job.continue_running(), self.ERROR_RETRY_DELAY)
            _log_run(job, f"{_interrupt_name(exc)}: {exc}", outcome)
            return outcome
        except (WorkerShutdown, KeyboardInterrupt):
            raise
        except UnstorableValue as exc:
            # One of the job's own saves, now undone: run again, the same
            # code would store the same value, so the job ends here.
            return self._failed_run(job, traceback.format_exc(), exc, final=INTERNAL_ERROR)
        except (Exception, SystemExit) as exc:
            return self._failed_run(job, traceback.format_exc(), exc)
        try:
            return interpret_result(value, self.DEFAULT_REQUEUE_DELAY)
        except ValueError as exc:
            # Where ZeroG's int() or its queue fails: its outer handler.
            msg = f"run() returned {reprlib.repr(value)}: {exc}"
            return self._failed_run(job, msg, exc, summary=msg)

    def _failed_run(
        self,
        job: RuntimeJob,
        msg: str,
        exc: BaseException,
        final: int | None = None,
        summary: str | None = None,
    ) -> Outcome:
        """Record error 500 for a run that failed with ``exc``, and log it.

        :param msg: the error's message (the traceback).
        :param final: the result the job ends with; None: ``continue_running()``
            decides.
        :param summary: the log's account of the error (default: the
            exception's last line).
        """
        record_error(job, INTERNAL_ERROR, msg, exc)
        result = job.continue_running() if final is None else final
        job.record_event("Error - restarting" if result == NO_RESULT else "Error - finished")
        outcome = Outcome(result, self.ERROR_RETRY_DELAY)
        _log_run(job, summary or _describe(exc), outcome)
        return outcome

    @staticmethod
    def _mark_running(job: RuntimeJob, watch: CancelWatch) -> Outcome | None:
        """Mark ``job`` running; an :class:`Outcome` instead when it must not run.

        The checks are part of the compare-and-swap change, so a result or
        cancel request stored meanwhile is seen when the write conflicts.
        """
        skipped: Outcome | None = None

        class NotStarted(Exception):
            pass

        def change() -> None:
            nonlocal skipped
            if job.resultCode != NO_RESULT:  # cancelled by the API meanwhile
                skipped = Outcome(job.resultCode, recorded=True)
            elif watch.check():
                skipped = Outcome(CANCELLED, cancelled=True)
            else:
                job.running = True
                return
            raise NotStarted

        with contextlib.suppress(NotStarted):
            job.record_change(change)
        return skipped

    def _finish(
        self, job: RuntimeJob, entry: QueueEntry, outcome: Outcome, watch: CancelWatch
    ) -> None:
        cancelled = outcome.cancelled

        def record() -> None:
            nonlocal cancelled
            cancelled = self.record_outcome(job, outcome, watch)

        self._settle(entry, record)
        if cancelled:
            log.info("job %s: cancelled", job.uuid)
            clear_cancel(self.datastore, job.uuid)

    def record_outcome(
        self,
        job: RuntimeJob,
        outcome: Outcome,
        watch: CancelWatch | None = None,
        requeue: bool = True,
    ) -> bool:
        """Record what a run of ``job`` came to: its result, its
        cancellation, or (``NO_RESULT``) that it no longer runs, and, with
        ``requeue``, put it back on its queue.

        A run whose changes cannot be stored (``run()`` set a NaN without
        saving it) ends the job with error and result 500, recorded on the
        document as last stored.

        :return: whether the job was cancelled.
        """
        try:
            return self._record_outcome(job, outcome, watch, requeue)
        except UnstorableValue as exc:
            # The job is back at its stored state, where anything saves.
            msg = f"the job's state after its run cannot be saved: {exc}"
            record_error(job, INTERNAL_ERROR, msg, exc)
            job.record_event("Error - finished")
            failed = Outcome(INTERNAL_ERROR)
            _log_run(job, msg, failed)
            return self._record_outcome(job, failed, watch, requeue)

    def _record_outcome(
        self, job: RuntimeJob, outcome: Outcome, watch: CancelWatch | None, requeue: bool
    ) -> bool:
        cancelled = outcome.cancelled

        def change() -> None:
            # Read at each application: a conflict may be the API's write
            # that follows its cancel request.
            nonlocal cancelled
            cancelled = cancelled or (watch is not None and watch.check())
            if cancelled:
                apply_cancelled(job)
            job.running = False

        # Result first, entry second: a crash in between leaves an entry
        # whose job is finished, which the next worker drops.
        if outcome.finished and not outcome.recorded and not cancelled:
            try:
                self._record_result(job, outcome.result, watch)
                return False
            except _CancelSeen:
                cancelled = True
            except _ResultStored:
                log.warning("job %s: another run recorded its result first (this "
                            "run's lease ran out); not recording it again", job.uuid)
                return False
        job.record_change(change)
        if requeue and not cancelled and not outcome.finished and job.resultCode == NO_RESULT:
            # Enqueue first, delete second: a crash in between runs the
            # job twice, never zero times.
            job.enqueue(delay=outcome.delay)
        return cancelled

    @staticmethod
    def _record_result(job: RuntimeJob, result: int, watch: CancelWatch | None) -> None:
        """Call the job's own :meth:`~RuntimeJob.record_result` (jobs may
        override it, as ZeroG's), unless a cancel request is read before it
        saves, at first or after a conflict, or the job as last read shows
        that another run recorded a result meanwhile: a job runs at least
        once, but its final result is recorded once.

        :raises _CancelSeen: the request was read; nothing was saved.
        :raises _ResultStored: another run's result is stored; nothing was
            saved.
        """

        def guard() -> None:
            if job._saved_result != NO_RESULT:
                raise _ResultStored
            if watch is not None and watch.check():
                raise _CancelSeen

        job._before_change = guard
        try:
            job.record_result(result)
        finally:
            job._before_change = None

    def _settle(
        self,
        entry: QueueEntry,
        action: Callable[[], None] | None = None,
        *,
        release: bool = False,
        delay: float = 0,
    ) -> None:
        """Run ``action`` (on the job), then delete or release the entry.

        When ``action`` fails the entry is left reserved: its lease runs out
        and the job comes back, so nothing is lost.
        """
        try:
            if action is not None:
                action()
        except (SpacewalkError, QueueError) as exc:
            log.error("entry %s: cannot record outcome: %s", entry.id, exc)
            if isinstance(exc, (DatastoreUnavailable, QueueUnavailable)):
                # the entry comes back with its lease; the next ones would
                # fail alike, so wait instead of running them in vain
                self._pause(f"cannot record outcome: {exc}")
            return
        try:
            if release:
                entry.release(delay=delay)
            else:
                entry.delete()
        except EntryNotReserved:
            log.warning("entry %s was taken over by another worker", entry.id)
        except QueueError as exc:
            log.error("entry %s: %s; its lease will return it", entry.id, exc)


def end_forked_child(worker_pid: int, exc: BaseException | None) -> None:
    """End a process the job forked as it leaves ``run()``.

    Such a child holds a copy of the worker: unwinding into it would record
    on the parent's job and run a second worker loop on the parent's
    connections. It exits as Python would have: the code of its
    :exc:`SystemExit`, 1 after printing any other exception, else 0.

    :param worker_pid: the process that called ``run()``; nothing is done
        in that one.
    """
    if os.getpid() == worker_pid:
        return
    code: int = 0
    if isinstance(exc, SystemExit):
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            print(exc.code, file=sys.stderr)
            code = 1
    elif exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def record_error(job: RuntimeJob, code: int, msg: str, exc: BaseException | None) -> None:
    """Record the error ``msg`` of a run, whatever the run left in the job.

    A traceback may quote a NUL or a lone surrogate, which no document
    holds: they are written as escapes. A value ``run()`` set without
    saving it that cannot be stored makes the first attempt fail and puts
    the job back at its stored state; the error is then recorded there,
    saying what was dropped.
    """
    msg = _storable_text(msg)
    try:
        job.record_error(code, msg, exception=exc)
    except UnstorableValue as unsaved:
        job.record_error(code, f"{msg}\n(the job's unsaved changes were dropped: {unsaved})",
                         exception=exc)


def _stop_running(job: RuntimeJob) -> None:
    """Save ``job`` as no longer running (before its entry is released)."""
    try:
        job.update_attrs(running=False)
    except UnstorableValue as exc:
        # the job is back at its stored state, which saves
        log.warning("job %s %s: unsaved changes dropped: %s", job.jobType, job.uuid, exc)
        job.update_attrs(running=False)


def _storable_text(text: str) -> str:
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_INTERRUPTS = {
    ErrorContinue: "raise_error_continue",
    ErrorFinish: "raise_error_finish",
    WarningContinue: "raise_warning_continue",
    WarningFinish: "raise_warning_finish",
}


def _interrupt_name(exc: BaseException) -> str:
    for cls, name in _INTERRUPTS.items():
        if isinstance(exc, cls):
            return name
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    """``RuntimeError: boom``."""
    text = str(exc)
    return _storable_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _log_run(job: RuntimeJob, what: str, outcome: Outcome) -> None:
    """Log one line for a run that did not simply succeed: the job, what
    happened, and what follows (a retry, or the job's end)."""
    if outcome.result == NO_RESULT:
        log.warning("job %s %s: %s; retry in %s s", job.jobType, job.uuid, what,
                    f"{outcome.delay:g}")
    elif 0 <= outcome.result < 400:
        log.warning("job %s %s: %s; finished with %d", job.jobType, job.uuid, what,
                    outcome.result)
    else:
        log.error("job %s %s: %s; failed with %d", job.jobType, job.uuid, what, outcome.result)


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
    """Let ``worker`` stop a cancelled job by force (call in the main thread).

    A job that reaches no progress call within ``worker.cancel_grace``
    seconds of its cancel request gets :class:`JobCancelled` raised by a
    :attr:`Worker.CANCEL_SIGNAL` handler (which also ends a ``time.sleep``).
    If it still runs a short while later (stuck in C code, or swallowing
    every exception), the worker records the cancellation and *exits the
    process*: only for a process a supervisor restarts.
    """
    signal.signal(worker.CANCEL_SIGNAL, on_interrupt_signal)
    worker.force_cancel = True
