"""How long runs take and how they end: ``spacewalk_job_duration_seconds``
and ``spacewalk_job_results_total``.

Each worker process counts the durations of its runs in memory
(:class:`DurationRecorder`) and adds them, every heartbeat and when it exits
cleanly, to one datastore record outside the job keys
(:data:`DURATIONS_KEY`), with compare-and-swap. So the counts are the whole
fleet's, on every host, and outlive any process: a worker started anew adds
to them, and one killed with SIGKILL loses at most what it observed since its
last flush. ``<prefix>/metrics`` reads the record with :func:`read_durations`.
"""
from __future__ import annotations

import bisect
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .protocols import Datastore

__all__ = [
    "BUCKETS",
    "DURATIONS_KEY",
    "DurationRecorder",
    "Histogram",
    "read_durations",
]

log = logging.getLogger(__name__)

#: The upper bounds of the buckets, in seconds (``+Inf`` follows): from a
#: few milliseconds for trivial jobs to an hour for batch work.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
#: The record of every worker's counts. Its name carries the buckets'
#: version: other buckets would start a record of their own.
DURATIONS_KEY = "spacewalk_durations_1"
#: Compare-and-swap attempts of one flush before its counts wait for the next.
FLUSH_ATTEMPTS = 10


@dataclass
class Histogram:
    """One jobType's runs that recorded a result: ``counts[i]`` runs took at
    most ``BUCKETS[i]`` seconds and more than the bound before (the last
    counts the rest); ``results`` counts them by the status they ended in."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    sum: float = 0.0
    results: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.sum += other.sum
        for status, n in other.results.items():
            self.results[status] = self.results.get(status, 0) + n

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, runs at most le)`` pairs, as Prometheus exposes buckets."""
        bounds = [*(repr(bound) for bound in BUCKETS), "+Inf"]
        total, pairs = 0, []
        for bound, n in zip(bounds, self.counts):
            total += n
            pairs.append((bound, total))
        return pairs

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.sum, dict(self.results))

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "sum": self.sum, "results": self.results}

    @classmethod
    def from_json(cls, value: Any) -> Histogram:
        """A stored histogram; ValueError when it is not one."""
        if not isinstance(value, dict):
            raise ValueError(f"not a stored histogram: {value!r:.200}")
        counts, total, results = value.get("counts"), value.get("sum"), value.get("results", {})
        if (
            not isinstance(counts, list)
            or len(counts) != len(BUCKETS) + 1
            or not all(_is_count(n) for n in counts)
            or not isinstance(total, (int, float))
            or isinstance(total, bool)
            or not isinstance(results, dict)
            or not all(_is_count(n) for n in results.values())
        ):
            raise ValueError(f"not a stored histogram: {value!r:.200}")
        return cls(list(counts), float(total), dict(results))


def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def read_durations(datastore: Datastore) -> dict[str, Histogram]:
    """Every jobType's histogram as the workers flushed them (one read).

    A record that is not ours (written by hand, say) reads as empty, and
    is logged.
    """
    return _parse(datastore.read(DURATIONS_KEY))


def _parse(value: Any) -> dict[str, Histogram]:
    if value is None:
        return {}
    try:
        if not isinstance(value, dict) or not isinstance(value.get("jobTypes"), dict):
            raise ValueError(f"not a durations record: {value!r:.200}")
        return {str(k): Histogram.from_json(v) for k, v in value["jobTypes"].items()}
    except ValueError as exc:
        log.warning("%s: %s; it is read as empty and replaced at the next flush",
                    DURATIONS_KEY, exc)
        return {}


class DurationRecorder:
    """The durations of one process's runs, kept until flushed.

    :meth:`observe` is cheap (no I/O); :meth:`flush` adds what was observed
    since the last flush to the record. :meth:`flushing` flushes every
    ``interval`` seconds in a thread of its own while a block runs, and once
    more when it ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Histogram] = {}

    def observe(self, job_type: str, seconds: float, status: str) -> None:
        """Count one run of ``job_type`` that took ``seconds`` and ended the
        job in ``status``."""
        seconds = max(0.0, seconds)
        index = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            histogram = self._pending.setdefault(job_type, Histogram())
            histogram.counts[index] += 1
            histogram.sum += seconds
            histogram.results[status] = histogram.results.get(status, 0) + 1

    def pending(self) -> dict[str, Histogram]:
        """A copy of what waits for the next flush."""
        with self._lock:
            return {job_type: h.copy() for job_type, h in self._pending.items()}

    def flush(self, datastore: Datastore) -> bool:
        """Add the pending counts to the record; True when they are stored
        (or there were none). On a conflict the record is read again, up to
        :data:`FLUSH_ATTEMPTS` times; counts that could not be stored wait
        for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return True
        try:
            for _ in range(FLUSH_ATTEMPTS):
                if _add(datastore, pending):
                    return True
                time.sleep(random.uniform(0.001, 0.05))  # the other writer goes first
            log.warning("%s: still conflicting after %d attempts; the counts wait for"
                        " the next flush", DURATIONS_KEY, FLUSH_ATTEMPTS)
        except Exception as exc:  # an outage, or a foreign store's own error
            log.warning("cannot store the run durations: %s; they wait for the next flush", exc)
        with self._lock:
            for job_type, histogram in pending.items():
                self._pending.setdefault(job_type, Histogram()).add(histogram)
        return False

    def flushing(self, interval: float, datastore: Callable[[], Datastore]) -> _Flusher:
        """A context manager: flush to ``datastore()`` every ``interval``
        seconds while the block runs, and when it ends."""
        return _Flusher(self, interval, datastore)


def _add(datastore: Datastore, pending: Mapping[str, Histogram]) -> bool:
    """One compare-and-swap write of the record plus ``pending``; False on
    a conflict."""
    value, cas = datastore.read_with_cas(DURATIONS_KEY)
    stored = _parse(value)
    for job_type, histogram in pending.items():
        stored.setdefault(job_type, Histogram()).add(histogram)
    record = {"jobTypes": {k: v.to_json() for k, v in stored.items()}}
    try:
        if value is None:
            datastore.create(DURATIONS_KEY, record)
            return True
        ok, _ = datastore.update_with_cas(DURATIONS_KEY, record, cas)
        return ok  # False: deleted meanwhile; created at the next attempt
    except (datastore.casException, datastore.existsException):
        return False


class _Flusher:
    """The thread of :meth:`DurationRecorder.flushing`."""

    def __init__(
        self, recorder: DurationRecorder, interval: float, datastore: Callable[[], Datastore]
    ) -> None:
        self._recorder = recorder
        self._interval = interval
        self._datastore = datastore
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spacewalk-durations",
                                        daemon=True)  # fmt: skip
        self._pid = os.getpid()

    def __enter__(self) -> _Flusher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if os.getpid() != self._pid:  # a child forked by a job: not ours
            return
        self._stop.set()
        self._thread.join()
        self._recorder.flush(self._datastore())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._recorder.flush(self._datastore())
            except Exception:  # opening the datastore: the next round tries again
                log.exception("cannot flush the run durations")
