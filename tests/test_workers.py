"""Worker records (SPEC section 8): the datastores' records, the heartbeat,
``GET R/workers`` and drain, undrain and retire over HTTP and the CLI, the
supervisor honouring retire, and real worker processes on every pairing."""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, QUEUES, _close
from conftest import requires_ci_or_skip
from flask import Flask
from flask.testing import FlaskClient
from fleet_jobs.jobs import FleetRoot
from reliability_support import children_of, log_tail, stop_process
from runtime_jobs.jobs import InterruptJob, NoopJob
from test_worker_processes import wait_for

from flask_spacewalk import Spacewalk, make_datastore
from flask_spacewalk.errors import DatastoreUnavailable, NotSupported
from flask_spacewalk.runtime import heartbeat as heartbeat_module
from flask_spacewalk.runtime.adapters import as_datastore
from flask_spacewalk.runtime.fleet import WorkerAction, live_workers, request_action
from flask_spacewalk.runtime.heartbeat import (
    ID_PATTERN,
    LIVE_BEATS,
    PUBLIC_FIELDS,
    STALE_AFTER,
    Activity,
    Heartbeat,
    WorkerState,
    drain_key,
    retire_key,
)
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.protocols import SpacewalkDatastore
from flask_spacewalk.runtime.records import utcnow
from flask_spacewalk.runtime.supervisor import EXIT_RETIRED, Supervisor
from flask_spacewalk.runtime.worker_loop import Worker

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FLEET_JOBS = TESTS / "fleet_jobs"
T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


class Clock:
    """A naive UTC clock that moves only when told."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=sorted(DATASTORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpacewalkDatastore]:
    with DATASTORES[request.param](tmp_path) as url:
        datastore = as_datastore(make_datastore(url))
        yield datastore
        _close(datastore)


def beating(store: Any, clock: Any = utcnow, **kwargs: Any) -> Heartbeat:
    return Heartbeat(store, 5.0, service="test", queue="test_jobs", activity=Activity(),
                     memory=lambda: 1234, clock=clock, **kwargs)  # fmt: skip


# -- the datastores ---------------------------------------------------------------


def test_every_datastore_keeps_worker_records_apart_from_its_documents(store):
    assert store.list_workers() == []
    store.save_worker("h-1-aa", {"id": "h-1-aa", "n": 1})
    store.save_worker("h-2-bb", {"id": "h-2-bb", "n": 1})
    store.save_worker("h-1-aa", {"id": "h-1-aa", "n": 2, "job": None})  # replaced
    assert sorted(store.list_workers(), key=lambda r: r["id"]) == [
        {"id": "h-1-aa", "n": 2, "job": None}, {"id": "h-2-bb", "n": 1}]
    assert store.read("h-1-aa") is None  # not a document
    with pytest.raises(ValueError):  # checked as documents are
        store.save_worker("h-3-cc", {"rss": float("nan")})
    assert store.delete_worker("h-1-aa") is True
    assert store.delete_worker("h-1-aa") is False
    assert [r["id"] for r in store.list_workers()] == ["h-2-bb"]


class ZeroGStore:
    """A datastore with ZeroG's methods only."""

    def __init__(self, inner: Any) -> None:
        for name in ("read", "read_with_cas", "create", "update", "update_with_cas", "set",
                     "set_with_cas", "delete", "casException", "lockedException",
                     "existsException"):  # fmt: skip
            setattr(self, name, getattr(inner, name))


def test_a_zerog_datastore_keeps_no_records_and_its_workers_run_on(datastore, caplog):
    foreign = as_datastore(ZeroGStore(datastore))  # type: ignore[arg-type]
    for call in (foreign.list_workers, lambda: foreign.save_worker("x", {}),
                 lambda: foreign.delete_worker("x")):  # fmt: skip
        with pytest.raises(NotSupported, match="keeps no worker records"):
            call()
    heartbeat = beating(foreign)
    caplog.set_level("INFO", "flask_spacewalk.runtime.heartbeat")
    heartbeat.start()
    wait_for(lambda: heartbeat._thread is not None and not heartbeat._thread.is_alive(),
             what="the heartbeat to give up")  # fmt: skip
    heartbeat.stop()
    assert "keeps no record" in caplog.text


# -- the heartbeat ----------------------------------------------------------------


