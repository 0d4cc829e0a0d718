"""The beanstalkd queue beyond the protocol: ZeroG's wire format, whole
seconds, outages and reconnection (forks: test_conformance.py)."""
from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import greenstalk
import pytest
from backend_beanstalkd import Beanstalkd, _free_port, running_beanstalkd

from flask_spacewalk import errors
from flask_spacewalk.backends import check_url, make_queue
from flask_spacewalk.backends.beanstalkd import BeanstalkdQueue

TUBE = "example_jobs"
UUID = "d5de4383-ea62-47a0-85fd-419762c457c6"


@pytest.fixture
def server() -> Iterator[Beanstalkd]:
    with running_beanstalkd() as server:
        yield server


@pytest.fixture
def queue(server: Beanstalkd) -> Iterator[BeanstalkdQueue]:
    queue = BeanstalkdQueue(server.url, TUBE)
    yield queue
    queue.close()


@pytest.fixture
def raw(server: Beanstalkd) -> Iterator[greenstalk.Client[str]]:
    """A plain client on the tube, as a ZeroG worker (beanstalkc) has."""
    with greenstalk.Client(("127.0.0.1", server.port), use=TUBE, watch=TUBE) as client:
        yield client


def wait_for_state(raw: greenstalk.Client[str], id: int, state: str) -> dict[str, Any]:
    """The entry's stats once beanstalkd reports ``state`` (it notices a
    closed connection at its next turn)."""
    deadline = time.monotonic() + 10
    while True:
        stats = raw.stats_job(id)
        if stats["state"] == state or time.monotonic() > deadline:
            assert stats["state"] == state
            return dict(stats)
        time.sleep(0.02)


def nudge(queue: BeanstalkdQueue, id: int) -> None:
    """Send a harmless command on the connection holding entry ``id``.

    beanstalkd 1.12 sometimes misses the end of a lease while the holder's
    connection is idle (beanstalkd issues 262 and 380) and catches up at
    the holder's next command; a holder that runs a job through our worker
    touches its entry, an idle test holder needs this.
    """
    queue._consumer.run(lambda conn: conn.client.stats_job(id))


# -- URLs and names ------------------------------------------------------------


@pytest.mark.parametrize(
    "url, address",
    [
        ("beanstalkd://queue.internal", ("queue.internal", 11300)),
        ("beanstalkd://127.0.0.1:11301", ("127.0.0.1", 11301)),
        ("beanstalkd://127.0.0.1:11301/", ("127.0.0.1", 11301)),
        ("BEANSTALKD://[::1]:5", ("::1", 5)),
    ],
)
def test_url(url: str, address: tuple[str, int]) -> None:
    check_url(url, "queue")
    queue = make_queue(url, "jobs", default_ttr=12)  # does not connect
    assert isinstance(queue, BeanstalkdQueue)
    assert (queue.host, queue.port) == address
    assert queue.default_ttr == 12
    assert queue.queueName == "jobs"


@pytest.mark.parametrize(
    "url, message",
    [
        ("beanstalkd://", "no host"),
        ("beanstalkd://:11300", "no host"),
        ("beanstalkd://host:port", "invalid"),
        ("beanstalkd://host:70000", "invalid"),
        ("beanstalkd://host:0", "port 0"),
        ("beanstalkd://host/tube", "no path"),
        ("beanstalkd://host?x=1", "no path"),
        ("beanstalkd://user:secret@host", "no user"),
    ],
)
def test_bad_url(url: str, message: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=message) as info:
        check_url(url, "queue")
    assert "secret" not in str(info.value)
    with pytest.raises(errors.ConfigurationError, match=message):
        make_queue(url, "jobs")
    with pytest.raises(errors.ConfigurationError, match="datastore URL"):
        check_url("beanstalkd://host", "datastore")


@pytest.mark.parametrize("name", ["", "-jobs", "my jobs", "jöbs", "x" * 201])
def test_bad_tube_name(name: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="tube name"):
        BeanstalkdQueue("beanstalkd://127.0.0.1", name)


def test_refused_names_the_server() -> None:
    port = _free_port()  # nothing listens there
    queue = BeanstalkdQueue(f"beanstalkd://127.0.0.1:{port}", TUBE)
    for call in (lambda: queue.put(UUID), lambda: queue.reserve(timeout=0),
                 lambda: queue.delete(1), queue.attach):
        with pytest.raises(errors.QueueUnavailable, match=f"127.0.0.1:{port}"):
            call()
    queue.close()


# -- ZeroG's wire format ---------------------------------------------------------


