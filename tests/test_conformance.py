"""Conformance tests of the datastore and queue protocols (SPEC section 5).

Every test here runs for every backend in ``backend_support.DATASTORES`` or
``backend_support.QUEUES``: the same tests for each.
"""
from __future__ import annotations

import gc
import json
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
from backend_support import (
    DATASTORES,
    QUEUES,
    SPAWN,
    _close,
    _increment,
    _reporting,
    _run_processes,
)

from flask_spacewalk import errors
from flask_spacewalk.backends import make_datastore, make_queue
from flask_spacewalk.backends.base import MAX_DEPTH
from flask_spacewalk.runtime.protocols import (
    Datastore,
    Queue,
    SharedTransactions,
    StoreTransaction,
)


@pytest.fixture(params=sorted(DATASTORES))
def datastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with DATASTORES[request.param](tmp_path) as url:
        yield url


@pytest.fixture(params=sorted(QUEUES))
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with QUEUES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
def datastore(datastore_url: str) -> Iterator[Datastore]:
    store = make_datastore(datastore_url)
    yield store
    _close(store)


@pytest.fixture
def open_queue(queue_url: str) -> Iterator[Callable[..., Queue]]:
    """Open queue objects on the test's store (another worker, say)."""
    opened: list[Queue] = []

    def open_queue(name: str = "jobs", **kwargs: Any) -> Queue:
        queue = make_queue(queue_url, name, **kwargs)
        opened.append(queue)
        return queue

    yield open_queue
    for queue in opened:
        _close(queue)


@pytest.fixture
def queue(open_queue: Callable[..., Queue]) -> Queue:
    return open_queue()


def skip_whole_seconds(queue_url: str, what: str) -> None:
    """Skip on beanstalkd, which counts leases, delays and ``time-left`` in
    whole seconds; tests/test_backends_beanstalkd.py checks ``what`` there."""
    if queue_url.startswith("beanstalkd:"):
        pytest.skip(f"beanstalkd counts whole seconds; {what} is tested in whole seconds"
                    " in test_backends_beanstalkd.py")


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


def _nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep, the outermost being level 1."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"text": "emoji \U0001F600, a backslash-u \\u0000 and \\ud800 as text"},
        {"deep": _nested(MAX_DEPTH - 1)},
        {"big": 10**300, "small": -(2**63), "tiny": 5e-324, "half": 0.5},
    ],
)
def test_values_at_the_edges_come_back_as_stored(datastore: Datastore, value: Any) -> None:
    datastore.set("k", value)
    assert datastore.read("k") == value


@pytest.mark.parametrize(
    "value, path, problem",
    [
        ({"score": float("nan")}, "score", "nan is not a JSON number"),
        ({"r": [1, {"x": float("inf")}]}, "r[1].x", "inf is not a JSON number"),
        ({"r": -float("inf")}, "r", "-inf is not a JSON number"),
        ({"tags": {1, 2}}, "tags", "a set is not a JSON value"),
        ({"blob": b"\x00\x01"}, "blob", "a bytes is not a JSON value"),
        ({"o": object()}, "o", "a object is not a JSON value"),
        ({"msg": "a\x00b"}, "msg", "NUL character"),
        ({"m": {"a\x00": 1}}, "m", "NUL character"),
        ({"msg": ["ok", "half \ud83d pair"]}, "msg[1]", "lone surrogate '\\ud83d'"),
        ({"m": {1: "one"}}, "m", "the key 1 is a int, not a str"),
        ({"m": {None: "one"}}, "m", "the key None is a NoneType"),
        ({"deep": _nested(5000)}, "deep" + "[0]" * (MAX_DEPTH - 1), "nested deeper than"),
        ({"deep": _nested(MAX_DEPTH)}, "deep" + "[0]" * (MAX_DEPTH - 1), "nested deeper than"),
        ({"n": 10**5000}, "n", "an int too long for JSON text"),
        (float("nan"), "", "nan is not a JSON number"),
    ],
)
def test_unstorable_values_are_refused_by_every_write(
    datastore: Datastore, value: Any, path: str, problem: str
) -> None:
    # Standard JSON, and what every store gives back the same: NaN would
    # break SQLite's json_extract and PostgreSQL refuses NUL and lone
    # surrogates, so no backend stores them.
    datastore.set("k", {"before": 1})
    writes: list[Callable[[], Any]] = [
        lambda: datastore.create("new", value),
        lambda: datastore.set("k", value),
        lambda: datastore.set_with_cas("k", value, datastore.read_with_cas("k")[1]),
        lambda: datastore.update("k", value),
        lambda: datastore.update_with_cas("k", value),
    ]
    for write in writes:
        with pytest.raises(errors.UnstorableValue) as caught:
            write()
        assert caught.value.path == path
        assert problem in caught.value.problem
        assert str(caught.value).startswith(f"cannot store field {path}: " if path else
                                            "cannot store the value: ")
        assert isinstance(caught.value, (errors.DatastoreError, ValueError))
    assert datastore.read("k") == {"before": 1}
    assert datastore.read("new") is None


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


