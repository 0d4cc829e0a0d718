"""Processes, load and bad clients for the reliability tests and the soak.

Every helper reports what it saw (counts, problems) rather than asserting,
so that ``benchmarks/soak.py`` can repeat the same rounds for as long as it
is told and the tests assert on the reports.
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reliability_jobs.jobs import ProgressJob, read_journal

from flask_spacewalk import make_datastore, make_queue
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.worker import queue_name_for

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
RELIABILITY_JOBS = TESTS / "reliability_jobs"
EXAMPLE_JOBS = ROOT / "examples" / "jobs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def rss_kib(pid: int) -> int:
    """The resident set of ``pid`` in KiB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for process {pid}")


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """``predicate()``'s first true value, or ``None`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30) -> int:
    """SIGTERM ``proc`` and wait; SIGKILL it past ``timeout``. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -signal.SIGKILL


def start_workers(
    datastore_url: str,
    queue_url: str,
    log_path: Path,
    *,
    jobs: Path = RELIABILITY_JOBS,
    service: str = "spacewalk",
    processes: int = 3,
    ttr: float = 1,
    grace: float = 5,
) -> subprocess.Popen[bytes]:
    """A worker supervisor (``python -m flask_spacewalk.worker``), logging to
    ``log_path`` (a file, not a pipe nobody reads, which would block it)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(jobs),
             "--datastore", datastore_url, "--queue", queue_url, "--service", service,
             "--processes", str(processes), "--ttr", str(ttr), "--grace", str(grace),
             "--log-level", "WARNING"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )


def queue_size(queue: Any) -> int:
    """Entries in ``queue`` in any state (ready, reserved, delayed, buried)."""
    stats = queue.stats_tube()
    return sum(
        int(stats.get(f"current-jobs-{state}", 0))
        for state in ("ready", "reserved", "delayed", "buried")
    )


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- item 1: kills ------------------------------------------------------------


class Killer(threading.Thread):
    """SIGKILLs a random child of ``parent`` every ``interval`` s (jittered)."""

    def __init__(self, parent: int, interval: float, sig: int = signal.SIGKILL):
        super().__init__(name="reliability-killer", daemon=True)
        self.parent, self.interval, self.sig = parent, interval, sig
        self.kills = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval * random.uniform(0.5, 1.5)):
            children = children_of(self.parent)
            if not children:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(random.choice(children), self.sig)
                self.kills += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join()


@dataclass
class KillReport:
    backend: str
    jobs: int
    kills: int = 0
    reruns: int = 0
    runs: int = 0
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"kill test [{self.backend}]: jobs {self.jobs}, kills {self.kills}, "
                f"re-runs {self.reruns} (runs {self.runs}), elapsed {self.elapsed:.1f} s, "
                f"problems {len(self.problems)}")


def kill_round(
    backend: str,
    datastore_url: str,
    queue_url: str,
    tmp: Path,
    *,
    jobs: int = 1000,
    processes: int = 3,
    kill_every: float = 0.5,
    ttr: float = 1,
    steps: int = 4,
    pause: float = 0.002,
    deadline: float = 120,
) -> KillReport:
    """Run ``jobs`` progress-reporting jobs on ``processes`` workers while a
    random worker is SIGKILLed every ``kill_every`` s; check every job ran to
    result 200 with exactly one final record and the queue ended empty."""
    report = KillReport(backend, jobs)
    journal = str(tmp / f"journal-{backend}-{time.monotonic_ns()}")
    service = f"rel{os.getpid()}"
    datastore = make_datastore(datastore_url)
    queue = make_queue(queue_url, queue_name_for(service), default_ttr=ttr)
    log_path = tmp / f"workers-{backend}.log"
    supervisor: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        supervisor = start_workers(datastore_url, queue_url, log_path, service=service,
                                   processes=processes, ttr=ttr)
        killer = Killer(supervisor.pid, kill_every)
        killer.start()
        try:
            # Enqueued while the workers run (and die): both take seconds.
            uuids = []
            for _ in range(jobs):
                job = ProgressJob(datastore, queue, journal=journal, steps=steps, pause=pause)
                job.enqueue()
                uuids.append(job.uuid)
            pending = set(uuids)
            limit = started + deadline
            while pending and time.monotonic() < limit:
                time.sleep(0.5)
                pending -= set(read_journal(journal)["result"])
                # A worker killed between saving a result and journaling it
                # leaves no line: look such jobs up in the datastore.
                if len(pending) < 50:
                    pending = {u for u in pending if _result(datastore, u) == -1}
            report.elapsed = time.monotonic() - started
        finally:
            killer.stop()
            report.kills = killer.kills
        if pending:
            report.problems.append(f"{len(pending)} jobs unfinished after {deadline} s")
        # Entries of jobs whose worker died after recording the result come
        # back when their lease runs out, and are dropped then.
        if wait_until(lambda: queue_size(queue) == 0, timeout=3 * ttr + 10, interval=0.2) is None:
            report.problems.append(f"queue not empty: {queue.stats_tube()}")  # type: ignore[attr-defined]
        code = stop_process(supervisor)
        if code != 0:
            report.problems.append(f"supervisor exit code {code}:\n{log_tail(log_path)}")
        events = read_journal(journal)
        report.runs = sum(len(pids) for pids in events["run"].values())
        report.reruns = sum(1 for pids in events["run"].values() if len(pids) > 1)
        doubles = {u: pids for u, pids in events["result"].items() if len(pids) > 1}
        if doubles:
            report.problems.append(f"final result recorded twice: {doubles}")
        for uuid in uuids:
            document = datastore.read(make_key(uuid))
            assert isinstance(document, dict)
            got = (document["resultCode"], document["completeness"], document["running"])
            if got != (200, 1.0, False):
                report.problems.append(f"job {uuid}: (result, completeness, running) {got}")
    finally:
        if supervisor is not None and supervisor.poll() is None:
            stop_process(supervisor)  # a check above raised
        for store in (datastore, queue):
            store.close()  # type: ignore[attr-defined]
    return report


def _result(datastore: Any, uuid: str) -> int:
    document = datastore.read(make_key(uuid))
    return int(document["resultCode"]) if isinstance(document, dict) else -1


# -- items 2-4: the web tier --------------------------------------------------


class WebService:
    """gunicorn (sync workers) serving ``examples.app`` on SQLite, beside a
    worker supervisor running its jobs."""

    def __init__(self, tmp: Path, web_workers: int = 4, job_workers: int = 2):
        self.tmp = tmp
        self.db_path = tmp / "jobs.sqlite3"
        self.datastore_url = f"sqlite:///{self.db_path}"
        self.port = free_port()
        self.web_workers, self.job_workers = web_workers, job_workers
        self.web_log = tmp / "gunicorn.log"
        self.workers_log = tmp / "workers.log"
        self.web: subprocess.Popen[bytes] | None = None
        self.workers: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, FLASK_SPACEWALK_DATASTORE_URL=self.datastore_url)
        with open(self.web_log, "ab") as log:
            self.web = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--workers", str(self.web_workers),
                 "--bind", f"127.0.0.1:{self.port}", "--graceful-timeout", "20",
                 *control_socket(self.tmp), "examples.app:app"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.workers = start_workers(
            self.datastore_url, self.datastore_url, self.workers_log, jobs=EXAMPLE_JOBS,
            processes=self.job_workers, ttr=5,
        )
        if not wait_until(self._ready, timeout=30, interval=0.1):
            raise RuntimeError(f"gunicorn did not start:\n{log_tail(self.web_log)}")

    def _ready(self) -> bool:
        assert self.web is not None
        if self.web.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log_tail(self.web_log)}")
        try:
            return request(self.port, "GET", "/examples/branches")[0] == 200 and (
                len(self.web_pids()) == self.web_workers
            )
        except OSError:
            return False

    def web_pids(self) -> list[int]:
        assert self.web is not None
        return children_of(self.web.pid)

    def stop(self) -> tuple[int, int]:
        """Stop both; their exit codes (web, workers)."""
        codes = []
        for proc in (self.web, self.workers):
            codes.append(stop_process(proc) if proc is not None else 0)
        return codes[0], codes[1]

    def __enter__(self) -> WebService:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def control_socket(tmp: Path) -> list[str]:
    """gunicorn options for a control socket of this instance's own: recent
    gunicorn versions give every instance the same path by default."""
    from gunicorn.config import Config

    if "control_socket" in Config().settings:
        return ["--control-socket", str(tmp / "gunicorn.ctl")]
    return []


def request(
    port: int, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    """One request on a connection of its own: status, headers, JSON body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw
        return response.status, dict(response.getheaders()), data
    finally:
        conn.close()


