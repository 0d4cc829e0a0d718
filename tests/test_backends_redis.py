"""The Redis backend beyond the protocols: URLs, key layout, outages (its fork
safety: test_conformance.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from backend_redis import redis_url, requires_ci_or_skip, with_options
from backend_support import _close

from flask_spacewalk import errors
from flask_spacewalk.backends import check_url, make_datastore, make_queue

if os.environ.get("CI") == "true":
    import redis  # CI installs the test extras: fail loudly without them
else:
    redis = pytest.importorskip("redis")

from flask_spacewalk.backends import redis as redis_backend  # noqa: E402


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A fresh prefix on the shared server."""
    with redis_url(tmp_path) as url:
        yield url


@pytest.fixture
def client() -> Iterator[Any]:
    """A raw client of the shared server."""
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, decode_responses=True)
    yield client
    client.close()


def _prefix(url: str) -> str:
    return parse_qs(urlsplit(url).query)["prefix"][0]


# -- URLs ----------------------------------------------------------------------


def test_url_settings() -> None:
    settings = redis_backend._parse_url(
        "redis://user:p%40ss@Example.org:6380/3?prefix=svc:&socket_timeout=0.5"
    )
    assert settings.host == "example.org" and settings.port == 6380 and settings.db == 3
    assert (settings.username, settings.password) == ("user", "p@ss")
    assert settings.prefix == "svc:"
    assert (settings.socket_timeout, settings.socket_connect_timeout) == (0.5, 1.0)
    defaults = redis_backend._parse_url("redis://")
    assert (defaults.host, defaults.port, defaults.db) == ("localhost", 6379, 0)
    assert defaults.prefix == "spacewalk:"
    assert redis_backend._parse_url("redis://h/?prefix=").prefix == ""
    assert redis_backend._parse_url("redis://[::1]:7000/1").server == "[::1]:7000/1"


@pytest.mark.parametrize(
    "url",
    ["redis://h/abc", "redis://h:99999/0", "redis://h/0?foo=1", "redis://h/0#x",
     "redis://h/0?socket_timeout=0", "redis://h/0?socket_connect_timeout=x",
     "redis://h/0?prefix=a&prefix=b", "redis://h/0/1"],
)  # fmt: skip
def test_bad_urls(url: str) -> None:
    for kind in ("datastore", "queue"):
        with pytest.raises(errors.ConfigurationError):
            check_url(url, kind)
    with pytest.raises(errors.ConfigurationError):
        make_datastore(url)
    with pytest.raises(errors.ConfigurationError):
        make_queue(url, "jobs")


def test_check_url_does_not_connect() -> None:
    check_url("redis://nowhere.invalid:6379/0?prefix=x:", "datastore")
    check_url("redis://nowhere.invalid:6379/0", "queue")
    store = make_datastore("redis://nowhere.invalid:1/0")  # connects lazily
    _close(store)


def test_password_is_not_in_messages() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        check_url("redis://user:s3cret@host/0?bad=1", "queue")
    assert "s3cret" not in str(info.value)
    store = make_datastore("redis://user:s3cret@host/0")
    assert "s3cret" not in repr(store)


# -- layout --------------------------------------------------------------------


def test_document_layout(url: str, client: Any) -> None:
    store = make_datastore(url)
    try:
        _, cas = store.set_with_cas("job", "a str")
        assert client.hgetall(f"{_prefix(url)}doc:job") == {
            "value": '"a str"', "cas": str(cas)
        }  # fmt: skip
        assert store.read("job") == "a str"
    finally:
        _close(store)


def test_cas_keeps_every_digit(url: str, client: Any) -> None:
    """A cas ahead of the clock grows by one, in 64 bits, not in floats."""
    store = make_datastore(url)
    big = 9_000_000_000_000_000_000
    try:
        client.hset(f"{_prefix(url)}doc:k", mapping={"value": '"v"', "cas": str(big)})
        assert store.read_with_cas("k") == ("v", big)
        assert store.set_with_cas("k", "w", big) == (True, big + 1)
        assert store.update_with_cas("k", "x", big + 1) == (True, big + 2)
        assert store.update("k", "y") is True
        assert store.read_with_cas("k") == ("y", big + 3)
    finally:
        _close(store)


