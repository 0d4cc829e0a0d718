"""Conformance tests of the datastore and queue protocols, on SQLite.

The ``datastore`` and ``queue`` tests run for every URL in
:data:`BACKEND_URLS`; a new backend adds its URL builder there. The tests at
the end are about SQLite and the URL parsing only.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import statistics
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_spacewalk import errors
from flask_spacewalk.backends import (
    check_url,
    make_datastore,
    make_queue,
    resolve_sqlite_path,
)
from flask_spacewalk.backends import sqlite as sqlite_backend
from flask_spacewalk.runtime.protocols import Datastore, Queue

#: backend name -> the URL of a fresh, empty store under ``tmp_path``
BACKEND_URLS: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'spacewalk.db'}",
}

# spawn, not fork: a fork of a process with threads is unsafe, and spawn is
# what macOS and Windows do anyway
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(params=sorted(BACKEND_URLS))
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return BACKEND_URLS[request.param](tmp_path)


@pytest.fixture
def datastore(backend_url: str) -> Iterator[Datastore]:
    store = make_datastore(backend_url)
    yield store
    _close(store)


@pytest.fixture
def open_queue(backend_url: str) -> Iterator[Callable[..., Queue]]:
    """Open queue objects on the test's store (another worker, say)."""
    opened: list[Queue] = []

    def open_queue(name: str = "jobs", **kwargs: Any) -> Queue:
        queue = make_queue(backend_url, name, **kwargs)
        opened.append(queue)
        return queue

    yield open_queue
    for queue in opened:
        _close(queue)


@pytest.fixture
def queue(open_queue: Callable[..., Queue]) -> Queue:
    return open_queue()


def _close(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        close()


def _run_processes(
    target: Callable[..., None], args: list[tuple[Any, ...]]
) -> list[Any]:
    """Run ``target(*a, results)`` in a process for each ``a``; return what
    each put on ``results``."""
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*a, results)) for a in args]
    for proc in procs:
        proc.start()
    try:
        out = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    errors_ = [r[1] for r in out if isinstance(r, tuple) and r and r[0] == "error"]
    assert not errors_, errors_[0]
    return out


def _reporting(func: Callable[..., Any]) -> Callable[..., None]:
    """Put ``func``'s result, or its traceback, on the last argument."""

    @functools.wraps(func)
    def wrapper(*args: Any) -> None:
        results = args[-1]
        try:
            results.put(func(*args[:-1]))
        except BaseException:
            results.put(("error", traceback.format_exc()))
            raise

    return wrapper


# -- datastore ---------------------------------------------------------------


def test_datastore_exception_classes(datastore: Datastore) -> None:
    assert issubclass(datastore.casException, errors.CasMismatch)
    assert issubclass(datastore.lockedException, errors.DocumentLocked)
    assert issubclass(datastore.existsException, errors.DocumentExists)


def test_read_missing(datastore: Datastore) -> None:
    assert datastore.read("nope") is None
    assert datastore.read_with_cas("nope") == (None, 0)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "nested": {"list": [1, 2.5, None, True]}, "text": "ünïcødé"},
        "a str",
        "",
    ],
)
def test_values_come_back_as_stored(datastore: Datastore, value: Any) -> None:
    assert datastore.create("k", value) is True
    assert datastore.set("k2", value) is True
    assert datastore.read_with_cas("k2")[0] == value
    assert datastore.read("k") == value
    assert type(datastore.read("k")) is type(value)
    assert datastore.update("k2", {"other": value}) is True
    assert datastore.read("k2") == {"other": value}


def test_create_existing_raises(datastore: Datastore) -> None:
    datastore.create("k", {"n": 1})
    with pytest.raises(datastore.existsException):
        datastore.create("k", {"n": 2})
    assert datastore.read("k") == {"n": 1}


def test_update_missing(datastore: Datastore) -> None:
    assert datastore.update("k", {"n": 1}) is False
    assert datastore.update_with_cas("k", {"n": 1}) == (False, 0)
    assert datastore.update_with_cas("k", {"n": 1}, cas=0) == (False, 0)
    assert datastore.read("k") is None


