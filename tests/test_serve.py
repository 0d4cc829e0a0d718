"""``flask spacewalk serve`` end to end: gunicorn and the job supervisor side
by side, and every way one of their processes can end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from seed import call, free_port

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 45) -> None:
    # generous: a bound on liveness, met in a second on a quiet machine, not
    # a timing (an orphaned gunicorn worker notices its arbiter's death on
    # its next loop, which a loaded machine delays)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


@dataclass
class Served:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def web_worker(self) -> tuple[int, int]:
        """A web worker's pid and its parent's (the gunicorn arbiter)."""
        body = call(self.base, "/serve-test/pid")[2]
        return body["pid"], body["ppid"]

    def job_supervisors(self, arbiter: int) -> list[int]:
        # serve's children are the arbiter and the job supervisor, whose
        # children are the job workers (web workers have none).
        return [c for c in children(self.proc.pid) if c != arbiter and children(c)]

    def job_side(self, arbiter: int) -> tuple[int, list[int]]:
        """The job supervisor's pid and its job workers'."""
        wait_until(lambda: len(self.job_supervisors(arbiter)) == 1, "one job supervisor runs")
        [supervisor] = self.job_supervisors(arbiter)
        return supervisor, children(supervisor)

    def assert_job_side_untouched(self, arbiter: int, before: tuple[int, list[int]]) -> None:
        """Jobs still run, on the very processes that ran them before."""
        self.run_job()
        self.run_job()  # a job worker told to stop would take one more at most
        assert self.job_side(arbiter) == before
        assert self.proc.poll() is None

    def run_job(self, timeout: float = 15) -> None:
        """POST a job and see a job worker finish it."""
        status, _, body = call(
            self.base, "/examples/fizz_buzz/job", {"n": 5}, {"Content-Type": "application/json"}
        )
        assert status == 201, body
        uuid = body["uuid"]

        def finished() -> bool:
            return call(self.base, f"/examples/progress/{uuid}")[2]["result"] != -1

        wait_until(finished, f"job {uuid} finished\n{self.output()}", timeout)
        assert call(self.base, f"/examples/progress/{uuid}")[2]["result"] == 200


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start ``flask spacewalk serve`` with extra arguments and environment."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        port = free_port()
        environ = dict(
            os.environ,
            FLASK_SPACEWALK_DATASTORE_URL=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
            PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]),
            **(env or {}),
        )
        log = tmp_path / f"serve-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "serve_app", "spacewalk", "serve",
                 "--bind", f"127.0.0.1:{port}", "--web-workers", "2", "--processes", "1",
                 "--grace", "5", *args],
                cwd=TESTS, env=environ, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(proc)
        served = Served(f"http://127.0.0.1:{port}", proc, log)

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}:\n{served.output()}")
            try:
                urllib.request.urlopen(served.base + "/examples/branches", timeout=1).read()
            except OSError:
                return False
            return True

        wait_until(up, "serve answered", 30)
        return served

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the session, so no test leaves a process
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


def test_sigterm_to_a_web_worker_leaves_the_job_workers_running(serve):
    served = serve()
    worker, arbiter = served.web_worker()
    before = served.job_side(arbiter)
    os.kill(worker, signal.SIGTERM)
    wait_until(lambda: worker not in children(arbiter), "the arbiter reaped the web worker")
    served.assert_job_side_untouched(arbiter, before)


def test_sighup_to_the_arbiter_leaves_the_job_workers_running(serve):
    served = serve()
    _, arbiter = served.web_worker()
    before = served.job_side(arbiter)
    web_workers = set(children(arbiter))
    os.kill(arbiter, signal.SIGHUP)
    # gunicorn starts new web workers and stops the old ones gracefully.
    wait_until(lambda: not web_workers & set(children(arbiter)), "the old web workers ended")
    served.assert_job_side_untouched(arbiter, before)


def test_a_request_past_the_timeout_leaves_the_job_workers_running(serve):
    # sync web workers: one request holds the worker, which --timeout restarts
    served = serve("--timeout", "1", "--threads", "1")
    _, arbiter = served.web_worker()
    before = served.job_side(arbiter)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        # Answered by no one: gunicorn aborts the web worker that holds it.
        urllib.request.urlopen(served.base + "/serve-test/sleep/8.0", timeout=10).read()
    assert "WORKER TIMEOUT" in served.output()
    served.assert_job_side_untouched(arbiter, before)


def test_a_threaded_web_worker_outlives_a_request_past_the_timeout(serve):
    # gthread (the default): a request that waits holds a thread, and the
    # worker still tells the arbiter it is alive (docs/deployment.rst)
    served = serve("--timeout", "1")
    with urllib.request.urlopen(served.base + "/serve-test/sleep/2.5", timeout=10) as answer:
        assert answer.status == 200
    assert "WORKER TIMEOUT" not in served.output()


def test_web_workers_recycled_by_max_requests_leave_the_job_workers_running(serve):
    # Any gunicorn setting can come from GUNICORN_CMD_ARGS, as with gunicorn.
    served = serve(env={"GUNICORN_CMD_ARGS": "--max-requests 2"})
    arbiter = served.web_worker()[1]
    before = served.job_side(arbiter)
    pids = {served.web_worker()[0] for _ in range(12)}
    assert len(pids) > 2  # web workers were recycled
    served.assert_job_side_untouched(arbiter, before)


def test_a_dead_job_supervisor_is_restarted(serve):
    served = serve()
    _, arbiter = served.web_worker()
    supervisor, [job_worker] = served.job_side(arbiter)
    os.kill(supervisor, signal.SIGKILL)
    # The orphaned job worker notices and stops after its current job.
    wait_until(lambda: not alive(job_worker), "the orphaned job worker stopped")
    restarted, job_workers = served.job_side(arbiter)
    assert restarted != supervisor and len(job_workers) == 1
    assert f"job supervisor {supervisor} ended (exit 137)" in served.output()
    served.run_job()
    assert served.job_side(arbiter) == (restarted, job_workers)


def test_sigterm_stops_every_process_and_exits_0(serve):
    served = serve()
    served.run_job()
    # the arbiter, 2 web workers, the job supervisor and its job worker
    wait_until(lambda: len(descendants(served.proc.pid)) == 5, "every process started")
    everyone = descendants(served.proc.pid)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(30) == 0, served.output()
    wait_until(lambda: not any(alive(p) for p in everyone), "every process stopped")


def test_a_dead_arbiter_stops_the_job_workers_and_serve_exits(serve):
    served = serve()
    _, arbiter = served.web_worker()
    everyone = descendants(served.proc.pid)
    os.kill(arbiter, signal.SIGKILL)
    # Web requests would go unanswered: exit so that the operator (or the
    # init system) notices, rather than run job workers alone.
    assert served.proc.wait(30) != 0
    wait_until(lambda: not any(alive(p) for p in everyone), "every process stopped")
    assert "stopping the job workers" in served.output()


def test_a_killed_serve_takes_its_processes_with_it(serve):
    served = serve()
    everyone = descendants(served.proc.pid)
    served.proc.kill()
    served.proc.wait(10)
    wait_until(lambda: not any(alive(p) for p in everyone), "every process stopped")
