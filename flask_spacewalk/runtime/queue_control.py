"""Queues seen and steered: their depth by state, and pausing them.

A pause is the datastore key ``spacewalk_pause_<queue name>``, never a queue
entry or a job document: every web process and every worker of every host
shares the datastore, on every backend, and a ZeroG datastore stores it as
well as ours. Workers read it through a :class:`PauseWatch`, at most once
per heartbeat, so a paused queue costs no read per reserve. ZeroG's own
workers know nothing of it. beanstalkd's ``pause-tube`` was not used: it
pauses for a set time only, ZeroG's workers too, and exists on no other
queue.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from .protocols import Datastore, SpacewalkDatastore, SpacewalkQueue
from .records import utcnow

__all__ = [
    "KEY_PREFIX",
    "PauseWatch",
    "is_paused",
    "pause_key",
    "pause_queue",
    "paused_queues",
    "queue_overview",
    "resume_queue",
]

log = logging.getLogger(__name__)

#: Datastore keys of paused queues: ``spacewalk_pause_<queue name>``.
KEY_PREFIX = "spacewalk_pause_"


def pause_key(name: str) -> str:
    """The datastore key that holds queue ``name``'s pause."""
    return f"{KEY_PREFIX}{name}"


def pause_queue(datastore: Datastore, name: str) -> None:
    """Pause queue ``name``: workers take none of its entries until resumed."""
    datastore.set(pause_key(name), {"queue": name, "pausedAt": utcnow().isoformat()})


def resume_queue(datastore: Datastore, name: str) -> None:
    """Let workers take entries of queue ``name`` again (paused or not)."""
    datastore.delete(pause_key(name))


def is_paused(datastore: Datastore, name: str) -> bool:
    """Whether queue ``name`` is paused (one read)."""
    return datastore.read(pause_key(name)) is not None


def paused_queues(datastore: SpacewalkDatastore, names: Sequence[str]) -> set[str]:
    """Those of ``names`` that are paused (one round trip where the
    datastore reads many keys at once)."""
    found = datastore.read_many([pause_key(name) for name in names])
    return {name for name, (value, _) in zip(names, found) if value is not None}


def queue_overview(datastore: SpacewalkDatastore, queue: SpacewalkQueue) -> list[dict[str, Any]]:
    """``GET R/queues``'s items: ``queue``'s own first, then every other
    queue of its backend that holds an entry, by name."""
    depths = queue.queue_stats()
    paused = paused_queues(datastore, [depth.name for depth in depths])
    return [
        {
            "name": depth.name,
            "ready": depth.ready,
            "delayed": depth.delayed,
            "reserved": depth.reserved,
            "paused": depth.name in paused,
            "oldestReadyAge": depth.oldest_ready_age,
        }
        for depth in depths
    ]


class PauseWatch:
    """A worker's view of whether its queue is paused, read from the
    datastore at most once every ``interval`` seconds.

    A read that fails keeps the last answer (a worker that cannot read the
    datastore cannot load a job either) and is tried again at the next
    interval.

    :param name: the queue.
    :param interval: seconds between two reads: the heartbeat.
    """

    def __init__(self, name: str, interval: float) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self.name = name
        self.interval = interval
        self._paused = False
        self._read_at: float | None = None

    def paused(self, datastore: Datastore) -> bool:
        """Whether the queue is paused, as last read; read again when that
        was ``interval`` seconds ago or more."""
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.interval:
            self._read_at = now
            try:
                paused = is_paused(datastore, self.name)
            except Exception as exc:  # a foreign datastore may raise anything
                log.warning("cannot read whether queue %s is paused: %s", self.name, exc)
                return self._paused
            if paused != self._paused:
                log.info("queue %s %s", self.name,
                         "paused: taking no entries until it is resumed" if paused
                         else "resumed")  # fmt: skip
            self._paused = paused
        return self._paused

    def time_left(self) -> float:
        """Seconds until :meth:`paused` reads again (0 when it will at once)."""
        if self._read_at is None:
            return 0.0
        return max(0.0, self._read_at + self.interval - time.monotonic())