def test_update_and_set_with_cas(datastore: Datastore) -> None:
    ok, cas = datastore.set_with_cas("k", {"n": 1})
    assert ok is True and cas > 0
    assert datastore.read_with_cas("k") == ({"n": 1}, cas)
    ok, cas2 = datastore.update_with_cas("k", {"n": 2}, cas)
    assert ok is True and cas2 > cas
    ok, cas3 = datastore.set_with_cas("k", {"n": 3}, cas2)
    assert ok is True and cas3 > cas2
    assert datastore.read_with_cas("k") == ({"n": 3}, cas3)
    # 0 and None write unconditionally
    ok, cas4 = datastore.update_with_cas("k", {"n": 4}, 0)
    ok, cas5 = datastore.set_with_cas("k", {"n": 5}, None)
    assert cas5 > cas4 > cas3
    assert datastore.read("k") == {"n": 5}


def test_stale_cas_raises(datastore: Datastore) -> None:
    _, stale = datastore.set_with_cas("k", {"n": 1})
    datastore.set("k", {"n": 2})
    with pytest.raises(datastore.casException):
        datastore.update_with_cas("k", {"n": 3}, stale)
    with pytest.raises(datastore.casException):
        datastore.set_with_cas("k", {"n": 3}, stale)
    assert datastore.read("k") == {"n": 2}


def test_cas_of_deleted_key_raises(datastore: Datastore) -> None:
    _, cas = datastore.set_with_cas("k", {"n": 1})
    datastore.delete("k")
    with pytest.raises(datastore.casException):
        datastore.update_with_cas("k", {"n": 2}, cas)
    with pytest.raises(datastore.casException):
        datastore.set_with_cas("k", {"n": 2}, cas)
    assert datastore.read("k") is None


def test_cas_is_a_growing_nonzero_int(datastore: Datastore) -> None:
    seen = []
    datastore.create("k", "v")
    seen.append(datastore.read_with_cas("k")[1])
    for i in range(20):
        seen.append(datastore.set_with_cas("k", {"i": i})[1])
        seen.append(datastore.update_with_cas("k", {"i": i}, seen[-1])[1])
    datastore.set("k", "v")
    seen.append(datastore.read_with_cas("k")[1])
    datastore.delete("k")
    datastore.create("k", "again")
    seen.append(datastore.read_with_cas("k")[1])
    assert all(type(cas) is int and cas > 0 for cas in seen)
    assert seen == sorted(set(seen)), "every write gives a greater cas"


def test_delete(datastore: Datastore) -> None:
    assert datastore.delete("k") is False
    datastore.set("k", "v")
    assert datastore.delete("k") is True
    assert datastore.delete("k") is False
    assert datastore.read_with_cas("k") == (None, 0)


def test_two_store_objects_share_the_data(
    backend_url: str, datastore: Datastore
) -> None:
    other = make_datastore(backend_url)
    try:
        _, cas = datastore.set_with_cas("k", {"n": 1})
        assert other.read_with_cas("k") == ({"n": 1}, cas)
        other.update_with_cas("k", {"n": 2}, cas)
        with pytest.raises(datastore.casException):
            datastore.update_with_cas("k", {"n": 3}, cas)
    finally:
        _close(other)


def _increment(store: Datastore, key: str, times: int) -> int:
    """Add 1 to ``key``'s count ``times`` times; return the CAS conflicts."""
    conflicts = 0
    for _ in range(times):
        while True:
            value, cas = store.read_with_cas(key)
            assert isinstance(value, dict)
            value["count"] += 1
            try:
                store.update_with_cas(key, value, cas)
                break
            except store.casException:
                conflicts += 1
    return conflicts


@_reporting
def _increment_in_process(url: str, key: str, times: int, start: Any) -> int:
    store = make_datastore(url)
    try:
        start.wait(timeout=30)
        return _increment(store, key, times)
    finally:
        _close(store)


@pytest.mark.slow
def test_cas_increments_from_processes(backend_url: str, datastore: Datastore) -> None:
    processes, times = 4, 100
    datastore.create("counter", {"count": 0})
    start = SPAWN.Barrier(processes)
    conflicts = _run_processes(
        _increment_in_process,
        [(backend_url, "counter", times, start)] * processes,
    )
    assert datastore.read("counter") == {"count": processes * times}
    print(f"CAS conflicts: {sum(conflicts)}")


