"""``Prefer: wait`` on POST L/job, the long polls of progress and info, and
the job write notifications that wake them, on every datastore (SPEC
section 9, docs/live.rst)."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, _close
from conftest import requires_ci_or_skip
from flask import Flask
from flask.testing import FlaskClient
from wait_jobs.jobs import WaitRoot

from flask_spacewalk import Spacewalk, make_datastore
from flask_spacewalk.runtime.adapters import as_datastore
from flask_spacewalk.runtime.changes import RECHECK_INTERVAL, JobWatch
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.worker_loop import Worker
from flask_spacewalk.web.prefer import read_wait

TESTS = Path(__file__).resolve().parent
NAP = "/wait/nap"
#: Every datastore; the queue is a SQLite file beside it (the datastore is
#: what wakes a waiting request).
STORES = ("sqlite", "postgresql", "redis")


@contextlib.contextmanager
def live_app(store: str, tmp_path: Path, **config: Any) -> Iterator[Flask]:
    if store not in DATASTORES:
        requires_ci_or_skip(f"the {store} datastore is not available")
    with DATASTORES[store](tmp_path) as store_url:
        app = Flask(__name__, instance_path=str(tmp_path))
        app.config.update({
            "SPACEWALK_DATASTORE_URL": store_url,
            "SPACEWALK_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.sqlite3'}",
            "SPACEWALK_RUN_INLINE": False, **config,
        })  # fmt: skip
        Spacewalk(app, TESTS / "wait_jobs", WaitRoot)
        try:
            yield app
        finally:
            state(app).close()


def state(app: Flask) -> Any:
    return app.extensions["spacewalk"]["/wait"]


class QuickWorker(Worker):
    RESERVE_TIMEOUT = 0.1


@contextlib.contextmanager
def worker(app: Flask) -> Iterator[None]:
    """A worker running the app's jobs in a thread while the block runs."""
    s = state(app)
    made: list[Any] = []

    def keep(backend: Any) -> Any:
        made.append(backend)
        return backend

    loop = QuickWorker(s.registry, lambda: keep(s.make_datastore()),
                       lambda name: keep(s.make_queue(name)), s.settings.queue_name, ttr=10)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.stop()
        thread.join(15)
        assert not thread.is_alive()
        for backend in made:
            _close(backend)


def post(client: FlaskClient, prefer: str | None, **body: Any) -> tuple[Any, float]:
    headers = {} if prefer is None else {"Prefer": prefer}
    start = time.monotonic()
    response = client.post(f"{NAP}/job", json=body, headers=headers)
    return response, time.monotonic() - start


def rewrite(app: Flask, uuid: str, **changes: Any) -> float:
    """Write the job's document with ``changes``; the time of the write."""
    datastore, _ = state(app).connections()
    document, cas = datastore.read_with_cas(make_key(uuid))
    document.update(changes)
    datastore.update_with_cas(make_key(uuid), document, cas)
    return time.monotonic()


# -- POST L/job with Prefer: wait ----------------------------------------------------


@pytest.mark.parametrize("store", STORES)
def test_a_short_job_is_answered_with_its_result(store: str, tmp_path: Path) -> None:
    with live_app(store, tmp_path) as app, worker(app):
        client = app.test_client()
        post(client, None, seconds=0)  # the worker's connections warm up
        response, took = post(client, "wait=5", seconds=0.05)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.json
        assert list(body) == ["uuid", "completeness", "result", "data"]
        assert body["completeness"] == 1.0 and body["result"] == 200
        # data exactly as GET R/data answers it
        assert body["data"] == {"answer": 42}
        assert body["data"] == client.get(f"/wait/data/{body['uuid']}").json
        assert response.headers["Location"].endswith(f"/wait/progress/{body['uuid']}")
        assert response.headers["Preference-Applied"] == "wait=5"
        print(f"{store}: a 50 ms job answered in {took * 1000:.0f} ms")
        assert took < 1.0


@pytest.mark.parametrize("store", STORES)
def test_a_job_without_a_result_in_time_is_answered_201(store: str, tmp_path: Path) -> None:
    # no worker: the 3 s job cannot have its result within the wait
    with live_app(store, tmp_path) as app:
        response, took = post(app.test_client(), "wait=1", seconds=3)
        assert response.status_code == 201
        assert list(response.json) == ["uuid"]
        assert response.headers["Preference-Applied"] == "wait=1"
        assert "Location" in response.headers
        assert 0.9 <= took < 3.0