def test_queue_layout(url: str, client: Any) -> None:
    queue = make_queue(url, "jobs")
    try:
        queue.put("a")
        queue.put("b", delay=60)
        prefix = _prefix(url)
        # the ready: priority, then the time each became ready and its id
        ready_at = int(client.hget(f"{prefix}queue:entry:1", "ready_at"))
        assert client.zrange(f"{prefix}queue:jobs:ready2", 0, -1, withscores=True) == [
            (f"{ready_at:020d}{1:020d}", 2**31)
        ]
        entry = queue.reserve(timeout=0)
        assert entry is not None
        assert set(client.scan_iter(match=f"{prefix}*")) == {
            f"{prefix}queue:last-id", f"{prefix}queue:entry:1", f"{prefix}queue:entry:2",
            f"{prefix}queue:jobs:delayed", f"{prefix}queue:jobs:leases",
            f"{prefix}queue:jobs:wake", f"{prefix}queue:names",
        }  # fmt: skip
        queue.put("c")
        ready_at = int(client.hget(f"{prefix}queue:entry:3", "ready_at"))
        assert client.zrange(f"{prefix}queue:jobs:ready2", 0, -1) == [f"{ready_at:020d}{3:020d}"]
        # its twin, scored by that time: the oldest ready age is one read
        assert client.zrange(f"{prefix}queue:jobs:since", 0, -1, withscores=True) == [
            ("0" * 19 + "3", ready_at)
        ]
        assert client.smembers(f"{prefix}queue:names") == {"jobs"}
        entry.delete()
        assert queue.delete(2) is True
        assert queue.delete(3) is True
        assert queue.reserve(timeout=0) is None  # drops the stale wake-up tokens
        # the names set is kept: queue_stats forgets the names that hold none
        assert set(client.scan_iter(match=f"{prefix}*")) == {
            f"{prefix}queue:last-id", f"{prefix}queue:names"
        }
    finally:
        _close(queue)


def test_entries_an_older_version_made_ready_are_kept(url: str, client: Any) -> None:
    """Before ``ready2``, the ready entries were ids alone in ``ready``: a
    store of that version, or one of its processes still running during an
    upgrade, leaves them there."""
    queue = make_queue(url, "jobs")
    prefix = _prefix(url)
    ready, legacy = f"{prefix}queue:jobs:ready2", f"{prefix}queue:jobs:ready"
    try:
        gone = [queue.put(body) for body in ("first", "second", "gone")][-1]
        queue.put("urgent", priority=0)
        for member, pri in client.zrange(ready, 0, -1, withscores=True):
            client.zadd(legacy, {member[20:]: pri})
        client.delete(ready)
        queue.put("third")
        assert queue.delete(gone) is True
        assert queue.stats_tube()["current-jobs-ready"] == 4
        order = []
        while (entry := queue.reserve(timeout=0)) is not None:
            order.append(json.loads(entry.body))
            entry.delete()
        assert order == ["urgent", "first", "second", "third"]
        assert client.exists(ready, legacy) == 0
    finally:
        _close(queue)


def test_queue_stats_rebuild_the_ready_times_an_older_version_did_not_keep(
    url: str, client: Any
) -> None:
    queue, other = make_queue(url, "jobs"), make_queue(url, "other")
    try:
        queue.put("a")
        put_at = time.time()
        queue.put("b")
        other.put("c")
        assert other.delete(3)
        # as an older version left them: ready entries without ready times
        client.delete(f"{_prefix(url)}queue:jobs:since")
        time.sleep(0.2)
        (depth,) = queue.queue_stats()  # "other" holds none: not listed, forgotten
        assert depth.ready == 2 and depth.oldest_ready_age is not None
        assert 0.2 <= depth.oldest_ready_age <= time.time() - put_at + 0.05
        assert client.smembers(f"{_prefix(url)}queue:names") == {"jobs"}
        entry = queue.reserve(timeout=0)
        assert entry is not None and entry.body == '"a"'
        assert queue.queue_stats()[0].ready == 1
        assert client.zcard(f"{_prefix(url)}queue:jobs:since") == 1
    finally:
        _close(queue)
        _close(other)


def test_wake_tokens_are_bounded(url: str, client: Any) -> None:
    queue = make_queue(url, "jobs")
    try:
        for i in range(redis_backend.WAKE_TOKENS + 20):
            queue.put(i)
        assert client.llen(f"{_prefix(url)}queue:jobs:wake") == redis_backend.WAKE_TOKENS
    finally:
        _close(queue)