def test_read_many_answers_as_read_with_cas_in_the_order_given(datastore: Datastore) -> None:
    # Not ZeroG's: the worker reads a job and its cancel request with it.
    datastore.set("a", {"n": 1})
    datastore.set("b", "text")
    keys = ["b", "missing", "a", "b"]
    assert datastore.read_many(keys) == [datastore.read_with_cas(k) for k in keys]  # type: ignore[attr-defined]
    assert datastore.read_many([]) == []  # type: ignore[attr-defined]
    assert datastore.read_many(["missing"]) == [(None, 0)]  # type: ignore[attr-defined]


def test_delete(datastore: Datastore) -> None:
    assert datastore.delete("k") is False
    datastore.set("k", "v")
    assert datastore.delete("k") is True
    assert datastore.delete("k") is False
    assert datastore.read_with_cas("k") == (None, 0)


def test_two_store_objects_share_the_data(
    datastore_url: str, datastore: Datastore
) -> None:
    other = make_datastore(datastore_url)
    try:
        _, cas = datastore.set_with_cas("k", {"n": 1})
        assert other.read_with_cas("k") == ({"n": 1}, cas)
        other.update_with_cas("k", {"n": 2}, cas)
        with pytest.raises(datastore.casException):
            datastore.update_with_cas("k", {"n": 3}, cas)
    finally:
        _close(other)


@_reporting
def _increment_in_process(url: str, key: str, times: int, start: Any) -> int:
    store = make_datastore(url)
    try:
        start.wait(timeout=30)
        return _increment(store, key, times)
    finally:
        _close(store)