def test_the_wait_is_capped_at_max_wait(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path, SPACEWALK_MAX_WAIT=1) as app:
        response, took = post(app.test_client(), "wait=30", seconds=3)
        assert response.status_code == 201
        assert response.headers["Preference-Applied"] == "wait=1"
        assert 0.9 <= took < 3.0
        response, took = post(app.test_client(), "wait=99999999999999999999999", seconds=3)
        assert response.headers["Preference-Applied"] == "wait=1"


def test_a_max_wait_under_a_second_answers_at_once(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path, SPACEWALK_MAX_WAIT=0.5) as app:
        response, took = post(app.test_client(), "wait=10")
        assert response.status_code == 201
        assert response.headers["Preference-Applied"] == "wait=0"
        assert took < 1.0


def test_an_inline_job_is_answered_200_at_once(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path, SPACEWALK_RUN_INLINE=True) as app:
        response, took = post(app.test_client(), "wait=5", seconds=0)
        assert response.status_code == 200
        assert response.json["data"] == {"answer": 42}
        assert response.headers["Preference-Applied"] == "wait=5"
        # without the preference: the usual 201
        response, _ = post(app.test_client(), None, seconds=0)
        assert response.status_code == 201 and "Preference-Applied" not in response.headers


@pytest.mark.parametrize("prefer", [
    "wait=-1", "wait=1.5", "wait=abc", "wait", "wait=", 'wait="x"', "wait=\u0661",
    "wait=+1", "wait=1e3", "=5", "wait=5 5",
])  # fmt: skip
def test_a_malformed_wait_is_ignored(prefer: str, tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path) as app:
        response, took = post(app.test_client(), prefer)
        assert response.status_code == 201, prefer
        assert list(response.json) == ["uuid"]
        assert "Preference-Applied" not in response.headers
        assert took < 1.0


@pytest.mark.parametrize(("headers", "wait"), [
    ([("Prefer", "wait=2")], 2),
    ([("Prefer", "WAIT=2")], 2),
    ([("Prefer", "wait = 2")], 2),
    ([("Prefer", 'wait="2"')], 2),
    ([("Prefer", "respond-async, wait=2")], 2),
    ([("Prefer", "handling=lenient; x=y, wait=2; foo=bar")], 2),
    ([("Prefer", "respond-async"), ("Prefer", "wait=3")], 3),
    ([("Prefer", 'foo="a, wait=9", wait=2')], 2),
    ([("Prefer", "wait=1, wait=3")], 1),  # the first counts (RFC 7240 section 2)
    ([("Prefer", "wait=abc, wait=3")], None),
    ([("Prefer", "wait=5 5, wait=3")], None),
    ([("Prefer", "waiting=5, wait=3")], 3),
    ([("Prefer", "wait=0")], 0),
    ([("Prefer", "wait=45")], 30),
    ([("Prefer", "wait=" + "0" * 5000 + "7")], 7),
    ([("Prefer", "wait=" + "9" * 5000)], 30),
    ([("Prefer", "return=minimal")], None),
    ([("Prefer", "")], None),
    ([], None),
])  # fmt: skip
def test_read_wait(headers: list[tuple[str, str]], wait: int | None) -> None:
    app = Flask(__name__)
    with app.test_request_context("/", headers=headers):
        assert read_wait(30) == wait