def test_ids_are_shared_by_queue_names(url: str) -> None:
    a, b = make_queue(url, "a"), make_queue(url, "a:ready")
    try:
        assert [a.put("x"), b.put("y"), a.put("z")] == [1, 2, 3]
        assert b.delete(1) is True  # as in beanstalkd, any name's id
        entry = b.reserve(timeout=0)
        assert entry is not None and json.loads(entry.body) == "y"
        entry = a.reserve(timeout=0)
        assert entry is not None and json.loads(entry.body) == "z"
    finally:
        _close(a)
        _close(b)


def test_stats_tube(url: str) -> None:
    queue = redis_backend.RedisQueue(url, "jobs")
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


def test_blocking_reserve_outlives_the_read_timeout(url: str) -> None:
    queue = make_queue(with_options(url, socket_timeout=0.2), "jobs")
    try:
        assert queue.reserve(timeout=1.5) is None
        queue.put("x", delay=0.5)
        entry = queue.reserve(timeout=5)
        assert entry is not None and json.loads(entry.body) == "x"
    finally:
        _close(queue)


# -- outages -------------------------------------------------------------------


class _Server:
    """A redis-server of our own on a free loopback port."""

    def __init__(self, password: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--requirepass", self.password],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=1)
        try:
            for _ in range(100):
                try:
                    client.ping()
                    return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_server() -> Iterator[_Server]:
    if shutil.which("redis-server") is None:
        requires_ci_or_skip("redis-server is not installed")
    server = _Server("s3cret")
    server.start()
    yield server
    server.stop()


def test_outage_and_recovery(own_server: _Server) -> None:
    url = f"redis://:{own_server.password}@127.0.0.1:{own_server.port}/0?prefix=t:"
    store, queue = make_datastore(url), make_queue(url, "jobs")
    try:
        store.set("k", "v")
        queue.put("x")
        waiting: list[Any] = []

        def wait() -> None:
            try:
                waiting.append(queue.reserve(timeout=20))
            except BaseException as exc:
                waiting.append(exc)

        entry = queue.reserve(timeout=0)
        assert entry is not None
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.1)  # let it block in BLPOP
        own_server.stop()
        waiter.join(timeout=15)
        assert waiting and isinstance(waiting[0], errors.QueueUnavailable), waiting

        started = time.monotonic()
        server = f"127.0.0.1:{own_server.port}"
        calls: list[Any] = [
            (errors.DatastoreUnavailable, store.read, "k"),
            (errors.DatastoreUnavailable, store.set, "k", "w"),
            (errors.QueueUnavailable, queue.put, "y"),
            (errors.QueueUnavailable, queue.reserve, 0),
            (errors.QueueUnavailable, queue.reserve, 5),
            (errors.QueueUnavailable, entry.touch),
        ]
        for error, call, *args in calls:
            with pytest.raises(error, match=server) as info:
                call(*args)
            assert own_server.password not in str(info.value)
        print(f"outage noticed in {(time.monotonic() - started) / len(calls) * 1000:.1f} ms a call")

        own_server.start()  # empty: it saves nothing
        assert store.read("k") is None
        store.set("k", "again")
        assert store.read("k") == "again"
        queue.put("after")
        again = queue.reserve(timeout=1)
        assert again is not None and json.loads(again.body) == "after"
        again.delete()
        # a server that forgot our scripts gets them again
        flusher = redis.Redis(port=own_server.port, password=own_server.password)
        flusher.script_flush()
        flusher.close()
        assert store.set_with_cas("k", "after flush")[0] is True
        assert queue.reserve(timeout=0) is None
    finally:
        _close(store)
        _close(queue)


def test_hung_server_times_out(own_server: _Server) -> None:
    """A server that stops answering (here: SIGSTOP) is unavailable after
    the read timeout, and usable again once it answers."""
    assert own_server.proc is not None
    url = (
        f"redis://:{own_server.password}@127.0.0.1:{own_server.port}/0"
        "?prefix=t:&socket_timeout=0.3"
    )
    store, queue = make_datastore(url), make_queue(url, "jobs")
    try:
        store.set("k", "v")
        queue.put("x")
        own_server.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(errors.DatastoreUnavailable, match="Timeout"):
                store.read("k")
            with pytest.raises(errors.QueueUnavailable, match="Timeout"):
                queue.reserve(timeout=5)
        finally:
            own_server.proc.send_signal(signal.SIGCONT)
        assert store.read("k") == "v"
        entry = queue.reserve(timeout=1)
        assert entry is not None and json.loads(entry.body) == "x"
    finally:
        _close(store)
        _close(queue)


