"""Cancelling jobs: the request, the API's answers, and the worker's watch.

The writes to the job document on either side are the lifecycle's
(:meth:`Lifecycle.cancel <flask_spacewalk.runtime.lifecycle.Lifecycle.cancel>`
for the API, its ``start`` and ``finish`` for the worker); this module
holds the request and the watch that reads it.

A cancel request is the datastore key ``spacewalk_cancel_<uuid>``, never a
field of the job document (ZeroG rejects unknown keys). Both sides follow
one protocol, which is what makes the races harmless:

- the API stores the request, *then* writes the job document with
  compare-and-swap: the cancellation (error 410 "cancelled", result 410)
  when the job is not running, or an unchanged save when it is;
- every write of the worker that starts, requeues or finishes a job reads
  the request while applying its change (for the start, it was read with
  the job's document a moment before), and reads it again whenever a
  conflict makes it apply the change anew.

So a worker's write either comes after the API's (it conflicts, re-reads and
sees the request) or before it (the API then sees ``running`` or the
result). A job the API answered ``cancelled`` for never starts; one it
answered ``cancelling`` for ends with 410.

The same watch stops a run that goes on past its class's ``TIMEOUT``
(:class:`StopReason`): a timeout and a cancel are enforced alike, and when
both apply the cancel wins.
"""
from __future__ import annotations

import contextlib
import enum
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

from ..errors import SpacewalkError
from .outcome import JobStopped, JobTimedOut
from .protocols import Datastore
from .records import utcnow
from .status import CANCELLED_CODE

log = logging.getLogger(__name__)

#: The error and result code of a cancelled job ("Gone"), by its old name.
CANCELLED = CANCELLED_CODE
#: The message of its error.
CANCEL_MESSAGE = "cancelled"
#: Datastore keys of cancel requests: ``spacewalk_cancel_<uuid>``.
KEY_PREFIX = "spacewalk_cancel_"


def cancel_key(uuid: str) -> str:
    """The datastore key of the cancel request for job ``uuid``."""
    return f"{KEY_PREFIX}{uuid}"


class JobCancelled(JobStopped):
    """Raised inside a running job whose cancellation was requested.

    A :class:`BaseException`, so a job's ``except Exception`` cannot swallow
    it; the worker catches it and records the cancellation.
    """


class StopReason(str, enum.Enum):
    """Why the worker stops a running job."""

    #: Its cancellation was requested.
    CANCEL = "cancel"
    #: It ran past its class's ``TIMEOUT``.
    TIMEOUT = "timeout"


class CancelAnswer(str, enum.Enum):
    """What :meth:`Lifecycle.cancel <flask_spacewalk.runtime.lifecycle.Lifecycle.cancel>` did."""

    #: The job had not started: it is cancelled and never runs.
    CANCELLED = "cancelled"
    #: The job is running: its worker stops it.
    CANCELLING = "cancelling"
    #: The job already has its result: nothing to cancel.
    FINISHED = "finished"


def request_cancel(datastore: Datastore, uuid: str) -> None:
    """Store the cancel request for job ``uuid``."""
    datastore.set(cancel_key(uuid), {"uuid": uuid, "requestedAt": utcnow().isoformat()})


def cancel_requested(datastore: Datastore, uuid: str) -> bool:
    """Whether a cancel request for job ``uuid`` is stored (one read)."""
    return datastore.read(cancel_key(uuid)) is not None


def clear_cancel(datastore: Datastore, uuid: str) -> None:
    """Delete the request once it is settled; a failure only leaves it behind."""
    try:
        datastore.delete(cancel_key(uuid))
    except SpacewalkError as exc:
        log.warning("job %s: cannot delete its cancel request: %s", uuid, exc)


#: The watch of the job running in the main thread, for the signal handler.
_interruptible: CancelWatch | None = None


def on_interrupt_signal(signum: int, frame: Any) -> None:
    """The signal handler that stops a job by force (see :class:`CancelWatch`)."""
    watch = _interruptible
    stop = watch.stop_error(" (stopped by force)") if watch is not None else None
    if stop is not None:
        raise stop