def test_a_replay_waits_too(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path, SPACEWALK_RUN_INLINE=True) as app:
        client = app.test_client()
        headers = {"Prefer": "wait=5", "Idempotency-Key": "k1"}
        first = client.post(f"{NAP}/job", json={"seconds": 0}, headers=headers)
        again = client.post(f"{NAP}/job", json={"seconds": 0}, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.json == first.json and again.json["data"] == {"answer": 42}
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Preference-Applied"] == "wait=5"
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["Content-Type"] == "application/json"


def test_a_replay_without_a_result_in_time(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path) as app:
        client = app.test_client()
        first = client.post(f"{NAP}/job", json={}, headers={"Idempotency-Key": "k2"})
        start = time.monotonic()
        again = client.post(f"{NAP}/job", json={},
                            headers={"Idempotency-Key": "k2", "Prefer": "wait=1"})
        assert time.monotonic() - start >= 0.9
        assert again.status_code == 200 and again.json == first.json
        assert again.headers["Preference-Applied"] == "wait=1"


# -- long polls ------------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
def test_a_long_poll_answers_at_the_next_change(store: str, tmp_path: Path) -> None:
    with live_app(store, tmp_path) as app:
        client = app.test_client()
        uuid = post(client, None)[0].json["uuid"]
        etag = client.get(f"/wait/progress/{uuid}").headers["ETag"]
        written: list[float] = []
        writer = threading.Timer(0.3, lambda: written.append(rewrite(app, uuid, completeness=0.5)))
        writer.start()
        response = client.get(f"/wait/progress/{uuid}",
                              headers={"If-None-Match": etag, "Prefer": "wait=5"})
        answered = time.monotonic()
        writer.join()
        assert response.status_code == 200
        assert response.json == {"completeness": 0.5, "result": -1}
        assert response.headers["ETag"] != etag
        assert response.headers["Preference-Applied"] == "wait=5"
        late = answered - written[0]
        print(f"{store}: the long poll answered {late * 1000:.1f} ms after the write")
        assert late < 1.0


@pytest.mark.parametrize("store", STORES)
def test_a_long_poll_of_info_with_a_job_that_runs(store: str, tmp_path: Path) -> None:
    with live_app(store, tmp_path) as app, worker(app):
        client = app.test_client()
        uuid = post(client, None, seconds=0.6, steps=2)[0].json["uuid"]
        seen, etag, states = set(), '"0"', []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = client.get(f"/wait/info/{uuid}",
                                  headers={"If-None-Match": etag, "Prefer": "wait=5"})
            assert response.status_code in (200, 304)
            etag = response.headers["ETag"]
            if response.status_code == 200:
                states.append(response.json["completeness"])
                seen.add(etag)
                if response.json["result"] != -1:
                    break
        assert states[-1] == 1.0 and 0.5 in states


def test_a_long_poll_that_sees_no_change_is_304(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path) as app:
        client = app.test_client()
        uuid = post(client, None)[0].json["uuid"]
        etag = client.get(f"/wait/info/{uuid}").headers["ETag"]
        start = time.monotonic()
        response = client.get(f"/wait/info/{uuid}",
                              headers={"If-None-Match": etag, "Prefer": "wait=1"})
        assert 0.9 <= time.monotonic() - start < 3.0
        assert response.status_code == 304 and response.get_data() == b""
        assert response.headers["ETag"] == etag
        assert response.headers["Preference-Applied"] == "wait=1"


def test_a_long_poll_without_a_matching_etag_answers_at_once(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path) as app:
        client = app.test_client()
        uuid = post(client, None)[0].json["uuid"]
        for headers in ({"Prefer": "wait=5"}, {"Prefer": "wait=5", "If-None-Match": '"1"'}):
            start = time.monotonic()
            response = client.get(f"/wait/progress/{uuid}", headers=headers)
            assert time.monotonic() - start < 1.0
            assert response.status_code == 200
            assert "Preference-Applied" not in response.headers
        # a malformed wait with a matching ETag: the usual 304, at once
        etag = response.headers["ETag"]
        start = time.monotonic()
        response = client.get(f"/wait/progress/{uuid}",
                              headers={"Prefer": "wait=x", "If-None-Match": etag})
        assert time.monotonic() - start < 1.0 and response.status_code == 304
        assert "Preference-Applied" not in response.headers


def test_a_job_deleted_during_a_long_poll_is_404(tmp_path: Path) -> None:
    with live_app("sqlite", tmp_path) as app:
        client = app.test_client()
        uuid = post(client, None)[0].json["uuid"]
        etag = client.get(f"/wait/progress/{uuid}").headers["ETag"]
        datastore, _ = state(app).connections()
        threading.Timer(0.2, lambda: datastore.delete(make_key(uuid))).start()
        response = client.get(f"/wait/progress/{uuid}",
                              headers={"If-None-Match": etag, "Prefer": "wait=5"})
        assert response.status_code == 404 and response.json["code"] == 404


def test_cors_lets_a_page_send_prefer_and_read_preference_applied(tmp_path: Path) -> None:
    origin = {"Origin": "https://a.example"}
    with live_app("sqlite", tmp_path, SPACEWALK_CORS_ORIGINS=["https://a.example"],
                  SPACEWALK_RUN_INLINE=True) as app:
        client = app.test_client()
        preflight = client.options(f"{NAP}/job", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, prefer",
        })  # fmt: skip
        assert "prefer" in preflight.headers["Access-Control-Allow-Headers"].lower()
        response = client.post(f"{NAP}/job", json={"seconds": 0},
                               headers={**origin, "Prefer": "wait=2"})
        exposed = response.headers["Access-Control-Expose-Headers"].split(", ")
        assert "Preference-Applied" in exposed


