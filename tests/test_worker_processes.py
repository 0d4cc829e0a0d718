"""Worker processes for real: supervisor, SIGKILL, SIGTERM, recycling, CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from runtime_jobs.jobs import NoopJob, SleepJob

from flask_spacewalk.runtime.job import make_key

ROOT = Path(__file__).resolve().parent.parent
JOBS = Path(__file__).resolve().parent / "runtime_jobs"

pytestmark = pytest.mark.slow


def start_worker(db_url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(JOBS),
         "--datastore", db_url, "--service", "test", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what or predicate}")


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture
def test_queue(db_url):
    from flask_spacewalk import make_queue

    q = make_queue(db_url, "test_jobs")
    yield q
    q.close()


def doc(datastore, uuid: str) -> dict:
    return datastore.read(make_key(uuid)) or {}


def test_worker_cli_runs_jobs(db_url, datastore, test_queue):
    jobs = [NoopJob(datastore, test_queue) for _ in range(20)]
    for job in jobs:
        job.enqueue()
    proc = start_worker(db_url, "--processes", "2")
    try:
        for job in jobs:
            wait_for(lambda job=job: doc(datastore, job.uuid).get("resultCode") == 200, what="jobs")
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out


def test_sigkill_mid_job_reruns_the_job(db_url, datastore, test_queue):
    job = SleepJob(datastore, test_queue, seconds=30)
    job.enqueue(ttr=1)
    proc = start_worker(db_url, "--ttr", "1", "--grace", "1")
    try:
        first = wait_for(lambda: doc(datastore, job.uuid).get("pids"), what="first run")
        # The job now runs 30 s; kill its worker and make the next run short.
        os.kill(first[0], signal.SIGKILL)
        data = doc(datastore, job.uuid)
        data["seconds"] = 0.1
        datastore.set(job.key(), data)
        final = wait_for(
            lambda: doc(datastore, job.uuid).get("resultCode") == 200 and doc(datastore, job.uuid),
            what="rerun after SIGKILL",
        )
    finally:
        out = stop(proc)
    assert final["runs"] == 2 and final["pids"][0] != final["pids"][1]
    assert "died" in final["errors"][0]["msg"]
    assert proc.returncode == 0, out


def test_sigterm_lets_the_running_job_finish(db_url, datastore, test_queue):
    job = SleepJob(datastore, test_queue, seconds=1.5)
    job.enqueue()
    proc = start_worker(db_url, "--grace", "20")
    try:
        # pids, written by run() itself: "running" is written by the claim, a
        # moment before, and a claim not yet run is given back on SIGTERM
        wait_for(lambda: doc(datastore, job.uuid).get("pids"), what="job start")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    final = doc(datastore, job.uuid)
    assert (final["resultCode"], final["running"], final["errors"]) == (200, False, [])


def test_sigterm_past_grace_releases_the_job(db_url, datastore, test_queue):
    job = SleepJob(datastore, test_queue, seconds=30, steps=30)
    job.enqueue()
    proc = start_worker(db_url, "--grace", "0.5")
    try:
        wait_for(lambda: doc(datastore, job.uuid).get("pids"), what="job start")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    data = doc(datastore, job.uuid)
    assert (data["resultCode"], data["running"], data["errors"]) == (-1, False, [])
    entry = test_queue.reserve(timeout=0)
    assert entry is not None and entry.stats()["releases"] == 1


def test_max_jobs_recycles_worker_processes(db_url, datastore, test_queue):
    from runtime_jobs.jobs import ReturnsJob

    jobs = [ReturnsJob(datastore, test_queue, value=200) for _ in range(6)]
    for job in jobs:
        job.enqueue()
    proc = start_worker(db_url, "--max-jobs", "2")
    try:
        for job in jobs:
            wait_for(lambda job=job: doc(datastore, job.uuid).get("resultCode") == 200, what="jobs")
    finally:
        out = stop(proc)
    pids = {doc(datastore, job.uuid)["pids"][0] for job in jobs}
    assert len(pids) == 3, out


def test_supervisor_restarts_a_dead_worker(db_url, datastore, test_queue):
    proc = start_worker(db_url)
    try:
        first = wait_for(lambda: children_of(proc.pid), what="a worker child")
        os.kill(first[0], signal.SIGKILL)
        second = wait_for(
            lambda: [c for c in children_of(proc.pid) if c != first[0]], what="a new child"
        )
        job = NoopJob(datastore, test_queue)
        job.enqueue()
        wait_for(lambda: doc(datastore, job.uuid).get("resultCode") == 200, what="job")
    finally:
        out = stop(proc)
    assert second and proc.returncode == 0, out


def test_worker_cli_rejects_bad_input(db_url, tmp_path):
    bad_scheme = subprocess.run(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(JOBS),
         "--datastore", "nosuch://x", "--queue", "nosuch://x"], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert bad_scheme.returncode == 2 and "sqlite" in bad_scheme.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(empty),
         "--datastore", db_url], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "no job classes" in proc.stderr
    remote = subprocess.run(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(JOBS),
         "--datastore", "redis://localhost/0"], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )
    assert remote.returncode == 2 and "queue URL is required" in remote.stderr


def test_supervisor_signal_handlers_act_only_in_the_supervisor(monkeypatch):
    from flask_spacewalk.runtime import supervisor as supervisor_module

    read_end, write_end = os.pipe()
    monkeypatch.setattr(
        supervisor_module, "_signal",
        lambda pid, signum: os.write(write_end, f"{pid}:{signum} ".encode()),
    )
    supervisor = supervisor_module.Supervisor(lambda: 0)
    supervisor.children[12345] = time.monotonic()
    # A child forked by the supervisor holds a copy of its state and, until
    # it installs its own, of its handlers: a signal then must not make it
    # stop (or kill) its siblings.
    pid = os.fork()
    if pid == 0:
        try:
            supervisor._on_stop(signal.SIGTERM, None)
            supervisor._on_deadline(signal.SIGALRM, None)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    # The supervisor itself does signal them.
    supervisor._on_deadline(signal.SIGALRM, None)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        assert f.read() == f"12345:{int(signal.SIGKILL)} "


def test_supervisor_children_start_with_default_handlers_and_signals_unblocked():
    from flask_spacewalk.runtime.supervisor import Supervisor

    read_end, write_end = os.pipe()

    def child() -> int:
        handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        os.write(write_end, repr((handlers, sorted(blocked))).encode())
        return 0

    supervisor = Supervisor(child)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            supervisor._spawn()
            os.waitpid(-1, 0)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    assert os.waitpid(pid, 0)[1] == 0
    with os.fdopen(read_end) as f:
        assert f.read() == repr(([signal.SIG_DFL, signal.SIG_DFL], []))
