"""HTTP: the generated API against a plain Flask view, served the same way.

Part of ``make bench`` (``python -m benchmarks.run``, see
benchmarks/README.md). gunicorn serves ``benchmarks/bench_app.py`` on
loopback (SQLite datastore and queue in a temporary directory, no worker);
wrk loads each endpoint in turn, each run right after a run of ``/plain``
(the baseline: a plain Flask JSON view in the same server), so that both see
the same machine.

The pure parts (:func:`parse_wrk`, :func:`check_post_statuses`) are tested
by tests/test_benchmarks.py without wrk or gunicorn.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent

#: The gunicorn configurations: name -> command-line options.
SERVERS = {
    "sync": ["-w", "2"],
    "gthread": ["-w", "2", "-k", "gthread", "--threads", "4"],
}
CONNECTIONS = (16, 64)

# A wrk Lua script that POSTs and counts the answers' status codes. Each wrk
# thread has its own Lua state: count there, add up in done(). wrk silently
# ignores a script it cannot load and sends GETs instead, so the STATUS lines
# this script prints are the proof that it ran (check_post_statuses).
POST_SCRIPT = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("STATUS %%d %%d\\n", status, count))
  end
end
"""


class BenchError(Exception):
    """A run whose figures cannot be trusted (the reason is the message)."""