def test_a_beat_writes_the_record_and_obeys_the_requests(store):
    clock = Clock()
    retired: list[bool] = []
    heartbeat = beating(store, clock, on_retire=lambda: retired.append(True))
    assert ID_PATTERN.fullmatch(heartbeat.id)
    heartbeat.beat()
    (record,) = live_workers(store, clock.now)
    assert record == {
        "id": heartbeat.id, "host": socket.gethostname(), "pid": os.getpid(),
        "service": "test", "queue": "test_jobs", "state": "idle", "job": None,
        "jobType": None, "startedAt": "2024-05-01T12:00:00",
        "lastSeen": "2024-05-01T12:00:00", "jobsDone": 0, "jobsFailed": 0, "rss": 1234,
    }  # fmt: skip
    assert list(record) == list(PUBLIC_FIELDS)

    def beat() -> str:
        clock.now += dt.timedelta(seconds=5)
        heartbeat.beat()
        return str(live_workers(store, clock.now)[0]["state"])

    heartbeat.activity.job, heartbeat.activity.job_type = "u1", "rt_noop"
    assert beat() == "running"
    # a request waits in its key for the next beat; the worker's rewrite of
    # its record never loses it
    assert request_action(store, record, WorkerAction.DRAIN) is WorkerState.DRAINING
    assert live_workers(store, clock.now)[0]["state"] == "running"
    assert beat() == "draining" and beat() == "draining"
    assert heartbeat.changed.is_set()
    record = live_workers(store, clock.now)[0]
    assert request_action(store, record, WorkerAction.UNDRAIN) is WorkerState.RUNNING
    assert beat() == "running"
    assert request_action(store, record, WorkerAction.RETIRE) is WorkerState.RETIRING
    assert beat() == "retiring" and retired == [True]
    # undrain does not undo a retire; a retiring worker stays retiring
    record = live_workers(store, clock.now)[0]
    assert request_action(store, record, WorkerAction.UNDRAIN) is WorkerState.RETIRING
    assert request_action(store, record, WorkerAction.DRAIN) is WorkerState.RETIRING
    assert beat() == "retiring" and retired == [True]
    # a fork of the worker (job code may fork) leaves the record alone
    assert _forked(lambda: heartbeat.stop() or 0) == 0
    assert [r["id"] for r in store.list_workers()] == [heartbeat.id]
    # a clean exit deletes the record and the requests
    heartbeat.stop()
    assert store.list_workers() == []
    assert store.read(drain_key(heartbeat.id)) is None
    assert store.read(retire_key(heartbeat.id)) is None


class Unreachable:
    """A datastore that is down, or (``hang``) does not answer for a while."""

    def __init__(self, hang: float = 0.0) -> None:
        self.hang = hang
        self.deleted: list[str] = []

    def read_many(self, keys: Any) -> Any:
        time.sleep(self.hang)
        raise DatastoreUnavailable("connection refused")

    def delete_worker(self, worker_id: str) -> bool:
        self.deleted.append(worker_id)
        return True


@pytest.mark.parametrize("hang", [0.0, 3.0])
def test_an_outage_leaves_the_record_to_go_stale_and_holds_up_no_exit(hang, monkeypatch):
    monkeypatch.setattr(heartbeat_module, "STOP_WAIT", 0.2)
    down = Unreachable(hang)
    heartbeat = beating(down)
    heartbeat.interval = 0.05
    heartbeat.start()
    time.sleep(0.2)
    started = time.monotonic()
    heartbeat.stop()
    assert time.monotonic() - started < 1.0 and down.deleted == []


def test_a_record_is_live_for_three_heartbeats_and_deleted_after_an_hour(store):
    clock = Clock()
    gone, alive = beating(store, clock), beating(store, clock)
    gone.beat()
    store.set(drain_key(gone.id), {"action": "drain"})
    limit = T0 + dt.timedelta(seconds=LIVE_BEATS * gone.interval)
    assert [w["id"] for w in live_workers(store, limit)] == [gone.id]
    assert live_workers(store, limit + dt.timedelta(milliseconds=1)) == []
    clock.now = T0 + dt.timedelta(seconds=STALE_AFTER - 1)
    alive.beat()  # its first beat looks for stale records
    assert {r["id"] for r in store.list_workers()} == {gone.id, alive.id}
    clock.now = T0 + dt.timedelta(seconds=STALE_AFTER)
    assert alive.sweep() == 1
    assert [r["id"] for r in store.list_workers()] == [alive.id]
    assert store.read(drain_key(gone.id)) is None


# -- the worker loop --------------------------------------------------------------