def test_zerog_reads_what_we_put(queue: BeanstalkdQueue, raw: greenstalk.Client[str]) -> None:
    id = queue.put(UUID)
    job = raw.reserve(timeout=0)
    assert job.id == id
    assert job.body == json.dumps(UUID) == f'"{UUID}"'
    assert raw.stats_job(job)["tube"] == TUBE
    raw.delete(job)
    assert queue.reserve(timeout=0) is None


def test_we_read_what_zerog_puts(queue: BeanstalkdQueue, raw: greenstalk.Client[str]) -> None:
    id = raw.put(json.dumps(UUID), ttr=3600)
    entry = queue.reserve(timeout=0)
    assert entry is not None and entry.id == id
    assert json.loads(entry.body) == UUID
    assert raw.stats_job(id)["state"] == "reserved"
    with pytest.raises(greenstalk.NotFoundError):
        raw.delete(id)  # only the holder may
    entry.delete()
    with pytest.raises(greenstalk.NotFoundError):
        raw.stats_job(id)


def test_only_the_tube_is_watched(queue: BeanstalkdQueue, server: Beanstalkd) -> None:
    with greenstalk.Client(("127.0.0.1", server.port)) as other:
        other.put("in default")
        other.use("other_jobs")
        other.put("in another tube")
        queue.attach()
        tube = other.stats_tube(TUBE)
        assert (tube["current-using"], tube["current-watching"]) == (1, 1)
        assert queue.reserve(timeout=0) is None


def test_ttr_delay_and_priority_pass_through(
    queue: BeanstalkdQueue, raw: greenstalk.Client[str]
) -> None:
    ids = [
        queue.put("a", ttr=7, delay=5, priority=3),
        queue.put("b", ttr=2.5, delay=0.2),  # rounded up
        queue.put("c", ttr=0.01),  # at least 1 s
        queue.put("d"),  # default_ttr
        queue.put("e", priority=2**32 - 1),
    ]
    stats = [raw.stats_job(id) for id in ids]
    assert [(s["ttr"], s["delay"], s["pri"]) for s in stats] == [
        (7, 5, 3), (3, 1, 2**31), (1, 0, 2**31), (30, 0, 2**31), (30, 0, 2**32 - 1),
    ]
    assert [s["state"] for s in stats] == ["delayed", "delayed", "ready", "ready", "ready"]


def test_put_checks_its_arguments(queue: BeanstalkdQueue) -> None:
    with pytest.raises(ValueError, match="ttr"):
        queue.put("x", ttr=0)
    with pytest.raises(ValueError, match="priority"):
        queue.put("x", priority=2**32)
    queue.put("still fine")


def test_stats_in_whole_seconds(queue: BeanstalkdQueue) -> None:
    queue.put("x", ttr=7, priority=5)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    stats = entry.stats()
    assert {k: stats[k] for k in ("id", "tube", "state", "pri", "ttr", "delay")} == {
        "id": entry.id, "tube": TUBE, "state": "reserved", "pri": 5, "ttr": 7, "delay": 0,
    }
    numbers = ("age", "time-left", "reserves", "timeouts", "releases", "buries", "kicks")
    assert all(type(stats[k]) is int for k in numbers)
    assert 0 <= stats["age"] <= 1
    assert 5 <= stats["time-left"] <= 7  # whole seconds, rounded down
    assert (stats["reserves"], stats["timeouts"], stats["releases"]) == (1, 0, 0)
    assert queue.stats_tube()["current-jobs-reserved"] == 1


def test_release_keeps_priority_and_delays_whole_seconds(queue: BeanstalkdQueue) -> None:
    queue.put("x", priority=7)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    entry.release(delay=0.3)  # one second
    stats = entry.stats()
    assert (stats["state"], stats["delay"], stats["pri"], stats["releases"]) == (
        "delayed", 1, 7, 1,
    )
    with pytest.raises(errors.EntryNotReserved):
        entry.touch()  # released: no longer this holder's
    with pytest.raises(errors.EntryNotReserved):
        entry.release()
    assert queue.reserve(timeout=0) is None
    again = queue.reserve(timeout=5)  # wakes when the delay runs out
    assert again is not None and again.id == entry.id
    again.release(priority=1)
    third = queue.reserve(timeout=0)
    assert third is not None
    stats = third.stats()
    assert (stats["pri"], stats["reserves"], stats["releases"]) == (1, 3, 2)
    third.delete()


def test_touch_extends_the_lease(queue: BeanstalkdQueue) -> None:
    queue.put("x", ttr=3)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    time.sleep(1.1)
    before = entry.stats()["time-left"]
    entry.touch()
    assert before < entry.stats()["time-left"] <= 3
    entry.delete()