@dataclass
class LoadReport:
    posts: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    poll_statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    created: list[str] = field(default_factory=list)
    disruptions: int = 0
    elapsed: float = 0.0
    finished_after: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self, name: str) -> str:
        return (f"{name}: {self.posts} POSTs in {self.elapsed:.1f} s "
                f"({self.posts / max(self.elapsed, 1e-9):.0f}/s), 201: {len(self.created)}, "
                f"statuses {dict(self.statuses)}, polls {dict(self.poll_statuses)}, "
                f"failed requests {dict(self.failures)}, disruptions {self.disruptions}, "
                f"all jobs finished {self.finished_after:.1f} s after the last POST, "
                f"problems {len(self.problems)}")


JOB_BODY = json.dumps({"n": 15}).encode()
JSON = {"Content-Type": "application/json"}


def http_load(
    service: WebService,
    *,
    posts: int = 4000,
    clients: int = 16,
    poll_every: int = 4,
    disrupt: Callable[[], None] | None = None,
    disrupt_every: int = 500,
    finish_deadline: float = 120,
) -> LoadReport:
    """``clients`` threads POST ``posts`` jobs in all, each polling the
    progress of one of its jobs every ``poll_every`` POSTs; ``disrupt`` runs
    each time ``disrupt_every`` more POSTs were answered (counted in
    answers, not seconds, so that replaced web workers get to boot and
    serve on a slow machine). Then every uuid answered 201 must
    be unique, visible to progress, stored, and finish with result 200; the
    report's ``problems`` say which were not."""
    report = LoadReport(posts=posts)
    lock = threading.Lock()
    done = threading.Event()

    def client(count: int) -> None:
        mine: list[str] = []
        for i in range(count):
            try:
                status, _, body = request(service.port, "POST", "/examples/fizz_buzz/job",
                                          JOB_BODY, JSON)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    report.failures[type(exc).__name__] += 1
                continue
            with lock:
                report.statuses[status] += 1
            if status == 201:
                mine.append(body["uuid"])
            if mine and i % poll_every == 0:
                try:
                    polled = request(service.port, "GET",
                                     f"/examples/progress/{random.choice(mine)}")[0]
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        report.failures[type(exc).__name__] += 1
                    continue
                with lock:
                    report.poll_statuses[polled] += 1
        with lock:
            report.created.extend(mine)

    def disruptor() -> None:
        assert disrupt is not None
        threshold = disrupt_every
        while not done.wait(0.05):
            with lock:
                answered = sum(report.statuses.values())
            if answered >= threshold:
                disrupt()
                report.disruptions += 1
                threshold = answered + disrupt_every

    shares = [posts // clients + (1 if i < posts % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    if disrupt is not None:
        threads.append(threading.Thread(target=disruptor))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads[:clients]:
        thread.join()
    report.elapsed = time.monotonic() - started
    done.set()
    for thread in threads[clients:]:
        thread.join()

    # Statuses are the caller's to judge: a restart may answer a clean 503.
    if set(report.poll_statuses) - {200}:
        report.problems.append(f"progress of a 201 job not 200: {dict(report.poll_statuses)}")
    duplicates = [u for u, n in collections.Counter(report.created).items() if n > 1]
    if duplicates:
        report.problems.append(f"uuids answered twice: {duplicates[:10]}")
    finished = time.monotonic()
    report.problems += check_finished(service.datastore_url, report.created, finish_deadline)
    report.finished_after = time.monotonic() - finished
    return report


def check_finished(datastore_url: str, uuids: list[str], deadline: float) -> list[str]:
    """Problems with the jobs ``uuids``: missing, or not finished with 200
    within ``deadline`` s."""
    problems = []
    datastore = make_datastore(datastore_url)
    try:
        missing = [u for u in uuids if datastore.read(make_key(u)) is None]
        if missing:
            problems.append(f"{len(missing)} jobs answered 201 are not stored: {missing[:5]}")
        pending = set(uuids) - set(missing)
        limit = time.monotonic() + deadline
        while pending and time.monotonic() < limit:
            pending = {u for u in pending if _result(datastore, u) == -1}
            if pending:
                time.sleep(0.2)
        if pending:
            problems.append(f"{len(pending)} jobs unfinished after {deadline} s")
        failed = [u for u in uuids if u not in pending and u not in missing
                  and _result(datastore, u) != 200]
        if failed:
            problems.append(f"{len(failed)} jobs did not finish with 200: {failed[:5]}")
    finally:
        datastore.close()  # type: ignore[attr-defined]
    return problems


class Restarter:
    """Alternately SIGHUPs gunicorn's arbiter (which replaces every worker)
    and SIGTERMs one random web worker (which the arbiter replaces)."""

    def __init__(self, service: WebService):
        self.service = service
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self) -> None:
        assert self.service.web is not None
        if sum(self.counts.values()) % 2 == 0:
            self.service.web.send_signal(signal.SIGHUP)
            self.counts["SIGHUP arbiter"] += 1
            return
        pids = self.service.web_pids()
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(random.choice(pids), signal.SIGTERM)
                self.counts["SIGTERM worker"] += 1