class CancelWatch:
    """The worker's watch over one run of a job: for a cancel request, and
    for the run's timeout.

    :meth:`check` reads the request (once found, it is never read again);
    :meth:`poll`, called about once a second while the job runs (and at the
    run's deadline), checks and enforces both; :meth:`keepalive`, the job's
    keepalive, raises :class:`JobCancelled` or
    :class:`~flask_spacewalk.runtime.outcome.JobTimedOut` at the job's next
    progress call once the job is to stop.

    :param grace: seconds a cancelled job has to reach a progress call before
        ``interrupt`` is called (it stops the job by force). A run that times
        out is interrupted at its deadline: ``TIMEOUT`` is all it may take.
    :param interrupt: stops the job by force; ``None`` when it cannot be.
    :param give_up: called with the :attr:`stop_reason` when the job still
        runs ``exit_delay`` seconds after ``interrupt`` (stuck in C code, say).
    :param call_at: asks for a call of :meth:`poll` at a ``time.monotonic()``
        time sooner than the next regular one (the run's deadline).
    """

    def __init__(
        self,
        datastore: Datastore,
        uuid: str,
        touch: Callable[[], None],
        *,
        grace: float,
        interrupt: Callable[[], None] | None = None,
        give_up: Callable[[StopReason], None] | None = None,
        exit_delay: float = 5.0,
        call_at: Callable[[float], None] | None = None,
    ):
        self.datastore = datastore
        self.uuid = uuid
        self.touch = touch
        self.grace = grace
        self.interrupt = interrupt
        self.give_up = give_up
        self.exit_delay = exit_delay
        self.call_at = call_at
        self.requested = False
        self.armed = False
        #: The ``TIMEOUT`` of the run being watched, and whether it ran out.
        self.timeout: float | None = None
        self.timed_out = False
        self._deadline: float | None = None
        self._primed = False
        self._requested_at: float | None = None
        self._forced = False
        self._interrupted_at: float | None = None

    def check(self) -> bool:
        """Whether the job's cancellation is requested (one read until it is)."""
        if self._primed:
            self._primed = False  # read with the job's document a moment ago
        elif not self.requested and cancel_requested(self.datastore, self.uuid):
            self._set_requested()
        return self.requested

    def prime(self, requested: bool) -> None:
        """Take the request as read together with the job's document: the
        next :meth:`check` answers from it without reading again."""
        if requested:
            self._set_requested()
        self._primed = True

    def _set_requested(self) -> None:
        if not self.requested:
            self.requested = True
            self._requested_at = time.monotonic()

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the job is to stop, if it is: a cancel wins over a timeout."""
        if self.requested:
            return StopReason.CANCEL
        if self.timed_out:
            return StopReason.TIMEOUT
        return None

    def stop_error(self, how: str = "") -> JobStopped | None:
        """The exception that stops the running job, if it is to stop."""
        if not self.armed:
            return None
        reason = self.stop_reason
        if reason is StopReason.CANCEL:
            return JobCancelled(f"job {self.uuid} cancelled{how}")
        if reason is StopReason.TIMEOUT:
            assert self.timeout is not None
            return JobTimedOut(self.timeout)
        return None

    def keepalive(self) -> None:
        """The job's keepalive: renews the lease, or stops the job."""
        stop = self.stop_error()
        if stop is not None:
            raise stop
        self.touch()

    @contextlib.contextmanager
    def running(self, timeout: float | None = None) -> Iterator[None]:
        """Arm the watch while the job's ``run()`` executes.

        :param timeout: seconds the run may take (the class's ``TIMEOUT``).
        """
        global _interruptible
        interruptible = self.interrupt is not None
        if interruptible:
            _interruptible = self
        self.timeout, self.timed_out = timeout, False
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.armed = True
        if self._deadline is not None and self.call_at is not None:
            self.call_at(self._deadline)
        try:
            yield
        finally:
            self.armed = False
            if interruptible:
                _interruptible = None

    def poll(self) -> None:
        """Check for a request and the deadline, and enforce them (from the
        lease thread)."""
        if not self.armed:
            return
        if not self.requested:
            try:
                self.check()
            except SpacewalkError as exc:
                log.warning("job %s: cannot read its cancel request: %s", self.uuid, exc)
            if self.requested:
                # a job just found cancelled has its grace period first
                self._schedule(time.monotonic() + self.grace)
                return
        now = time.monotonic()
        if self._forced:
            interrupted_at = self._interrupted_at
            if (
                interrupted_at is not None
                and self.give_up is not None
                and now - interrupted_at >= self.exit_delay
            ):
                reason = self.stop_reason
                assert reason is not None
                self.give_up(reason)
        elif self.requested:
            assert self._requested_at is not None
            if now - self._requested_at >= self.grace:
                self._force(f"cancelled {now - self._requested_at:.0f} s ago and still running")
        elif not self.timed_out and self._deadline is not None and now >= self._deadline:
            self.timed_out = True
            self._force(f"still running after its timeout of {self.timeout} s")

    def _force(self, why: str) -> None:
        """Stop the job by force, if it can be; at its next progress call if not."""
        self._forced = True
        if self.interrupt is None:
            log.warning("job %s: %s; stopping it at its next progress call", self.uuid, why)
            return
        log.warning("job %s: %s; interrupting it", self.uuid, why)
        self._interrupted_at = time.monotonic()
        self.interrupt()
        self._schedule(self._interrupted_at + self.exit_delay)

    def _schedule(self, when: float) -> None:
        if self.call_at is not None:
            self.call_at(when)


def main_thread_interrupter(signum: int) -> Callable[[], None] | None:
    """A function sending ``signum`` to the main thread, if this is it."""
    main = threading.main_thread()
    if threading.current_thread() is not main or main.ident is None:
        return None
    ident = main.ident
    return lambda: signal.pthread_kill(ident, signum)