def test_lease_runs_out(queue: BeanstalkdQueue, raw: greenstalk.Client[str]) -> None:
    """Unlike SQLite's, a holder whose lease ran out loses the entry at once."""
    id = queue.put("x", ttr=1)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    time.sleep(1.2)
    nudge(queue, id)
    stats = raw.stats_job(id)
    assert (stats["state"], stats["timeouts"]) == ("ready", 1)
    with pytest.raises(errors.EntryNotReserved):
        entry.touch()
    with pytest.raises(errors.EntryNotReserved):
        entry.release()
    assert queue.delete(id) is True  # nobody holds it
    with pytest.raises(errors.EntryNotReserved):
        entry.delete()
    with pytest.raises(errors.EntryNotReserved):
        entry.stats()


def test_another_holder_takes_over(server: Beanstalkd, queue: BeanstalkdQueue) -> None:
    queue.put("x", ttr=1)
    first = queue.reserve(timeout=0)
    assert first is not None
    other = BeanstalkdQueue(server.url, TUBE)
    try:
        assert other.reserve(timeout=0) is None
        time.sleep(1.2)
        nudge(queue, first.id)
        second = other.reserve(timeout=5)
        assert second is not None and second.id == first.id
        assert queue.delete(first.id) is False  # held by another
        for action in (first.touch, first.release, first.delete):
            with pytest.raises(errors.EntryNotReserved):
                action()
        second.delete()
    finally:
        other.close()


def test_deadline_soon_is_retried(
    queue: BeanstalkdQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = []
    reserve = greenstalk.Client.reserve

    def spy(self: greenstalk.Client[str], timeout: int | None = None) -> Any:
        try:
            job = reserve(self, timeout)
        except greenstalk.BeanstalkdError as exc:
            answers.append(type(exc).__name__)
            raise
        answers.append("RESERVED")
        return job

    monkeypatch.setattr(greenstalk.Client, "reserve", spy)
    queue.put("held", ttr=1)
    held = queue.reserve(timeout=0)
    assert held is not None
    assert queue.reserve(timeout=0) is None
    assert answers[-1] == "DeadlineSoonError"
    # the next reserve waits until the lease runs out and gets it back
    again = queue.reserve(timeout=10)
    assert again is not None and again.id == held.id
    assert again.stats()["timeouts"] == 1
    assert answers.count("DeadlineSoonError") >= 2
    again.delete()


# -- connections -----------------------------------------------------------------


def test_put_while_another_thread_waits_in_reserve(queue: BeanstalkdQueue) -> None:
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(queue.reserve(timeout=10)))
    waiter.start()
    time.sleep(0.1)  # let it block on the consumer connection
    id = queue.put(UUID)  # on the producer connection: not held up
    waiter.join(timeout=15)
    assert not waiter.is_alive()
    assert got[0] is not None and got[0].id == id
    got[0].touch()  # from this thread, on the reserving connection
    got[0].delete()


def test_restart_reconnects(tmp_path: Path) -> None:
    with running_beanstalkd(binlog=tmp_path) as server:
        queue = BeanstalkdQueue(server.url, TUBE)
        try:
            id = queue.put(UUID, ttr=3600)
            entry = queue.reserve(timeout=0)
            assert entry is not None
            server.stop()
            name = f"127.0.0.1:{server.port}"
            with pytest.raises(errors.QueueUnavailable, match=name):
                queue.put(UUID)
            with pytest.raises(errors.QueueUnavailable, match=name):
                queue.reserve(timeout=0)
            with pytest.raises(errors.EntryNotReserved, match=name):
                entry.touch()
            server.start()  # the same port; the binlog keeps the entry
            assert queue.put("after") > id
            again = queue.reserve(timeout=0)
            assert again is not None and again.id == id  # ready again
            for action in (entry.touch, entry.release, entry.delete):
                with pytest.raises(errors.EntryNotReserved):
                    action()
            again.delete()
        finally:
            queue.close()


def test_dropped_connection_returns_the_entry(
    queue: BeanstalkdQueue, raw: greenstalk.Client[str]
) -> None:
    id = queue.put(UUID)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    queue._consumer._conn.sock.shutdown(2)  # type: ignore[union-attr]
    wait_for_state(raw, id, "ready")  # beanstalkd gave it back
    with pytest.raises(errors.EntryNotReserved, match="connection"):
        entry.touch()
    with pytest.raises(errors.EntryNotReserved):
        entry.delete()
    again = queue.reserve(timeout=0)  # a new connection
    assert again is not None and again.id == id
    again.delete()


