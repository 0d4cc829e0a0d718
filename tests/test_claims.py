"""Claims (issue 17 items 2 and 4): a job claimed and marked running in one
transaction, its result and its entry's deletion in another, and batched
claims (``--batch N``), where queue and datastore are one database: the
SQLite file, and PostgreSQL (each test on both, unless it checks an option)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import psycopg
import pytest
from backend_postgres import postgres_url
from click.testing import CliRunner
from reliability_support import wait_until
from runtime_jobs.jobs import SleepJob
from runtime_jobs.jobs import TestRoot as RuntimeRoot
from test_worker_loop import make_worker, stored, submit

from flask_spacewalk import NO_RESULT
from flask_spacewalk.backends import make_datastore, make_queue, pgqueue, sqlite
from flask_spacewalk.cli import serve_command, worker_command
from flask_spacewalk.runtime import changes
from flask_spacewalk.runtime.cancel import request_cancel
from flask_spacewalk.runtime.changes import JobWatch
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.worker_loop import MAX_BATCH, Worker, check_batch
from flask_spacewalk.worker import main as worker_main

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: The tests of an option, not of a backend, run on SQLite alone.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
POSTGRES_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of one database for datastore and queue alike."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'spacewalk.sqlite3'}"
    else:
        with postgres_url(tmp_path) as url:
            yield url


class QuietJob(RuntimeRoot):
    """A no-op that writes nothing of its own."""

    NAME = "Quiet"
    LEAF_NAME = "quiet"
    DESCRIPTION = "returns 200 at once"

    def run(self) -> Any:
        return 200


class StopsWorkerJob(RuntimeRoot):
    """Asks the worker running it to stop, then finishes."""

    NAME = "Stops worker"
    LEAF_NAME = "stops_worker"
    DESCRIPTION = "stops its worker"
    worker: Worker | None = None

    def run(self) -> Any:
        assert self.worker is not None
        self.worker.stop()
        return 200


@pytest.fixture
def quiet_registry() -> JobRegistry:
    return JobRegistry([QuietJob, StopsWorkerJob, SleepJob])


@contextmanager
def counting_commits(queue: Any) -> Iterator[list[int]]:
    """Counts the commits of every connection of this process to the
    queue's database."""
    if isinstance(queue, pgqueue.PostgresQueue):
        with counting_postgres_commits() as count:
            yield count
        return
    with counting_sqlite_commits() as count:
        yield count


@contextmanager
def counting_sqlite_commits() -> Iterator[list[int]]:
    """Write transactions, and single writing statements."""
    count = [0]
    connect = sqlite._Database.connect

    @contextmanager
    def counted(self: Any, write: bool = False, lock: bool = False) -> Iterator[Any]:
        with connect(self, write, lock) as conn:
            yield conn
        count[0] += write or lock

    sqlite._Database.connect = counted  # type: ignore[method-assign,assignment]
    try:
        yield count
    finally:
        sqlite._Database.connect = connect  # type: ignore[method-assign]


WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE)\b|" + pgqueue.QUEUE_TABLE + "_reserve")


@contextmanager
def counting_postgres_commits() -> Iterator[list[int]]:
    """Each ``transaction()`` block left without an error, each query that
    ends with ``COMMIT`` (one string may hold several statements), and each
    writing statement run outside a transaction (autocommit): one that
    inserts, updates or deletes, or calls the reserve function."""
    count = [0]
    execute, transaction = psycopg.Cursor.execute, psycopg.Connection.transaction

    def counted_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = str(query).strip()
        idle = self.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        result = execute(self, query, *args, **kwargs)
        if text.endswith("COMMIT") or (
            idle and not text.startswith("BEGIN") and WRITES.search(text)
        ):
            count[0] += 1
        return result

    @contextmanager
    def counted_transaction(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with transaction(self, *args, **kwargs) as tx:
            yield tx
        count[0] += 1

    with patch.object(psycopg.Cursor, "execute", counted_execute), \
            patch.object(psycopg.Connection, "transaction", counted_transaction):
        yield count


def entries(queue: Any) -> dict[str, int]:
    stats = queue.stats_tube()
    return {state: stats[f"current-jobs-{state}"] for state in ("ready", "reserved", "delayed")}


# -- fewer commits ---------------------------------------------------------------


@pytest.mark.parametrize(("batch", "most"), [(1, 2.0), (10, 1.1)])
def test_a_no_op_job_costs_two_commits_and_one_in_a_batch(
    quiet_registry, datastore, queue, batch, most
):
    uuids = [submit(QuietJob, datastore, queue) for _ in range(40)]
    worker = make_worker(quiet_registry, datastore, queue, batch=batch)
    with counting_commits(queue) as commits:
        worker.run(burst=True)
    assert worker.jobs_done == 40
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in uuids)
    assert entries(queue) == {"ready": 0, "reserved": 0, "delayed": 0}
    # (+2: the burst's last, empty claim and the flush of the run durations)
    assert 40 * most - 2 <= commits[0] <= 40 * most + 2


