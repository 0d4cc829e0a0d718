"""Queues seen and steered (SPEC section 8, "Queues"): each backend's counts
by state and oldest ready age, ``GET R/queues``, pause and resume through the
API and the CLI, and workers that honour a pause within a heartbeat."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, QUEUES, _close
from conftest import MakeApp, requires_ci_or_skip
from flask import Flask
from runtime_jobs import jobs as runtime_jobs

from flask_spacewalk.backends import make_queue
from flask_spacewalk.errors import DatastoreUnavailable, NotSupported
from flask_spacewalk.runtime.adapters import ZeroGQueue, as_queue
from flask_spacewalk.runtime.protocols import QueueDepth
from flask_spacewalk.runtime.queue_control import PauseWatch, pause_key
from flask_spacewalk.runtime.worker_loop import Worker

RUNTIME_JOBS = Path(__file__).resolve().parent / "runtime_jobs"
QUEUE = "spacewalk_jobs"
#: Deployment pairings (datastore, queue), as tests/test_cancel.py runs them.
PAIRINGS = {"sqlite": ("sqlite", "sqlite"), "postgresql+beanstalkd": ("postgresql", "beanstalkd"),
            "redis": ("redis", "redis")}


@pytest.fixture(params=sorted(QUEUES))
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with QUEUES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
def open_queue(queue_url: str) -> Iterator[Callable[..., Any]]:
    opened: list[Any] = []

    def open_queue(name: str = "jobs", **kwargs: Any) -> Any:
        queue = make_queue(queue_url, name, **kwargs)
        opened.append(queue)
        return queue

    yield open_queue
    for queue in opened:
        _close(queue)


# -- each backend's counts ---------------------------------------------------


def test_queue_stats_count_entries_by_state(open_queue: Callable[..., Any]) -> None:
    queue = open_queue()
    assert queue.queue_stats() == [QueueDepth("jobs", 0, 0, 0, None)]  # listed when empty
    queue.put("first")
    queue.put("later", delay=600)
    queue.put("second")
    held = queue.reserve(timeout=0)
    assert held is not None and held.body == '"first"'
    other, gone = open_queue("another"), open_queue("gone")
    other.put("x", delay=600)
    assert gone.delete(gone.put("y"))
    depths = queue.queue_stats()
    assert [depth.name for depth in depths] == ["jobs", "another"]  # "gone" holds none
    own = depths[0]
    assert (own.ready, own.delayed, own.reserved) == (1, 1, 1)
    assert own.oldest_ready_age is not None and 0 <= own.oldest_ready_age < 5
    assert depths[1] == QueueDepth("another", 0, 1, 0, None)
    # another queue object lists its own first
    assert [depth.name for depth in other.queue_stats()] == ["another", "jobs"]
    held.delete()
    assert queue.queue_stats()[0][:4] == ("jobs", 1, 1, 0)


def test_oldest_ready_age_counts_from_when_an_entry_became_ready(
    open_queue: Callable[..., Any], queue_url: str
) -> None:
    queue = open_queue()
    queue.put("leased", ttr=1)
    held = queue.reserve(timeout=0)
    reserved_at = time.time()
    assert held is not None
    queue.put("delayed", delay=1)
    assert queue.queue_stats()[0] == QueueDepth("jobs", 0, 1, 1, None)
    time.sleep(1.4)
    if queue_url.startswith("beanstalkd:"):
        # beanstalkd 1.12 may miss the end of a lease on an idle connection
        # until its next command (see nudge() in test_backends_beanstalkd.py)
        queue._consumer.run(lambda conn: conn.client.stats_job(held.id))
    # the lease and the delay ran out: both ready, neither promoted by a reserve
    depth = queue.queue_stats()[0]
    assert depth[:4] == ("jobs", 2, 0, 0)
    assert depth.oldest_ready_age is not None
    if queue_url.startswith("beanstalkd:"):
        # beanstalkd's estimate: the next entry's age since its put, less its
        # delay, in whole seconds (docs/operations.rst)
        assert depth.oldest_ready_age >= 1
    else:
        # since the lease ran out (a second after the reserve), not since the put
        assert 0 <= depth.oldest_ready_age <= time.time() - reserved_at - 1 + 0.05


def test_a_zerog_queue_counts_with_its_stats_tube_or_says_it_cannot() -> None:
    class TubeQueue:
        queueName = "old_jobs"

        def stats_tube(self) -> dict[str, Any]:
            return {"current-jobs-ready": 4, "current-jobs-delayed": 2,
                    "current-jobs-reserved": 1, "current-jobs-urgent": 0}

    class BareQueue:
        queueName = "bare_jobs"

    wrapped = as_queue(TubeQueue())  # type: ignore[arg-type]
    assert isinstance(wrapped, ZeroGQueue)
    assert wrapped.queue_stats() == [QueueDepth("old_jobs", 4, 2, 1, None)]
    with pytest.raises(NotSupported, match="BareQueue.*cannot count its entries"):
        as_queue(BareQueue()).queue_stats()  # type: ignore[arg-type]


# -- the pause as workers read it --------------------------------------------


class CountingStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.reads = 0
        self.fail = False

    def read(self, key: str) -> Any:
        self.reads += 1
        if self.fail:
            raise DatastoreUnavailable("down")
        return self.values.get(key)


def test_a_pause_watch_reads_at_most_once_an_interval_and_survives_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = CountingStore()
    watch = PauseWatch("q_jobs", 0.2)
    assert watch.time_left() == 0
    assert [watch.paused(store) for _ in range(50)] == [False] * 50  # type: ignore[arg-type]
    assert store.reads == 1 and 0 < watch.time_left() <= 0.2
    store.values[pause_key("q_jobs")] = {"queue": "q_jobs"}
    assert watch.paused(store) is False  # type: ignore[arg-type]  # not read again yet
    time.sleep(0.21)
    assert watch.paused(store) is True and store.reads == 2  # type: ignore[arg-type]
    store.fail = True
    time.sleep(0.21)
    assert watch.paused(store) is True and store.reads == 3  # type: ignore[arg-type]  # kept
    assert "cannot read whether queue q_jobs is paused: down" in caplog.text
    with pytest.raises(ValueError):
        PauseWatch("q_jobs", 0)


# -- the API -------------------------------------------------------------------


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app((runtime_jobs.TestRoot, RUNTIME_JOBS, {}), SPACEWALK_RUN_INLINE=False)


def queues(client: Any) -> list[dict[str, Any]]:
    response = client.get("/rt/queues")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["queues"]  # type: ignore[no-any-return]


def post_jobs(client: Any, count: int) -> list[str]:
    uuids = []
    for _ in range(count):
        response = client.post("/rt/noop/job", json={})
        assert response.status_code == 201, response.get_json()
        uuids.append(response.get_json()["uuid"])
    return uuids


def results(client: Any, uuids: list[str]) -> list[int]:
    return [client.get(f"/rt/progress/{uuid}").get_json()["result"] for uuid in uuids]


def test_the_services_queue_is_listed_even_when_empty(app: Flask) -> None:
    assert queues(app.test_client()) == [{
        "name": QUEUE, "ready": 0, "delayed": 0, "reserved": 0, "paused": False,
        "oldestReadyAge": None,
    }]  # fmt: skip


def test_pause_and_resume_answer_202_and_show_in_the_list(app: Flask) -> None:
    client = app.test_client()
    post_jobs(client, 2)
    client.post("/rt/noop/job?delay=600", json={})
    for action, paused in [("pause", True), ("pause", True), ("resume", False),
                           ("resume", False)]:  # fmt: skip
        response = client.post(f"/rt/queues/{QUEUE}/{action}")
        assert response.status_code == 202
        assert response.get_json() == {"name": QUEUE, "paused": paused}
        (item,) = queues(client)
        assert (item["ready"], item["delayed"], item["reserved"]) == (2, 1, 0)
        assert item["paused"] is paused and item["oldestReadyAge"] >= 0
    datastore, _ = app.extensions["spacewalk"]["/rt"].connections()
    client.post(f"/rt/queues/{QUEUE}/pause")
    assert datastore.read(pause_key(QUEUE))["queue"] == QUEUE  # outside the job documents


@pytest.mark.parametrize(
    "path, message",
    [
        ("/rt/queues/other_jobs/pause",
         "'other_jobs' is not this service's queue, 'spacewalk_jobs'"),
        ("/rt/queues/a/b/resume", "'a/b' is not this service's queue"),
        (f"/rt/queues/{'x' * 300}/pause", f"{'x' * 60!r}... is not this service's queue"),
        ("/rt/queues/%00/pause", "'\\x00' is not"),
    ],
)
def test_another_queue_is_404(app: Flask, path: str, message: str) -> None:
    response = app.test_client().post(path)
    assert response.status_code == 404
    assert message in response.get_json()["message"]
    assert queues(app.test_client())[0]["paused"] is False


def test_wrong_methods_are_405(app: Flask) -> None:
    client = app.test_client()
    assert client.get(f"/rt/queues/{QUEUE}/pause").status_code == 405
    assert client.post("/rt/queues").headers["Allow"] == "GET, HEAD, OPTIONS"


def test_a_queue_that_cannot_count_is_501(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    _, queue = app.extensions["spacewalk"]["/rt"].connections()

    def cannot() -> list[QueueDepth]:
        raise NotSupported("this queue (Old) cannot count its entries")

    monkeypatch.setattr(queue, "queue_stats", cannot)
    response = app.test_client().get("/rt/queues")
    assert response.status_code == 501
    assert "cannot count its entries" in response.get_json()["message"]


def test_an_unreachable_queue_is_503(make_app: MakeApp) -> None:
    app = make_app((runtime_jobs.TestRoot, RUNTIME_JOBS, {}),
                   SPACEWALK_QUEUE_URL="redis://127.0.0.1:1/0")  # fmt: skip
    response = app.test_client().get("/rt/queues")
    assert response.status_code == 503
    assert "Redis server 127.0.0.1:1/0 is unavailable" in response.get_json()["message"]


def test_an_unreachable_datastore_is_503(make_app: MakeApp, tmp_path: Path) -> None:
    # the queue answers; the pauses cannot be read or written
    app = make_app((runtime_jobs.TestRoot, RUNTIME_JOBS, {}),
                   SPACEWALK_DATASTORE_URL="redis://127.0.0.1:1/0",
                   SPACEWALK_QUEUE_URL=f"sqlite:///{tmp_path / 'queue.sqlite3'}")  # fmt: skip
    client = app.test_client()
    for response in (client.get("/rt/queues"), client.post(f"/rt/queues/{QUEUE}/pause"),
                     client.post(f"/rt/queues/{QUEUE}/resume")):  # fmt: skip
        assert response.status_code == 503
        assert "Redis server 127.0.0.1:1/0 is unavailable" in response.get_json()["message"]


def test_a_paused_queue_runs_no_job_inline(make_app: MakeApp) -> None:
    app = make_app((runtime_jobs.TestRoot, RUNTIME_JOBS, {}), SPACEWALK_RUN_INLINE=True)
    client = app.test_client()
    client.post(f"/rt/queues/{QUEUE}/pause")
    (queued,) = post_jobs(client, 1)
    assert results(client, [queued]) == [-1]
    assert queues(client)[0]["ready"] == 1
    client.post(f"/rt/queues/{QUEUE}/resume")
    (ran,) = post_jobs(client, 1)
    assert results(client, [ran]) == [200]


@pytest.fixture(params=sorted(PAIRINGS))
def pairing_app(request: pytest.FixtureRequest, tmp_path: Path,
                make_app: MakeApp) -> Iterator[Flask]:  # fmt: skip
    store, queue = PAIRINGS[request.param]
    if store not in DATASTORES or queue not in QUEUES:
        requires_ci_or_skip(f"the {request.param} backends are not available")
    with DATASTORES[store](tmp_path) as store_url, QUEUES[queue](tmp_path) as queue_url:
        yield make_app((runtime_jobs.TestRoot, RUNTIME_JOBS, {}), SPACEWALK_RUN_INLINE=False,
                       SPACEWALK_DATASTORE_URL=store_url, SPACEWALK_QUEUE_URL=queue_url)


def make_worker(app: Flask, heartbeat: float = 5.0) -> Worker:
    """An in-process worker on the app's own connections (closed with the app)."""
    state = app.extensions["spacewalk"]["/rt"]
    datastore, queue = state.connections()
    worker = Worker(state.registry, lambda: datastore, lambda name: queue,
                    state.settings.queue_name, heartbeat=heartbeat)  # fmt: skip
    worker.RESERVE_TIMEOUT = 0.1
    return worker