def test_cas_increments_from_threads(datastore: Datastore) -> None:
    threads, times = 4, 50
    datastore.create("counter", {"count": 0})
    workers = [
        threading.Thread(target=_increment, args=(datastore, "counter", times))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert datastore.read("counter") == {"count": threads * times}


# -- queue -------------------------------------------------------------------


def test_queue_attributes(queue: Queue) -> None:
    assert queue.queueName == "jobs"
    queue.attach()
    queue.detach()


def test_fifo(queue: Queue) -> None:
    ids = [queue.put(f"uuid-{i}") for i in range(5)]
    assert all(type(i) is int for i in ids) and ids == sorted(set(ids))
    bodies = []
    for expected_id in ids:
        entry = queue.reserve(timeout=0)
        assert entry is not None and entry.id == expected_id
        bodies.append(json.loads(entry.body))
        entry.delete()
    assert bodies == [f"uuid-{i}" for i in range(5)]
    assert queue.reserve(timeout=0) is None


def test_body_is_json_and_assignable(queue: Queue) -> None:
    queue.put({"uuid": "u", "n": [1, 2]})
    entry = queue.reserve(timeout=0)
    assert entry is not None
    assert json.loads(entry.body) == {"uuid": "u", "n": [1, 2]}
    entry.body = "replaced"
    assert entry.body == "replaced"
    entry.delete()


def test_priorities(queue: Queue) -> None:
    queue.put("low-1")
    queue.put("urgent", priority=0)
    queue.put("low-2")
    queue.put("middle-1", priority=1000)
    queue.put("middle-2", priority=1000)
    order = []
    while (entry := queue.reserve(timeout=0)) is not None:
        order.append(json.loads(entry.body))
        entry.delete()
    assert order == ["urgent", "middle-1", "middle-2", "low-1", "low-2"]


def test_queue_names_are_separate(open_queue: Callable[..., Queue]) -> None:
    a, b = open_queue("a"), open_queue("b")
    a.put("for a")
    assert b.reserve(timeout=0) is None
    entry = a.reserve(timeout=0)
    assert entry is not None and json.loads(entry.body) == "for a"
    assert entry.stats()["tube"] == "a"
    entry.delete()


def test_reserve_on_empty(queue: Queue) -> None:
    start = time.monotonic()
    assert queue.reserve(timeout=0) is None
    assert time.monotonic() - start < 1
    start = time.monotonic()
    assert queue.reserve(timeout=0.2) is None
    assert 0.15 <= time.monotonic() - start < 2


def test_delay(queue: Queue) -> None:
    queue.put("later", delay=0.3)
    assert queue.reserve(timeout=0) is None
    start = time.monotonic()
    entry = queue.reserve(timeout=5)  # started before the delay runs out
    assert entry is not None and json.loads(entry.body) == "later"
    assert 0.2 <= time.monotonic() - start < 2
    stats = entry.stats()
    assert stats["state"] == "reserved" and stats["reserves"] == 1
    entry.delete()


def test_stats(queue: Queue) -> None:
    queue.put("x", ttr=7, priority=5)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    stats = entry.stats()
    assert stats["id"] == entry.id
    assert stats["tube"] == "jobs"
    assert stats["state"] == "reserved"
    assert stats["pri"] == 5
    assert stats["ttr"] == 7
    assert stats["delay"] == 0
    assert type(stats["age"]) is int and 0 <= stats["age"] <= 1
    assert 6 < stats["time-left"] <= 7
    assert (stats["reserves"], stats["timeouts"], stats["releases"]) == (1, 0, 0)
    entry.release()
    assert entry.stats()["state"] == "ready"
    assert entry.stats()["releases"] == 1
    entry.delete()


def test_default_ttr(open_queue: Callable[..., Queue]) -> None:
    queue = open_queue(default_ttr=12)
    queue.put("x")
    queue.put("y", ttr=3)
    first, second = queue.reserve(timeout=0), queue.reserve(timeout=0)
    assert first is not None and second is not None
    assert first.stats()["ttr"] == 12
    assert second.stats()["ttr"] == 3


def test_release_with_delay(queue: Queue) -> None:
    queue.put("x")
    entry = queue.reserve(timeout=0)
    assert entry is not None
    entry.release(delay=0.3)
    stats = entry.stats()
    assert stats["state"] == "delayed" and stats["releases"] == 1
    assert 0 < stats["time-left"] <= 0.3
    assert queue.reserve(timeout=0) is None
    start = time.monotonic()
    again = queue.reserve(timeout=5)
    assert again is not None and again.id == entry.id
    assert 0.2 <= time.monotonic() - start < 2
    again.release()
    third = queue.reserve(timeout=0)
    assert third is not None and third.id == entry.id
    stats = third.stats()
    assert (stats["reserves"], stats["releases"], stats["timeouts"]) == (3, 2, 0)
    third.delete()


def test_after_release_the_holder_may_only_delete(queue: Queue) -> None:
    queue.put("x", ttr=30)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    entry.release(delay=60)
    # a keep-alive thread that touches late must not take the entry back
    with pytest.raises(errors.EntryNotReserved):
        entry.touch()
    with pytest.raises(errors.EntryNotReserved):
        entry.release()
    assert entry.stats()["state"] == "delayed"
    entry.delete()
    with pytest.raises(errors.EntryNotReserved):
        entry.stats()


def test_lease_expiry(queue: Queue, open_queue: Callable[..., Queue]) -> None:
    queue.put("x", ttr=0.2)
    first = queue.reserve(timeout=0)
    assert first is not None
    start = time.monotonic()
    second = open_queue().reserve(timeout=5)  # wakes when the lease runs out
    assert second is not None and second.id == first.id
    assert 0.1 <= time.monotonic() - start < 2
    stats = second.stats()
    assert stats["state"] == "reserved"
    assert (stats["reserves"], stats["timeouts"]) == (2, 1)
    # the first holder lost the entry to the second
    with pytest.raises(errors.EntryNotReserved):
        first.touch()
    with pytest.raises(errors.EntryNotReserved):
        first.release()
    with pytest.raises(errors.EntryNotReserved):
        first.delete()
    second.delete()
    with pytest.raises(errors.EntryNotReserved):
        second.delete()


def test_expired_holder_may_act_until_someone_else_reserves(queue: Queue) -> None:
    queue.put("x", ttr=0.1)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    time.sleep(0.2)
    stats = entry.stats()
    assert stats["state"] == "ready" and stats["timeouts"] == 1
    entry.touch()  # nobody took it: the holder reserves it again
    assert entry.stats()["state"] == "reserved"
    assert queue.reserve(timeout=0) is None
    time.sleep(0.2)
    entry.delete()
    assert queue.reserve(timeout=0) is None


def test_touch_extends_the_lease(queue: Queue) -> None:
    queue.put("x", ttr=10)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    time.sleep(0.3)
    before = entry.stats()["time-left"]
    entry.touch()
    after = entry.stats()["time-left"]
    assert before < after <= 10
    entry.delete()


def test_touch_from_another_thread(queue: Queue, datastore: Datastore) -> None:
    """The worker's keep-alive thread touches while the job saves."""
    queue.put("x", ttr=5)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    done = threading.Event()

    def keep_alive() -> None:
        while not done.is_set():
            entry.touch()

    thread = threading.Thread(target=keep_alive)
    thread.start()
    try:
        datastore.create("job", {"count": 0})
        _increment(datastore, "job", 100)
    finally:
        done.set()
        thread.join()
    assert datastore.read("job") == {"count": 100}
    entry.delete()


def test_queue_delete_by_id(queue: Queue) -> None:
    ready = queue.put("ready")
    delayed = queue.put("delayed", delay=60)
    held = queue.put("held", priority=0)
    entry = queue.reserve(timeout=0)
    assert entry is not None and entry.id == held
    assert queue.delete(ready) is True
    assert queue.delete(delayed) is True
    assert queue.delete(held) is False  # its holder's lease still runs
    assert queue.delete(ready) is False
    assert queue.delete(10**9) is False
    entry.delete()


def test_queue_delete_after_lease_ran_out(queue: Queue) -> None:
    queue.put("x", ttr=0.1)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    time.sleep(0.2)
    assert queue.delete(entry.id) is True
    with pytest.raises(errors.EntryNotReserved):
        entry.touch()


def _reserve_and_time(url: str, name: str, rounds: int, results: Any) -> None:
    """Reserve ``rounds`` entries whose bodies are their put times; report
    each wait, or a traceback."""
    try:
        queue = make_queue(url, name)
        try:
            results.put("ready")
            for _ in range(rounds):
                entry = queue.reserve(timeout=10)
                if entry is None:
                    results.put(("error", "no entry came"))
                    return
                results.put(time.time() - json.loads(entry.body))
                entry.delete()
        finally:
            _close(queue)
    except BaseException:
        results.put(("error", traceback.format_exc()))
        raise


@pytest.mark.slow
def test_put_wakes_a_waiter_in_another_process(queue: Queue, backend_url: str) -> None:
    rounds = 20
    results = SPAWN.Queue()
    proc = SPAWN.Process(
        target=_reserve_and_time, args=(backend_url, "jobs", rounds, results)
    )
    proc.start()
    latencies = []
    try:
        assert results.get(timeout=60) == "ready"
        for _ in range(rounds):
            time.sleep(0.05)  # let the waiter block
            queue.put(time.time())
            latency = results.get(timeout=10)
            assert not isinstance(latency, tuple), latency[1]
            latencies.append(latency)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    assert max(latencies) < 2
    print(
        f"wake latency: median {statistics.median(latencies) * 1000:.2f} ms,"
        f" max {max(latencies) * 1000:.2f} ms"
    )


@_reporting
def _reserve_all(url: str, name: str, start: Any) -> list[int]:
    queue = make_queue(url, name)
    ids = []
    try:
        start.wait(timeout=30)
        while (entry := queue.reserve(timeout=0)) is not None:
            ids.append(entry.id)
            time.sleep(0.001)  # some work, so that the processes interleave
            entry.delete()
    finally:
        _close(queue)
    return ids


@pytest.mark.slow
def test_concurrent_reserves_never_share_an_entry(
    queue: Queue, backend_url: str
) -> None:
    processes = 4
    put = [queue.put(i) for i in range(200)]
    start = SPAWN.Barrier(processes)
    taken = _run_processes(_reserve_all, [(backend_url, "jobs", start)] * processes)
    every = [i for ids in taken for i in ids]
    assert sorted(every) == put
    print(f"entries per process: {[len(ids) for ids in taken]}")


# -- SQLite ------------------------------------------------------------------


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    store = sqlite_backend.SqliteDatastore(path)
    queue = sqlite_backend.SqliteQueue(path, "jobs")
    try:
        with pytest.raises(errors.DatastoreUnavailable, match="junk.db"):
            store.read("k")
        with pytest.raises(errors.QueueUnavailable, match="junk.db"):
            queue.put("x")
        with pytest.raises(errors.QueueUnavailable, match="junk.db"):
            queue.reserve(timeout=0)
        # the next call connects again
        path.unlink()
        store.set("k", "v")
        assert store.read("k") == "v"
        queue.put("x")
        assert queue.reserve(timeout=0) is not None
    finally:
        store.close()
        queue.close()


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'db.sqlite'}"
    store = make_datastore(url)  # connects lazily
    queue = make_queue(url, "jobs")
    try:
        with pytest.raises(errors.DatastoreUnavailable, match="db.sqlite"):
            store.set("k", "v")
        with pytest.raises(errors.QueueUnavailable, match="db.sqlite"):
            queue.reserve(timeout=0)
    finally:
        _close(store)
        _close(queue)


