"""Cancelling jobs: the endpoint, the protocol's races, and real workers."""
from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, QUEUES, _close
from conftest import requires_ci_or_skip
from flask import Flask
from flask.testing import FlaskClient
from runtime_jobs.jobs import CancelJob, NoopJob, ReturnsJob
from test_worker_processes import children_of, start_worker, stop, wait_for

from flask_spacewalk import Spacewalk, make_datastore, make_queue
from flask_spacewalk.errors import ConfigurationError, DatastoreUnavailable, QueueUnavailable
from flask_spacewalk.runtime.cancel import (
    CancelAnswer,
    CancelWatch,
    cancel_key,
    request_cancel,
)
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle, cancel_job
from flask_spacewalk.runtime.outcome import Outcome
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.worker_loop import Worker

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.jobs.examples import BaseExampleJob  # noqa: E402

EXAMPLE_JOBS = ROOT / "examples" / "jobs"
JOBS = Path(__file__).resolve().parent / "runtime_jobs"
REGISTRY = JobRegistry([CancelJob, NoopJob, ReturnsJob])


# -- the endpoint --------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """The example tree with POSTed jobs queued (no inline runs)."""
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SPACEWALK_DATASTORE_URL=db_url, SPACEWALK_RUN_INLINE=False)
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    yield app
    for state in app.extensions["spacewalk"].values():
        state.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post_job(client: FlaskClient) -> str:
    response = client.post("/examples/fizz_buzz/job", json={"n": 3})
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.json["uuid"])  # type: ignore[index]


def stored(app: Flask, uuid: str) -> dict[str, Any]:
    datastore, _ = app.extensions["spacewalk"]["/examples"].connections()
    return datastore.read(make_key(uuid))  # type: ignore[no-any-return]


def cancel_request_of(app: Flask, uuid: str) -> Any:
    datastore, _ = app.extensions["spacewalk"]["/examples"].connections()
    return datastore.read(cancel_key(uuid))


def error_body(response: Any, code: int) -> dict[str, Any]:
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"code", "status", "message"} and body["code"] == code
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("method, path", [("POST", "cancel/{}"), ("DELETE", "job/{}")])
def test_cancelling_a_queued_job_records_410_at_once(app, client, method, path):
    uuid = post_job(client)
    response = client.open(f"/examples/{path.format(uuid)}", method=method)
    assert response.status_code == 200
    assert response.json == {"uuid": uuid, "status": "cancelled"}
    assert client.get(f"/examples/progress/{uuid}").json == {"completeness": 1.0, "result": 410}
    errors = client.get(f"/examples/info/{uuid}").json["errors"]
    assert [(e["errorCode"], e["msg"]) for e in errors] == [(410, "cancelled")]
    doc = stored(app, uuid)
    assert (doc["running"], doc["errorCount"]) == (False, 1)
    # Settled by the API: no request is left behind, nor the queue entry.
    assert cancel_request_of(app, uuid) is None
    _, queue = app.extensions["spacewalk"]["/examples"].connections()
    assert queue.reserve(timeout=0) is None


def test_cancelling_twice_or_a_finished_job_is_409(app, client):
    uuid = post_job(client)
    assert client.post(f"/examples/cancel/{uuid}").status_code == 200
    body = error_body(client.delete(f"/examples/job/{uuid}"), 409)
    assert uuid in body["message"] and "result" in body["message"]

    app.config["SPACEWALK_RUN_INLINE"] = True
    done = post_job(client)
    assert stored(app, done)["resultCode"] == 200
    error_body(client.post(f"/examples/cancel/{done}"), 409)
    assert stored(app, done)["resultCode"] == 200
    assert cancel_request_of(app, done) is None


def test_a_cancel_that_keeps_meeting_conflicts_is_503_with_retry_after(
    app, client, monkeypatch
):
    from flask_spacewalk.errors import JobUpdateConflict
    from flask_spacewalk.web import views

    def always_conflicting(job: Any, *args: Any) -> Any:
        raise JobUpdateConflict("gave up after 10 conflicting writes")

    monkeypatch.setattr(views, "cancel_job", always_conflicting)
    response = client.post(f"/examples/cancel/{post_job(client)}")
    body = error_body(response, 503)
    assert "try again" in body["message"]
    assert response.headers["Retry-After"] == "1"