@contextmanager
def counting_postgres_round_trips() -> Iterator[list[int]]:
    """Each pipeline (one trip, however many statements it holds) and each
    statement sent outside one."""
    count = [0]
    execute, pipeline = psycopg.Cursor.execute, psycopg.Connection.pipeline

    def counted_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += self.connection._pipeline is None
        return execute(self, query, *args, **kwargs)

    @contextmanager
    def counted_pipeline(self: Any) -> Iterator[Any]:
        with pipeline(self) as p:
            yield p
        count[0] += 1

    with patch.object(psycopg.Cursor, "execute", counted_execute), \
            patch.object(psycopg.Connection, "pipeline", counted_pipeline):
        yield count


@POSTGRES_ONLY
@pytest.mark.parametrize(("batch", "most"), [(1, 5.0), (10, 4.2)])
def test_a_no_op_job_costs_five_round_trips_on_postgresql_and_four_in_a_batch(
    quiet_registry, datastore, queue, batch, most
):
    # claim: BEGIN and the reserve, then the running write and COMMIT;
    # result: BEGIN and the read of the cancel request with the document,
    # then the result's write and the entry's delete, then COMMIT. In a
    # batch the claim's two trips serve the batch, and each result's
    # transaction reads and marks the next job running (one trip more).
    uuids = [submit(QuietJob, datastore, queue) for _ in range(40)]
    worker = make_worker(quiet_registry, datastore, queue, batch=batch)
    with counting_postgres_round_trips() as trips:
        worker.run(burst=True)
    assert worker.jobs_done == 40
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in uuids)
    # (+8: the worker's start and end, its records, the burst's last, empty
    # claim and the flush of the run durations; 6 to 8 measured)
    assert trips[0] <= 40 * most + 8


def test_without_claims_a_no_op_job_costs_four_commits(
    quiet_registry, datastore, queue, monkeypatch
):
    # the separate steps another queue takes (and the figure before claims)
    monkeypatch.setattr(Lifecycle, "shared", property(lambda self: None))
    for _ in range(10):
        submit(QuietJob, datastore, queue)
    worker = make_worker(quiet_registry, datastore, queue)
    with counting_commits(queue) as commits:
        worker.run(burst=True)
    assert worker.jobs_done == 10
    assert 40 <= commits[0] <= 42


def test_a_claim_marks_its_first_job_running_in_the_reserving_transaction(
    quiet_registry, datastore, queue
):
    uuids = [submit(QuietJob, datastore, queue) for _ in range(5)]
    lifecycle = Lifecycle(datastore, queue, quiet_registry)
    claims = lifecycle.claim(3, 0)
    assert claims is not None
    assert [claim.uuid for claim in claims] == uuids[:3]
    assert [claim.started for claim in claims] == [True, False, False]
    assert [stored(datastore, uuid)["running"] for uuid in uuids[:3]] == [True, False, False]
    assert claims[0].cas == datastore.read_with_cas(f"zerog_job_{uuids[0]}")[1]
    assert entries(queue) == {"ready": 2, "reserved": 3, "delayed": 0}
    for claim in claims:
        lifecycle.release_claim(claim)
    assert stored(datastore, uuids[0])["running"] is False
    assert entries(queue) == {"ready": 5, "reserved": 0, "delayed": 0}


