"""Job write notifications heard by one thread per process and datastore.

A datastore of this package announces each write of a job document on a
channel of its store (a wake-up socket, ``NOTIFY``, ``PUBLISH``), with the
job's uuid. :class:`WriteListener` holds the one connection of a process
that hears them, in a daemon thread started by the first waiter, and sets
the events of the waiters of that uuid: two hundred waiting requests are
one connection, not two hundred. When the connection breaks it connects
again and wakes every waiter, since writes made meanwhile went unheard; the
waiters re-read now and then anyway (:mod:`~flask_spacewalk.runtime.changes`).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from ._fork import abandon, track

__all__ = ["Receiver", "WriteListener"]

log = logging.getLogger(__name__)

#: How long a receive blocks: how soon the thread notices :meth:`close`.
RECEIVE_TIMEOUT = 1.0
#: The longest wait between two attempts to connect.
MAX_BACKOFF = 2.0
#: How long a new waiter waits for the first connection: a write made
#: before the listener hears its channel would cost the waiter a re-read.
READY_WAIT = 1.0


class Receiver(Protocol):
    """One connection hearing a datastore's write notifications."""

    def receive(self, timeout: float) -> Iterator[str]:
        """The uuids of the jobs written, as they come, for up to ``timeout``
        seconds; raise when the connection broke."""

    def close(self) -> None:
        """Close the connection (in the process that made it)."""


class WriteListener:
    """Hears one datastore's write notifications and wakes the waiters.

    :param name: names the thread and the log lines.
    :param connect: opens a :class:`Receiver` already listening.
    """

    def __init__(self, name: str, connect: Callable[[], Receiver]) -> None:
        self.name = name
        self._connect = connect
        self._reset()
        track(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        self._receiver: Receiver | None = None
        self._stop = threading.Event()
        #: set while a receiver listens
        self._ready = threading.Event()

    def _after_fork(self) -> None:
        # The thread did not survive the fork; its connection is the parent's.
        abandon(self._receiver)
        self._reset()

    @contextmanager
    def job_writes(self, uuid: str) -> Iterator[threading.Event]:
        """An event set after each write of job ``uuid`` is heard, and after
        a reconnect, while the context lasts."""
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(uuid, set()).add(event)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"spacewalk writes {self.name}", daemon=True
                )
                self._thread.start()
        self._ready.wait(READY_WAIT)
        try:
            yield event
        finally:
            with self._lock:
                events = self._waiters.get(uuid)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._waiters[uuid]

    def waiting(self) -> int:
        """How many waiters there are (for tests and the curious)."""
        with self._lock:
            return sum(len(events) for events in self._waiters.values())

    def close(self) -> None:
        """Stop the thread (within :data:`RECEIVE_TIMEOUT`) and close its
        connection; a later waiter starts it again."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(RECEIVE_TIMEOUT + 1.0)
        self._wake_all()

    def _wake(self, uuid: str) -> None:
        with self._lock:
            events = list(self._waiters.get(uuid, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [event for events in self._waiters.values() for event in events]
        for event in events:
            event.set()

    def _run(self) -> None:
        backoff = 0.05
        stop = self._stop
        while not stop.is_set():
            try:
                receiver = self._connect()
            except Exception as exc:
                log.warning("%s: cannot listen for job writes: %s", self.name, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self._receiver = receiver
            self._ready.set()
            # writes made while no connection listened went unheard
            self._wake_all()
            try:
                while not stop.is_set():
                    for uuid in receiver.receive(RECEIVE_TIMEOUT):
                        self._wake(uuid)
                backoff = 0.05
            except Exception as exc:
                log.info("%s: the job writes' listener reconnects: %s", self.name, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                self._ready.clear()
                self._receiver = None
                _close_quietly(receiver)


def _close_quietly(receiver: Receiver) -> None:
    try:
        receiver.close()
    except Exception:  # a broken connection may fail to close: it is gone anyway
        log.debug("closing a write receiver failed", exc_info=True)