@dataclass
class WrkResult:
    """What one wrk run reports."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    #: ``connect``, ``read``, ``write``, ``timeout`` (absent: none)
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Read req/s, p50, p99, socket errors and non-2xx answers from the
    output of ``wrk --latency``.

    :raise BenchError: a figure is missing (no ``--latency``, or wrk failed).
    """
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rate is None:
        raise BenchError(f"no Requests/sec in wrk output:\n{output}")
    percentiles = {
        pct: _ms(value, unit)
        for pct, value, unit in re.findall(
            r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M
        )
    }
    if set(percentiles) != {"50", "99"}:
        raise BenchError(f"no latency distribution in wrk output (--latency?):\n{output}")
    requests = re.search(r"^\s+(\d+) requests in ", output, re.M)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = {}
    if errors:
        socket_errors = {
            name: int(count)
            for name, count in zip(("connect", "read", "write", "timeout"), errors.groups())
            if int(count)
        }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_second=float(rate.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        requests=int(requests.group(1)) if requests else 0,
        socket_errors=socket_errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def check_post_statuses(output: str, expected: int = 201) -> dict[int, int]:
    """The status counts the POST script printed; every answer must be
    ``expected``.

    :raise BenchError: no STATUS line (wrk did not run the script, and sent
        GETs), or another status.
    """
    statuses: dict[int, int] = {}
    for status, count in re.findall(r"^STATUS (\d+) (\d+)$", output, re.M):
        statuses[int(status)] = statuses.get(int(status), 0) + int(count)
    if not statuses:
        raise BenchError(
            "the POST script printed no STATUS line: wrk did not run it (and sent GETs)"
        )
    if set(statuses) != {expected}:
        raise BenchError(f"POST answers other than {expected}: {statuses}")
    return statuses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_wrk(url: str, connections: int, duration: str, script: str | None = None) -> WrkResult:
    """One wrk run (2 threads) against ``url``."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}", "--latency"]
    if script:
        command += ["-s", script]
    command.append(url)
    seconds = float(re.sub(r"[a-z]+$", "", duration) or 0)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    if script:
        check_post_statuses(done.stdout)
    return result


# -- processes ------------------------------------------------------------------


def vm_hwm_kib(pid: int) -> int | None:
    """The peak resident set (VmHWM) of a process, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ")"
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def stop(proc: subprocess.Popen[Any], grace: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_for(check: Callable[[], object], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            check()
            return
        except (OSError, http.client.HTTPException) as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"{what} did not start in {seconds:.0f} s: {exc}") from exc
            time.sleep(0.1)


@contextlib.contextmanager
def gunicorn(
    datastore_url: str, queue_url: str, options: list[str]
) -> Iterator[tuple[int, subprocess.Popen[Any]]]:
    """gunicorn serving bench_app on a free loopback port: ``(port, master)``."""
    port = free_port()
    env = dict(
        os.environ,
        FLASK_SPACEWALK_DATASTORE_URL=datastore_url,
        FLASK_SPACEWALK_QUEUE_URL=queue_url,
        FLASK_SPACEWALK_RUN_INLINE="false",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *options, "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "benchmarks.bench_app:app"],
        cwd=ROOT, env=env,
    )
    try:
        wait_for(lambda: request(port, "GET", "/plain"), "gunicorn")
        yield port, server
    finally:
        stop(server)


def request(port: int, method: str, path: str, body: bytes | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise BenchError(f"{method} {path}: {response.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


# -- the suite -------------------------------------------------------------------


def finished_job(datastore_url: str, port: int) -> str:
    """POST a no-op job, run it with a burst worker (in a child process, so
    this one opens no connection), and return its uuid."""
    from .procs import in_child

    uuid = request(port, "POST", "/bench/noop/job", b"{}")["uuid"]
    in_child(_burst, datastore_url, timeout=60)
    progress = request(port, "GET", f"/bench/progress/{uuid}")
    if progress["result"] != 200:
        raise BenchError(f"the no-op job did not finish: {progress}")
    return str(uuid)


def _burst(url: str) -> int:
    from flask_spacewalk import make_datastore, make_queue
    from flask_spacewalk.runtime.registry import JobRegistry
    from flask_spacewalk.runtime.worker_loop import Worker

    from .bench_jobs import NoopJob

    worker = Worker(
        JobRegistry([NoopJob]), lambda: make_datastore(url),
        lambda name: make_queue(url, name), "spacewalk_jobs",
    )
    worker.run(burst=True)
    return worker.jobs_done


def endpoints(uuid: str) -> dict[str, tuple[str, bool]]:
    """name -> (path, is the POST)."""
    return {
        "leaves": ("/examples/leaves", False),
        "post-schema": ("/examples/fizz_buzz/post-schema", False),
        "POST job": ("/examples/fizz_buzz/job", True),
        "progress": (f"/bench/progress/{uuid}", False),
        "info": (f"/bench/info/{uuid}", False),
    }


def run_http(duration: str, rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every endpoint at every concurrency in every server configuration.

    :return: ``{"runs": [...], "rss_kib": {...}}``, each run a dict with
        ``server``, ``connections``, ``endpoint``, ``round`` and either the
        :class:`WrkResult` fields or ``error``.
    """
    runs: list[dict[str, Any]] = []
    rss: dict[str, int | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(POST_SCRIPT % {"body": '{"n": 20}'})
        for server_name, options in SERVERS.items():
            url = f"sqlite:///{tmp}/{server_name}.sqlite3"
            with gunicorn(url, url, options) as (port, master):
                uuid = finished_job(url, port)
                base = f"http://127.0.0.1:{port}"
                for connections in CONNECTIONS:
                    for round_ in range(rounds):
                        for name, (path, post) in endpoints(uuid).items():
                            for endpoint, target_path, lua in (
                                ("plain", "/plain", None),
                                (name, path, str(script) if post else None),
                            ):
                                run: dict[str, Any] = {
                                    "server": server_name, "connections": connections,
                                    "endpoint": endpoint, "round": round_,
                                    "pair": name,
                                }
                                try:
                                    result = run_wrk(base + target_path, connections,
                                                     duration, lua)
                                    run.update(result.as_dict())
                                    log(f"  {server_name:7} c{connections:<3} {endpoint:12} "
                                        f"{result.requests_per_second:8.0f} req/s  "
                                        f"p50 {result.p50_ms:6.2f} ms  "
                                        f"p99 {result.p99_ms:7.2f} ms"
                                        + (f"  errors {result.errors}"
                                           if result.errors else ""))
                                except (BenchError, subprocess.TimeoutExpired) as exc:
                                    run["error"] = str(exc).splitlines()[0]
                                    log(f"  {server_name} c{connections} {endpoint}: "
                                        f"FAILED {run['error']}")
                                runs.append(run)
                workers = children(master.pid)
                peaks = [p for p in (vm_hwm_kib(w) for w in workers) if p]
                rss[f"gunicorn {server_name} worker"] = max(peaks) if peaks else None
    return {"runs": runs, "rss_kib": rss}
