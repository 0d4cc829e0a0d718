"""A no-op job's result over HTTP: ``Prefer: wait`` beside polling.

Run ``python benchmarks/wait_bench.py`` (``make bench`` runs it). It starts
gunicorn (2 gthread workers of 4 threads) serving benchmarks/bench_app.py on
a SQLite file, and one job worker process on the same file, then, from one
client on one kept-alive connection, ``--jobs`` times each, interleaved:

- ``wait``: ``POST /bench/noop/job`` with ``Prefer: wait=5``, until its
  ``200`` answer with the result;
- ``poll``: a plain ``POST``, then ``GET /bench/progress/<uuid>`` every
  ``--poll-interval`` seconds until the result.

It prints, for each, p50, p99 and max of the time from sending the POST to
holding the result, and the requests a job took. The figures go into
docs/performance.rst by hand.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.http_bench import SERVERS, BenchError, gunicorn  # noqa: E402
from benchmarks.purge_bench import latency_summary  # noqa: E402

QUEUE_NAME = "spacewalk_jobs"  # bench_app's service is the default, "spacewalk"
#: The longest a job may take before the run fails.
JOB_DEADLINE = 10.0


def run_worker(url: str) -> None:
    """A job worker on ``url`` until terminated (a forked child)."""
    from benchmarks.bench_jobs import NoopJob
    from flask_spacewalk import make_datastore, make_queue
    from flask_spacewalk.runtime.registry import JobRegistry
    from flask_spacewalk.runtime.worker_loop import Worker

    Worker(JobRegistry([NoopJob]), lambda: make_datastore(url),
           lambda name: make_queue(url, name), QUEUE_NAME).run()  # fmt: skip


@contextlib.contextmanager
def worker(url: str) -> Iterator[None]:
    process = multiprocessing.get_context("spawn").Process(target=run_worker, args=(url,),
                                                           daemon=True)  # fmt: skip
    process.start()
    try:
        yield
    finally:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(10)


class Client:
    """One kept-alive connection to the server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=JOB_DEADLINE + 5)
        self.requests = 0

    def call(self, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
        body = b"{}" if method == "POST" else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        self.conn.request(method, path, body, all_headers)
        response = self.conn.getresponse()
        data = response.read()
        self.requests += 1
        if response.status >= 300:
            raise BenchError(f"{method} {path}: {response.status} {data[:200]!r}")
        return response.status, json.loads(data)


def waited(client: Client) -> float:
    """Seconds from a POST with Prefer: wait=5 to its answer with the result."""
    started = time.perf_counter()
    status, body = client.call("POST", "/bench/noop/job", {"Prefer": "wait=5"})
    took = time.perf_counter() - started
    if status != 200 or body["result"] != 200:
        raise BenchError(f"the waiting POST was answered {status} {body}")
    return took


def polled(client: Client, interval: float) -> float:
    """Seconds from a plain POST to the progress poll that saw the result."""
    started = time.perf_counter()
    _, body = client.call("POST", "/bench/noop/job")
    path = f"/bench/progress/{body['uuid']}"
    while True:
        _, progress = client.call("GET", path)
        if progress["result"] == 200:
            return time.perf_counter() - started
        if time.perf_counter() - started > JOB_DEADLINE:
            raise BenchError(f"job {body['uuid']} had no result in {JOB_DEADLINE:.0f} s")
        time.sleep(interval)


def run(jobs: int, interval: float, warmup: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/jobs.sqlite3"
        with gunicorn(url, url, SERVERS["gthread"]) as (port, _), worker(url):
            client = Client(port)
            try:
                for _ in range(warmup):  # every gunicorn thread and the worker connect
                    waited(client)
                    polled(client, interval)
                wait_times, poll_times = [], []
                wait_requests = poll_requests = 0
                for _ in range(jobs):
                    before = client.requests
                    wait_times.append(waited(client))
                    wait_requests += client.requests - before
                    before = client.requests
                    poll_times.append(polled(client, interval))
                    poll_requests += client.requests - before
            finally:
                client.conn.close()
    return {
        "wait": {**latency_summary(wait_times), "requests_per_job": wait_requests / jobs},
        "poll": {**latency_summary(poll_times), "requests_per_job": poll_requests / jobs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs of each kind")
    parser.add_argument("--poll-interval", type=float, default=0.05,
                        help="seconds between two polls of progress")  # fmt: skip
    args = parser.parse_args()
    results = run(args.jobs, args.poll_interval)
    print(f"{args.jobs} no-op jobs of each kind, SQLite, gunicorn gthread (2 x 4 threads),"
          f" one worker; polling every {args.poll_interval * 1000:.0f} ms")
    print(f"{'':32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'requests/job':>13}")
    for name, label in (("wait", "POST with Prefer: wait=5"),
                        ("poll", "POST, then poll progress")):
        r = results[name]
        print(f"{label:32} {r['p50']:8.1f} {r['p99']:8.1f} {r['max']:8.1f}"
              f" {r['requests_per_job']:13.1f}")


if __name__ == "__main__":
    main()