# -- errors that are not connection failures (issue 12) --------------------------


def test_a_bad_database_index_is_unavailable_naming_it(tmp_path: Path) -> None:
    with redis_url(tmp_path):  # skips without the shared server
        pass
    url = "redis://127.0.0.1:6379/99?prefix=sw_test_baddb:"
    store, queue = make_datastore(url), make_queue(url, "jobs")
    try:
        with pytest.raises(errors.DatastoreUnavailable, match="DB index is out of range"):
            store.read("k")
        with pytest.raises(errors.DatastoreUnavailable, match="DB index"):
            store.set("k", "v")
        with pytest.raises(errors.QueueUnavailable, match="DB index"):
            queue.put("x")
        with pytest.raises(errors.QueueUnavailable, match="DB index"):
            queue.reserve(timeout=0)
    finally:
        _close(store)
        _close(queue)


def test_out_of_memory_is_unavailable_and_half_does_nothing(own_server: _Server) -> None:
    url = f"redis://:{own_server.password}@127.0.0.1:{own_server.port}/0?prefix=t:"
    raw = redis.Redis(port=own_server.port, password=own_server.password,
                      decode_responses=True)  # fmt: skip
    store, queue = make_datastore(url), make_queue(url, "jobs")
    job = {"createdAt": "2024-01-01T00:00:00", "jobType": "t", "resultCode": -1}

    def layout() -> dict[str, Any]:
        return {key: raw.type(key) for key in raw.keys("*")}

    def listed_as() -> list[str]:
        return [status for status in ("queued", "finished")
                if raw.zrange(f"t:jobs:status:{status}", 0, -1) == ["2024-01-01T00:00:00 a"]]

    try:
        store.set("zerog_job_a", job)
        before = layout()
        raw.config_set("maxmemory", 1)  # below what is used: growing is refused
        # Redis checks a script's first write: one that would grow memory
        # is refused before anything changed...
        with pytest.raises(errors.DatastoreUnavailable, match="maxmemory"):
            store.set("zerog_job_b", job)
        with pytest.raises(errors.QueueUnavailable, match="maxmemory"):
            queue.put("y")
        assert layout() == before
        # ...and one that starts by removing runs to its end: the document
        # and its indexes change together either way
        try:
            store.update("zerog_job_a", {**job, "resultCode": 0})
        except errors.DatastoreUnavailable:
            pass
        stored = store.read("zerog_job_a")
        assert isinstance(stored, dict)
        assert listed_as() == ["finished" if stored["resultCode"] == 0 else "queued"]
        assert raw.hget("t:doc:zerog_job_a", "ix_status") == listed_as()[0]
        raw.config_set("maxmemory", 0)
        store.set("zerog_job_b", job)
        queue.put("x")
        entry = queue.reserve(timeout=0)
        assert entry is not None and json.loads(entry.body) == "x"
    finally:
        raw.close()
        _close(store)
        _close(queue)


def test_a_wrong_type_key_is_unavailable(url: str, client: Any) -> None:
    store = make_datastore(url)
    try:
        client.set(_prefix(url) + "doc:k", "not a hash")
        with pytest.raises(errors.DatastoreUnavailable, match="WRONGTYPE"):
            store.read("k")
        with pytest.raises(errors.DatastoreUnavailable, match="WRONGTYPE"):
            store.set("k", "v")
    finally:
        _close(store)


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        ("OutOfMemoryError:command not allowed when used memory > 'maxmemory'", True),
        ("ResponseError:WRONGTYPE Operation against a key holding the wrong kind of value", True),
        ("ResponseError:DB index is out of range", True),
        ("ResponseError:MISCONF Redis is configured to save RDB snapshots", True),
        ("ResponseError:Error running script (call to f_0): OOM command not allowed", True),
        ("BusyLoadingError:Redis is loading the dataset in memory", True),
        # our own bugs stay loud, as PostgreSQL's do
        ("ResponseError:Error running script: user_script:3: attempt to compare nil", False),
        ("ResponseError:unknown command 'NOSUCH'", False),
        ("DataError:Invalid input of type: 'dict'", False),
    ],
)
def test_refusals_are_told_from_our_own_bugs(error: str, refused: bool) -> None:
    import redis.exceptions

    from flask_spacewalk.backends.redis import _refused

    name, message = error.split(":", 1)
    assert _refused(getattr(redis.exceptions, name)(message)) is refused