def test_a_paused_queue_takes_posts_and_runs_none_until_resumed(pairing_app: Flask) -> None:
    client = pairing_app.test_client()
    assert client.post(f"/rt/queues/{QUEUE}/pause").status_code == 202
    uuids = post_jobs(client, 3)
    worker = make_worker(pairing_app)
    worker.run(burst=True)
    assert results(client, uuids) == [-1, -1, -1]
    (item,) = queues(client)
    assert item["oldestReadyAge"] is not None
    assert item | {"oldestReadyAge": 0} == {
        "name": QUEUE, "ready": 3, "delayed": 0, "reserved": 0, "paused": True,
        "oldestReadyAge": 0,
    }  # fmt: skip
    assert client.post(f"/rt/queues/{QUEUE}/resume").status_code == 202
    make_worker(pairing_app).run(burst=True)
    assert results(client, uuids) == [200, 200, 200]
    assert queues(client)[0]["ready"] == 0


def test_a_running_worker_stops_taking_jobs_within_a_heartbeat(app: Flask) -> None:
    heartbeat = 0.3
    client = app.test_client()
    worker = make_worker(app, heartbeat)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        first = post_jobs(client, 1)
        assert wait_for(lambda: results(client, first) == [200])
        client.post(f"/rt/queues/{QUEUE}/pause")
        time.sleep(heartbeat + 0.2)  # the pause is seen within one heartbeat
        held = post_jobs(client, 2)
        time.sleep(3 * heartbeat)
        assert results(client, held) == [-1, -1]
        resumed_at = time.monotonic()
        client.post(f"/rt/queues/{QUEUE}/resume")
        assert wait_for(lambda: results(client, held) == [200, 200])
        assert time.monotonic() - resumed_at < heartbeat + 2  # room for a loaded machine
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the CLI -------------------------------------------------------------------


