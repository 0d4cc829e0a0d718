"""Outages: the API answers 503 naming what is down, workers back off, and
both recover by themselves with no job lost (issue 4, SPEC section 3).

Each test starts its own server (redis-server, beanstalkd), stops it in the
middle, and starts it again on the same port with its data.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_ci_or_skip
from flask import Flask
from flask.testing import FlaskClient

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk import Spacewalk

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_JOBS = ROOT / "examples" / "jobs"
TTR = 2

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            if up:
                return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    pytest.fail(f"port {port} did not come {'up' if up else 'down'}")


class Server:
    """A server process of the test's own, stopped and started at will."""

    def __init__(self, args: list[str], port: int):
        self.args, self.port = args, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        wait_port(self.port, up=False)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    if shutil.which("redis-server") is None:
        requires_ci_or_skip("redis-server is not installed")
    port = free_port()
    # An append-only file synced on every write: the restarted server has
    # every job the first one acknowledged.
    server = Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--dir", str(tmp_path), "--appendonly", "yes",
                     "--appendfsync", "always", "--save", ""], port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def beanstalkd(tmp_path: Path) -> Iterator[Server]:
    if shutil.which("beanstalkd") is None:
        requires_ci_or_skip("beanstalkd is not installed")
    port = free_port()
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    server = Server(["beanstalkd", "-l", "127.0.0.1", "-p", str(port), "-b", str(binlog)], port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_client() -> Iterator[Any]:
    apps: list[Flask] = []

    def make(tmp_path: Path, datastore_url: str, queue_url: str | None) -> FlaskClient:
        app = new_app(tmp_path, datastore_url, queue_url)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        for state in app.extensions["spacewalk"].values():
            state.close()


def new_app(tmp_path: Path, datastore_url: str, queue_url: str | None) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SPACEWALK_DATASTORE_URL=datastore_url,
        SPACEWALK_QUEUE_URL=queue_url,
        SPACEWALK_RUN_INLINE=False,
        SPACEWALK_JOB_TTR=TTR,
    )
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    return app