def test_detach_gives_entries_back(queue: BeanstalkdQueue, raw: greenstalk.Client[str]) -> None:
    id = queue.put(UUID)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    queue.detach()
    wait_for_state(raw, id, "ready")
    with pytest.raises(errors.EntryNotReserved):
        entry.touch()
    queue.attach()
    assert raw.stats_tube(TUBE)["current-watching"] == 2


# -- refusals that are not connection failures (issue 12) ----------------------


def test_a_body_over_the_max_job_size_is_unavailable_naming_it() -> None:
    # a uuid is 38 bytes: only a server started with a tiny -z refuses it
    with running_beanstalkd(args=("-z", "20")) as server:
        queue = BeanstalkdQueue(server.url, TUBE)
        try:
            with pytest.raises(errors.QueueUnavailable,
                               match=r"JOB_TOO_BIG.*body of 38 bytes.*max-job-size"):
                queue.put(UUID)
            queue.put("fits")  # the connection stays in step
            entry = queue.reserve(timeout=0)
            assert entry is not None and entry.body == '"fits"'
        finally:
            queue.close()


def test_drain_mode_refuses_puts_and_serves_what_is_queued(
    server: Beanstalkd, queue: BeanstalkdQueue
) -> None:
    queue.put(UUID)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGUSR1)  # beanstalkd's drain mode
    with pytest.raises(errors.QueueUnavailable, match=r"DRAINING.*drain mode"):
        for _ in range(100):  # until beanstalkd has handled the signal
            queue.put("new")
            time.sleep(0.02)
    entry = queue.reserve(timeout=0)
    assert entry is not None and json.loads(entry.body) == UUID
    entry.release()  # releases are no new entries
    assert queue.reserve(timeout=0) is not None


@pytest.mark.parametrize(
    "error, answer",
    [(greenstalk.OutOfMemoryError, "OUT_OF_MEMORY"), (greenstalk.InternalError, "INTERNAL_ERROR")],
)
def test_server_refusals_are_unavailable_naming_them(
    queue: BeanstalkdQueue, monkeypatch: pytest.MonkeyPatch, error: type[Exception], answer: str
) -> None:
    def refused(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise error([])

    with monkeypatch.context() as patch:
        patch.setattr(greenstalk.Client, "put", refused)
        with pytest.raises(errors.QueueUnavailable, match=answer):
            queue.put(UUID)
    with monkeypatch.context() as patch:
        patch.setattr(greenstalk.Client, "reserve", refused)
        with pytest.raises(errors.QueueUnavailable, match=answer):
            queue.reserve(timeout=0)
    queue.put(UUID)
    assert queue.reserve(timeout=0) is not None


def test_an_entry_buried_by_put_is_deleted(
    queue: BeanstalkdQueue, raw: greenstalk.Client[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """beanstalkd out of memory for its heap buries a new entry: it is
    deleted, since the caller is told that nothing was queued."""
    real_put = greenstalk.Client.put

    def buried(self: Any, *args: Any, **kwargs: Any) -> Any:
        id = real_put(self, *args, **kwargs)
        raw.bury(raw.reserve(timeout=0))
        raise greenstalk.BuriedError([str(id).encode()])

    monkeypatch.setattr(greenstalk.Client, "put", buried)
    with pytest.raises(errors.QueueUnavailable, match="BURIED"):
        queue.put(UUID)
    with pytest.raises(greenstalk.NotFoundError):
        raw.peek_buried()


def test_an_entry_buried_by_release_is_kicked(
    queue: BeanstalkdQueue, raw: greenstalk.Client[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue.put(UUID)
    entry = queue.reserve(timeout=0)
    assert entry is not None

    def buried(self: Any, job: Any, **kwargs: Any) -> None:
        self.bury(job)
        raise greenstalk.BuriedError([])

    with monkeypatch.context() as patch:
        patch.setattr(greenstalk.Client, "release", buried)
        entry.release(delay=5)
    assert raw.stats_job(entry.id)["state"] == "ready"


def test_an_entry_still_buried_is_unavailable_naming_it(
    queue: BeanstalkdQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue.put(UUID)
    entry = queue.reserve(timeout=0)
    assert entry is not None

    def buried(self: Any, job: Any, **kwargs: Any) -> None:
        self.bury(job)
        raise greenstalk.BuriedError([])

    def not_kicked(self: Any, job: Any) -> None:
        raise greenstalk.NotFoundError([])

    monkeypatch.setattr(greenstalk.Client, "release", buried)
    monkeypatch.setattr(greenstalk.Client, "kick_job", not_kicked)
    with pytest.raises(errors.QueueUnavailable, match="BURIED"):
        entry.release()
