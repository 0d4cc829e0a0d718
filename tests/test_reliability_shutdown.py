"""Graceful shutdown (issue 6, item 4).

SIGTERM to a worker supervisor lets the running job finish within the grace
period, or past it hands the job back to the queue, where another worker
finishes it, with one final record. SIGTERM to gunicorn during a POST load
leaves an SQLite store that passes ``PRAGMA integrity_check`` and holds
every job answered 201.
"""
from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from reliability_jobs.jobs import ProgressJob, read_journal
from reliability_support import (
    JOB_BODY,
    JSON,
    WebService,
    check_finished,
    log_tail,
    request,
    start_workers,
    stop_process,
    wait_until,
)

from flask_spacewalk import make_datastore, make_queue
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.worker import queue_name_for


def _has_children(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

SERVICE = "shutdown"


def _document(datastore: object, uuid: str) -> dict:
    value = datastore.read(make_key(uuid))  # type: ignore[attr-defined]
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("job_seconds", [0.6, 4.0], ids=["within-grace", "past-grace"])
def test_sigterm_to_a_worker_finishes_or_hands_back_its_job(
    tmp_path: Path, job_seconds: float
) -> None:
    grace = 2.0
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    journal = str(tmp_path / "journal")
    datastore = make_datastore(url)
    queue = make_queue(url, queue_name_for(SERVICE), default_ttr=2)
    job = ProgressJob(datastore, queue, journal=journal, steps=10, pause=job_seconds / 10)
    job.enqueue()
    first = start_workers(url, url, tmp_path / "first.log", service=SERVICE, processes=1,
                          ttr=2, grace=grace)
    second = None
    try:
        assert wait_until(lambda: read_journal(journal)["run"], timeout=30), "job never started"
        # A second supervisor, started once the first holds the job.
        second = start_workers(url, url, tmp_path / "second.log", service=SERVICE,
                               processes=1, ttr=2, grace=grace)
        # Up means its signal handlers are set (it forks after): a SIGTERM
        # while it still imports would kill it with -15, on a loaded machine.
        assert wait_until(lambda: _has_children(second.pid), timeout=30), (
            "the second supervisor never started its worker")
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(grace + 20) == 0, log_tail(tmp_path / "first.log")
        stopped_after = time.monotonic() - started
        assert wait_until(lambda: _document(datastore, job.uuid)["resultCode"] != -1,
                          timeout=60), "job never finished"
    finally:
        codes = [stop_process(p) for p in (first, second) if p is not None]
    assert codes == [0, 0]
    events = read_journal(journal)
    document = _document(datastore, job.uuid)
    assert (document["resultCode"], document["completeness"], document["running"]) == (
        200, 1.0, False)
    assert len(events["result"][job.uuid]) == 1, "final result recorded twice"
    runs = events["run"][job.uuid]
    if job_seconds < grace:
        # Finished by the worker that was told to stop, within the grace.
        assert len(runs) == 1 and events["result"][job.uuid] == runs
        assert document["errors"] == []
    else:
        # Interrupted at the end of the grace period and released, unharmed:
        # no error recorded; the second worker ran it again and finished it.
        assert stopped_after >= grace
        assert len(runs) == 2 and runs[0] != runs[1]
        assert events["result"][job.uuid] == [runs[1]]
        assert document["errors"] == []
    datastore.close()  # type: ignore[attr-defined]
    queue.close()  # type: ignore[attr-defined]


def test_sigterm_to_gunicorn_under_post_load_keeps_the_store_whole(tmp_path: Path) -> None:
    service = WebService(tmp_path)
    created: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _, body = request(service.port, "POST", "/examples/fizz_buzz/job",
                                          JOB_BODY, JSON)
            except OSError:
                continue  # the server is going away: a clean failure
            if status == 201:
                with lock:
                    created.append(body["uuid"])

    clients = [threading.Thread(target=client) for _ in range(8)]
    try:
        service.start()
        for thread in clients:
            thread.start()
        assert wait_until(lambda: len(created) >= 200, timeout=60), "no load"
        assert service.web is not None
        service.web.send_signal(signal.SIGTERM)
        web_code = service.web.wait(40)
        stop.set()
        for thread in clients:
            thread.join()
        with sqlite3.connect(service.db_path) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchall()
        # The job workers kept running: every job answered 201 finishes.
        problems = check_finished(service.datastore_url, created, deadline=60)
    finally:
        stop.set()
        for thread in clients:
            if thread.is_alive():
                thread.join()
        _, workers_code = service.stop()
    print(f"gunicorn SIGTERM under POST load: {len(created)} jobs answered 201, all stored")
    assert web_code == 0, log_tail(service.web_log)
    assert integrity == [("ok",)]
    assert problems == []
    assert workers_code == 0, log_tail(service.workers_log)