# -- the notifications -----------------------------------------------------------------


@contextlib.contextmanager
def store_with_job(store: str, tmp_path: Path) -> Iterator[tuple[Any, str, int]]:
    if store not in DATASTORES:
        requires_ci_or_skip(f"the {store} datastore is not available")
    with DATASTORES[store](tmp_path) as url:
        datastore = make_datastore(url, instance_path=str(tmp_path))
        uuid = "00000000-0000-4000-8000-" + os.urandom(6).hex()
        _, cas = datastore.set_with_cas(make_key(uuid), {"n": 0})
        try:
            yield datastore, uuid, cas
        finally:
            datastore.close()


def waiting(datastore: Any, count: int) -> None:
    deadline = time.monotonic() + 10
    while datastore._listener.waiting() < count or datastore._listener._receiver is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("store", STORES)
def test_many_waiters_share_one_listener(store: str, tmp_path: Path) -> None:
    with store_with_job(store, tmp_path) as (datastore, uuid, cas):
        watch = JobWatch(datastore)
        assert watch.notifier is datastore
        answers: list[tuple[Any, int]] = []
        # redis-py's pool holds at most 100 connections (its default), and
        # the woken waiters all read at once
        count = 90 if store == "redis" else 200
        threads = [threading.Thread(target=lambda: answers.append(watch.wait(uuid, cas, 10)))
                   for _ in range(count)]
        before = {t.name for t in threading.enumerate()}
        for thread in threads:
            thread.start()
        waiting(datastore, count)
        listeners = [t for t in threading.enumerate()
                     if t.name.startswith("spacewalk writes") and t.name not in before]
        assert len(listeners) <= 1  # one per process and datastore (maybe started before)
        written = time.monotonic()
        datastore.set(make_key(uuid), {"n": 1})
        for thread in threads:
            thread.join(10)
        took = time.monotonic() - written
        assert len(answers) == count and all(doc == {"n": 1} for doc, _ in answers)
        print(f"{store}: {count} waiters woken in {took * 1000:.0f} ms")
        assert took < RECHECK_INTERVAL * 3
        assert datastore._listener.waiting() == 0