def test_a_claim_on_an_empty_queue_and_on_another_database(quiet_registry, datastore, queue,
                                                           tmp_path):
    assert Lifecycle(datastore, queue, quiet_registry).claim(5, 0) == []
    with ExitStack() as stack:
        urls = [f"sqlite:///{tmp_path / 'other.sqlite3'}"]
        if isinstance(queue, pgqueue.PostgresQueue):  # another schema of the database
            urls.append(stack.enter_context(postgres_url(tmp_path)))
        for url in urls:
            other = make_queue(url, "test_jobs")
            stack.callback(other.close)
            assert Lifecycle(datastore, other, quiet_registry).claim(5, 0) is None


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_a_claim_of_a_bad_count_is_refused(quiet_registry, datastore, queue, count):
    with pytest.raises(ValueError, match="count must be a positive integer"):
        Lifecycle(datastore, queue, quiet_registry).claim(count, 0)


def test_a_job_cancelled_before_its_claim_does_not_start(quiet_registry, datastore, queue):
    uuid = submit(QuietJob, datastore, queue)
    request_cancel(datastore, uuid)
    claims = Lifecycle(datastore, queue, quiet_registry).claim(1, 0)
    assert claims is not None and claims[0].started is False
    assert stored(datastore, uuid)["running"] is False
    worker = make_worker(quiet_registry, datastore, queue)
    worker.process_entry(claims[0].entry)
    doc = stored(datastore, uuid)
    assert (doc["resultCode"], doc["running"]) == (410, False)


def test_a_job_cancelled_while_its_batch_runs_does_not_start(quiet_registry, datastore, queue):
    first = submit(StopsWorkerJob, datastore, queue)
    second = submit(QuietJob, datastore, queue)
    worker = make_worker(quiet_registry, datastore, queue, batch=2)
    real_run = StopsWorkerJob.run

    def cancel_the_next(job: StopsWorkerJob) -> Any:
        request_cancel(datastore, second)
        return 200

    StopsWorkerJob.run = cancel_the_next  # type: ignore[method-assign]
    try:
        worker.run(burst=True)
    finally:
        StopsWorkerJob.run = real_run  # type: ignore[method-assign]
    assert stored(datastore, first)["resultCode"] == 200
    doc = stored(datastore, second)
    assert (doc["resultCode"], doc["running"]) == (410, False)


def test_a_started_claim_whose_job_cannot_load_is_marked_not_running(
    quiet_registry, datastore, queue, monkeypatch
):
    uuid = submit(QuietJob, datastore, queue)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot load")

    worker = make_worker(quiet_registry, datastore, queue)
    monkeypatch.setattr(quiet_registry, "stored_job", broken)
    worker.run(burst=True)
    doc = stored(datastore, uuid)
    # released and tried again (then dropped) as before claims, never left running
    assert (doc["running"], doc["resultCode"], doc["errors"]) == (False, NO_RESULT, [])


def test_a_result_whose_entry_was_taken_over_is_recorded_once(
    quiet_registry, datastore, queue, caplog
):
    uuid = submit(QuietJob, datastore, queue)
    lifecycle = Lifecycle(datastore, queue, quiet_registry)
    claims = lifecycle.claim(1, 0)
    assert claims is not None
    # another worker reserved the entry since (this holder's lease ran out)
    take_over(queue)
    worker = make_worker(quiet_registry, datastore, queue)
    worker._run_claim(claims[0], None)
    assert stored(datastore, uuid)["resultCode"] == 200
    assert "was taken over by another worker" in caplog.text
    assert entries(queue)["reserved"] == 1


def take_over(queue: Any) -> None:
    """Count one more reserve of every entry, as another worker's would."""
    if isinstance(queue, pgqueue.PostgresQueue):
        with psycopg.connect(queue._connections.settings.conninfo, autocommit=True) as conn:
            conn.execute(f"UPDATE {queue.table} SET reserves = reserves + 1")
        return
    with queue._db.connect(write=True) as conn:
        conn.execute("UPDATE queue SET reserves = reserves + 1")


# -- batches -------------------------------------------------------------------


