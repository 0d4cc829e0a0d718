"""Waiting for a stored job to change: what ``Prefer: wait``, the long poll
and the event stream stand on (SPEC section 9).

:meth:`JobWatch.wait` returns as soon as a job's document has another cas
than the one the caller saw, or when its time is up. It re-reads the
document at most :data:`POLL_INTERVAL` apart; a datastore that can tell of
its writes wakes it sooner.
"""
from __future__ import annotations

import time
from typing import Any

from .job import make_key
from .protocols import SpacewalkDatastore

__all__ = ["POLL_INTERVAL", "JobWatch"]

#: The longest a waiter goes without re-reading the job (SPEC section 9).
POLL_INTERVAL = 0.05


class JobWatch:
    """Waits for the jobs of one datastore to change."""

    def __init__(self, datastore: SpacewalkDatastore) -> None:
        self.datastore = datastore

    def wait(
        self, uuid: str, seen_cas: int, timeout: float
    ) -> tuple[dict[str, Any] | None, int]:
        """The job's document and cas once its cas is not ``seen_cas``, or
        as stored when ``timeout`` seconds have passed (``(None, 0)`` when
        the job is gone)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        key = make_key(uuid)
        while True:
            document, cas = self.datastore.read_with_cas(key)
            if not isinstance(document, dict):
                return None, 0
            left = deadline - time.monotonic()
            if cas != seen_cas or left <= 0:
                return document, cas
            time.sleep(min(POLL_INTERVAL, left))
