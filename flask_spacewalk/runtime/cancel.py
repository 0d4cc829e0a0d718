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


class JobCancelled(BaseException):
    """Raised inside a running job whose cancellation was requested.

    A :class:`BaseException`, so a job's ``except Exception`` cannot swallow
    it; the worker catches it and records the cancellation.
    """


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
    if watch is not None and watch.armed and watch.requested:
        raise JobCancelled(f"job {watch.uuid} cancelled (stopped by force)")


class CancelWatch:
    """The worker's watch over one job for a cancel request.

    :meth:`check` reads the request (once found, it is never read again);
    :meth:`poll`, called about once a second while the job runs, checks and
    enforces it; :meth:`keepalive`, the job's keepalive, raises
    :class:`JobCancelled` at the job's next progress call once it is
    requested.

    :param grace: seconds a cancelled job has to reach a progress call before
        ``interrupt`` is called (it stops the job by force).
    :param interrupt: stops the job by force; ``None`` when it cannot be.
    :param give_up: called when the job still runs ``exit_delay`` seconds
        after ``interrupt`` (stuck in C code, say).
    """

    def __init__(
        self,
        datastore: Datastore,
        uuid: str,
        touch: Callable[[], None],
        *,
        grace: float,
        interrupt: Callable[[], None] | None = None,
        give_up: Callable[[], None] | None = None,
        exit_delay: float = 5.0,
    ):
        self.datastore = datastore
        self.uuid = uuid
        self.touch = touch
        self.grace = grace
        self.interrupt = interrupt
        self.give_up = give_up
        self.exit_delay = exit_delay
        self.requested = False
        self.armed = False
        self._primed = False
        self._requested_at: float | None = None
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

    def keepalive(self) -> None:
        """The job's keepalive: renews the lease, or stops a cancelled job."""
        if self.armed and self.requested:
            raise JobCancelled(f"job {self.uuid} cancelled")
        self.touch()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Arm the watch while the job's ``run()`` executes."""
        global _interruptible
        interruptible = self.interrupt is not None
        if interruptible:
            _interruptible = self
        self.armed = True
        try:
            yield
        finally:
            self.armed = False
            if interruptible:
                _interruptible = None

    def poll(self) -> None:
        """Check for a request and enforce it (from the lease thread)."""
        if not self.armed:
            return
        if not self.requested:
            try:
                self.check()
            except SpacewalkError as exc:
                log.warning("job %s: cannot read its cancel request: %s", self.uuid, exc)
            return  # a job just found cancelled has its grace period first
        now = time.monotonic()
        if self._interrupted_at is None:
            assert self._requested_at is not None
            if self.interrupt is not None and now - self._requested_at >= self.grace:
                log.warning("job %s: cancelled %.0f s ago and still running; "
                            "interrupting it", self.uuid, now - self._requested_at)
                self._interrupted_at = now
                self.interrupt()
        elif self.give_up is not None and now - self._interrupted_at >= self.exit_delay:
            self.give_up()


def main_thread_interrupter(signum: int) -> Callable[[], None] | None:
    """A function sending ``signum`` to the main thread, if this is it."""
    main = threading.main_thread()
    if threading.current_thread() is not main or main.ident is None:
        return None
    ident = main.ident
    return lambda: signal.pthread_kill(ident, signum)