def test_cancelling_a_running_job_answers_202_and_leaves_it_to_the_worker(app, client):
    uuid = post_job(client)
    datastore, _ = app.extensions["spacewalk"]["/examples"].connections()
    doc, _ = datastore.read_with_cas(make_key(uuid))
    doc["running"] = True
    datastore.set(make_key(uuid), doc)
    response = client.post(f"/examples/cancel/{uuid}")
    assert response.status_code == 202
    assert response.json == {"uuid": uuid, "status": "cancelling"}
    after = stored(app, uuid)
    assert (after["resultCode"], after["running"], after["errors"]) == (-1, True, [])
    request = cancel_request_of(app, uuid)
    assert request["uuid"] == uuid and dt.datetime.fromisoformat(request["requestedAt"])
    # Asking again while it stops is the same answer.
    assert client.delete(f"/examples/job/{uuid}").status_code == 202


@pytest.mark.parametrize(
    "uuid",
    ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "0" * 36,
     "ABCDEF00-0000-4000-8000-000000000000"],
)
def test_cancelling_an_unknown_or_malformed_uuid_is_404(client, uuid):
    error_body(client.post(f"/examples/cancel/{uuid}"), 404)
    error_body(client.delete(f"/examples/job/{uuid}"), 404)


def test_a_job_of_another_tree_is_404(app, client):
    datastore, queue = app.extensions["spacewalk"]["/examples"].connections()
    other = NoopJob(datastore, queue)
    other.save()
    error_body(client.post(f"/examples/cancel/{other.uuid}"), 404)
    assert datastore.read(cancel_key(other.uuid)) is None


def test_wrong_methods_are_405_with_allow(client):
    uuid = post_job(client)
    get = client.get(f"/examples/cancel/{uuid}")
    error_body(get, 405)
    assert get.headers["Allow"] == "OPTIONS, POST"
    put = client.put(f"/examples/job/{uuid}")
    error_body(put, 405)
    assert put.headers["Allow"] == "DELETE, OPTIONS"


@pytest.mark.parametrize("grace", [0, -1, "soon", float("nan")])
def test_cancel_grace_must_be_a_positive_number(tmp_path, db_url, grace):
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SPACEWALK_DATASTORE_URL=db_url, SPACEWALK_CANCEL_GRACE=grace)
    with pytest.raises(ConfigurationError, match="SPACEWALK_CANCEL_GRACE|bad Spacewalk"):
        Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)


def test_cancel_grace_reaches_the_settings(tmp_path, db_url):
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SPACEWALK_DATASTORE_URL=db_url)
    spacewalk = Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, cancel_grace="2.5")
    assert spacewalk.state(app).settings.cancel_grace == 2.5
    assert app.config["SPACEWALK_CANCEL_GRACE"] == 10
    with pytest.raises(ValueError, match="cancel_grace"):
        Worker(REGISTRY, lambda: None, lambda name: None, "q", cancel_grace=0)  # type: ignore


def test_the_worker_commands_take_the_cancel_grace(tmp_path, db_url, monkeypatch):
    from flask_spacewalk import cli, worker

    captured: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run_workers", lambda registry, **kw: captured.update(kw) or 0)
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SPACEWALK_DATASTORE_URL=db_url, SPACEWALK_CANCEL_GRACE=2.5)
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    result = app.test_cli_runner().invoke(args=["spacewalk", "worker"])
    assert result.exit_code == 0, result.output
    assert captured["cancel_grace"] == 2.5

    assert worker.build_parser().parse_args(["--jobs", "j"]).cancel_grace == 10.0
    monkeypatch.setenv("SPACEWALK_CANCEL_GRACE", "4")
    assert worker.build_parser().parse_args(["--jobs", "j"]).cancel_grace == 4.0