@pytest.mark.slow
def test_cas_increments_from_processes(datastore_url: str, datastore: Datastore) -> None:
    processes, times = 4, 100
    datastore.create("counter", {"count": 0})
    start = SPAWN.Barrier(processes)
    conflicts = _run_processes(
        _increment_in_process,
        [(datastore_url, "counter", times, start)] * processes,
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


def skip_beanstalkd_order(queue_url: str) -> None:
    if queue_url.startswith("beanstalkd:"):
        pytest.skip("beanstalkd hands out equal priorities by job id, whenever each became"
                    " ready (its ready heap); docs/runtime.rst says so")


def wait_until_ready(queue: Any) -> None:
    """Wait until no entry of ``queue`` is delayed."""
    deadline = time.monotonic() + 10
    while queue.stats_tube()["current-jobs-delayed"]:
        assert time.monotonic() < deadline, "a delay never ran out"
        time.sleep(0.02)


def reserve_all(queue: Queue) -> list[Any]:
    """The bodies of every ready entry, in the order reserve hands them out."""
    bodies = []
    while (entry := queue.reserve(timeout=0)) is not None:
        bodies.append(json.loads(entry.body))
        entry.delete()
    return bodies


# The next three tests need two calls to follow each other within DELAY:
# long enough for a loaded machine, short enough for the suite's time.
DELAY = 0.5


def test_equal_priorities_go_in_the_order_they_became_ready(
    queue: Queue, queue_url: str
) -> None:
    skip_beanstalkd_order(queue_url)
    queue.put("delayed", delay=DELAY)
    queue.put("at once")  # put after "delayed", ready before it
    wait_until_ready(queue)
    queue.put("after the delay")
    assert reserve_all(queue) == ["at once", "delayed", "after the delay"]


def test_a_released_entry_goes_after_those_ready_before_its_delay_ran_out(
    queue: Queue, queue_url: str
) -> None:
    skip_beanstalkd_order(queue_url)
    queue.put("released")
    entry = queue.reserve(timeout=0)
    assert entry is not None
    queue.put("ready meanwhile")
    entry.release(delay=DELAY)
    queue.put("put during the delay")
    wait_until_ready(queue)
    queue.put("put after it")
    assert reserve_all(queue) == [
        "ready meanwhile", "put during the delay", "released", "put after it"
    ]


def test_an_entry_whose_lease_ran_out_goes_after_those_ready_before(
    queue: Queue, queue_url: str
) -> None:
    skip_beanstalkd_order(queue_url)
    queue.put("timed out", ttr=DELAY)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    queue.put("ready meanwhile")
    time.sleep(DELAY + 0.1)
    queue.put("put after the lease")
    assert reserve_all(queue) == ["ready meanwhile", "timed out", "put after the lease"]


def test_priority_wins_over_the_order_of_readiness(queue: Queue) -> None:
    queue.put("plain")
    queue.put("urgent", priority=0, delay=0.2)  # a whole second on beanstalkd
    wait_until_ready(queue)
    assert reserve_all(queue) == ["urgent", "plain"]


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


def test_stats(queue: Queue, queue_url: str) -> None:
    skip_whole_seconds(queue_url, "a fractional time-left")
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


def test_release_with_delay(queue: Queue, queue_url: str) -> None:
    skip_whole_seconds(queue_url, "a sub-second release delay")
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


def test_lease_expiry(
    queue: Queue, open_queue: Callable[..., Queue], queue_url: str
) -> None:
    if queue_url.startswith("beanstalkd:"):
        pytest.skip("beanstalkd 1.12 may miss the end of a lease while the holder's"
                    " connection is idle (beanstalkd issues 262, 380);"
                    " test_backends_beanstalkd.py tests expiry around that")
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


def test_expired_holder_may_act_until_someone_else_reserves(
    queue: Queue, queue_url: str
) -> None:
    if queue_url.startswith("beanstalkd:"):
        pytest.skip("beanstalkd takes a lease from its holder when it runs out (touch"
                    " answers NOT_FOUND); test_backends_beanstalkd.py tests that")
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


@pytest.mark.parametrize("action", ["delete", "release"])
def test_an_expired_holder_leaves_no_ready_copy_behind(
    queue: Queue, queue_url: str, action: str
) -> None:
    if queue_url.startswith("beanstalkd:"):
        pytest.skip("beanstalkd takes a lease from its holder when it runs out (touch"
                    " answers NOT_FOUND); test_backends_beanstalkd.py tests that")
    queue.put("x", ttr=0.1)
    entry = queue.reserve(timeout=0)
    assert entry is not None
    time.sleep(0.2)
    assert entry.stats()["state"] == "ready"  # nobody took it yet
    if action == "delete":
        entry.delete()
    else:
        entry.release(delay=60)
    assert queue.reserve(timeout=0) is None


def test_touch_extends_the_lease(queue: Queue, queue_url: str) -> None:
    skip_whole_seconds(queue_url, "a sub-second touch")
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


def test_has_entry_in_every_state_and_only_with_its_body(
    open_queue: Callable[..., Queue],
) -> None:
    queue, other = open_queue(), open_queue("other_jobs")
    ready = queue.put("job-a")
    delayed = queue.put("job-b", delay=60)
    held = queue.put("job-c", priority=0)
    elsewhere = other.put({"uuid": "job-d"})
    entry = queue.reserve(timeout=0)
    assert entry is not None and entry.id == held
    assert queue.has_entry(ready, "job-a") is True
    assert queue.has_entry(delayed, "job-b") is True
    assert queue.has_entry(held, "job-c") is True  # reserved
    # As delete() does, an id of any queue name counts.
    assert queue.has_entry(elsewhere, {"uuid": "job-d"}) is True
    # An id alone is not enough: ids may be handed out again (a beanstalkd
    # restarted without a binlog counts from 1 again).
    assert queue.has_entry(ready, "job-b") is False
    assert queue.has_entry(10**9, "job-a") is False
    assert queue.has_entry(-1, "job-a") is False
    assert queue.delete(ready) is True
    assert queue.has_entry(ready, "job-a") is False
    entry.delete()
    assert queue.has_entry(held, "job-c") is False


def test_queue_delete_after_lease_ran_out(queue: Queue, queue_url: str) -> None:
    skip_whole_seconds(queue_url, "a sub-second lease")
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
def test_put_wakes_a_waiter_in_another_process(queue: Queue, queue_url: str) -> None:
    rounds = 20
    results = SPAWN.Queue()
    proc = SPAWN.Process(
        target=_reserve_and_time, args=(queue_url, "jobs", rounds, results)
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
    queue: Queue, queue_url: str
) -> None:
    processes = 4
    put = [queue.put(i) for i in range(200)]
    start = SPAWN.Barrier(processes)
    taken = _run_processes(_reserve_all, [(queue_url, "jobs", start)] * processes)
    every = [i for ids in taken for i in ids]
    assert sorted(every) == put
    print(f"entries per process: {[len(ids) for ids in taken]}")



# -- fork safety -------------------------------------------------------------

#: One test per datastore and per queue.
FORKED = [("datastore", name) for name in sorted(DATASTORES)] + [
    ("queue", name) for name in sorted(QUEUES)
]


@pytest.fixture(params=FORKED, ids=[f"{kind}-{name}" for kind, name in FORKED])
def forked_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind, name = request.param
    factory = DATASTORES[name] if kind == "datastore" else QUEUES[name]
    with factory(tmp_path) as url:
        backend = make_datastore(url) if kind == "datastore" else make_queue(url, "jobs")
        try:
            yield backend
        finally:
            _close(backend)


def use(backend: Any, who: str) -> None:
    """A round trip or two on ``backend``'s connections."""
    if hasattr(backend, "read_with_cas"):
        backend.set(f"k-{who}", {"who": who})
        assert backend.read(f"k-{who}") == {"who": who}
        return
    id = backend.put(who)
    entry = backend.reserve(timeout=1)
    assert entry is not None and entry.id == id and json.loads(entry.body) == who
    entry.delete()


def connections(backend: Any) -> set[Any]:
    """What names ``backend``'s connections: the server's ids of them where
    the server has them, else this process's objects of them."""
    name = type(backend).__name__
    if name in ("PostgresDatastore", "PostgresQueue"):  # the idle pool's (it may grow meanwhile)
        return {conn.info.backend_pid for conn in backend._connections._pool._pool}
    if name.startswith("Redis"):
        with backend._server.connect() as client:
            return {client.client_id()}
    if name == "BeanstalkdQueue":
        links = (backend._producer, backend._consumer)
        return {(id(link._conn), link._conn.sock.getsockname()) for link in links}
    return {id(backend._db._conn)}  # SQLite: no server, one connection object


def in_child(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child; fail here with its traceback."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns when forking with threads (a pool's), as
        # gunicorn does; that the backends cope is what is tested
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            try:
                body()
                code = 0
            except BaseException:
                os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_its_own_connection(forked_backend: Any) -> None:
    """A gunicorn worker forked after the app used its backends."""
    use(forked_backend, "parent")
    before = connections(forked_backend)

    def child() -> None:
        use(forked_backend, "child")
        assert connections(forked_backend).isdisjoint(before)
        _close(forked_backend)

    in_child(child)
    assert before <= connections(forked_backend)
    use(forked_backend, "parent again")
    assert before <= connections(forked_backend)
    if hasattr(forked_backend, "read"):
        assert forked_backend.read("k-child") == {"who": "child"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("how", ["close", "collect"])
def test_a_forked_child_that_never_uses_it_leaves_the_parents_connection(
    forked_backend: Any, how: str
) -> None:
    """A child that closes, or drops, what it inherited without using it
    (a worker recycled before its first request)."""
    use(forked_backend, "parent")
    before = connections(forked_backend)
    holder = [forked_backend]

    def child() -> None:
        if how == "close":
            _close(holder[0])
        holder.clear()
        gc.collect()

    in_child(child)
    use(forked_backend, "parent again")
    assert before <= connections(forked_backend)


# -- shared transactions (queue and datastore in one database) --------------------------

#: The backends whose queue can write its datastore in one transaction
#: (runtime/protocols.py ``SharedTransactions``): the same checks on each.
SHARED = [name for name in ("sqlite", "postgresql") if name in DATASTORES]


@pytest.fixture(params=SHARED)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A datastore and a queue of one database."""
    with DATASTORES[request.param](tmp_path) as url:
        datastore, queue = make_datastore(url), make_queue(url, "jobs")
        yield datastore, queue
        _close(queue)
        _close(datastore)


def put_job(datastore: Any, queue: Any, uuid: str, priority: int = 2**31) -> int:
    written = queue.put_with_document(
        datastore, f"zerog_job_{uuid}", lambda id: {"uuid": uuid, "queueJobId": id}, uuid,
        priority=priority)
    assert written is not None
    return int(written[1])


def test_a_shared_queue_knows_its_own_database(shared: tuple[Any, Any],
                                               tmp_path: Path) -> None:
    datastore, queue = shared
    assert isinstance(queue, SharedTransactions) and queue.shares_database(datastore)
    other = make_datastore(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    try:
        assert not queue.shares_database(other)
    finally:
        _close(other)


def test_reserve_in_claims_by_priority_and_reads_in_its_transaction(
    shared: tuple[Any, Any],
) -> None:
    datastore, queue = shared
    cas = {uuid: put_job(datastore, queue, uuid, priority)
           for uuid, priority in (("a", 5), ("b", 1), ("c", 5))}  # fmt: skip

    def then(tx: StoreTransaction, entries: list[Any]) -> list[Any]:
        uuids = [json.loads(entry.body) for entry in entries]
        read = tx.read([f"zerog_job_{uuids[0]}", "zerog_job_none"])
        assert read == [({"uuid": "b", "queueJobId": entries[0].id}, cas["b"]), (None, 0)]
        new_cas = tx.write(f"zerog_job_{uuids[0]}", {"uuid": "b", "seen": True}, cas["b"])
        assert new_cas > cas["b"]
        assert tx.read([f"zerog_job_{uuids[0]}"]) == [({"uuid": "b", "seen": True}, new_cas)]
        return uuids

    assert queue.reserve_in(2, 0, then) == ["b", "a"]
    assert datastore.read("zerog_job_b") == {"uuid": "b", "seen": True}
    assert queue.stats_tube()["current-jobs-reserved"] == 2
    assert queue.reserve_in(5, 0, lambda tx, entries: len(entries)) == 1
    assert queue.reserve_in(5, 0, lambda tx, entries: len(entries)) is None


def test_reserve_in_waits_for_a_put(shared: tuple[Any, Any]) -> None:
    datastore, queue = shared
    timer = threading.Timer(0.3, put_job, (datastore, queue, "late"))
    timer.start()
    start = time.monotonic()
    try:
        got = queue.reserve_in(3, 10, lambda tx, entries: [e.body for e in entries])
    finally:
        timer.join()
    assert got == ['"late"'] and time.monotonic() - start < 5
    start = time.monotonic()
    assert queue.reserve_in(1, 0.2, lambda tx, entries: entries) is None
    assert time.monotonic() - start >= 0.15


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_reserve_in_refuses_a_bad_count(shared: tuple[Any, Any], count: Any) -> None:
    with pytest.raises(ValueError, match="count must be a positive integer"):
        shared[1].reserve_in(count, 0, lambda tx, entries: entries)


def test_a_claim_that_raises_claims_and_writes_nothing(shared: tuple[Any, Any]) -> None:
    datastore, queue = shared
    cas = put_job(datastore, queue, "u")

    def then(tx: StoreTransaction, entries: list[Any]) -> None:
        tx.write("zerog_job_u", {"uuid": "u", "running": True}, cas)
        raise RuntimeError("the claim fails")

    with pytest.raises(RuntimeError, match="the claim fails"):
        queue.reserve_in(1, 0, then)
    assert datastore.read_with_cas("zerog_job_u")[1] == cas
    assert queue.stats_tube()["current-jobs-ready"] == 1


def test_a_claim_writing_with_a_stale_cas_claims_nothing(shared: tuple[Any, Any]) -> None:
    datastore, queue = shared
    cas = put_job(datastore, queue, "u")

    def then(tx: StoreTransaction, entries: list[Any]) -> None:
        tx.read(["zerog_job_u"])
        tx.write("zerog_job_u", {"uuid": "u", "running": True}, cas - 1)

    with pytest.raises(datastore.casException):
        queue.reserve_in(1, 0, then)
    assert datastore.read_with_cas("zerog_job_u")[1] == cas
    assert queue.stats_tube()["current-jobs-ready"] == 1


def test_a_stale_cas_rolls_the_whole_transaction_back(shared: tuple[Any, Any]) -> None:
    datastore, queue = shared
    cas = put_job(datastore, queue, "u")
    entry = queue.reserve(timeout=0)
    datastore.set("zerog_job_other", {"n": 1})

    def transaction(tx: StoreTransaction) -> None:
        tx.write("zerog_job_other", {"n": 2}, tx.read(["zerog_job_other"])[0][1])
        assert tx.delete_entry(entry)
        tx.write("zerog_job_u", {"uuid": "u"}, cas - 1)

    with pytest.raises(datastore.casException):
        queue.transact(transaction)
    assert datastore.read("zerog_job_other") == {"n": 1}
    entry.touch()  # still there, still held
    # a value the datastore refuses is refused here too, with nothing written
    with pytest.raises((ValueError, errors.UnstorableValue)):
        queue.transact(lambda tx: tx.write("zerog_job_u", {"x": float("nan")}, cas))
    assert datastore.read_with_cas("zerog_job_u")[1] == cas


def test_delete_entry_deletes_only_what_its_holder_still_holds(
    shared: tuple[Any, Any],
) -> None:
    datastore, queue = shared
    put_job(datastore, queue, "u")
    entry = queue.reserve(timeout=0)
    entry.release()
    again = queue.reserve(timeout=0)
    assert queue.transact(lambda tx: tx.delete_entry(entry)) is False
    assert queue.transact(lambda tx: tx.delete_entry(again)) is True
    assert queue.stats_tube()["current-jobs-reserved"] == 0


    class Foreign:  # an entry of another kind of queue
        id, body = 1, '"u"'

    with pytest.raises(TypeError, match="is not an entry of"):
        queue.transact(lambda tx: tx.delete_entry(Foreign()))


def test_deliveries_added_in_a_transaction(shared: tuple[Any, Any]) -> None:
    from flask_spacewalk.runtime.webhooks import Delivery

    datastore, queue = shared
    delivery = Delivery("d1", "http://x", "job.finished", "u", "{}", 1.0, 1.0, 1.0)
    datastore.read("k")  # its tables made, as by any use before a worker's first result
    assert queue.transact(lambda tx: tx.add_deliveries([delivery])) == 1
    assert queue.transact(lambda tx: tx.add_deliveries([delivery])) == 0
    assert queue.transact(lambda tx: tx.add_deliveries([])) == 0
    assert [d.id for d in datastore.list_deliveries(uuid="u")] == ["d1"]