def test_a_batch_worker_runs_every_claimed_job(registry, datastore, queue):
    uuids = [submit(SleepJob, datastore, queue, seconds=0.01) for _ in range(7)]
    worker = make_worker(registry, datastore, queue, batch=3)
    worker.run(burst=True)
    assert worker.jobs_done == 7
    for uuid in uuids:
        doc = stored(datastore, uuid)
        assert (doc["resultCode"], doc["running"], doc["errorCount"]) == (200, False, 0)
    assert entries(queue) == {"ready": 0, "reserved": 0, "delayed": 0}


def test_a_stopping_batch_worker_gives_back_the_jobs_it_did_not_run(
    quiet_registry, datastore, queue
):
    first = submit(StopsWorkerJob, datastore, queue)
    rest = [submit(QuietJob, datastore, queue) for _ in range(4)]
    worker = make_worker(quiet_registry, datastore, queue, batch=5)
    StopsWorkerJob.worker = worker
    try:
        worker.run()
    finally:
        StopsWorkerJob.worker = None
    assert worker.jobs_done == 1
    assert stored(datastore, first)["resultCode"] == 200
    # ready at once, not held until their leases run out, and not running
    assert entries(queue) == {"ready": 4, "reserved": 0, "delayed": 0}
    for uuid in rest:
        doc = stored(datastore, uuid)
        assert (doc["resultCode"], doc["running"], doc["errors"]) == (NO_RESULT, False, [])
    make_worker(quiet_registry, datastore, queue).run(burst=True)
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in rest)


def test_a_draining_batch_worker_gives_back_its_claims(quiet_registry, datastore, queue):
    uuids = [submit(QuietJob, datastore, queue) for _ in range(3)]
    worker = make_worker(quiet_registry, datastore, queue, batch=3)
    claims = worker._claim(0)
    assert len(claims) == 3
    worker._pause_watch.paused = lambda datastore: True  # type: ignore[method-assign]
    assert worker._run_claims(claims) is False
    assert worker.jobs_done == 0
    assert entries(queue) == {"ready": 3, "reserved": 0, "delayed": 0}
    assert [stored(datastore, uuid)["running"] for uuid in uuids] == [False] * 3


def test_a_batch_keeps_the_leases_of_the_jobs_that_wait(registry, datastore, db_url):
    queue = make_queue(db_url, "test_jobs", default_ttr=0.6)
    try:
        uuids = [submit(SleepJob, datastore, queue, seconds=0.4) for _ in range(3)]
        worker = make_worker(registry, datastore, queue, batch=3, ttr=0.6)
        worker.run(burst=True)
        # 1.2 s of work on leases of 0.6 s: none ran out, no job ran twice
        for uuid in uuids:
            doc = stored(datastore, uuid)
            assert (doc["resultCode"], doc["runs"], doc["errorCount"]) == (200, 1, 0)
        assert worker.jobs_done == 3
    finally:
        queue.close()


def test_a_killed_batch_worker_s_jobs_come_back_after_their_lease(registry, db_url, tmp_path):
    url = db_url
    datastore, queue = make_datastore(url), make_queue(url, "spacewalk_jobs", default_ttr=1)
    uuids = [submit(SleepJob, datastore, queue, seconds=0.5) for _ in range(4)]
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask_spacewalk.worker",
         "--jobs", str(TESTS / "runtime_jobs"), "--datastore", url, "--queue", url,
         "--ttr", "1", "--batch", "4", "--log-level", "WARNING"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        # killed while its first job runs and the other three wait
        assert wait_until(lambda: entries(queue)["reserved"] == 4, timeout=30), (
            (tmp_path / "worker.log").read_text())
        assert wait_until(lambda: stored(datastore, uuids[0])["running"], timeout=30)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # the leases ran out
        assert wait_until(lambda: entries(queue)["ready"] == 4, timeout=30), entries(queue)
        assert stored(datastore, uuids[0])["running"] is True
        worker = make_worker(registry, datastore, queue)
        worker.run(burst=True)
        docs = [stored(datastore, uuid) for uuid in uuids]
        assert [d["resultCode"] for d in docs] == [200] * 4
        # the job killed mid-run counts as killed (its claim marked it
        # running: the next claim finds it so and records the killed run);
        # the others waited, not marked running, and count nothing
        assert [d["errorCount"] for d in docs] == [1, 0, 0, 0], docs
        assert "died" in docs[0]["errors"][0]["msg"]
        assert docs[0]["events"][0]["msg"] == "Killed - restarting"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        datastore.close()
        queue.close()


