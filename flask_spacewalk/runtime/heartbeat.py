"""Worker records: each job worker's heartbeat, and the requests it obeys.

Every worker process keeps a record of itself in the datastore, apart from
the job documents (the datastore's
:class:`~flask_spacewalk.runtime.protocols.WorkerRecords`: a table or hash
of its own), written every ``SPACEWALK_HEARTBEAT`` seconds by a thread of
its own, so that a long job never silences it::

    {"id", "host", "pid", "service", "queue", "state", "job", "jobType",
     "startedAt", "lastSeen", "jobsDone", "jobsFailed", "rss", "heartbeat"}

(``heartbeat``, the worker's interval, tells readers how long the record
stays live: :data:`LIVE_BEATS` intervals after ``lastSeen``.)

Requests to drain and to retire a worker are two plain datastore keys beside
it, ``spacewalk_worker_drain_<id>`` and ``spacewalk_worker_retire_<id>``,
which the operator's side (:mod:`.fleet`) writes and deletes and the worker
only reads, once a beat, in one round trip: the worker's rewrite of its
record can never lose a request, and no write needs a compare-and-swap.
The worker deletes its record and both keys when it exits cleanly; records
not refreshed for :data:`STALE_AFTER` seconds (a worker killed, or its host
lost) are deleted, with their keys, by any live worker.
"""
from __future__ import annotations

import datetime
import enum
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import NotSupported, SpacewalkError
from .protocols import SpacewalkDatastore
from .records import utcnow

log = logging.getLogger(__name__)

#: A record is live while its ``lastSeen`` is within this many of its
#: worker's heartbeats.
LIVE_BEATS = 3
#: Seconds after its ``lastSeen`` when any live worker deletes a record.
STALE_AFTER = 3600.0
#: Seconds between two looks of a worker for stale records.
SWEEP_INTERVAL = 60.0
#: Longest wait, when a worker exits, for a beat under way to end.
STOP_WAIT = 2.0
#: Datastore keys of the requests to worker ``<id>``.
DRAIN_PREFIX = "spacewalk_worker_drain_"
RETIRE_PREFIX = "spacewalk_worker_retire_"
#: The record's fields that ``GET R/workers`` answers, in order.
PUBLIC_FIELDS = ("id", "host", "pid", "service", "queue", "state", "job", "jobType",
                 "startedAt", "lastSeen", "jobsDone", "jobsFailed", "rss")  # fmt: skip
#: What a worker id is made of: URL-safe characters only.
ID_PATTERN = re.compile(r"[A-Za-z0-9._~-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]+")


class WorkerState(str, enum.Enum):
    """What a worker does, as its record says."""

    #: Waiting for a job.
    IDLE = "idle"
    #: Running a job.
    RUNNING = "running"
    #: Finishing its current job, if any, then taking none until undrained.
    DRAINING = "draining"
    #: Finishing its current job, if any, then exiting; not restarted.
    RETIRING = "retiring"

    def __str__(self) -> str:
        return self.value


def drain_key(worker_id: str) -> str:
    """The datastore key of the request to drain worker ``worker_id``."""
    return f"{DRAIN_PREFIX}{worker_id}"


def retire_key(worker_id: str) -> str:
    """The datastore key of the request to retire worker ``worker_id``."""
    return f"{RETIRE_PREFIX}{worker_id}"


def new_worker_id(host: str, pid: int) -> str:
    """A new, URL-safe worker id: ``<host>-<pid>-<random>``."""
    return f"{_UNSAFE.sub('-', host) or 'host'}-{pid}-{secrets.token_hex(3)}"


def seconds_since(record: dict[str, Any], now: datetime.datetime) -> float | None:
    """Seconds from the record's ``lastSeen`` to ``now``; None when the
    record has no readable ``lastSeen``."""
    try:
        seen = datetime.datetime.fromisoformat(record["lastSeen"])
    except (KeyError, TypeError, ValueError):
        return None
    return (now - seen).total_seconds()


