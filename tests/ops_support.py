"""The app, jobs and helpers tests/test_retry.py and tests/test_bulk.py share:
the tree of tests/retry_jobs served on each datastore and queue pairing."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend_support import DATASTORES, QUEUES, _close
from conftest import requires_ci_or_skip
from flask import Flask
from flask.testing import FlaskClient
from retry_jobs.jobs import OpsRoot

from flask_spacewalk import Spacewalk
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.worker_loop import Worker

TESTS = Path(__file__).resolve().parent
RETRY_JOBS = TESTS / "retry_jobs"
DIVIDE = "/ops/divide"
#: (datastore, queue) of each deployment pairing: every datastore and queue.
PAIRINGS = {"sqlite": ("sqlite", "sqlite"), "postgresql+beanstalkd": ("postgresql", "beanstalkd"),
            "redis": ("redis", "redis")}


@contextlib.contextmanager
def ops_app(pairing: str, tmp_path: Path, **config: Any) -> Iterator[Flask]:
    """The ops tree on a fresh store of ``pairing``; POSTed jobs are queued
    unless ``config`` says otherwise."""
    store, queue = PAIRINGS[pairing]
    if store not in DATASTORES or queue not in QUEUES:
        requires_ci_or_skip(f"the {pairing} backends are not available")
    with DATASTORES[store](tmp_path) as store_url, QUEUES[queue](tmp_path) as queue_url:
        app = Flask(__name__, instance_path=str(tmp_path))
        app.config.update({"SPACEWALK_DATASTORE_URL": store_url,
                           "SPACEWALK_QUEUE_URL": queue_url, "SPACEWALK_SERVICE_NAME": "test",
                           "SPACEWALK_RUN_INLINE": False, **config})
        Spacewalk(app, RETRY_JOBS, OpsRoot)
        try:
            yield app
        finally:
            state(app).close()


def state(app: Flask) -> Any:
    return app.extensions["spacewalk"]["/ops"]


def post(client: FlaskClient, body: dict[str, Any], path: str = DIVIDE, query: str = "") -> str:
    response = client.post(f"{path}/job{query}", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.json["uuid"])  # type: ignore[index]


def work(app: Flask) -> None:
    """Run every ready job, as a worker does."""
    s = state(app)
    made: list[Any] = []

    def keep(backend: Any) -> Any:
        made.append(backend)
        return backend

    Worker(s.registry, lambda: keep(s.make_datastore()), lambda name: keep(s.make_queue(name)),
           s.settings.queue_name, ttr=5).run(burst=True)
    for backend in made:
        _close(backend)


def doc(app: Flask, uuid: str) -> dict[str, Any]:
    datastore, _ = state(app).connections()
    return datastore.read(make_key(uuid))  # type: ignore[no-any-return]


def failed_job(app: Flask, client: FlaskClient, **body: Any) -> str:
    uuid = post(client, {"divisor": 0, **body})
    work(app)
    assert doc(app, uuid)["resultCode"] == 500
    return uuid


def entries(app: Flask) -> list[tuple[int, str]]:
    """``(id, body)`` of every ready entry of the app's queue, which stay."""
    queue = state(app).make_queue()
    taken = []
    try:
        while (entry := queue.reserve(timeout=0)) is not None:
            taken.append(entry)
        for entry in taken:
            entry.release()
        return [(entry.id, entry.body) for entry in taken]
    finally:
        _close(queue)


def error(response: Any, code: int) -> dict[str, Any]:
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.json
    assert body["code"] == code and set(body) <= {"code", "status", "message", "errors"}
    return body  # type: ignore[no-any-return]