# -- the option ------------------------------------------------------------------


@SQLITE_ONLY
@pytest.mark.parametrize("batch", [0, -3, MAX_BATCH + 1, 2.0, True, "5", None])
def test_a_bad_batch_is_refused(registry, datastore, queue, batch):
    with pytest.raises(ValueError, match="batch must be"):
        check_batch(batch)
    with pytest.raises(ValueError, match="batch must be"):
        make_worker(registry, datastore, queue, batch=batch)


@pytest.mark.parametrize(("text", "message"), [
    ("0", "batch must be between 1 and 1000, not 0"),
    ("1001", "batch must be between 1 and 1000, not 1001"),
    ("ten", "it is not an integer"),
    ("2.5", "it is not an integer"),
])  # fmt: skip
def test_python_m_worker_refuses_a_bad_batch(text, message, capsys):
    with pytest.raises(SystemExit) as exit:
        worker_main(["--jobs", str(TESTS / "runtime_jobs" / "jobs.py"), "--batch", text])
    assert exit.value.code == 2
    assert f"argument --batch: {text!r}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("command", [worker_command, serve_command])
def test_flask_spacewalk_refuses_a_bad_batch(command):
    result = CliRunner().invoke(command, ["--batch", "0"])
    assert result.exit_code == 2
    assert "Invalid value for '--batch': 0 is not in the range 1<=x<=1000." in result.output


@SQLITE_ONLY
def test_a_batch_on_a_queue_that_cannot_claim_takes_one_entry_at_a_time(
    quiet_registry, datastore, queue, monkeypatch, caplog
):
    monkeypatch.setattr(Lifecycle, "shared", property(lambda self: None))
    uuids = [submit(QuietJob, datastore, queue) for _ in range(3)]
    worker = make_worker(quiet_registry, datastore, queue, batch=10)
    worker.run(burst=True)
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in uuids)
    assert caplog.text.count("cannot claim in batches") == 1


# -- job-write notifications -------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2])
def test_a_waiter_is_woken_at_once_by_a_claim_and_by_a_result(
    quiet_registry, datastore, queue, monkeypatch, batch
):
    # The claim's and the result's transactions write the job through the
    # queue's connection: they notify as the datastore's own writes do. With
    # batch 2, the second job is marked running in the first one's result
    # transaction.
    monkeypatch.setattr(changes, "RECHECK_INTERVAL", 60.0)  # only a notification wakes
    submit(SleepJob, datastore, queue, seconds=0.3)
    uuid = submit(SleepJob, datastore, queue, seconds=0.3)
    _, cas = datastore.read_with_cas(make_key(uuid))
    worker = make_worker(quiet_registry, datastore, queue, batch=batch)
    watch = JobWatch(datastore)
    seen = []
    with watch_writes(datastore, uuid):
        thread = threading.Thread(target=worker.run, kwargs={"burst": True})
        thread.start()
        try:
            for _ in range(10):  # running, its own saves, then its result
                start = time.monotonic()
                document, cas = watch.wait(uuid, cas, 10)
                seen.append((time.monotonic() - start, document))
                if document["resultCode"] != NO_RESULT:
                    break
        finally:
            thread.join(30)
    assert not thread.is_alive() and worker.jobs_done == 2
    assert seen[0][1]["running"] is True and seen[0][1]["resultCode"] == NO_RESULT, seen
    assert (seen[-1][1]["running"], seen[-1][1]["resultCode"]) == (False, 200), seen
    assert all(took < 5 for took, _ in seen), seen


@contextmanager
def watch_writes(datastore: Any, uuid: str) -> Iterator[None]:
    """Listen before the first write, so that none is missed."""
    with datastore.job_writes(uuid):
        yield