def test_locked_too_long_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    store.set("k", "v")
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(errors.DatastoreUnavailable, match="locked"):
            store.set("k", "w")
        locker.execute("ROLLBACK")
        store.set("k", "w")
        assert store.read("k") == "w"
    finally:
        locker.close()
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_objects_survive_a_fork(tmp_path: Path) -> None:
    """A gunicorn worker forked after the app touched the store."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store, queue = make_datastore(url), make_queue(url, "jobs")
    try:
        store.set("k", {"count": 0})
        queue.put("before")
        assert queue.reserve(timeout=0.01) is not None  # binds a wake socket
        queue.put("for the child")
        with warnings.catch_warnings():
            # Python 3.12+ warns when forking with threads, as gunicorn does;
            # that the objects cope is what this test is about
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child must not use the parent's connection
            code = 1
            try:
                _increment(store, "k", 5)
                entry = queue.reserve(timeout=1)
                assert entry is not None
                assert json.loads(entry.body) == "for the child"
                entry.delete()
                queue.put("from the child")
                _close(store)
                _close(queue)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.read("k") == {"count": 5}
        entry = queue.reserve(timeout=1)
        assert entry is not None and json.loads(entry.body) == "from the child"
        entry.delete()
    finally:
        _close(store)
        _close(queue)


def test_stats_tube(tmp_path: Path) -> None:
    queue = sqlite_backend.SqliteQueue(tmp_path / "db.sqlite", "jobs")
    try:
        queue.put("urgent", priority=0)
        queue.put("ready")
        queue.put("delayed", delay=60)
        queue.put("also urgent", priority=1)
        queue.reserve(timeout=0)  # takes "urgent"
        assert queue.stats_tube() == {
            "name": "jobs",
            "current-jobs-urgent": 1,
            "current-jobs-ready": 2,
            "current-jobs-reserved": 1,
            "current-jobs-delayed": 1,
        }
    finally:
        queue.close()


def test_resolve_relative_path(tmp_path: Path) -> None:
    path = resolve_sqlite_path("sqlite:///data/spacewalk.db", str(tmp_path))
    assert path == str(tmp_path / "data" / "spacewalk.db")
    assert (tmp_path / "data").is_dir()


def test_resolve_relative_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_sqlite_path("sqlite:///x.db") == str(tmp_path / "x.db")


def test_resolve_absolute_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/abs/x.db"
    assert url.startswith("sqlite:////")
    assert resolve_sqlite_path(url, "/elsewhere") == str(tmp_path / "abs" / "x.db")
    assert (tmp_path / "abs").is_dir()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite:///dir/", "sqlite://host/x.db",
     "sqlite:///x.db?mode=ro", "sqlite:///:memory:"],
)  # fmt: skip
def test_bad_sqlite_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError):
        check_url(url, "datastore")
    with pytest.raises(errors.ConfigurationError):
        make_datastore(url, instance_path=str(tmp_path))
    with pytest.raises(errors.ConfigurationError):
        make_queue(url, "jobs", instance_path=str(tmp_path))


@pytest.mark.parametrize("url", ["mongodb://localhost/x", "x.db", "", "/abs/x.db"])
def test_unsupported_scheme_lists_the_supported(url: str) -> None:
    for kind in ("datastore", "queue"):
        with pytest.raises(errors.ConfigurationError, match="sqlite://"):
            check_url(url, kind)
    with pytest.raises(errors.ConfigurationError, match="sqlite://"):
        make_datastore(url)
    with pytest.raises(errors.ConfigurationError, match="sqlite://"):
        make_queue(url, "jobs")


def test_password_is_not_in_messages() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        check_url("mongodb://user:s3cret@host/db", "queue")
    assert "s3cret" not in str(info.value)


def test_check_url_does_not_create_anything(tmp_path: Path) -> None:
    check_url(f"sqlite:///{tmp_path}/new/x.db", "datastore")
    check_url("sqlite:///relative.db", "queue")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError):
        check_url("sqlite:///x.db", "cache")


def test_factories_as_zerog_arguments(tmp_path: Path) -> None:
    url = "sqlite:///instance/db.sqlite"
    make_datastore_ = functools.partial(
        make_datastore, url, instance_path=str(tmp_path)
    )
    make_queue_ = functools.partial(make_queue, url, instance_path=str(tmp_path))
    store, queue = make_datastore_(), make_queue_("svc_jobs")
    try:
        assert queue.queueName == "svc_jobs"
        store.set("k", "v")
        queue.put("u")
        assert (tmp_path / "instance" / "db.sqlite").is_file()
    finally:
        _close(store)
        _close(queue)


def test_wake_socket_is_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    queue = sqlite_backend.SqliteQueue(path, "jobs")

    def sockets() -> list[str]:
        dirs = sqlite_backend._wake_dirs(str(path))
        return [f for d in dirs if os.path.isdir(d) for f in os.listdir(d)]

    assert queue.reserve(timeout=0.01) is None
    assert len(sockets()) == 1
    queue.close()
    assert sockets() == []


def test_schema_is_versioned(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "db.sqlite"
    for _ in range(2):  # creating the schema twice is harmless
        store = sqlite_backend.SqliteDatastore(path)
        store.set("k", "v")
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM documents").fetchone()[0] == '"v"'
    finally:
        conn.close()


@_reporting
def _create_and_write(paths: list[str], start: Any) -> list[int]:
    start.wait(timeout=30)
    ids = []
    for path in paths:
        store = sqlite_backend.SqliteDatastore(path)
        queue = sqlite_backend.SqliteQueue(path, "race_jobs")
        try:
            store.set(f"k{os.getpid()}", "v")
            ids.append(queue.put("x"))
        finally:
            store.close()
            queue.close()
    return ids


@pytest.mark.slow
def test_processes_creating_one_file_at_once(tmp_path: Path) -> None:
    """gunicorn workers and job workers all opening a new database at start."""
    processes, files = 6, 8
    paths = [str(tmp_path / f"fresh{i}.sqlite") for i in range(files)]
    start = SPAWN.Barrier(processes)
    ids = _run_processes(_create_and_write, [(paths, start)] * processes)
    for i in range(files):
        assert sorted(found[i] for found in ids) == list(range(1, processes + 1))


def test_writer_lock_held_too_long_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    store.set("k", "v")
    with open(f"{path}-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(errors.DatastoreUnavailable, match="still locked"):
            store.set("k", "w")
        fcntl.flock(lock, fcntl.LOCK_UN)
    store.set("k", "w")
    assert store.read("k") == "w"
    store.close()