def test_an_entry_reserved_as_a_drain_arrives_goes_back_and_runs_once_undrained(
    registry, datastore, queue
):
    registry.add_classes([InterruptJob])
    job = NoopJob(datastore, queue)
    job.enqueue()
    worker = Worker(registry, lambda: datastore, lambda name: queue, "test_jobs",
                    heartbeat=60)  # fmt: skip
    # the worker takes entries by reserve, or by reserve_in where the queue
    # claims them with their jobs in one transaction (SQLite)
    taking = "reserve_in" if hasattr(queue, "reserve_in") else "reserve"
    take = getattr(queue, taking)

    def take_as_a_drain_arrives(*args: Any, **kwargs: Any) -> Any:
        taken = take(*args, **kwargs)
        heartbeat = worker._heartbeat
        assert heartbeat is not None
        datastore.set(drain_key(heartbeat.id), {"action": "drain"})
        heartbeat.beat()
        return taken

    setattr(queue, taking, take_as_a_drain_arrives)
    worker.run(burst=True)
    assert datastore.read(make_key(job.uuid))["resultCode"] == -1
    assert datastore.list_workers() == []  # deleted at the end of run()
    setattr(queue, taking, take)
    failing = InterruptJob(datastore, queue, kind="error_finish")
    failing.enqueue()
    worker.run(burst=True)  # a new heartbeat: a new worker, not drained
    assert datastore.read(make_key(job.uuid))["resultCode"] == 200
    assert datastore.read(make_key(failing.uuid))["resultCode"] == 418
    assert (worker.activity.jobs_done, worker.activity.jobs_failed) == (2, 1)


