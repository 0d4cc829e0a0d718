"""``<prefix>/healthz`` and ``<prefix>/readyz`` (SPEC section 8), with the
test's own Redis and beanstalkd stopped and started again; the switch that
turns them and ``metrics`` off, and the decorators they take."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from backend_beanstalkd import running_beanstalkd
from conftest import requires_ci_or_skip
from flask import Flask, abort, request
from test_metrics import new_app
from test_outages import Server, free_port

from flask_spacewalk.runtime.readiness import Readiness

PROBES = ("/metrics", "/healthz", "/readyz")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"


@pytest.fixture
def apps() -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def make(*args: Any, **config: Any) -> Flask:
        made.append(new_app(*args, **config))
        return made[-1]

    yield make
    for app in made:
        for state in app.extensions["spacewalk"].values():
            state.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    if shutil.which("redis-server") is None:
        requires_ci_or_skip("redis-server is not installed")
    port = free_port()
    server = Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--dir", str(tmp_path), "--save", ""], port)  # fmt: skip
    server.start()
    yield server
    server.stop()


def test_healthz_touches_no_backend(tmp_path: Path, apps: Callable[..., Flask]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = apps(tmp_path, dead, dead).test_client()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/readyz").status_code == 503


def test_readyz_names_what_is_down_until_it_is_back(
    tmp_path: Path, apps: Callable[..., Flask], redis_server: Server
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0?prefix=ready:&socket_timeout=0.5"
    client = apps(tmp_path, url, url).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "checked": ["datastore", "queue"]}
    redis_server.stop()
    down = client.get("/readyz")
    assert down.status_code == 503
    body = down.get_json()
    assert body["code"] == 503 and body["status"] == "Service Unavailable"
    assert body["message"].startswith("not ready: datastore: Redis server 127.0.0.1")
    assert "; queue: Redis server" in body["message"]
    redis_server.start()
    assert client.get("/readyz").status_code == 200


def test_readyz_names_the_queue_alone(tmp_path: Path, apps: Callable[..., Flask]) -> None:
    with running_beanstalkd() as beanstalkd:
        client = apps(tmp_path, sqlite_url(tmp_path), beanstalkd.url).test_client()
        assert client.get("/readyz").status_code == 200
        beanstalkd.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        message = down.get_json()["message"]
        assert message.startswith("not ready: queue: beanstalkd at 127.0.0.1")
        assert "datastore" not in message
        beanstalkd.start()  # on the same port
        assert client.get("/readyz").status_code == 200


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung backend."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_hung_backend_does_not_hang_the_probe(
    tmp_path: Path, apps: Callable[..., Flask], silent_server: int
) -> None:
    # Redis waits 5 s for a reply here; the probe gives it 1 s
    hung = f"redis://127.0.0.1:{silent_server}/0?socket_timeout=5"
    client = apps(tmp_path, hung, sqlite_url(tmp_path)).test_client()
    started = time.monotonic()
    first = client.get("/readyz")
    assert time.monotonic() - started < 3  # 1 s, and room for a loaded machine
    assert first.status_code == 503
    assert first.get_json()["message"] == "not ready: datastore: no answer within 1.0 s"
    # the hung check is not started again while it waits
    started = time.monotonic()
    second = client.get("/readyz")
    assert time.monotonic() - started < 1
    assert second.get_json()["message"] == (
        "not ready: datastore: an earlier check has not answered after 1.0 s"
    )


def test_checks_run_side_by_side() -> None:
    def slow() -> None:
        time.sleep(0.3)

    def failing() -> None:
        raise OSError("refused")

    readiness = Readiness(timeout=1.0)
    started = time.monotonic()
    assert readiness.failures({"a": slow, "b": slow, "c": failing}) == {"c": "refused"}
    assert time.monotonic() - started < 0.55  # not 0.6: together


def test_the_switch_turns_all_three_off(tmp_path: Path, apps: Callable[..., Flask]) -> None:
    client = apps(tmp_path, sqlite_url(tmp_path), sqlite_url(tmp_path),
                  SPACEWALK_EXPOSE_METRICS=False).test_client()  # fmt: skip
    for path in PROBES:
        assert client.get(path).status_code == 404, path
    assert client.get("/ops/leaves").status_code == 200


def test_they_are_mounted_at_the_prefix(tmp_path: Path, apps: Callable[..., Flask]) -> None:
    client = apps(tmp_path, sqlite_url(tmp_path), sqlite_url(tmp_path),
                  SPACEWALK_URL_PREFIX="/api/v1").test_client()  # fmt: skip
    for path in PROBES:
        assert client.get("/api/v1" + path).status_code == 200, path
        assert client.get(path).status_code == 404, path
    answer = client.post("/api/v1/healthz")
    assert answer.status_code == 405
    assert client.options("/api/v1/healthz").headers["Allow"] == "GET, HEAD, OPTIONS"


def test_they_take_the_decorators_of_the_tree(tmp_path: Path) -> None:
    from metrics_jobs.jobs import OpsRoot

    from flask_spacewalk import Spacewalk

    def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if request.headers.get("Authorization") != "Bearer s3cret":
                abort(401, "a valid bearer token is required")
            return view(*args, **kwargs)

        return guarded

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SPACEWALK_DATASTORE_URL"] = sqlite_url(tmp_path)
    Spacewalk(app, Path(__file__).parent / "metrics_jobs", OpsRoot, decorators=[require_token])
    client = app.test_client()
    for path in PROBES:
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.get_json()["message"] == "a valid bearer token is required"
        assert client.options(path).status_code == 401, path
        allowed = client.get(path, headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200, path
    app.extensions["spacewalk"]["/ops"].close()