def break_listener(store: str, datastore: Any) -> None:
    """Cut the listener's connection as a failing network or server would."""
    receiver = datastore._listener._receiver
    if store == "sqlite":
        # the socket's file gone: writers cannot reach it, nothing says so
        os.unlink(receiver._waker.listen().getsockname())
    elif store == "postgresql":
        import psycopg

        pid = receiver._conn.info.backend_pid
        with psycopg.connect(datastore._connections.settings.conninfo, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
    else:
        host, port = receiver._pubsub.connection._sock.getsockname()[:2]
        receiver._client.__class__(
            host=datastore._server.settings.host, port=datastore._server.settings.port
        ).client_kill(f"{host}:{port}")


@pytest.mark.parametrize("store", STORES)
def test_a_lost_listener_costs_latency_not_a_hang(store: str, tmp_path: Path) -> None:
    with store_with_job(store, tmp_path) as (datastore, uuid, cas):
        watch = JobWatch(datastore)
        answer: list[tuple[Any, int]] = []
        thread = threading.Thread(target=lambda: answer.append(watch.wait(uuid, cas, 10)))
        thread.start()
        waiting(datastore, 1)
        receiver = datastore._listener._receiver
        break_listener(store, datastore)
        time.sleep(0.1)
        written = time.monotonic()
        datastore.set(make_key(uuid), {"n": 1})
        thread.join(10)
        took = time.monotonic() - written
        assert answer and answer[0][0] == {"n": 1}
        print(f"{store}: woken {took * 1000:.0f} ms after a write with the listener cut")
        assert took < RECHECK_INTERVAL * 3
        # the listener connects again (a new socket), and hears again
        waiting(datastore, 0)
        deadline = time.monotonic() + 10
        while datastore._listener._receiver is receiver:
            assert time.monotonic() < deadline, "the listener did not connect again"
            time.sleep(0.05)
        _, cas = datastore.read_with_cas(make_key(uuid))
        threading.Timer(0.2, lambda: datastore.set(make_key(uuid), {"n": 2})).start()
        start = time.monotonic()
        assert watch.wait(uuid, cas, 10)[0] == {"n": 2}
        assert time.monotonic() - start < 0.2 + RECHECK_INTERVAL / 2


def test_a_datastore_that_does_not_tell_is_polled(tmp_path: Path) -> None:
    class Plain:
        """A user's datastore: ZeroG's methods only."""

        def __init__(self) -> None:
            self.inner = make_datastore(f"sqlite:///{tmp_path / 'plain.db'}")

        def __getattr__(self, name: str) -> Any:
            if name in ("job_writes", "inner"):
                raise AttributeError(name)
            return getattr(self.inner, name)

    plain = Plain()
    watch = JobWatch(as_datastore(plain))  # type: ignore[arg-type]
    assert watch.notifier is None
    uuid = "00000000-0000-4000-8000-000000000001"
    _, cas = plain.inner.set_with_cas(make_key(uuid), {"n": 0})
    threading.Timer(0.2, lambda: plain.inner.set(make_key(uuid), {"n": 1})).start()
    start = time.monotonic()
    document, new_cas = watch.wait(uuid, cas, 5)
    assert document == {"n": 1} and new_cas != cas and time.monotonic() - start < 1.0
    assert watch.wait("00000000-0000-4000-8000-000000000002", 0, 1) == (None, 0)
    plain.inner.close()


def test_a_gone_job_ends_the_wait(tmp_path: Path) -> None:
    with store_with_job("sqlite", tmp_path) as (datastore, uuid, cas):
        threading.Timer(0.2, lambda: datastore.delete(make_key(uuid))).start()
        start = time.monotonic()
        assert JobWatch(datastore).wait(uuid, cas, 5) == (None, 0)
        assert time.monotonic() - start < 3.0


# -- serving ------------------------------------------------------------------------


def test_serve_runs_threaded_web_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gunicorn.app.base

    from flask_spacewalk import serve

    seen: dict[str, Any] = {}

    def run(self: Any) -> None:  # gunicorn's Application.run, not serving
        seen.update(worker_class=self.cfg.worker_class_str, threads=self.cfg.threads)

    class Serve:
        def __init__(self, run_web: Any, run_jobs: Any) -> None:
            self.run_web = run_web

        def run(self) -> int:
            self.run_web()
            return 0

    monkeypatch.setattr(gunicorn.app.base.BaseApplication, "run", run)
    monkeypatch.setattr(serve, "Serve", Serve)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    with live_app("sqlite", tmp_path) as app:
        runner = app.test_cli_runner()
        result = runner.invoke(args=["spacewalk", "serve"])
        assert result.exit_code == 0, result.output
        assert seen == {"worker_class": "gthread", "threads": 8}
        result = runner.invoke(args=["spacewalk", "serve", "--threads", "3"])
        assert seen == {"worker_class": "gthread", "threads": 3}
        result = runner.invoke(args=["spacewalk", "serve", "--threads", "1"])
        assert seen == {"worker_class": "sync", "threads": 1}
        result = runner.invoke(args=["spacewalk", "serve", "--threads", "0"])
        assert result.exit_code == 2 and "--threads" in result.output


def _wait_in_child(datastore: Any, uuid: str, cas: int) -> float:
    """In a forked child: wait for a write the child makes; seconds taken."""
    written: list[float] = []
    timer = threading.Timer(0.2, lambda: written.append(
        datastore.set(make_key(uuid), {"n": 2}) and time.monotonic()))
    timer.start()
    document, _ = JobWatch(datastore).wait(uuid, cas, 10)
    answered = time.monotonic()
    timer.join()
    assert document == {"n": 2}, document
    return answered - written[0]


def in_child(func: Any, *args: Any, timeout: float) -> Any:
    """``func(*args)`` in a forked child; its result, or its error raised."""
    import multiprocessing
    import traceback

    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe(duplex=False)

    def call() -> None:
        try:
            there.send(("ok", func(*args)))
        except BaseException:
            there.send(("error", traceback.format_exc()))

    child = ctx.Process(target=call, daemon=True)
    child.start()
    try:
        assert here.poll(timeout), "the child gave no answer"
        status, value = here.recv()
    finally:
        child.join(10)
    assert status == "ok", value
    return value


@pytest.mark.parametrize("store", STORES)
def test_a_forked_child_listens_on_its_own(store: str, tmp_path: Path) -> None:
    with store_with_job(store, tmp_path) as (datastore, uuid, cas):
        # the parent's listener runs, with its connection, before the fork
        threading.Timer(0.2, lambda: datastore.set(make_key(uuid), {"n": 1})).start()
        document, cas = JobWatch(datastore).wait(uuid, cas, 10)
        assert document == {"n": 1}
        took = in_child(_wait_in_child, datastore, uuid, cas, timeout=30)
        assert took < RECHECK_INTERVAL / 2  # heard, not re-read
        # and the parent's listener still hears
        _, cas = datastore.read_with_cas(make_key(uuid))
        threading.Timer(0.2, lambda: datastore.set(make_key(uuid), {"n": 3})).start()
        start = time.monotonic()
        assert JobWatch(datastore).wait(uuid, cas, 5)[0] == {"n": 3}
        assert time.monotonic() - start < 0.2 + RECHECK_INTERVAL / 2


# -- the listener itself -----------------------------------------------------------------


class FakeReceiver:
    """Hands out the uuids put on ``inbox``; raises when told to break."""

    def __init__(self, inbox: list[str], broken: threading.Event) -> None:
        self.inbox, self.broken, self.closed = inbox, broken, False

    def receive(self, timeout: float) -> Iterator[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.broken.is_set():
                self.broken.clear()
                raise ConnectionError("cut")
            while self.inbox:
                yield self.inbox.pop(0)
            time.sleep(0.01)

    def close(self) -> None:
        self.closed = True


def test_the_listener_reconnects_and_wakes_every_waiter() -> None:
    from flask_spacewalk.backends.write_listener import WriteListener

    inbox: list[str] = []
    broken = threading.Event()
    attempts: list[FakeReceiver] = []

    def connect() -> FakeReceiver:
        if len(attempts) < 2 or len(attempts) == 3:  # fails twice, then once more
            attempts.append(FakeReceiver(inbox, broken))
            raise ConnectionError("refused")
        attempts.append(FakeReceiver(inbox, broken))
        return attempts[-1]

    listener = WriteListener("fake", connect)
    try:
        with listener.job_writes("a") as a:
            # connecting failed twice before it listened: connecting wakes all
            assert a.wait(5)
            a.clear()
            b_writes = listener.job_writes("b")
            b = b_writes.__enter__()
            inbox.append("a")
            assert a.wait(5) and not b.is_set()
            a.clear()
            broken.set()  # the connection breaks; one refused attempt later it is back
            assert a.wait(5) and b.wait(5)
            assert attempts[2].closed
            assert listener.waiting() == 2
            b_writes.__exit__(None, None, None)
            assert listener.waiting() == 1
        assert listener.waiting() == 0
    finally:
        listener.close()
    assert listener._thread is None
    assert not any(t.name == "spacewalk writes fake" for t in threading.enumerate())


def test_a_listener_that_cannot_connect_costs_latency_not_a_hang(tmp_path: Path) -> None:
    with store_with_job("sqlite", tmp_path) as (datastore, uuid, cas):
        def refuse() -> Any:
            raise OSError("no socket for you")

        datastore._listener._connect = refuse
        threading.Timer(0.2, lambda: datastore.set(make_key(uuid), {"n": 1})).start()
        start = time.monotonic()
        document, _ = JobWatch(datastore).wait(uuid, cas, 10)
        took = time.monotonic() - start
        assert document == {"n": 1}
        # a READY_WAIT for the listener, then re-reads a RECHECK_INTERVAL apart
        assert took < 0.2 + 1.0 + RECHECK_INTERVAL * 2
