"""The lifecycle of a job, and its one owner.

A job is *created* (stored and put on its queue), *started* (marked
running), *run*, and *finished*: its result, its cancellation or its
requeue is recorded and its queue entry settled. A job found running when
it is loaded was killed mid-run and is *recovered*; a run past its class's
``TIMEOUT`` *times out*; a queued job whose entry was lost is *requeued* by
hand; the API *cancels* and *retries* jobs; a test app *runs them inline*;
retention *purges* old ended jobs. :class:`Lifecycle` does each of these in
one method, and no other module of the package writes ``running``,
``resultCode``, ``queueJobId`` or a job's queue entry
(tests/test_lifecycle.py checks the source), so a new transition is written
here once.

The words of a run's end (result codes, interrupts, :class:`Outcome`) are
:mod:`~flask_spacewalk.runtime.outcome`'s; how long a retry waits and a run
may take, :mod:`~flask_spacewalk.runtime.policy`'s.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import reprlib
import sys
import traceback
from collections.abc import Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import (
    DatastoreUnavailable,
    EntryNotReserved,
    NotSupported,
    QueueError,
    QueueUnavailable,
    SpacewalkError,
    UnstorableValue,
)
from .adapters import as_datastore, as_queue
from .cancel import (
    CANCEL_MESSAGE,
    CANCELLED,
    CancelAnswer,
    CancelWatch,
    JobCancelled,
    cancel_key,
    cancel_requested,
    clear_cancel,
    request_cancel,
)
from .encoding import encode_value
from .outcome import (
    INTERNAL_ERROR,
    NO_RESULT,
    TIMED_OUT,
    ChangeRefused,
    ErrorContinue,
    ErrorFinish,
    JobTimedOut,
    Outcome,
    WarningContinue,
    WarningFinish,
    interpret_result,
)
from .policy import retry_delay, run_timeout
from .protocols import (
    Datastore,
    JobDeletion,
    Queue,
    QueueEntry,
    SharedTransactions,
    StoreTransaction,
    Value,
)
from .records import make_error, make_event, utcnow
from .retry import RESET_FIELDS, RETRYABLE, RetryAnswer, job_status, retry_event, undo_event
from .status import JOB_KEY_PREFIX, JobStatus

if TYPE_CHECKING:
    from .job import RuntimeJob
    from .registry import JobRegistry
    from .webhooks import WebhookRecorder

log = logging.getLogger(__name__)
#: The run log: one line per failed run, interrupt and killed run, under
#: the worker loop's name (docs/runtime.rst): it is the worker's story.
run_log = logging.getLogger("flask_spacewalk.runtime.worker_loop")

#: Seconds before a job that raised is run again (ZeroG's), unless its
#: class's ``RETRY_DELAY`` says otherwise.
ERROR_RETRY_DELAY = 30.0
#: Seconds before a ``NO_RESULT`` job runs again when it gave no delay.
DEFAULT_REQUEUE_DELAY = 10.0
#: Runs of an inline job that keep answering ``NO_RESULT`` (SPEC section 4).
INLINE_MAX_RUNS = 10

#: Why :meth:`Lifecycle.finish` did not record a run's result.
_RESULT_STORED = "another run's result is stored"
_CANCEL_SEEN = "the job's cancellation is requested"
#: The starting options a job keeps when it is put back on its queue.
_KEPT_ON_REQUEUE = ("priority", "ttr")


@dataclass
class Claim:
    """A reserved queue entry with its job as read in the transaction that
    reserved it (:meth:`Lifecycle.claim`), perhaps already marked running."""

    entry: QueueEntry
    #: The entry's uuid; None when its body is not a JSON string.
    uuid: str | None = None
    #: The job's document and cas as read (or as marked running).
    document: Value | None = None
    cas: int = 0
    #: Whether the job's cancellation was requested when it was read.
    cancel_requested: bool = False
    #: Whether the job is marked running already (by the claim, or by the
    #: transaction that recorded the previous job's result): not started again.
    started: bool = False


class Lifecycle:
    """Every transition of a job, one method each.

    Bound to the datastore and queue the jobs live in (a job's own saves
    go through its own connections, which are the same ones); the worker,
    the views, the CLI and :meth:`RuntimeJob.enqueue` all call it.

    :param registry: the job classes, for the transitions that load a job
        by its uuid (:meth:`cancel_stuck`).
    :param error_retry_delay: seconds before a job that raised runs again,
        for a class whose ``RETRY_DELAY`` is None (see :meth:`retry_delay`).
    :param default_requeue_delay: seconds before a ``NO_RESULT`` job without
        a delay of its own runs again.
    :param job_context: a context manager factory every ``run()`` call runs
        in (a Flask app context, for instance).
    :param webhooks: records the webhook deliveries of each job end, after
        the end is saved and before the job's queue entry goes (a crash in
        between leaves the entry, whose next holder records them: see
        :meth:`skip`).
    """

    #: Runs of an inline job that keep answering ``NO_RESULT``.
    INLINE_MAX_RUNS = INLINE_MAX_RUNS

    def __init__(
        self,
        datastore: Datastore,
        queue: Queue,
        registry: JobRegistry | None = None,
        *,
        error_retry_delay: float = ERROR_RETRY_DELAY,
        default_requeue_delay: float = DEFAULT_REQUEUE_DELAY,
        job_context: Callable[[], ContextManager[Any]] | None = None,
        webhooks: WebhookRecorder | None = None,
    ):
        self.datastore = as_datastore(datastore)
        self.queue = as_queue(queue)
        self.registry = registry
        self.error_retry_delay = error_retry_delay
        self.default_requeue_delay = default_requeue_delay
        self.job_context = job_context or contextlib.nullcontext
        self.webhooks = webhooks
        self._shared_checked = False
        self._shared_queue: SharedTransactions | None = None

    @property
    def shared(self) -> SharedTransactions | None:
        """The queue, when it shares the datastore's database (one SQLite
        file, one PostgreSQL database and schema, one Redis server): then a
        claim marks its job running, and a result deletes its entry, in one
        transaction each; None otherwise."""
        if not self._shared_checked:
            queue = self.queue
            if isinstance(queue, SharedTransactions) and queue.shares_database(self.datastore):
                self._shared_queue = queue
            self._shared_checked = True
        return self._shared_queue

    # -- onto the queue --------------------------------------------------------

    def create(self, job: RuntimeJob, **queue_kwargs: Any) -> None:
        """Store a new job and put it on the queue: a POST's transition.

        :raises ValueError: the job is stored already (see :meth:`enqueue`).
        :raises QueueError: as :meth:`enqueue`.
        """
        if job.cas:
            raise ValueError(f"job {job.uuid} is already stored; enqueue it instead")
        self.enqueue(job, **queue_kwargs)

    def enqueue(self, job: RuntimeJob, **queue_kwargs: Any) -> None:
        """Save ``job`` if it is new, then put it on the queue
        (:meth:`RuntimeJob.enqueue`, ZeroG's).

        ``queue_kwargs`` (``ttr``, ``delay``, ``priority``) go to
        ``queue.put`` and are kept in ``queueKwargs``. A new job whose queue
        can write its datastore (one SQLite file) is stored and queued in one
        transaction instead: both or neither.

        :raises QueueError: the queue refused the entry; the job is then
            marked with ``queueJobId = -1`` so that nobody waits for it (in
            one transaction, nothing is stored).
        :raises UnstorableValue: the job, or ``queue_kwargs`` (a NaN delay),
            holds a value no datastore stores; nothing is queued.
        """
        # Checked before the put: an entry must not outlive a document
        # that cannot record it (no options, the usual POST: nothing to check).
        if queue_kwargs:
            encode_value({"queueKwargs": queue_kwargs})
        queue_name = self.queue.queueName
        if job.cas == 0 and self._put_with_document(job, queue_kwargs, queue_name):
            return
        if job.cas == 0:
            job.save()
        try:
            queue_job_id = self.queue.put(job.uuid, **queue_kwargs)
        except QueueError:
            job.update_attrs(queueKwargs=queue_kwargs, queueJobId=-1)
            raise
        if not queue_job_id:
            log.warning("%s: enqueue failed", job.logId)
            queue_job_id = -1
        changes: dict[str, Any] = {"queueKwargs": queue_kwargs, "queueJobId": queue_job_id}
        if queue_name:
            changes["queueName"] = queue_name
        job.update_attrs(**changes)

    def _put_with_document(
        self, job: RuntimeJob, queue_kwargs: dict[str, Any], queue_name: str | None
    ) -> bool:
        """Store and queue a new job in one write, where the queue can do
        that with this datastore (the embedded SQLite file); False if not."""
        def document(queue_job_id: int) -> dict[str, Any]:
            job.queueKwargs, job.queueJobId = queue_kwargs, queue_job_id
            if queue_name:
                job.queueName = queue_name
            job.updatedAt = utcnow()
            return job.dump()

        names = ("queueKwargs", "queueJobId", "queueName")
        before: dict[str, Any] = {name: vars(job)[name] for name in names if name in vars(job)}
        try:
            written = self.queue.put_with_document(
                job.datastore, job.key(), document, job.uuid, **queue_kwargs
            )
        except UnstorableValue:
            # Neither entry nor document was written: the job is as it was.
            vars(job).pop("queueName", None)
            vars(job).update(before)
            raise
        if written is None:
            return False
        job.cas = written[1]
        return True

    def requeue(self, job: RuntimeJob, delay: float) -> None:
        """Put a stored job on the queue again, to run after ``delay`` s,
        with the priority and lease it was started with."""
        kept = job.queueKwargs if isinstance(job.queueKwargs, dict) else {}
        kwargs = {name: kept[name] for name in _KEPT_ON_REQUEUE if name in kept}
        self.enqueue(job, **kwargs, delay=delay)

    def requeue_stale(self, job: RuntimeJob, **queue_kwargs: Any) -> bool:
        """Put a queued job whose entry was lost on the queue again, as read.

        One compare-and-swap write first claims it: of two requeues (or a
        requeue and a worker) racing for the job, only one goes on to
        enqueue it.

        :return: False when the job changed since it was read (nothing done).
        """
        try:
            job.save()
        except job.datastore.casException:
            return False
        self.enqueue(job, **queue_kwargs)
        return True

    # -- claims --------------------------------------------------------------

    def claim(self, count: int, timeout: float | None) -> list[Claim] | None:
        """Reserve up to ``count`` entries and read their jobs in one
        transaction, in which the first job is also marked running if it may
        start (as :meth:`start` would let it: no result, not running, no
        cancel request, a type the registry knows); the others wait their
        turn (see :meth:`finish`'s ``then_start``).

        :return: the claims in the queue's order (empty when none came in
            ``timeout`` seconds), or None when the queue does not share the
            datastore's database: reserve from the queue instead.
        :raises ValueError: ``count`` is not a positive integer.
        """
        shared = self.shared
        if shared is None:
            return None

        def then(transaction: StoreTransaction, entries: list[QueueEntry]) -> list[Claim]:
            claims = [_read_claim(transaction, entry) for entry in entries]
            first = claims[0]
            first.document, first.cas, first.cancel_requested, first.started = (
                self._start_in(transaction, first, reread=False)
            )
            return claims

        return shared.reserve_in(count, timeout, then) or []

    def _start_in(
        self, transaction: StoreTransaction, claim: Claim, *, reread: bool
    ) -> tuple[Value | None, int, bool, bool]:
        """Mark ``claim``'s job running in ``transaction`` if it may start.

        :param reread: read the job and its cancel request again first (in
            the transaction, so the compare-and-swap sees the latest).
        :return: its document, cas and cancel request as now stored, and
            whether it is marked running.
        """
        document, cas, requested = claim.document, claim.cas, claim.cancel_requested
        if claim.uuid is None:
            return document, cas, requested, False
        key = JOB_KEY_PREFIX + claim.uuid
        if reread:
            (document, cas), (request, _) = transaction.read([key, cancel_key(claim.uuid)])
            requested = request is not None
        if not (
            isinstance(document, dict)
            and not requested
            and isinstance(document.get("jobType"), str)
            and self.registry is not None
            and document["jobType"] in self.registry
            and document.get("resultCode", NO_RESULT) == NO_RESULT
            and not document.get("running")
        ):
            return document, cas, requested, False
        # The stored document as it is, but running, as a save by start()
        # would write it; the job is loaded from it after the commit.
        marked = {**document, "running": True, "updatedAt": utcnow().isoformat(), "cas": cas}
        return marked, transaction.write(key, marked, cas), False, True

    def unstart(self, claim: Claim) -> None:
        """Mark the job of a claim that will not run here (its job cannot
        be loaded, or the worker gives the entry back) as not running, so
        that its next run is no "killed" one. Best effort: logged when it
        cannot."""
        if not claim.started or claim.uuid is None or not isinstance(claim.document, dict):
            return
        claim.started = False
        document = {**claim.document, "running": False, "updatedAt": utcnow().isoformat(),
                    "cas": claim.cas}  # fmt: skip
        try:
            _, claim.cas = self.datastore.update_with_cas(
                JOB_KEY_PREFIX + claim.uuid, document, claim.cas
            )
            claim.document = document
        except (self.datastore.casException, SpacewalkError) as exc:
            log.warning("job %s: cannot mark it not running (%s); its next run "
                        "counts as killed", claim.uuid, exc or type(exc).__name__)

    def release_claim(self, claim: Claim, delay: float = 0.0) -> None:
        """Give back a claimed entry whose job did not run here, marked as
        not running (:meth:`unstart`), to be taken after ``delay`` s."""
        self.unstart(claim)
        self._settle(claim.entry, release=True, delay=delay)

    # -- a run ---------------------------------------------------------------

    def start(self, job: RuntimeJob, watch: CancelWatch | None = None) -> Outcome | None:
        """Mark ``job`` running; an :class:`Outcome` instead when it must
        not run: it has its result, or (with a ``watch``) its cancellation
        is requested.

        The checks are part of the compare-and-swap change, so a result or
        cancel request stored meanwhile is seen when the write conflicts.
        """

        def refuse() -> str | None:
            if job.resultCode != NO_RESULT:  # cancelled by the API meanwhile
                return _RESULT_STORED
            if watch is not None and watch.check():
                return _CANCEL_SEEN
            return None

        def mark() -> None:
            job.running = True

        try:
            with job.guarded(refuse):
                job.record_change(mark)
        except ChangeRefused as refused:
            if refused.reason == _CANCEL_SEEN:
                return Outcome(CANCELLED, cancelled=True)
            return Outcome(job.resultCode, recorded=True)
        return None

    def recover(self, job: RuntimeJob, watch: CancelWatch | None = None) -> Outcome | None:
        """Record the end of a run that was killed: ``job`` was found
        ``running`` on load, which only a worker that died mid-run leaves.

        Error 500 is recorded and ``continue_running()`` decides.

        :return: how the job ends (a pending cancel request wins), or None
            when it runs again.
        """
        if watch is not None and watch.check():
            return Outcome(CANCELLED, cancelled=True)
        job.record_error(INTERNAL_ERROR, "worker died while running the job (killed?)")
        result = job.continue_running()
        if result != NO_RESULT:
            job.record_event("Killed - finished")
            _log_run(job, "its last run was killed (worker died)", Outcome(result))
            return Outcome(result)
        job.record_event("Killed - restarting")
        run_log.warning("job %s %s: its last run was killed (worker died); running it again",
                        job.jobType, job.uuid)
        return None

    def run(
        self, job: RuntimeJob, watch: CancelWatch | None = None, *, started: bool = False
    ) -> Outcome:
        """Start ``job`` (unless ``started``: its claim marked it running),
        call its ``run()`` once and say what the run
        means, recording its errors and events (not its result: see
        :meth:`finish`).

        With a ``watch``, a job whose cancellation is requested does not
        start, and a cancellation stops the run, as does the class's
        ``TIMEOUT`` (without one, an inline run, it does not apply). An
        exception that is no :class:`Exception` (the worker's shutdown,
        ``KeyboardInterrupt``) propagates.
        """
        skipped = None if started else self.start(job, watch)
        if skipped is not None:
            return skipped
        worker_pid = os.getpid()
        watching = watch.running(run_timeout(type(job))) if watch else contextlib.nullcontext()
        try:
            with self.job_context(), watching:
                try:
                    value = job.run()
                except BaseException as exc:
                    end_forked_child(worker_pid, exc)
                    raise
                end_forked_child(worker_pid, None)
        except JobCancelled:
            run_log.info("job %s: cancelled while running", job.uuid)
            return Outcome(CANCELLED, cancelled=True)
        except JobTimedOut as exc:
            if watch is not None and watch.check():  # a cancel wins
                run_log.info("job %s: cancelled while timing out", job.uuid)
                return Outcome(CANCELLED, cancelled=True)
            return self._timed_out(job, exc.seconds)
        except (ErrorFinish, WarningFinish) as exc:
            job.record_event("Error - finished")
            outcome = Outcome(job.resultCode, recorded=True)
            _log_run(job, f"{_interrupt_name(exc)}: {exc}", outcome)
            return outcome
        except (ErrorContinue, WarningContinue) as exc:
            job.record_event("Error - restarting")
            outcome = Outcome(job.continue_running(), self.retry_delay(job))
            _log_run(job, f"{_interrupt_name(exc)}: {exc}", outcome)
            return outcome
        except UnstorableValue as exc:
            # One of the job's own saves, now undone: run again, the same
            # code would store the same value, so the job ends here.
            return self._failed_run(job, traceback.format_exc(), exc, final=INTERNAL_ERROR)
        except (Exception, SystemExit) as exc:
            return self._failed_run(job, traceback.format_exc(), exc)
        try:
            return interpret_result(value, self.default_requeue_delay)
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
        outcome = Outcome(result, self.retry_delay(job))
        _log_run(job, summary or _describe(exc), outcome)
        return outcome

    def _timed_out(self, job: RuntimeJob, seconds: float) -> Outcome:
        """Record error 504 for a run stopped at its ``TIMEOUT`` of
        ``seconds``, and log it; ``continue_running()`` decides."""
        msg = f"timed out after {seconds} s"
        record_error(job, TIMED_OUT, msg, None)
        result = job.continue_running()
        job.record_event("Timed out - restarting" if result == NO_RESULT
                         else "Timed out - finished")
        outcome = Outcome(result, self.retry_delay(job))
        _log_run(job, msg, outcome)
        return outcome

    def retry_delay(self, job: RuntimeJob) -> float:
        """Seconds before ``job`` runs again after a failed run: its class's
        run policy (:func:`~flask_spacewalk.runtime.policy.retry_delay`)
        with its ``errorCount`` as it now stands."""
        return retry_delay(type(job), job.errorCount, self.error_retry_delay)

    def finish(
        self,
        job: RuntimeJob,
        outcome: Outcome,
        watch: CancelWatch | None = None,
        entry: QueueEntry | None = None,
        *,
        requeue: bool = True,
        then_start: Claim | None = None,
    ) -> SpacewalkError | QueueError | None:
        """Record what a run of ``job`` came to: its result, its
        cancellation, or (``NO_RESULT``) that it no longer runs, and, with
        ``requeue``, put it back on the queue; then delete ``entry``.

        Where the queue shares the datastore's database (:attr:`shared`),
        the save that stores the job's result (or cancellation) deletes
        ``entry`` in the same transaction, and marks the job of
        ``then_start`` (the next claim of a batch) running there too, if it
        may start: one commit instead of three.

        The result goes through the job's own :meth:`RuntimeJob.record_result`
        (ZeroG jobs may override it), unless a cancel request is read before
        it saves (at first or after a conflict), or the job as last read
        shows that another run recorded a result meanwhile (this run's lease
        ran out): a job runs at least once, but its final result is recorded
        once. A run whose changes cannot be stored (``run()`` set a NaN
        without saving it) ends the job with error and result 500, recorded
        on the document as last stored.

        With an ``entry``, a failure to write leaves it reserved (its lease
        brings the job back, nothing is lost) and is logged; without one
        (an inline run) it propagates.

        :return: the datastore or queue outage that kept the outcome from
            being recorded, if any: the caller may wait before the next job.
        """
        # Only a cancellation that was stored settles the request: when the
        # write fails, the entry's lease brings the job back, and the
        # request must still be there for that run.
        cancelled = False
        settled = _Settled()

        def record() -> None:
            nonlocal cancelled
            with self._settling(job, entry, then_start, settled):
                cancelled = self._record_outcome(job, outcome, watch, requeue, settled)
            if settled.done:
                # the deliveries were recorded in the transaction that
                # stored the result and deleted the entry
                self._deliveries_recorded()
            elif entry is not None:
                # raising here keeps the entry: its next holder records them
                self._job_ended(job)

        outage = None
        if entry is None:
            record()
            self._job_ended_logged(job)
        else:
            outage = self._settle(entry, record, settled=settled)
        if cancelled:
            run_log.info("job %s: cancelled", job.uuid)
            clear_cancel(self.datastore, job.uuid)
        return outage

    def _settling(
        self, job: RuntimeJob, entry: QueueEntry | None, then_start: Claim | None,
        settled: _Settled,
    ) -> ContextManager[None]:
        """While the block runs, the first save of ``job`` that stores a
        result also deletes ``entry`` and starts ``then_start``, in one
        transaction, where the queue shares the datastore's database."""
        shared = self.shared
        if shared is None or entry is None:
            return contextlib.nullcontext()
        held: QueueEntry = entry
        settled.transacting = True

        def write(key: str, document: dict[str, Any], cas: int) -> int | None:
            # one save: after a conflict the guard reads the request itself
            check, settled.check_cancel = settled.check_cancel, False
            if settled.done or not cas or document.get("resultCode", NO_RESULT) == NO_RESULT:
                if check and cancel_requested(self.datastore, job.uuid):
                    raise self.datastore.casException(_CANCEL_SEEN)
                return None

            def transaction(tx: StoreTransaction) -> tuple[int, bool, Any]:
                if check:
                    [(request, _)] = tx.read([cancel_key(job.uuid)])
                    if request is not None:
                        # rolled back: the save's retry runs the guard, which
                        # reads the request and records the cancellation
                        raise self.datastore.casException(_CANCEL_SEEN)
                new_cas = tx.write(key, document, cas)
                if self.webhooks is not None:
                    # before the entry goes, in its transaction: never lost
                    tx.add_deliveries(self.webhooks.deliveries(job, cas=new_cas))
                deleted = tx.delete_entry(held)
                started = None if then_start is None else self._start_in(
                    tx, then_start, reread=True)
                return new_cas, deleted, started

            new_cas, settled.deleted, started = shared.transact(transaction)
            settled.done = True
            if then_start is not None and started is not None:
                (then_start.document, then_start.cas, then_start.cancel_requested,
                 then_start.started) = started  # fmt: skip
            return new_cas

        return job.writing_through(write)

    def _record_outcome(
        self, job: RuntimeJob, outcome: Outcome, watch: CancelWatch | None, requeue: bool,
        settled: _Settled | None = None,
    ) -> bool:
        """:return: whether the job was cancelled."""
        try:
            return self._record(job, outcome, watch, requeue, settled)
        except UnstorableValue as exc:
            # The job is back at its stored state, where anything saves.
            msg = f"the job's state after its run cannot be saved: {exc}"
            record_error(job, INTERNAL_ERROR, msg, exc)
            job.record_event("Error - finished")
            failed = Outcome(INTERNAL_ERROR)
            _log_run(job, msg, failed)
            return self._record(job, failed, watch, requeue, settled)

    def _record(
        self, job: RuntimeJob, outcome: Outcome, watch: CancelWatch | None, requeue: bool,
        settled: _Settled | None = None,
    ) -> bool:
        cancelled = outcome.cancelled

        def change() -> None:
            # Read at each application: a conflict may be the API's write
            # that follows its cancel request.
            nonlocal cancelled
            cancelled = cancelled or (watch is not None and watch.check())
            if cancelled:
                _apply_cancelled(job)
            job.running = False

        # Result first, entry second: a crash in between leaves an entry
        # whose job is finished, which the next worker drops.
        if outcome.finished and not outcome.recorded and not cancelled:
            refused = self._record_result(job, outcome.result, watch, settled)
            if refused is None:
                return False
            if refused == _RESULT_STORED:
                run_log.warning("job %s: another run recorded its result first (this "
                                "run's lease ran out); not recording it again", job.uuid)
                return False
            cancelled = True
        job.record_change(change)
        if requeue and not cancelled and not outcome.finished and job.resultCode == NO_RESULT:
            # Enqueue first, delete second: a crash in between runs the
            # job twice, never zero times.
            self.requeue(job, outcome.delay)
        return cancelled

    @staticmethod
    def _record_result(
        job: RuntimeJob, result: int, watch: CancelWatch | None, settled: _Settled | None = None
    ) -> str | None:
        """Tell the job its result, guarded; the guard's reason if refused.

        Where the result's save is a transaction of the queue's
        (:meth:`_settling`), the guard's first look at the cancel request
        is that transaction's read of it: one read less, and the request is
        read in the same transaction as the result is written.
        """
        in_transaction = watch is not None and settled is not None and settled.transacting

        def refuse() -> str | None:
            nonlocal in_transaction
            if job.stored_result != NO_RESULT:
                return _RESULT_STORED
            if in_transaction and settled is not None and watch is not None:
                in_transaction = False
                settled.check_cancel = True
                return _CANCEL_SEEN if watch.requested else None
            if watch is not None and watch.check():
                return _CANCEL_SEEN
            return None

        try:
            with job.guarded(refuse):
                job.record_result(result)
        except ChangeRefused as refused:
            return refused.reason
        finally:
            if settled is not None:
                settled.check_cancel = False
        return None

    # -- queue entries -----------------------------------------------------------

    def skip(self, job: RuntimeJob, entry: QueueEntry) -> None:
        """Drop the entry of a job that already has its result (a worker
        died between recording it and deleting the entry), with any cancel
        request left by a cancel that raced.

        The webhook deliveries of its end are recorded first (again, if
        they were: once per webhook-id), for the worker may have died
        before it recorded them.
        """
        self._settle(entry, lambda: self._job_ended(job))
        clear_cancel(self.datastore, job.uuid)

    def drop(self, entry: QueueEntry) -> None:
        """Delete an entry whose job cannot be loaded, for good."""
        self._settle(entry)

    def release(
        self, entry: QueueEntry, delay: float = 0.0, job: RuntimeJob | None = None
    ) -> None:
        """Give ``entry`` back to the queue, to be taken after ``delay`` s.

        :param job: a job interrupted mid-run (the worker shuts down): first
            saved as no longer running, so its next run is no "killed" one.
        """
        self._settle(entry, None if job is None else lambda: _stop_running(job),
                     release=True, delay=delay)

    def _settle(
        self,
        entry: QueueEntry,
        action: Callable[[], None] | None = None,
        *,
        release: bool = False,
        delay: float = 0,
        settled: _Settled | None = None,
    ) -> SpacewalkError | QueueError | None:
        """Run ``action`` (on the job), then delete or release the entry,
        unless ``action`` deleted it already (``settled``).

        When ``action`` fails the entry is left reserved: its lease runs out
        and the job comes back, so nothing is lost.

        :return: the outage (datastore or queue unavailable) that made
            ``action`` fail, if that was the cause.
        """
        try:
            if action is not None:
                action()
        except (SpacewalkError, QueueError) as exc:
            run_log.error("entry %s: cannot record outcome: %s", entry.id, exc)
            return exc if isinstance(exc, (DatastoreUnavailable, QueueUnavailable)) else None
        if settled is not None and settled.done:
            if not settled.deleted:
                run_log.warning("entry %s was taken over by another worker", entry.id)
            return None
        try:
            if release:
                entry.release(delay=delay)
            else:
                entry.delete()
        except EntryNotReserved:
            run_log.warning("entry %s was taken over by another worker", entry.id)
        except QueueError as exc:
            run_log.error("entry %s: %s; its lease will return it", entry.id, exc)
        return None

    # -- cancelling ------------------------------------------------------------

    def cancel(self, job: RuntimeJob) -> CancelAnswer:
        """Ask for ``job``'s cancellation: the API's side of the protocol
        (:mod:`~flask_spacewalk.runtime.cancel`).

        :raises JobUpdateConflict: the document kept changing under the write.
        """
        if job.resultCode != NO_RESULT:
            return CancelAnswer.FINISHED
        request_cancel(self.datastore, job.uuid)
        answer = CancelAnswer.CANCELLED

        def refuse() -> str | None:
            return _RESULT_STORED if job.resultCode != NO_RESULT else None

        def change() -> None:
            nonlocal answer
            if job.running:
                # Saved unchanged: a worker's concurrent write then conflicts,
                # applies its change again and reads the request.
                answer = CancelAnswer.CANCELLING
            else:
                answer = CancelAnswer.CANCELLED
                _apply_cancelled(job)

        try:
            with job.guarded(refuse):
                job.record_change(change)
        except ChangeRefused:
            answer = CancelAnswer.FINISHED
        if answer != CancelAnswer.CANCELLING:
            # Settled here: no worker needs the request (one that is about to
            # mark the job running conflicts and finds the result).
            clear_cancel(self.datastore, job.uuid)
        if answer == CancelAnswer.CANCELLED and self._job_ended_logged(job):
            # left when the deliveries were not recorded: a worker that
            # meets it records them (skip)
            self._drop_entry(job)
        return answer

    def _job_ended(self, job: RuntimeJob) -> None:
        """Record the webhook deliveries of ``job``'s end, if it ended.

        :raises SpacewalkError: they could not be written.
        """
        if self.webhooks is not None and job.resultCode != NO_RESULT:
            self.webhooks.job_ended(self.datastore, job)

    def _deliveries_recorded(self) -> None:
        """Wake the webhook sender after a transaction of :meth:`finish`
        recorded deliveries (:meth:`_settling`)."""
        if self.webhooks is not None and self.webhooks.on_record is not None:
            self.webhooks.on_record()

    def _job_ended_logged(self, job: RuntimeJob) -> bool:
        """:meth:`_job_ended`, logging a failure: whether it did not fail."""
        try:
            self._job_ended(job)
        except SpacewalkError as exc:
            log.error("job %s: its webhook deliveries are not recorded: %s", job.uuid, exc)
            return False
        return True

    def _drop_entry(self, job: RuntimeJob) -> None:
        """Delete a cancelled job's queue entry, unless a worker holds it.

        Our workers drop an entry whose job has its result anyway; a ZeroG
        worker would run the job, so the entry goes now. Best effort: a worker
        that holds it already drops it.
        """
        if job.queueJobId > 0:
            try:
                self.queue.delete(job.queueJobId)
            except QueueError as exc:
                log.warning("job %s: cannot delete its queue entry: %s", job.uuid, exc)

    def cancel_stuck(self, uuid: str, entry: QueueEntry) -> None:
        """Record the cancellation of a job that does not stop, delete its
        request and its entry (the worker exits next).

        :raises TypeError: the lifecycle has no registry to load the job.
        """
        if self.registry is None:
            raise TypeError("cancel_stuck needs a Lifecycle with a registry")
        job = self.registry.get_job(uuid, self.datastore, self.queue)
        job.record_change(_apply_cancelled, job)
        self._job_ended(job)
        clear_cancel(self.datastore, uuid)
        entry.delete()

    def time_out_stuck(self, uuid: str, entry: QueueEntry, seconds: float) -> None:
        """Record the timeout of a run that does not stop, as :meth:`run`
        records one that does, settle ``entry`` and requeue the job if
        ``continue_running()`` says so (the worker exits next). A cancel
        request stored meanwhile wins: :meth:`cancel_stuck`.

        :param seconds: the run's ``TIMEOUT``.
        :raises TypeError: the lifecycle has no registry to load the job.
        """
        if self.registry is None:
            raise TypeError("time_out_stuck needs a Lifecycle with a registry")
        if cancel_requested(self.datastore, uuid):
            self.cancel_stuck(uuid, entry)
            return
        job = self.registry.get_job(uuid, self.datastore, self.queue)
        outcome = self._timed_out(job, seconds)
        # A watch that only reads: a request stored from now on still wins.
        watch = CancelWatch(self.datastore, uuid, lambda: None, grace=0.0)
        self.finish(job, outcome, watch, entry)

    # -- retrying ----------------------------------------------------------------

    def retry(
        self, job: RuntimeJob, params: dict[str, Any] | None = None, *, inline: bool = False,
        **queue_kwargs: Any,
    ) -> RetryAnswer:
        """Run a failed or cancelled job again under its uuid
        (:mod:`~flask_spacewalk.runtime.retry`).

        One compare-and-swap write guarded on its status (of two racing
        retries, one wins) resets it, sets ``params`` (validated Params
        attributes) and records the retry event; then its cancel request is
        deleted and it is queued with the priority and lease it was started
        with, ``queue_kwargs`` overriding, or (``inline``) run here. An
        entry the ended job left (its worker died, a cancel could not delete
        it) is deleted first, so that the job never runs twice.

        :raises QueueError: the queue refused the entry: the job is put back
            as it was, with an event saying why.
        """
        if job_status(job) not in RETRYABLE:
            return RetryAnswer.NOT_RETRYABLE
        if not self._drop_entry_of(job.uuid, job.queueJobId):
            return RetryAnswer.ENTRY_HELD
        kept = job.queueKwargs if isinstance(job.queueKwargs, dict) else {}
        kwargs = {name: kept[name] for name in _KEPT_ON_REQUEUE if name in kept}
        kwargs.update(queue_kwargs)
        encode_value({"queueKwargs": kwargs})
        params = params or {}
        before: dict[str, Any] = {}

        def change() -> None:
            now = vars(job)
            before.update((name, now.get(name, _UNSET)) for name in (*RESET_FIELDS, *params))
            changed = [name for name, value in params.items() if now.get(name, _UNSET) != value]
            event = retry_event(job_status(job), job.resultCode, changed)
            job.resultCode, job.completeness, job.errorCount = NO_RESULT, 0.0, 0
            job.tickcount, job.running, job.queueKwargs = 0.0, False, dict(kwargs)
            now.update(params)
            job.events.append(make_event(event))

        try:
            with job.guarded(lambda: None if job_status(job) in RETRYABLE else "ended"):
                job.record_change(change)
        except ChangeRefused:
            return RetryAnswer.NOT_RETRYABLE
        try:
            # a stale request would cancel the new run: gone before it can start
            self.datastore.delete(cancel_key(job.uuid))
            if not inline:
                self.enqueue(job, **kwargs)
        except (SpacewalkError, QueueError) as exc:
            self._undo_retry(job, before, exc)
            raise
        if inline:
            self._run_here(job)
        return RetryAnswer.RETRIED

    def _drop_entry_of(self, uuid: str, entry_id: Any) -> bool:
        """Delete entry ``entry_id`` if it is still there with the body
        ``uuid`` (after a queue's reset an id may be another job's); whether
        none is left: False while a worker holds it (it drops it on seeing
        the job ended or gone). A queue that cannot tell (ZeroG's) keeps it.
        """
        if isinstance(entry_id, bool) or not isinstance(entry_id, int) or entry_id <= 0:
            return True
        try:
            if not self.queue.has_entry(entry_id, uuid):
                return True
        except NotSupported:
            return True
        return self.queue.delete(entry_id) or not self.queue.has_entry(entry_id, uuid)

    def _undo_retry(self, job: RuntimeJob, before: dict[str, Any], exc: Exception) -> None:
        """Put back a retried job that could not be queued (unless changed
        since): queued with no entry, it would wait for ever."""

        def change() -> None:
            for name, value in before.items():
                if value is _UNSET:
                    vars(job).pop(name, None)
                else:
                    setattr(job, name, value)
            job.events.append(make_event(undo_event(exc)))

        try:
            with job.guarded(lambda: None if job_status(job) is JobStatus.QUEUED else "changed"):
                job.record_change(change)
        except ChangeRefused:
            pass
        except SpacewalkError as undo:
            log.error("job %s: retried, but neither queued (%s) nor put back (%s); "
                      "`flask spacewalk requeue --stale` finds it", job.uuid, exc, undo)

    # -- retention ---------------------------------------------------------------

    def purge(self, jobs: Sequence[tuple[str, int, Any]]) -> set[str]:
        """Delete ended jobs as they were read, each with its cancel request
        and its queue entry (:mod:`~flask_spacewalk.runtime.retention`).

        :param jobs: ``(uuid, cas, queueJobId)`` of each job as read; one
            written or deleted since (a retry made it live again, another
            purge took it) is left as it is.
        :return: the uuids deleted.
        """
        deleted = set(self.datastore.delete_jobs([
            JobDeletion(JOB_KEY_PREFIX + uuid, cas, (cancel_key(uuid),)) for uuid, cas, _ in jobs
        ]))  # fmt: skip
        for uuid, _, queue_job_id in jobs:
            if JOB_KEY_PREFIX + uuid in deleted:
                try:
                    self._drop_entry_of(uuid, queue_job_id)
                except QueueError as exc:
                    log.warning("job %s: cannot delete its queue entry: %s", uuid, exc)
        return {uuid for uuid, _, _ in jobs if JOB_KEY_PREFIX + uuid in deleted}

    # -- inline ------------------------------------------------------------------

    def run_inline(self, job: RuntimeJob, **queue_kwargs: Any) -> None:
        """Store a new job and run it to completion here, as a worker would
        (SPEC section 4, ``SPACEWALK_RUN_INLINE``), without the queue: a
        ``NO_RESULT`` runs again at once, up to :attr:`INLINE_MAX_RUNS`
        times, after which the job is queued with its last delay.

        ``queue_kwargs`` (a ``priority``) are kept in ``queueKwargs`` for
        that requeue (a delayed job is given to :meth:`create` instead).

        :raises SpacewalkError: the job's document could not be written.
        """
        encode_value({"queueKwargs": queue_kwargs})
        job.queueKwargs = dict(queue_kwargs)
        job.save()
        self._run_here(job)

    def _run_here(self, job: RuntimeJob) -> None:
        """Run a stored job as a worker would, without the queue (see
        :meth:`run_inline`)."""
        for _ in range(self.INLINE_MAX_RUNS):
            outcome = self.run(job)
            # as a worker records it (a run whose changes cannot be stored
            # ends the job with 500), but not put back on the queue
            self.finish(job, outcome, requeue=False)
            if outcome.finished or job.resultCode != NO_RESULT:
                return
        self.requeue(job, outcome.delay)


#: An attribute the job did not have, for :meth:`Lifecycle._undo_retry`.
_UNSET = object()


@dataclass
class _Settled:
    """How the saves of :meth:`Lifecycle.finish` go: whether one deleted the
    entry, whether it was still there to delete, and whether the next one
    reads the cancel request."""

    done: bool = False
    deleted: bool = True
    #: Whether the saves go through :meth:`Lifecycle._settling`'s transactions.
    transacting: bool = False
    #: Whether the next save reads the job's cancel request first (in its
    #: transaction), for the result's guard, which did not read it.
    check_cancel: bool = False


def _read_claim(transaction: StoreTransaction, entry: QueueEntry) -> Claim:
    """``entry`` with its job and cancel request read in ``transaction``."""
    try:
        uuid = json.loads(entry.body)
    except ValueError:
        uuid = None
    if not isinstance(uuid, str):
        return Claim(entry)
    (document, cas), (request, _) = transaction.read([JOB_KEY_PREFIX + uuid, cancel_key(uuid)])
    return Claim(entry, uuid, document, cas, request is not None)


def cancel_job(job: RuntimeJob, webhooks: WebhookRecorder | None = None) -> CancelAnswer:
    """:meth:`Lifecycle.cancel` on ``job``'s own connections."""
    return Lifecycle(job.datastore, job.queue, webhooks=webhooks).cancel(job)


def _apply_cancelled(job: RuntimeJob) -> None:
    """Mark ``job`` cancelled (not saved), unless it already has a result.

    A job that recorded its own final result keeps it.
    """
    if job.resultCode == NO_RESULT:
        job.errors.append(make_error(CANCELLED, CANCEL_MESSAGE))
        job.errorCount += 1
        job.resultCode = CANCELLED
        job.completeness = 1.0
    job.running = False


def _stop_running(job: RuntimeJob) -> None:
    """Save ``job`` as no longer running (before its entry is released)."""
    try:
        job.update_attrs(running=False)
    except UnstorableValue as exc:
        # the job is back at its stored state, which saves
        run_log.warning("job %s %s: unsaved changes dropped: %s", job.jobType, job.uuid, exc)
        job.update_attrs(running=False)


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
        # a tenth of a second is precise enough for a reader (jitter adds digits)
        run_log.warning("job %s %s: %s; retry in %s s", job.jobType, job.uuid, what,
                        f"{round(outcome.delay, 1):g}")
        return
    status = JobStatus.of({"resultCode": outcome.result})
    level = logging.WARNING if status is JobStatus.FINISHED else logging.ERROR
    run_log.log(level, "job %s %s: %s; %s with %d", job.jobType, job.uuid, what,
                status.value, outcome.result)