# -- item 3: bad clients ------------------------------------------------------


def raw_exchange(
    port: int,
    head: bytes,
    body: bytes = b"",
    *,
    chunk: int = 65536,
    pause: float = 0.0,
    close_after_send: bool = False,
    shut_write: bool = False,
    timeout: float = 30,
) -> tuple[int | None, bytes]:
    """Send ``head`` then ``body`` on a raw socket; the status and body of the
    answer, or ``(None, b"")`` when there is none.

    ``body`` goes in ``chunk``-byte pieces, ``pause`` s apart, from a thread
    of its own, so that a server answering before it read everything (413)
    is heard; a send the server refuses (reset, broken pipe) ends the body.
    ``close_after_send`` closes without reading (a client that walks away);
    ``shut_write`` half-closes after sending (a body shorter than promised).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(head)

        def send_body() -> None:
            with contextlib.suppress(OSError):
                for start in range(0, len(body), chunk):
                    if pause:
                        time.sleep(pause)
                    sock.sendall(body[start:start + chunk])
                if shut_write:
                    sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        if close_after_send:
            sender.join()
            return None, b""
        data = b""
        with contextlib.suppress(OSError):
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        sender.join(timeout)
    finally:
        sock.close()
    if not data:
        return None, b""
    status_line, _, rest = data.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


def post_head(path: str, length: int | None, content_type: str = "application/json",
              extra: str = "") -> bytes:
    """A POST request head; ``length`` None for a chunked body."""
    framing = (f"Content-Length: {length}" if length is not None
               else "Transfer-Encoding: chunked")
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"{framing}\r\nConnection: close\r\n{extra}\r\n").encode()


def get_head(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def chunked(data: bytes, size: int = 65536) -> bytes:
    pieces = [b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
              for i in range(0, len(data), size)]
    return b"".join(pieces) + b"0\r\n\r\n"


@contextlib.contextmanager
def web_service(tmp: Path, **kwargs: Any) -> Iterator[WebService]:
    service = WebService(tmp, **kwargs)
    try:
        service.start()
        yield service
    finally:
        service.stop()