def _forked(target: Any) -> int:
    """Run ``target()`` in a forked child (the supervisor takes signals);
    its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(20)  # a supervisor that never ends fails the test
            code = target()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_supervisor_restarts_no_retired_child_and_exits_once_all_retired(tmp_path):
    starts, died = tmp_path / "starts", tmp_path / "died"

    def child() -> int:
        with open(starts, "a") as f:
            f.write(".")
        try:  # the first child to get here dies; every other one retires
            os.close(os.open(died, os.O_CREAT | os.O_EXCL))
            return 1
        except FileExistsError:
            return EXIT_RETIRED

    assert _forked(Supervisor(child, processes=2).run) == 0
    assert starts.read_text() == "..."  # two, and one in place of the one that died


def test_serve_starts_no_job_supervisor_again_once_every_worker_retired(tmp_path):
    starts = tmp_path / "starts"
    script = (
        "import sys, time\n"
        "from flask_spacewalk.serve import Serve\n"
        "def jobs():\n"
        f"    open({str(starts)!r}, 'a').write('.')\n"
        "    return 0\n"
        "sys.exit(Serve(lambda: time.sleep(0.5), jobs).run())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=30,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert starts.read_text() == "."


# -- the API and the CLI ----------------------------------------------------------


@pytest.fixture
def app(make_app: Any) -> Flask:
    return make_app(SPACEWALK_RUN_INLINE=False)  # type: ignore[no-any-return]


def records(app: Flask) -> SpacewalkDatastore:
    return app.extensions["spacewalk"]["/examples"].connections()[0]  # type: ignore[no-any-return]


def test_get_workers_lists_the_live_workers_only(app):
    client = app.test_client()
    assert client.get("/examples/workers").json == {"workers": []}
    store = records(app)
    first, second = beating(store), beating(store)
    second.activity.job, second.activity.job_type = "u", "examples_fizz_buzz"
    first.beat()
    second.beat()
    stale = beating(store, Clock(utcnow() - dt.timedelta(seconds=16)))
    stale.beat()
    answer = client.get("/examples/workers")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    listed = answer.json["workers"]
    assert [w["id"] for w in listed] == [first.id, second.id]
    assert [(w["state"], w["job"], w["jobType"]) for w in listed] == [
        ("idle", None, None), ("running", "u", "examples_fizz_buzz")]


def post(client: FlaskClient, worker_id: str, action: str) -> Any:
    return client.post(f"/examples/workers/{worker_id}/{action}")


def test_drain_undrain_and_retire_answer_202_with_the_state_moved_to(app):
    client = app.test_client()
    store = records(app)
    idle, busy = beating(store), beating(store)
    busy.activity.job = "u"
    for heartbeat in (idle, busy):
        heartbeat.beat()
    for worker, action, state in [(idle, "drain", "draining"), (idle, "undrain", "idle"),
                                  (busy, "drain", "draining"), (busy, "undrain", "running"),
                                  (busy, "retire", "retiring")]:  # fmt: skip
        answer = post(client, worker.id, action)
        assert (answer.status_code, answer.json) == (202, {"id": worker.id, "state": state})
    assert store.read(drain_key(idle.id)) is None
    busy.beat()
    assert post(client, busy.id, "undrain").json["state"] == "retiring"
    assert post(client, busy.id, "drain").json["state"] == "retiring"


def test_worker_actions_on_unknown_workers_are_404_and_need_post(app):
    client = app.test_client()
    stale = beating(records(app), Clock(utcnow() - dt.timedelta(seconds=16)))
    stale.beat()
    for worker_id in ("nobody", stale.id):
        for action in WorkerAction:
            answer = post(client, worker_id, action.value)
            assert answer.status_code == 404 and answer.json["code"] == 404
            assert worker_id in answer.json["message"]
    assert records(app).read(drain_key(stale.id)) is None
    answer = client.get(f"/examples/workers/{stale.id}/drain")
    assert answer.status_code == 405 and answer.headers["Allow"] == "OPTIONS, POST"
    assert post(client, stale.id, "pause").status_code == 404


def test_workers_of_a_datastore_without_records_are_501(app):
    client = app.test_client()
    state = app.extensions["spacewalk"]["/examples"]
    datastore, queue = state.connections()
    state._connections = (as_datastore(ZeroGStore(datastore)), queue)
    for answer in (client.get("/examples/workers"), post(client, "x", "drain")):
        assert answer.status_code == 501 and "no worker records" in answer.json["message"]


def test_the_cli_prints_the_table_and_acts_on_a_worker_or_a_host(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["spacewalk", "workers"]).output == "no live workers\n"
    store = records(app)
    idle, busy = beating(store), beating(store)
    busy.activity.job, busy.activity.job_type = "0f" * 16, "examples_fizz_buzz"
    for heartbeat in (idle, busy):
        heartbeat.beat()
    table = runner.invoke(args=["spacewalk", "workers"]).output.splitlines()
    assert table[0].split() == ["ID", "HOST", "PID", "STATE", "JOB", "JOB", "TYPE", "DONE",
                                "FAILED", "RSS", "SEEN"]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows[idle.id][3:6] == ["idle", "-", "-"]
    assert rows[busy.id][3:6] == ["running", "0f" * 16, "examples_fizz_buzz"]
    assert rows[busy.id][1:3] == [socket.gethostname(), str(os.getpid())]

    done = runner.invoke(args=["spacewalk", "workers", "drain", idle.id])
    assert (done.exit_code, done.output) == (0, f"{idle.id}: draining\n")
    done = runner.invoke(args=["spacewalk", "workers", "retire", "--host", socket.gethostname()])
    assert done.exit_code == 0
    assert sorted(done.output.splitlines()) == sorted(
        [f"{idle.id}: retiring", f"{busy.id}: retiring"])
    assert store.read(retire_key(busy.id)) is not None
    for args, message in [([], "give a worker ID or --host"),
                          (["x", "--host", "h"], "give a worker ID or --host"),
                          (["nobody"], "no live worker nobody"),
                          (["--host", "elsewhere"], "no live worker on host elsewhere")]:
        done = runner.invoke(args=["spacewalk", "workers", "undrain", *args])
        assert done.exit_code != 0 and message in done.output


# -- real worker processes, on every pairing ----------------------------------------

PAIRINGS = {"sqlite": ("sqlite", "sqlite"), "postgresql+beanstalkd": ("postgresql", "beanstalkd"),
            "redis": ("redis", "redis")}
#: The workers' heartbeat: short, so that the test is.
BEAT = 0.2


@pytest.fixture(params=sorted(PAIRINGS))
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    store, queue = PAIRINGS[request.param]
    if store not in DATASTORES or queue not in QUEUES:
        requires_ci_or_skip(f"the {request.param} backends are not available")
    with DATASTORES[store](tmp_path) as store_url, QUEUES[queue](tmp_path) as queue_url:
        yield store_url, queue_url


@pytest.mark.slow
def test_worker_processes_are_listed_drained_undrained_retired_and_killed(urls, tmp_path):
    store_url, queue_url = urls
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SPACEWALK_DATASTORE_URL=store_url, SPACEWALK_QUEUE_URL=queue_url,
                      SPACEWALK_SERVICE_NAME="fleet", SPACEWALK_RUN_INLINE=False)  # fmt: skip
    Spacewalk(app, FLEET_JOBS, FleetRoot)
    client = app.test_client()
    log_path = tmp_path / "workers.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(FLEET_JOBS),
             "--datastore", store_url, "--queue", queue_url, "--service", "fleet",
             "--processes", "2", "--heartbeat", str(BEAT), "--ttr", "5",
             "--log-level", "WARNING"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )

    def workers() -> list[dict[str, Any]]:
        answer = client.get("/fleet/workers")
        assert answer.status_code == 200, answer.json
        return answer.json["workers"]  # type: ignore[no-any-return]

    def worker(worker_id: str) -> dict[str, Any]:
        return next((w for w in workers() if w["id"] == worker_id), {})

    def gate(name: str, result: int = 200) -> str:
        answer = client.post("/fleet/gate/job", json={"trace": str(tmp_path / name),
                                                      "result": result})  # fmt: skip
        assert answer.status_code == 201
        return str(answer.json["uuid"])

    def started(name: str) -> int | None:
        path = tmp_path / f"{name}.start"
        return int(path.read_text()) if path.exists() and path.read_text() else None

    def let_go(name: str, uuid: str) -> None:
        (tmp_path / f"{name}.go").touch()
        wait_for(lambda: client.get(f"/fleet/progress/{uuid}").json["result"] != -1,
                 what=f"{name}'s result")  # fmt: skip

    def act(worker_id: str, action: str, state: str) -> float:
        answer = client.post(f"/fleet/workers/{worker_id}/{action}")
        assert (answer.status_code, answer.json) == (202, {"id": worker_id, "state": state})
        return time.monotonic()

    try:
        g1, g2 = gate("g1", result=500), gate("g2")
        wait_for(lambda: started("g1") and started("g2"), what="both jobs to start")
        listed = wait_for(lambda: (ws := workers()) and {w["job"] for w in ws} == {g1, g2}
                          and all(w["state"] == "running" for w in ws) and ws,
                          what="both workers listed running their jobs")  # fmt: skip
        assert sorted(w["pid"] for w in listed) == sorted(children_of(proc.pid))
        a, b = sorted(listed, key=lambda w: w["job"] != g1)
        assert (a["pid"], b["pid"]) == (started("g1"), started("g2"))
        for w in listed:
            assert (w["host"], w["service"], w["queue"], w["jobType"]) == (
                socket.gethostname(), "fleet", "fleet_jobs", "fleet_gate")
            assert w["rss"] > 2**20 and w["jobsDone"] == 0

        # drained while its job runs: it finishes that job, takes no other
        asked = act(a["id"], "drain", "draining")
        wait_for(lambda: worker(a["id"])["state"] == "draining", what="draining")
        assert time.monotonic() - asked < BEAT + 1.0  # within a heartbeat (and load)
        g3 = gate("g3")
        let_go("g1", g1)
        wait_for(lambda: worker(a["id"])["jobsDone"] == 1, what="the drained worker's count")
        time.sleep(3 * BEAT)
        assert started("g3") is None  # b is busy, a drained: g3 waits
        seen = worker(a["id"])
        assert (seen["state"], seen["job"], seen["jobsFailed"]) == ("draining", None, 1)

        # undrained: it takes the waiting job
        act(a["id"], "undrain", "idle")
        assert wait_for(lambda: started("g3"), what="g3 to start") == a["pid"]

        # retired while its job runs: it finishes it, exits, is not restarted
        act(b["id"], "retire", "retiring")
        wait_for(lambda: worker(b["id"]).get("state") == "retiring", what="retiring")
        let_go("g2", g2)
        wait_for(lambda: children_of(proc.pid) == [a["pid"]], what="b to exit")
        assert b["id"] not in {w["id"] for w in workers()}  # its record went with it
        time.sleep(3 * BEAT)
        assert children_of(proc.pid) == [a["pid"]]

        # killed: gone from the list within three heartbeats, and replaced
        let_go("g3", g3)
        wait_for(lambda: worker(a["id"])["state"] == "idle", what="a idle")
        os.kill(a["pid"], signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: a["id"] not in {w["id"] for w in workers()}, what="a to go")
        assert time.monotonic() - killed < 3 * BEAT + 1.0
        (c,) = wait_for(lambda: workers(), what="a new worker")
        assert c["id"] != a["id"] and c["pid"] not in (a["pid"], b["pid"])

        # the CLI's host action: once every child retired, the supervisor exits
        runner = app.test_cli_runner()
        assert c["id"] in runner.invoke(args=["spacewalk", "workers"]).output
        done = runner.invoke(args=["spacewalk", "workers", "retire", "--host", c["host"]])
        assert done.output == f"{c['id']}: retiring\n"
        assert proc.wait(timeout=20) == 0, log_tail(log_path)
        assert workers() == []
    finally:
        if proc.poll() is None:
            stop_process(proc, timeout=15)
        for state in app.extensions["spacewalk"].values():
            state.close()