def test_the_queues_command_prints_the_table_pauses_and_resumes(app: Flask) -> None:
    client = app.test_client()
    post_jobs(client, 2)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["spacewalk", "queues"])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == ["QUEUE", "READY", "DELAYED", "RESERVED", "OLDEST", "READY",
                              "PAUSED"]  # fmt: skip
    cells = row.split()
    assert cells[:4] == [QUEUE, "2", "0", "0"] and cells[5:] == ["s", "no"]
    result = runner.invoke(args=["spacewalk", "queues", "pause", QUEUE])
    assert result.exit_code == 0, result.output
    assert result.output == f"paused {QUEUE}: workers take none of its entries within 5 s\n"
    assert queues(client)[0]["paused"] is True
    assert runner.invoke(args=["spacewalk", "queues"]).output.splitlines()[1].endswith("yes")
    result = runner.invoke(args=["spacewalk", "queues", "--tree", "/rt", "resume", QUEUE])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"resumed {QUEUE}: workers take its entries again")
    assert queues(client)[0]["paused"] is False


def test_the_queues_command_refuses_another_queue(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["spacewalk", "queues", "pause", "x_jobs"])
    assert result.exit_code == 2
    assert "'x_jobs' is not this service's queue, 'spacewalk_jobs'" in result.output
    assert queues(app.test_client())[0]["paused"] is False


def test_the_queues_command_reports_an_unreachable_queue(make_app: MakeApp) -> None:
    app = make_app((runtime_jobs.TestRoot, RUNTIME_JOBS, {}),
                   SPACEWALK_QUEUE_URL="redis://127.0.0.1:1/0")  # fmt: skip
    result = app.test_cli_runner().invoke(args=["spacewalk", "queues"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "unavailable" in result.output