def is_live(record: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether the record was written within :data:`LIVE_BEATS` of its
    worker's heartbeats."""
    age = seconds_since(record, now)
    interval = record.get("heartbeat")
    if age is None or not isinstance(interval, (int, float)) or isinstance(interval, bool):
        return False
    return age <= LIVE_BEATS * interval


@dataclass
class Activity:
    """What a worker is doing, as its loop tells its heartbeat."""

    job: str | None = None
    job_type: str | None = None
    jobs_done: int = 0
    jobs_failed: int = 0


class Heartbeat:
    """A worker's record and the requests it obeys, kept by a thread.

    :meth:`beat` reads the requests, then writes the record; the thread
    beats every ``interval`` seconds from :meth:`start` to :meth:`stop`,
    which deletes the record and the requests.

    :param datastore: the worker's datastore.
    :param interval: seconds between two beats (``SPACEWALK_HEARTBEAT``).
    :param service: the worker's service name.
    :param queue: the worker's queue name.
    :param activity: what the worker runs, kept up to date by its loop.
    :param memory: the process's resident set in bytes.
    :param on_retire: called once, from the thread, when a retire request
        is first read.
    :param clock: the current naive UTC time.
    """

    def __init__(
        self,
        datastore: SpacewalkDatastore,
        interval: float,
        *,
        service: str,
        queue: str,
        activity: Activity,
        memory: Callable[[], int],
        on_retire: Callable[[], None] | None = None,
        clock: Callable[[], datetime.datetime] = utcnow,
    ):
        if not interval > 0:
            raise ValueError("the heartbeat must be > 0 seconds")
        self.datastore = datastore
        self.interval = interval
        self.activity = activity
        self.memory = memory
        self.on_retire = on_retire
        self.clock = clock
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = new_worker_id(self.host, self.pid)
        self.service = service
        self.queue = queue
        self.started_at = clock().isoformat()
        self.draining = False
        self.retiring = False
        #: Set whenever a request changes :attr:`draining` or :attr:`retiring`.
        self.changed = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        #: Whether the last beat went through (an outage leaves the record
        #: to go stale rather than hold up the worker's exit).
        self._reached = False
        self._next_sweep = 0.0
        self._keys = [drain_key(self.id), retire_key(self.id)]

    @property
    def state(self) -> WorkerState:
        if self.retiring:
            return WorkerState.RETIRING
        if self.draining:
            return WorkerState.DRAINING
        return WorkerState.RUNNING if self.activity.job is not None else WorkerState.IDLE

    def record(self) -> dict[str, Any]:
        """The record as the next beat writes it."""
        activity = self.activity
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "service": self.service,
            "queue": self.queue,
            "state": self.state.value,
            "job": activity.job,
            "jobType": activity.job_type,
            "startedAt": self.started_at,
            "lastSeen": self.clock().isoformat(),
            "jobsDone": activity.jobs_done,
            "jobsFailed": activity.jobs_failed,
            "rss": self.memory(),
            "heartbeat": self.interval,
        }

    def start(self) -> None:
        """Beat now, then every :attr:`interval` seconds, in a thread."""
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="spacewalk-heartbeat",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        """End the thread, then delete the record and the requests (in the
        worker's own process only: a fork of it has no thread, and must not
        delete its parent's record).

        When the datastore did not answer the last beat, or is still being
        waited for, the record is left to go stale: an outage must not hold
        up the worker's exit.
        """
        self._stopped.set()
        thread, self._thread = self._thread, None
        if os.getpid() != self.pid:
            return
        if thread is not None:
            thread.join(STOP_WAIT)
            if thread.is_alive() or not self._reached:
                log.info("worker %s: datastore unreachable; its record goes stale", self.id)
                return
        try:
            self.datastore.delete_worker(self.id)
            for key in self._keys:
                self.datastore.delete(key)
        except NotSupported:
            pass
        except SpacewalkError as exc:
            log.warning("worker %s: cannot delete its record: %s", self.id, exc)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.beat()
                self._reached = True
            except NotSupported as exc:
                log.info("worker %s keeps no record: %s", self.id, exc)
                return
            except SpacewalkError as exc:  # an outage: the next beat tries again
                self._reached = False
                log.warning("worker %s: heartbeat failed: %s", self.id, exc)
            self._stopped.wait(self.interval)

    def beat(self) -> None:
        """Read the requests, write the record, and now and then delete the
        records of workers long gone."""
        (drain, _), (retire, _) = self.datastore.read_many(self._keys)
        draining, retiring = drain is not None, self.retiring or retire is not None
        if (draining, retiring) != (self.draining, self.retiring):
            first_retire = retiring and not self.retiring
            self.draining, self.retiring = draining, retiring
            log.info("worker %s: %s", self.id, self.state)
            self.changed.set()
            if first_retire and self.on_retire is not None:
                self.on_retire()
        self.datastore.save_worker(self.id, self.record())
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            self.sweep()

    def sweep(self) -> int:
        """Delete the records (and requests) not refreshed for
        :data:`STALE_AFTER` seconds; how many were deleted."""
        now = self.clock()
        deleted = 0
        for record in self.datastore.list_workers():
            age = seconds_since(record, now)
            worker_id = record.get("id")
            if not isinstance(worker_id, str) or (age is not None and age < STALE_AFTER):
                continue
            log.info("deleting the record of worker %s, last seen %s", worker_id,
                     record.get("lastSeen"))  # fmt: skip
            self.datastore.delete_worker(worker_id)
            self.datastore.delete(drain_key(worker_id))
            self.datastore.delete(retire_key(worker_id))
            deleted += 1
        return deleted
