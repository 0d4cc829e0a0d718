"""Waiting for a stored job to change: what ``Prefer: wait``, the long poll
and the event stream stand on (SPEC section 9).

:meth:`JobWatch.wait` returns as soon as a job's document has another cas
than the one the caller saw, or when its time is up. A datastore that tells
of its job writes (:class:`~.protocols.JobWriteNotifier`, every datastore
of this package) wakes it at once, and it re-reads the document at most
:data:`RECHECK_INTERVAL` apart all the same, so that a notification lost or
a listener reconnecting costs latency, never a hang; another datastore is
re-read at most :data:`POLL_INTERVAL` apart.
"""
from __future__ import annotations

import time
from typing import Any, cast

from .job import make_key
from .protocols import JobWriteNotifier, SpacewalkDatastore

__all__ = ["POLL_INTERVAL", "RECHECK_INTERVAL", "JobWatch"]

#: The longest a waiter goes without re-reading the job (SPEC section 9)
#: when its datastore does not tell of its writes.
POLL_INTERVAL = 0.05
#: The longest a waiter goes without re-reading the job when its datastore
#: tells of its writes: what a lost notification costs at most.
RECHECK_INTERVAL = 1.0


class JobWatch:
    """Waits for the jobs of one datastore to change."""

    def __init__(self, datastore: SpacewalkDatastore) -> None:
        self.datastore = datastore
        # by class, once: a protocol's isinstance looks at every member
        self.notifier: JobWriteNotifier | None = None
        if issubclass(type(datastore), JobWriteNotifier):
            self.notifier = cast(JobWriteNotifier, datastore)

    def wait(
        self, uuid: str, seen_cas: int, timeout: float
    ) -> tuple[dict[str, Any] | None, int]:
        """The job's document and cas once its cas is not ``seen_cas``, or
        as stored when ``timeout`` seconds have passed (``(None, 0)`` when
        the job is gone)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        if self.notifier is not None and timeout > 0:
            return self._wait_notified(self.notifier, uuid, seen_cas, deadline)
        key = make_key(uuid)
        while True:
            document, cas = self.datastore.read_with_cas(key)
            if not isinstance(document, dict):
                return None, 0
            left = deadline - time.monotonic()
            if cas != seen_cas or left <= 0:
                return document, cas
            time.sleep(min(POLL_INTERVAL, left))

    def _wait_notified(
        self, notifier: JobWriteNotifier, uuid: str, seen_cas: int, deadline: float
    ) -> tuple[dict[str, Any] | None, int]:
        key = make_key(uuid)
        with notifier.job_writes(uuid) as written:
            while True:
                # cleared before the read: a write after it sets it again
                written.clear()
                document, cas = self.datastore.read_with_cas(key)
                if not isinstance(document, dict):
                    return None, 0
                left = deadline - time.monotonic()
                if cas != seen_cas or left <= 0:
                    return document, cas
                written.wait(min(RECHECK_INTERVAL, left))
