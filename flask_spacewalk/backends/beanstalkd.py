"""The queue in beanstalkd, as ZeroG keeps it (greenstalk).

URL: ``beanstalkd://host[:port]`` (port 11300 when omitted). The queue's name
is the tube and an entry's body is ``json.dumps(data)``, so the tube
``<service>_jobs`` and the body ``"<uuid>"`` are exactly what ZeroG's
beanstalkc queue reads and writes: both kinds of worker share the entries.

beanstalkd counts time in whole seconds. A ``ttr`` is rounded up to a whole
number of at least 1 s, a ``delay`` and a ``reserve`` timeout are rounded
up, and :meth:`BeanstalkdQueueEntry.stats` reports whole seconds.

In each process a queue object holds up to three connections, opened on
first use and again after a fork or a failure:

- the *producer* uses the tube and carries ``put``, ``delete(id)`` and the
  stats;
- the *consumer* watches only the tube (not ``default``) and carries
  ``reserve`` and the ``touch``, ``release`` and ``delete`` of the entries
  it reserved, which beanstalkd accepts only from the reserving connection;
- the *inspector* carries :meth:`~BeanstalkdQueue.queue_stats`, which uses
  one tube after another to peek at them (so the producer's tube never
  changes under a ``put``).

So a ``put`` never waits behind a ``reserve`` blocked in another thread, and
``delete(id)`` never takes an entry that someone, this object included,
holds. A failed connection raises :exc:`~flask_spacewalk.errors.QueueUnavailable`
and the next call connects again. beanstalkd returns the entries reserved on
a lost connection to the queue; their holders' ``touch``, ``release`` and
``delete`` raise :exc:`~flask_spacewalk.errors.EntryNotReserved`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import greenstalk

from .. import defaults, errors
from ..runtime.protocols import QueueDepth
from . import _redact
from ._fork import track
from .base import BaseQueue, check_priority, lease_seconds, same_body

__all__ = ["BeanstalkdQueue", "BeanstalkdQueueEntry", "check_url"]

DEFAULT_PORT = 11300
#: Seconds to wait for a connection to be accepted.
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for any reply but a reserve's (which waits on purpose).
COMMAND_TIMEOUT = 10.0
#: Pause between the reserves of a connection whose entry's lease is about
#: to run out (beanstalkd answers ``DEADLINE_SOON`` at once for a second).
DEADLINE_SOON_PAUSE = 0.1
#: Peeks at a tube's next ready entry before giving up on its age (another
#: worker may take each one between the peek and its stats).
PEEK_TRIES = 3

# beanstalkd's tube names: at most 200 bytes, no leading hyphen
_TUBE = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}\Z")
# A reply cut short trips greenstalk's asserts, an unknown one means the
# stream is out of step: either way the connection cannot be used again.
_BROKEN = (OSError, EOFError, AssertionError, greenstalk.UnknownResponseError)
# The server is up but cannot take work: unavailable, in beanstalkd's words.
# JOB_TOO_BIG too: our bodies are uuids (38 bytes), so only a server started
# with a tiny -z refuses one, which its operator fixes. BAD_FORMAT,
# EXPECTED_CRLF and UNKNOWN_COMMAND would be bugs of ours and stay loud.
_REFUSED: dict[type[greenstalk.BeanstalkdError], str] = {
    greenstalk.BuriedError: "BURIED (out of memory for its queues)",
    greenstalk.DrainingError: "DRAINING (in drain mode: it takes no new entries)",
    greenstalk.InternalError: "INTERNAL_ERROR",
    greenstalk.JobTooBigError: "JOB_TOO_BIG",
    greenstalk.OutOfMemoryError: "OUT_OF_MEMORY",
}
_REFUSALS = tuple(_REFUSED)

T = TypeVar("T")


def _address(url: str) -> tuple[str, int]:
    """The host and port of a ``beanstalkd://`` URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise errors.ConfigurationError(
            f"beanstalkd URL {_redact(url)!r} is invalid: {exc}"
        ) from None
    if parts.scheme.lower() != "beanstalkd":
        raise errors.ConfigurationError(f"{_redact(url)!r} is not a beanstalkd:// URL")
    if parts.username is not None or parts.password is not None:
        raise errors.ConfigurationError("a beanstalkd URL takes no user or password")
    if not parts.hostname:
        raise errors.ConfigurationError(
            f"beanstalkd URL {url!r} names no host; use beanstalkd://host:11300"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise errors.ConfigurationError(
            f"beanstalkd URL {url!r} takes no path, query or fragment"
        )
    if port == 0:
        raise errors.ConfigurationError(f"beanstalkd URL {url!r} has port 0")
    return parts.hostname, DEFAULT_PORT if port is None else port


def check_url(url: str) -> None:
    """Check a ``beanstalkd://host[:port]`` URL without connecting.

    :raise ConfigurationError: the URL is malformed.
    """
    _address(url)


def _seconds(value: float) -> int:
    """``value`` rounded up to whole seconds, at least 0."""
    return max(0, math.ceil(value))


def _reserve(wait: int | None, conn: _Connection) -> tuple[_Connection, greenstalk.Job[str]]:
    return conn, conn.client.reserve(wait)


class _Connection:
    """A greenstalk client and its socket, whose timeout we set per call."""

    def __init__(self, sock: socket.socket, client: greenstalk.Client[str]) -> None:
        self.sock = sock
        self.client = client
        self.timeout: float | None = sock.gettimeout()

    def set_timeout(self, timeout: float | None) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def close(self) -> None:
        try:
            self.client.close()
        except OSError:
            pass


class _Link:
    """One connection of a queue object in this process, opened on first
    use, guarded by a lock, dropped when it fails."""

    def __init__(self, queue: BeanstalkdQueue, consumer: bool) -> None:
        self._queue = queue
        self._consumer = consumer
        self._conn: _Connection | None = None
        self._lock = threading.Lock()
        track(self)

    def _after_fork(self) -> None:
        # Closing the child's copy of the socket leaves the parent's
        # connection open (no shutdown); using it would mix both processes'
        # replies.
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._lock = threading.Lock()  # another thread may have held it

    def _connect(self) -> _Connection:
        queue = self._queue
        try:
            sock = socket.create_connection(
                (queue.host, queue.port), timeout=CONNECT_TIMEOUT
            )
        except OSError as exc:
            raise queue._unavailable(exc) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                # notice a vanished server within a minute, not two hours,
                # even while a reserve waits without a timeout
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
            sock.settimeout(COMMAND_TIMEOUT)
            if self._consumer:
                client = greenstalk.Client(sock, watch=queue.queueName)
            else:
                client = greenstalk.Client(sock, use=queue.queueName)
        except _BROKEN as exc:
            sock.close()
            raise queue._unavailable(exc) from exc
        return _Connection(sock, client)

    def run(
        self,
        command: Callable[[_Connection], T],
        timeout: float | None = COMMAND_TIMEOUT,
        holder: BeanstalkdQueueEntry | None = None,
    ) -> T:
        """Run ``command`` on the connection, connecting first if needed.

        :param holder: the entry the command acts for: it must run on the
            connection that reserved the entry.
        :raise QueueUnavailable: the connection failed.
        :raise EntryNotReserved: ``holder``'s connection is gone.
        """
        with self._lock:
            if holder is not None and holder._conn is not self._conn:
                raise holder._lost()
            conn = self._conn
            if conn is None:
                conn = self._conn = self._connect()
            try:
                conn.set_timeout(timeout)
                return command(conn)
            except _BROKEN as exc:
                self._conn = None
                conn.close()
                if holder is not None:
                    # the reservation went with the connection
                    raise holder._lost(exc) from exc
                raise self._queue._unavailable(exc) from exc
            except _REFUSALS as exc:
                raise self._queue._refused(_REFUSED[type(exc)]) from exc

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()


class BeanstalkdQueue(BaseQueue):
    """The queue protocol on a beanstalkd tube.

    Entries are taken by priority (lower is more urgent), then in the order
    they were put. A reserved entry whose lease runs out is ready again, and
    its holder can no longer touch, release or delete it once beanstalkd has
    handed it to another worker. Several queue objects and processes may
    share a tube.

    One thread at a time should wait in :meth:`reserve`; the entries'
    methods share its connection and wait for it, the other methods do not.

    :param url: ``beanstalkd://host[:port]``.
    :param name: The queue's name, beanstalkd's tube.
    :param default_ttr: The lease, in seconds, of an entry put without one.
    """

    def __init__(self, url: str, name: str, default_ttr: float = defaults.JOB_TTR) -> None:
        self.host, self.port = _address(url)
        if not isinstance(name, str) or not _TUBE.match(name):
            raise errors.ConfigurationError(
                f"{name!r} is not a beanstalkd tube name: up to 200 letters, digits"
                " and -+/;.$_() not starting with -"
            )
        if default_ttr <= 0:
            raise ValueError("default_ttr must be positive")
        self.queueName = name
        self.default_ttr = default_ttr
        self._producer = _Link(self, consumer=False)
        self._consumer = _Link(self, consumer=True)
        self._inspector = _Link(self, consumer=False)

    @property
    def server(self) -> str:
        """``host:port``, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"<BeanstalkdQueue {self.queueName!r} at beanstalkd://{self.server}>"

    def _unavailable(self, reason: object) -> errors.QueueUnavailable:
        return errors.QueueUnavailable(f"beanstalkd at {self.server} is unavailable: {reason}")

    def _refused(self, answer: str) -> errors.QueueUnavailable:
        return errors.QueueUnavailable(f"beanstalkd at {self.server} refused: it answered {answer}")

    def close(self) -> None:
        """Close this process's connections; beanstalkd returns the entries
        still reserved on them to the queue. The next call connects again."""
        self._producer.close()
        self._consumer.close()
        self._inspector.close()

    def attach(self) -> None:
        """Connect now: use and watch the tube (ignoring ``default``).

        Every call does this when it connects, so this only brings an
        outage to light early.
        """
        self._producer.run(lambda conn: None)
        self._consumer.run(lambda conn: None)

    def detach(self) -> None:
        """Stop using and watching the tube: :meth:`close` the connections."""
        self.close()

    def put(
        self,
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> int:
        """Enqueue ``json.dumps(data)``; return the entry's id.

        :param ttr: The entry's lease in seconds, ``default_ttr`` if None;
            rounded up to whole seconds, at least 1.
        :param delay: Seconds before the entry can be reserved, rounded up.
        :param priority: 0 is the most urgent, ``2**32 - 1`` the least.
        """
        ttr = lease_seconds(ttr, self.default_ttr)
        check_priority(priority)
        body = json.dumps(data)
        whole_ttr, whole_delay = max(1, _seconds(ttr)), _seconds(delay)

        def put(conn: _Connection) -> int:
            try:
                return conn.client.put(body, priority=priority, delay=whole_delay, ttr=whole_ttr)
            except greenstalk.BuriedError as exc:
                # Stored but buried: no worker would see it, and the caller
                # hears that nothing was queued (the job is marked so).
                if exc.id is not None:
                    with contextlib.suppress(greenstalk.NotFoundError):
                        conn.client.delete(exc.id)
                raise

        try:
            return self._producer.run(put)
        except errors.QueueUnavailable as exc:
            if isinstance(exc.__cause__, greenstalk.JobTooBigError):
                raise self._refused(
                    f"JOB_TOO_BIG: a body of {len(body)} bytes is over its"
                    " max-job-size (beanstalkd -z)"
                ) from exc.__cause__
            raise

    def reserve(self, timeout: float | None = None) -> BeanstalkdQueueEntry | None:
        """Take the next ready entry, waiting up to ``timeout`` seconds
        (forever if None, not at all if 0); None if none came.

        beanstalkd waits whole seconds, so a fractional ``timeout`` is
        rounded up.
        """
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        while True:
            wait = None if deadline is None else _seconds(deadline - time.monotonic())
            try:
                conn, job = self._consumer.run(
                    functools.partial(_reserve, wait),
                    timeout=None if wait is None else wait + COMMAND_TIMEOUT,
                )
            except greenstalk.TimedOutError:
                return None
            except greenstalk.DeadlineSoonError:
                # Nothing is ready and an entry this connection holds is
                # about to time out: beanstalkd answers at once until it
                # does, or until its holder touches it (outside our lock).
                pause = DEADLINE_SOON_PAUSE
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        return None
                time.sleep(pause)
                continue
            return BeanstalkdQueueEntry(self, conn, job)

    def delete(self, id: int) -> bool:
        """Delete an entry that is ready or delayed; False when there is no
        such entry or someone holds it.

        As in beanstalkd, ``id`` may be of any tube.
        """
        try:
            self._producer.run(lambda conn: conn.client.delete(id))
        except greenstalk.NotFoundError:
            return False
        return True

    def has_entry(self, id: int, data: Any) -> bool:
        """Whether entry ``id`` is still in the queue (ready, delayed or
        reserved) with the body ``json.dumps(data)``.

        The body is compared because an id alone may name another entry:
        beanstalkd restarted without a binlog (``-b``) counts ids from 1
        again. A buried entry counts too (this package buries none).
        As in :meth:`delete`, ``id`` may be of any tube.
        """
        if not isinstance(id, int) or isinstance(id, bool) or id < 1:
            return False
        try:
            job = self._producer.run(lambda conn: conn.client.peek(id))
        except greenstalk.NotFoundError:
            return False
        return same_body(job.body, data)

    def ping(self) -> None:
        """One round trip (``list-tube-used``): raise
        :exc:`~flask_spacewalk.errors.QueueUnavailable` when beanstalkd does
        not answer."""
        self._producer.run(lambda conn: conn.client.using())

    def stats_tube(self) -> dict[str, Any]:
        """beanstalkd's ``stats-tube`` of this queue's tube."""
        return dict(self._producer.run(lambda conn: conn.client.stats_tube(self.queueName)))

    def queue_stats(self) -> list[QueueDepth]:
        """This tube's depth, then that of every other tube of the server
        (``list-tubes``) that holds an entry, by name, from ``stats-tube``.

        beanstalkd does not tell when an entry became ready, so the oldest
        ready age is an estimate, in whole seconds: that of the entry it
        hands out next (``peek-ready``: the most urgent, then the first
        put), counted from its put plus its delay (``stats-job``'s ``age``
        less its ``delay``). It is exact when the ready entries share a
        priority and none was released or timed out; a less urgent entry
        may have waited longer, and a released one counts from its put.
        """
        def read(conn: _Connection) -> list[QueueDepth]:
            client = conn.client
            names = sorted(set(client.tubes()) - {self.queueName})
            depths = []
            for name in [self.queueName, *names]:
                try:
                    stats = client.stats_tube(name)
                    ready, delayed, reserved = (
                        stats["current-jobs-ready"], stats["current-jobs-delayed"],
                        stats["current-jobs-reserved"],
                    )  # fmt: skip
                except greenstalk.NotFoundError:  # no entry and nobody uses it
                    ready = delayed = reserved = 0
                if name != self.queueName and not ready + delayed + reserved:
                    continue
                age = _ready_age(client, name) if ready else None
                depths.append(QueueDepth(name, ready, delayed, reserved, age))
            return depths

        return self._inspector.run(read)


def _ready_age(client: greenstalk.Client[str], tube: str) -> float | None:
    """Seconds since the next ready entry of ``tube`` became ready, as
    :meth:`BeanstalkdQueue.queue_stats` estimates it; None when none is."""
    client.use(tube)
    for _ in range(PEEK_TRIES):
        try:
            stats = client.stats_job(client.peek_ready())
        except greenstalk.NotFoundError:  # none ready, or taken meanwhile
            continue
        if stats["state"] == "ready":
            return float(max(0, int(stats["age"]) - int(stats["delay"])))
    return None


class BeanstalkdQueueEntry:
    """A reserved entry of a :class:`BeanstalkdQueue`.

    ``touch``, ``release`` and ``delete`` go over the connection that
    reserved the entry. They raise
    :exc:`~flask_spacewalk.errors.EntryNotReserved` when beanstalkd no longer
    counts this holder's reservation: its lease ran out, it was released, or
    the connection was lost. A ready or delayed entry may still be deleted,
    as in beanstalkd.
    """

    def __init__(
        self, queue: BeanstalkdQueue, conn: _Connection, job: greenstalk.Job[str]
    ) -> None:
        self.id = job.id
        self.body = job.body
        self._queue = queue
        self._conn = conn

    def __repr__(self) -> str:
        return f"<BeanstalkdQueueEntry {self.id} of {self._queue.queueName!r}>"

    def _lost(self, reason: object = None) -> errors.EntryNotReserved:
        why = f": {reason}" if reason is not None else ""
        return errors.EntryNotReserved(
            f"entry {self.id} of {self._queue.queueName!r}: the connection to"
            f" beanstalkd at {self._queue.server} that reserved it is gone{why}"
        )

    def _hold(self, command: Callable[[greenstalk.Client[str]], object]) -> None:
        try:
            self._queue._consumer.run(lambda conn: command(conn.client), holder=self)
        except greenstalk.NotFoundError:
            raise errors.EntryNotReserved(
                f"entry {self.id} of {self._queue.queueName!r} was deleted,"
                " released, or its lease ran out"
            ) from None

    def delete(self) -> None:
        """Remove the entry for good."""
        self._hold(lambda client: client.delete(self.id))

    def release(self, delay: float = 0, priority: int | None = None) -> None:
        """Make the entry ready again after ``delay`` seconds (rounded up).

        :param priority: The entry's new priority; None keeps it, at the
            cost of a ``stats-job`` first (as beanstalkc does).
        """
        seconds = _seconds(delay)
        job = greenstalk.Job(self.id, self.body)

        def release(client: greenstalk.Client[str]) -> None:
            pri = client.stats_job(self.id)["pri"] if priority is None else priority
            try:
                client.release(job, priority=pri, delay=seconds)
            except greenstalk.BuriedError:
                # Out of memory for the delay queue, beanstalkd buried it: no
                # lease returns it, so make it ready now (without the delay).
                try:
                    client.kick_job(job)
                except greenstalk.NotFoundError:
                    raise greenstalk.BuriedError([]) from None  # still buried

        self._hold(release)

    def touch(self) -> None:
        """Renew the lease for another ``ttr`` seconds."""
        job = greenstalk.Job(self.id, self.body)
        self._hold(lambda client: client.touch(job))

    def stats(self) -> dict[str, Any]:
        """beanstalkd's ``stats-job``: ``state``, ``pri``, ``age``, ``delay``,
        ``ttr``, ``time-left``, ``reserves``, ``timeouts``, ``releases``...,
        times in whole seconds."""
        try:
            stats = self._queue._producer.run(lambda conn: conn.client.stats_job(self.id))
        except greenstalk.NotFoundError:
            raise errors.EntryNotReserved(
                f"entry {self.id} of {self._queue.queueName!r} was deleted"
            ) from None
        return dict(stats)