def test_worker_cli_rejects_a_bad_cancel_grace(db_url):
    proc = subprocess.run(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(JOBS),
         "--datastore", db_url, "--cancel-grace", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "--cancel-grace" in proc.stderr and "> 0" in proc.stderr


# -- the protocol, in-process --------------------------------------------------


class FastWorker(Worker):
    CANCEL_POLL_INTERVAL = 0.05
    RESERVE_TIMEOUT = 0.05
    DEFAULT_REQUEUE_DELAY = 0.0


def make_worker(datastore, queue) -> Worker:
    return FastWorker(REGISTRY, lambda: datastore, lambda name: queue, queue.queueName)


def test_the_api_sees_a_worker_write_that_won_the_race(datastore, queue):
    for running, answer, result in [
        (True, CancelAnswer.CANCELLING, -1),
        (False, CancelAnswer.FINISHED, 200),
    ]:
        job = NoopJob(datastore, queue)
        job.save()
        # A worker writes after the API loaded the job: the API's write
        # conflicts, and it answers from what it reloads.
        worker_copy = REGISTRY.get_job(job.uuid, datastore, queue)
        worker_copy.update_attrs(running=running, resultCode=result)
        assert cancel_job(job) is answer
        assert datastore.read(make_key(job.uuid))["resultCode"] == result
        requested = datastore.read(cancel_key(job.uuid)) is not None
        assert requested is (answer is CancelAnswer.CANCELLING)


def test_tidying_up_is_best_effort(datastore, queue, monkeypatch, caplog):
    job = NoopJob(datastore, queue)
    job.enqueue()

    def queue_down(id: int) -> bool:
        raise QueueUnavailable("down")

    def datastore_down(key: str) -> bool:
        raise DatastoreUnavailable("down")

    monkeypatch.setattr(queue, "delete", queue_down)
    monkeypatch.setattr(datastore, "delete", datastore_down)
    assert cancel_job(job) is CancelAnswer.CANCELLED
    assert datastore.read(make_key(job.uuid))["resultCode"] == 410
    assert "cannot delete its queue entry" in caplog.text
    assert "cannot delete its cancel request" in caplog.text
    # The entry stays; a worker drops it, its job being finished.
    monkeypatch.undo()
    make_worker(datastore, queue).run(burst=True)
    assert queue.reserve(timeout=0) is None
    assert datastore.read(cancel_key(job.uuid)) is None


def test_a_job_cancelled_while_a_worker_marks_it_running_never_runs(datastore, queue, tmp_path):
    job = CancelJob(datastore, queue, trace=str(tmp_path / "t"))
    job.save()
    worker_copy = REGISTRY.get_job(job.uuid, datastore, queue)
    # The API records 410 between the worker's load and its running write.
    assert cancel_job(REGISTRY.get_job(job.uuid, datastore, queue)) is CancelAnswer.CANCELLED
    watch = CancelWatch(datastore, job.uuid, lambda: None, grace=10)
    outcome = make_worker(datastore, queue).lifecycle.run(worker_copy, watch)
    assert outcome == Outcome(410, recorded=True)
    assert not (tmp_path / "t.start").exists()
    assert datastore.read(make_key(job.uuid))["running"] is False


def test_a_request_made_during_the_final_write_still_wins(datastore, queue, monkeypatch):
    # a queue of its own: the guard reads the request, then the result is saved
    monkeypatch.setattr(Lifecycle, "shared", property(lambda self: None))
    job = ReturnsJob(datastore, queue, value=200)
    job.enqueue()
    entry = queue.reserve(timeout=0)
    job.update_attrs(running=True)

    class LateWatch(CancelWatch):
        """Misses the request on its first read: the API asks right after."""

        reads = 0

        def check(self) -> bool:
            LateWatch.reads += 1
            if LateWatch.reads == 1:
                api_copy = REGISTRY.get_job(job.uuid, datastore, queue)
                assert cancel_job(api_copy) is CancelAnswer.CANCELLING
                return False
            return super().check()

    watch = LateWatch(datastore, job.uuid, lambda: None, grace=10)
    make_worker(datastore, queue).lifecycle.finish(job, Outcome(200), watch, entry)
    doc = datastore.read(make_key(job.uuid))
    assert (doc["resultCode"], doc["running"], LateWatch.reads) == (410, False, 2)
    assert datastore.read(cancel_key(job.uuid)) is None
    assert queue.reserve(timeout=0) is None


def test_a_request_before_the_result_s_transaction_is_read_in_it(datastore, queue):
    # The queue shares the datastore's file: the guard's first look at the
    # request is the result's transaction's read, which rolls it back; the
    # save's retry reads it and records the cancellation.
    job = ReturnsJob(datastore, queue, value=200)
    job.enqueue()
    entry = queue.reserve(timeout=0)
    job.update_attrs(running=True)

    class CountingWatch(CancelWatch):
        reads = 0

        def check(self) -> bool:
            CountingWatch.reads += 1
            return super().check()

    watch = CountingWatch(datastore, job.uuid, lambda: None, grace=10)
    assert cancel_job(REGISTRY.get_job(job.uuid, datastore, queue)) is CancelAnswer.CANCELLING
    lifecycle = make_worker(datastore, queue).lifecycle
    assert lifecycle.shared is not None
    lifecycle.finish(job, Outcome(200), watch, entry)
    doc = datastore.read(make_key(job.uuid))
    assert (doc["resultCode"], doc["running"], CountingWatch.reads) == (410, False, 1)
    assert datastore.read(cancel_key(job.uuid)) is None
    assert queue.reserve(timeout=0) is None


def test_a_request_is_read_before_a_save_of_the_result_s_guard_outside_the_transaction(
    datastore, queue, monkeypatch
):
    # An overridden record_result saves something else first: that save is
    # no transaction of the queue's, so the request is read before it.
    real = ReturnsJob.record_result

    def noting(job: ReturnsJob, resultCode: int) -> None:
        job.update_attrs(completeness=0.5)
        real(job, resultCode)

    monkeypatch.setattr(ReturnsJob, "record_result", noting)
    job = ReturnsJob(datastore, queue, value=200)
    job.enqueue()
    entry = queue.reserve(timeout=0)
    job.update_attrs(running=True)
    watch = CancelWatch(datastore, job.uuid, lambda: None, grace=10)
    assert cancel_job(REGISTRY.get_job(job.uuid, datastore, queue)) is CancelAnswer.CANCELLING
    make_worker(datastore, queue).lifecycle.finish(job, Outcome(200), watch, entry)
    doc = datastore.read(make_key(job.uuid))
    assert (doc["resultCode"], doc["running"], doc["completeness"]) == (410, False, 1.0)
    assert queue.reserve(timeout=0) is None


def test_a_pending_request_stops_the_job_before_it_runs(datastore, queue):
    fresh = ReturnsJob(datastore, queue, value=200)
    fresh.enqueue()
    # A job whose worker died mid-run: the request is honoured, not the
    # "worker died" recovery.
    dead = ReturnsJob(datastore, queue, value=200, running=True)
    dead.enqueue()
    for job in (fresh, dead):
        request_cancel(datastore, job.uuid)
    make_worker(datastore, queue).run(burst=True)
    for job in (fresh, dead):
        doc = datastore.read(make_key(job.uuid))
        assert (doc["resultCode"], doc["runs"], doc["running"]) == (410, 0, False)
        assert [e["errorCode"] for e in doc["errors"]] == [410]
        assert datastore.read(cancel_key(job.uuid)) is None
    assert queue.reserve(timeout=0) is None


@pytest.mark.parametrize("mode", ["progress", "swallow", "requeue"])
def test_an_in_process_worker_stops_a_job_at_its_next_progress_call(
    datastore, queue, tmp_path, mode
):
    trace = tmp_path / "t"
    job = CancelJob(datastore, queue, trace=str(trace), mode=mode,
                    seconds=0.5 if mode == "requeue" else 30)
    job.enqueue()
    worker = make_worker(datastore, queue)

    def cancel_once_started() -> None:
        wait_for(lambda: Path(f"{trace}.start").exists(), what="job start")
        assert cancel_job(REGISTRY.get_job(job.uuid, datastore, queue)) is CancelAnswer.CANCELLING

    thread = threading.Thread(target=cancel_once_started)
    thread.start()
    worker.run(burst=True)
    thread.join()
    doc = datastore.read(make_key(job.uuid))
    assert (doc["resultCode"], doc["running"], doc["runs"]) == (410, False, 1)
    # requeue: run() returned NO_RESULT after the request; it is not requeued.
    assert Path(f"{trace}.done").exists() is (mode == "requeue")
    assert doc["queueKwargs"] == {} and queue.reserve(timeout=0) is None


# -- real worker processes -------------------------------------------------------

PAIRINGS = {"sqlite": ("sqlite", "sqlite"), "postgresql+beanstalkd": ("postgresql", "beanstalkd"),
            "redis": ("redis", "redis")}


@pytest.fixture(params=sorted(PAIRINGS))
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(datastore URL, queue URL) of a fresh store, for each deployment pairing."""
    store, queue = PAIRINGS[request.param]
    if store not in DATASTORES or queue not in QUEUES:
        requires_ci_or_skip(f"the {request.param} backends are not available")
    with DATASTORES[store](tmp_path) as store_url, QUEUES[queue](tmp_path) as queue_url:
        yield store_url, queue_url


@pytest.fixture
def backends(urls: tuple[str, str]) -> Iterator[tuple[Any, Any]]:
    datastore, queue = make_datastore(urls[0]), make_queue(urls[1], "test_jobs")
    yield datastore, queue
    _close(datastore)
    _close(queue)


def start(urls: tuple[str, str], *args: str) -> subprocess.Popen:
    return start_worker(urls[0], "--queue", urls[1], *args)


def doc(datastore: Any, uuid: str) -> dict[str, Any]:
    return datastore.read(make_key(uuid)) or {}


def cancel(datastore: Any, queue: Any, uuid: str) -> CancelAnswer:
    """What the API does for ``POST R/cancel/<uuid>``."""
    return cancel_job(REGISTRY.get_job(uuid, datastore, queue))


def assert_cancelled(datastore: Any, uuid: str) -> dict[str, Any]:
    final = wait_for(lambda: doc(datastore, uuid).get("resultCode") == 410
                     and doc(datastore, uuid), what="result 410")
    assert final["running"] is False and final["completeness"] == 1.0
    assert [(e["errorCode"], e["msg"]) for e in final["errors"]] == [(410, "cancelled")]
    # Deleted after the result and the entry.
    wait_for(lambda: datastore.read(cancel_key(uuid)) is None, what="request deleted")
    return final  # type: ignore[no-any-return]


@pytest.mark.slow
def test_workers_never_run_a_cancelled_job_and_stop_a_running_one(urls, backends, tmp_path):
    datastore, queue = backends
    queued = CancelJob(datastore, queue, trace=str(tmp_path / "queued"), seconds=0)
    queued.enqueue()
    assert cancel(datastore, queue, queued.uuid) is CancelAnswer.CANCELLED
    running = CancelJob(datastore, queue, trace=str(tmp_path / "running"))
    running.enqueue()
    proc = start(urls, "--cancel-grace", "30")
    try:
        wait_for(lambda: Path(f"{running.trace}.start").exists(), what="job start")
        assert cancel(datastore, queue, running.uuid) is CancelAnswer.CANCELLING
        final = assert_cancelled(datastore, running.uuid)
        # The worker goes on with other jobs; neither cancelled job comes back.
        after = NoopJob(datastore, queue)
        after.enqueue()
        wait_for(lambda: doc(datastore, after.uuid).get("resultCode") == 200, what="next job")
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert not Path(f"{queued.trace}.start").exists()
    assert doc(datastore, queued.uuid)["resultCode"] == 410
    assert not Path(f"{running.trace}.done").exists()
    assert final["runs"] == 1 and doc(datastore, running.uuid)["runs"] == 1


@pytest.mark.slow
def test_jobs_without_progress_calls_are_stopped_by_force(db_url, datastore, tmp_path):
    queue = make_queue(db_url, "test_jobs")
    sleeping = CancelJob(datastore, queue, trace=str(tmp_path / "sleep"), mode="sleep")
    stuck = CancelJob(datastore, queue, trace=str(tmp_path / "stuck"), mode="stuck")
    for job in (sleeping, stuck):
        job.enqueue()
    proc = start_worker(db_url, "--cancel-grace", "1")
    try:
        child = wait_for(lambda: children_of(proc.pid), what="a worker child")[0]
        # time.sleep ends at the signal: the job stops, its process goes on.
        wait_for(lambda: Path(f"{sleeping.trace}.start").exists(), what="sleeping job")
        assert cancel(datastore, queue, sleeping.uuid) is CancelAnswer.CANCELLING
        assert_cancelled(datastore, sleeping.uuid)
        # A job that swallows even the interruption: the process records the
        # cancellation and exits; the supervisor starts another.
        wait_for(lambda: Path(f"{stuck.trace}.start").exists(), what="stuck job")
        assert children_of(proc.pid) == [child]
        assert cancel(datastore, queue, stuck.uuid) is CancelAnswer.CANCELLING
        assert_cancelled(datastore, stuck.uuid)
        wait_for(lambda: [c for c in children_of(proc.pid) if c != child], what="a new child")
        after = NoopJob(datastore, queue)
        after.enqueue()
        wait_for(lambda: doc(datastore, after.uuid).get("resultCode") == 200, what="next job")
    finally:
        out = stop(proc)
        queue.close()
    assert proc.returncode == 0, out
    assert "exit 3" in out
    for job in (sleeping, stuck):
        assert not Path(f"{job.trace}.done").exists()
        assert doc(datastore, job.uuid)["runs"] == 1


def _stamp(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).replace(tzinfo=dt.timezone.utc).timestamp()


@pytest.mark.slow
def test_cancels_racing_with_workers_never_let_a_cancelled_job_run_on(
    db_url, datastore, tmp_path
):
    queue = make_queue(db_url, "test_jobs")
    rng = random.Random(5)
    jobs = [CancelJob(datastore, queue, trace=str(tmp_path / f"j{i}"),
                      seconds=rng.uniform(0, 0.3)) for i in range(40)]
    for job in jobs:
        job.enqueue()
    proc = start_worker(db_url, "--processes", "2")
    answers: dict[str, CancelAnswer] = {}
    try:
        wait_for(lambda: Path(f"{jobs[0].trace}.start").exists(), what="the first job")
        for job in jobs:
            # About the pace of two workers: cancels land before, during
            # and after the runs.
            time.sleep(rng.uniform(0, 0.15))
            if rng.random() < 0.8:
                answers[job.uuid] = cancel(datastore, queue, job.uuid)
        for job in jobs:
            wait_for(lambda job=job: doc(datastore, job.uuid).get("resultCode") != -1,
                     what="every result")
    finally:
        out = stop(proc)
        queue.close()
    assert proc.returncode == 0, out
    seen = {answer: 0 for answer in CancelAnswer}
    for job in jobs:
        final = doc(datastore, job.uuid)
        answer = answers.get(job.uuid)
        started = Path(f"{job.trace}.start").exists()
        done = Path(f"{job.trace}.done")
        assert final["runs"] <= 1 and final["running"] is False
        assert datastore.read(cancel_key(job.uuid)) is None
        if answer is not None:
            seen[answer] += 1
        if final["resultCode"] == 200:
            assert answer in (None, CancelAnswer.FINISHED) and final["errors"] == []
            continue
        assert final["resultCode"] == 410 and answer is not None
        if answer is CancelAnswer.CANCELLED:
            assert not started
        if done.exists():
            # run() may complete before the worker sees the request, never after.
            recorded = _stamp(final["errors"][0]["timeStamp"])
            assert float(done.read_text()) <= recorded
    print("answers:", {a.value: n for a, n in seen.items()})