class WorkerProcess(subprocess.Popen[str]):
    """``python -m flask_spacewalk.worker`` writing its log to a file, so
    that a test can wait for a line while it runs."""

    def __init__(self, datastore_url: str, queue_url: str) -> None:
        with tempfile.NamedTemporaryFile("wb", prefix="worker-", suffix=".log",
                                         delete=False) as file:
            self.log_path = Path(file.name)
            super().__init__(
                [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(EXAMPLE_JOBS),
                 "--datastore", datastore_url, "--queue", queue_url, "--ttr", str(TTR),
                 "--grace", "2"],
                cwd=ROOT, stdout=file, stderr=subprocess.STDOUT, text=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until the log shows ``text``: the worker has met the outage (a
        fixed sleep would race its start-up on a loaded machine)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.poll() is None, "the worker must wait, not crash:\n" + self.log()
            if time.monotonic() > deadline:
                pytest.fail(f"the worker did not log {text!r} in {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        assert self.poll() is None, "the worker must wait, not crash"


def start_worker(datastore_url: str, queue_url: str) -> WorkerProcess:
    return WorkerProcess(datastore_url, queue_url)


def stop_worker(proc: WorkerProcess) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log = proc.log()
    proc.log_path.unlink(missing_ok=True)
    return log


def post(client: FlaskClient, leaf: str, body: dict[str, Any]) -> Any:
    return client.post(f"/examples/{leaf}/job", json=body)


def wait_result(client: FlaskClient, uuid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/examples/progress/{uuid}")
        if answer.status_code == 200 and answer.get_json()["result"] != -1:
            return answer.get_json()
        time.sleep(0.05)
    pytest.fail(f"job {uuid} did not finish")


def test_a_redis_outage(tmp_path: Path, redis_server: Server, make_client: Any) -> None:
    url = (f"redis://127.0.0.1:{redis_server.port}/0?prefix=outage:"
           "&socket_timeout=0.5&socket_connect_timeout=0.5")
    client = make_client(tmp_path, url, url)
    worker = start_worker(url, url)
    try:
        before = post(client, "fizz_buzz", {"n": 3}).get_json()["uuid"]
        assert wait_result(client, before)["result"] == 200
        # A job that is running when the server goes away.
        running = post(client, "waste_time", {"delay": 2}).get_json()["uuid"]
        time.sleep(0.5)

        redis_server.stop()
        refused = post(client, "fizz_buzz", {"n": 3})
        assert refused.status_code == 503
        assert refused.get_json()["message"].startswith("datastore unavailable")
        assert client.get(f"/examples/progress/{before}").status_code == 503
        worker.wait_for("retrying in")

        redis_server.start()
        after = post(client, "fizz_buzz", {"n": 5})
        assert after.status_code == 201
        for uuid in (before, running, after.get_json()["uuid"]):
            assert wait_result(client, uuid)["result"] == 200
    finally:
        log = stop_worker(worker)
    assert worker.returncode == 0, log
    assert "unavailable" in log and "retrying in" in log
    # Backing off, not spinning: a handful of retries in a 2 s outage.
    assert log.count("retrying in") < 40, log


def test_a_beanstalkd_outage(tmp_path: Path, beanstalkd: Server, make_client: Any) -> None:
    import json
    import sqlite3

    database = tmp_path / "jobs.sqlite3"
    datastore_url = f"sqlite:///{database}"
    queue_url = f"beanstalkd://127.0.0.1:{beanstalkd.port}"
    client = make_client(tmp_path, datastore_url, queue_url)
    # Queued before the outage, run after it: beanstalkd's binlog keeps it.
    waiting = post(client, "fizz_buzz", {"n": 4}).get_json()["uuid"]

    beanstalkd.stop()
    refused = post(client, "fizz_buzz", {"n": 3})
    assert refused.status_code == 503
    assert refused.get_json()["message"].startswith("queue unavailable")
    # The refused job was stored, then marked as never queued.
    with sqlite3.connect(database) as db:
        documents = [json.loads(v) for (v,) in db.execute("SELECT value FROM documents")]
    assert sorted(d["queueJobId"] for d in documents)[0] == -1
    assert client.get(f"/examples/progress/{waiting}").get_json()["result"] == -1

    worker = start_worker(datastore_url, queue_url)
    try:
        worker.wait_for("retrying in")
        beanstalkd.start()
        after = post(client, "fizz_buzz", {"n": 5})
        assert after.status_code == 201
        for uuid in (waiting, after.get_json()["uuid"]):
            assert wait_result(client, uuid)["result"] == 200
    finally:
        log = stop_worker(worker)
    assert worker.returncode == 0, log
    assert "unavailable" in log and "retrying in" in log
    assert log.count("retrying in") < 40, log


def test_the_sqlite_file_deleted_under_the_app_and_a_worker(
    tmp_path: Path, make_client: Any
) -> None:
    from flask_spacewalk import make_datastore

    database = tmp_path / "jobs.sqlite3"
    url = f"sqlite:///{database}"
    client = make_client(tmp_path, url, url)
    worker = start_worker(url, url)
    try:
        before = post(client, "fizz_buzz", {"n": 3}).get_json()["uuid"]
        assert wait_result(client, before)["result"] == 200

        # Moved away and back: the same store, nothing lost.
        os.rename(database, tmp_path / "aside.sqlite3")
        refused = post(client, "fizz_buzz", {"n": 3})
        assert refused.status_code == 503
        assert "deleted" in refused.get_json()["message"]
        assert client.get(f"/examples/progress/{before}").status_code == 503
        time.sleep(1.5)
        assert worker.poll() is None, "the worker must wait, not crash"
        assert not database.exists(), "no running process makes an empty store"
        os.rename(tmp_path / "aside.sqlite3", database)
        accepted = [post(client, "fizz_buzz", {"n": n}) for n in range(5)]
        assert [a.status_code for a in accepted] == [201] * 5
        for uuid in [before] + [a.get_json()["uuid"] for a in accepted]:
            assert wait_result(client, uuid)["result"] == 200

        # Deleted for good: a process started anew makes a new, empty store,
        # which the app and the worker take up.
        database.unlink()
        assert post(client, "fizz_buzz", {"n": 3}).status_code == 503
        time.sleep(1.5)
        assert worker.poll() is None, "the worker must wait, not crash"
        fresh = make_datastore(url)
        fresh.set("first", "write")
        fresh.close()
        accepted = [post(client, "fizz_buzz", {"n": n}) for n in range(5)]
        assert [a.status_code for a in accepted] == [201] * 5
        for answer in accepted:
            assert wait_result(client, answer.get_json()["uuid"])["result"] == 200
        assert client.get(f"/examples/progress/{before}").status_code == 404
    finally:
        log = stop_worker(worker)
    assert worker.returncode == 0, log
    assert "deleted" in log and "retrying in" in log and "reconnected" in log
    assert log.count("retrying in") < 40, log


def test_a_redis_refusal_is_a_503_naming_it(
    tmp_path: Path, redis_server: Server, make_client: Any
) -> None:
    # a bad DB index: no connection failure, a refusal of every command
    url = f"redis://127.0.0.1:{redis_server.port}/99?prefix=refused:"
    client = make_client(tmp_path, url, url)
    refused = post(client, "fizz_buzz", {"n": 3})
    assert refused.status_code == 503
    body = refused.get_json()
    assert body["code"] == 503 and body["status"] == "Service Unavailable"
    assert body["message"].startswith("datastore unavailable")
    assert "DB index is out of range" in body["message"]
    assert "Traceback" not in refused.get_data(as_text=True)


def test_a_worker_under_a_refusing_redis_waits_and_resumes(
    tmp_path: Path, redis_server: Server, make_client: Any
) -> None:
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/0?prefix=oom:"
    client = make_client(tmp_path, url, url)
    queued = [post(client, "fizz_buzz", {"n": n}).get_json()["uuid"] for n in (3, 4, 5)]
    raw = redis.Redis(port=redis_server.port)
    try:
        raw.config_set("maxmemory", 1)  # below what is used: every growth refused
        refused = post(client, "fizz_buzz", {"n": 3})
        assert refused.status_code == 503
        assert "maxmemory" in refused.get_json()["message"]
        worker = start_worker(url, url)
        try:
            worker.wait_for("retrying in")
            # reads are still served, and nothing ran
            for uuid in queued:
                assert client.get(f"/examples/progress/{uuid}").get_json()["result"] == -1
            raw.config_set("maxmemory", 0)
            after = post(client, "fizz_buzz", {"n": 6})
            assert after.status_code == 201
            for uuid in queued + [after.get_json()["uuid"]]:
                assert wait_result(client, uuid)["result"] == 200
        finally:
            log = stop_worker(worker)
    finally:
        raw.config_set("maxmemory", 0)
        raw.close()
    assert worker.returncode == 0, log
    assert "maxmemory" in log and "retrying in" in log, log
    assert log.count("retrying in") < 40, log


def test_a_postgres_refusal_is_a_503_and_workers_wait(
    tmp_path: Path, make_client: Any
) -> None:
    from backend_postgres import admin, postgres_url

    with postgres_url(tmp_path) as base, admin() as conn:
        schema = base.rpartition("schema=")[2]
        # a table locked by a migration, say: every statement gives up
        datastore_url = f"{base}&options=-c%20lock_timeout%3D300ms"
        queue_url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
        client = make_client(tmp_path, datastore_url, queue_url)
        before = post(client, "fizz_buzz", {"n": 3}).get_json()["uuid"]
        conn.execute("BEGIN")
        conn.execute(f'LOCK TABLE "{schema}".spacewalk_documents IN ACCESS EXCLUSIVE MODE')
        refused = post(client, "fizz_buzz", {"n": 3})
        assert refused.status_code == 503
        message = refused.get_json()["message"]
        assert message.startswith("datastore unavailable")
        assert "lock timeout (SQLSTATE 55P03)" in message
        assert client.get(f"/examples/progress/{before}").status_code == 503
        worker = start_worker(datastore_url, queue_url)
        try:
            worker.wait_for("retrying in")
            conn.execute("COMMIT")
            after = post(client, "fizz_buzz", {"n": 5})
            assert after.status_code == 201
            for uuid in (before, after.get_json()["uuid"]):
                assert wait_result(client, uuid)["result"] == 200
        finally:
            log = stop_worker(worker)
            for state in client.application.extensions["spacewalk"].values():
                state.close()  # before the schema is dropped
    assert worker.returncode == 0, log
    assert "lock timeout" in log and "retrying in" in log, log
    assert log.count("retrying in") < 40, log


def test_postgresql_as_the_whole_backend_survives_its_connections_dropped_under_load(
    tmp_path: Path, make_client: Any
) -> None:
    """What a restart of the server does to every client, on the shared
    server other tests use (so not restarted): each of our connections
    terminated, again and again, while jobs are posted and run. Every job
    answered 201 runs to its result; the worker stays up and resumes."""
    import threading

    from backend_postgres import admin, postgres_url

    with postgres_url(tmp_path) as base:
        name = f"sw_outage_{base.rpartition('schema=')[2]}"
        url = f"{base}&application_name={name}"
        client = make_client(tmp_path, url, None)  # the queue: the same database
        worker = start_worker(url, url)
        stop = threading.Event()
        drops = []

        def drop_connections() -> None:
            with admin() as conn:
                while not stop.wait(0.3):
                    rows = conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = %s", (name,)).fetchall()
                    drops.append(len(rows))

        dropper = threading.Thread(target=drop_connections)
        try:
            first = post(client, "fizz_buzz", {"n": 3}).get_json()["uuid"]
            assert wait_result(client, first)["result"] == 200
            dropper.start()
            answers = []
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                answer = post(client, "fizz_buzz", {"n": 5})
                assert answer.status_code in (201, 503), answer.get_json()
                answers.append(answer)
                time.sleep(0.01)
            stop.set()
            dropper.join()
            accepted = [a.get_json()["uuid"] for a in answers if a.status_code == 201]
            assert len(accepted) >= 10 and sum(drops) >= 5, (len(accepted), drops)
            for answer in answers:
                if answer.status_code == 503:
                    assert answer.get_json()["message"].startswith(
                        ("datastore unavailable", "queue unavailable"))
            for uuid in accepted:
                assert wait_result(client, uuid)["result"] == 200
            assert worker.poll() is None, "the worker must wait, not crash"
            after = post(client, "fizz_buzz", {"n": 6})
            assert after.status_code == 201
            assert wait_result(client, after.get_json()["uuid"])["result"] == 200
        finally:
            stop.set()
            if dropper.is_alive():
                dropper.join()
            log = stop_worker(worker)
            for state in client.application.extensions["spacewalk"].values():
                state.close()  # before the schema is dropped
    assert worker.returncode == 0, log


def test_a_draining_beanstalkd_is_a_503_naming_it(
    tmp_path: Path, beanstalkd: Server, make_client: Any
) -> None:
    import json
    import sqlite3

    database = tmp_path / "jobs.sqlite3"
    datastore_url = f"sqlite:///{database}"
    queue_url = f"beanstalkd://127.0.0.1:{beanstalkd.port}"
    client = make_client(tmp_path, datastore_url, queue_url)
    waiting = post(client, "fizz_buzz", {"n": 4}).get_json()["uuid"]
    assert beanstalkd.proc is not None
    beanstalkd.proc.send_signal(signal.SIGUSR1)  # drain mode: no new entries
    for _ in range(100):  # until beanstalkd has handled the signal
        refused = post(client, "fizz_buzz", {"n": 3})
        if refused.status_code != 201:
            break
        time.sleep(0.02)
    assert refused.status_code == 503
    assert refused.get_json()["message"].startswith("queue unavailable")
    assert "DRAINING" in refused.get_json()["message"]
    with sqlite3.connect(database) as db:
        documents = {d["uuid"]: d for d in (
            json.loads(v) for (v,) in db.execute("SELECT value FROM documents"))}
    assert documents[waiting]["queueJobId"] > 0
    assert sorted(d["queueJobId"] for d in documents.values())[0] == -1
    # what was queued before still runs
    worker = start_worker(datastore_url, queue_url)
    try:
        assert wait_result(client, waiting)["result"] == 200
    finally:
        log = stop_worker(worker)
    assert worker.returncode == 0, log
