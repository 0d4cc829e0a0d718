"""A purge of 100,000 finished jobs on SQLite while a client POSTs jobs.

Run ``python benchmarks/purge_bench.py`` (``make bench`` runs it). It stores
``--jobs`` finished no-op jobs last written eight days ago in a SQLite file
(in transactions of 10,000 through the backend's own write), starts gunicorn
(2 sync workers) serving benchmarks/bench_app.py on that file, and POSTs
``/bench/noop/job`` without a pause from ``--clients`` threads, one
connection per request: first for ``--baseline`` seconds with nothing else
running, then while a child process deletes the old jobs as ``flask
spacewalk purge --older-than 7d`` does (the same function, batches of
``--batch``). It prints the purge's duration and rate, its longest batch
(what a worker's next job would wait), and the POSTs' count and p50, p99
and max latency without and during the purge. SQLite's write lock is free
between two batches, so no POST should wait 100 ms.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.http_bench import gunicorn  # noqa: E402
from benchmarks.procs import _call, in_child  # noqa: E402
from flask_spacewalk import make_datastore, make_queue  # noqa: E402
from flask_spacewalk.runtime.job import make_key  # noqa: E402
from flask_spacewalk.runtime.retention import BATCH  # noqa: E402

JOB_TYPE = "bench_noop"
#: Rows written per transaction while seeding.
SEED_CHUNK = 10_000


def document(n: int, written: dt.datetime) -> tuple[str, dict[str, Any]]:
    """Finished no-op job ``n``, last written at ``written``."""
    uuid = str(uuid_module.UUID(int=n, version=4))
    stamp = (written - dt.timedelta(milliseconds=n)).isoformat()
    return make_key(uuid), {
        "documentType": "zerog_job", "jobType": JOB_TYPE, "schemaVersion": 1.0,
        "createdAt": stamp, "updatedAt": stamp, "uuid": uuid, "logId": f"{JOB_TYPE}_{uuid}",
        "queueName": "spacewalk_jobs", "queueKwargs": {}, "queueJobId": n + 1,
        "events": [{"msg": f"starting {JOB_TYPE} job {uuid}", "timeStamp": stamp}],
        "errors": [], "warnings": [], "running": False, "errorCount": 0,
        "completeness": 1.0, "tickcount": 0.0, "tickval": 0.0, "resultCode": 200,
    }  # fmt: skip


def seed(url: str, count: int, age_days: float = 8) -> float:
    """Store ``count`` finished jobs last written ``age_days`` ago; seconds taken."""
    from flask_spacewalk.backends.sqlite import _write_document
    from flask_spacewalk.runtime.status import index_columns, job_index

    store = make_datastore(url)
    written = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=age_days)
    started = time.perf_counter()
    for first in range(0, count, SEED_CHUNK):
        with store._db.connect(write=True) as conn:
            for n in range(first, min(first + SEED_CHUNK, count)):
                key, value = document(n, written)
                _write_document(conn, key, json.dumps(value),
                                index_columns(job_index(key, value)), True)  # fmt: skip
    store.close()
    return time.perf_counter() - started


def purge_store(url: str, older_than: float, batch: int) -> dict[str, Any]:
    """Purge the store as ``flask spacewalk purge`` does: counts, seconds
    in all and of the longest batch."""
    from benchmarks.bench_jobs import NoopJob
    from flask_spacewalk.runtime.lifecycle import Lifecycle
    from flask_spacewalk.runtime.registry import JobRegistry
    from flask_spacewalk.runtime.retention import PurgeCount, cutoff, purge

    datastore, queue = make_datastore(url), make_queue(url, "spacewalk_jobs")
    lifecycle = Lifecycle(datastore, queue, JobRegistry([NoopJob]))
    # how long each batch's transaction holds the write lock
    held: list[float] = []
    delete_jobs = datastore.delete_jobs

    def timed(jobs: Any) -> list[str]:
        started = time.perf_counter()
        try:
            return delete_jobs(jobs)
        finally:
            held.append(time.perf_counter() - started)

    datastore.delete_jobs = timed  # type: ignore[method-assign]
    total, batches = PurgeCount(), []
    started = last = time.perf_counter()
    for count in purge(lifecycle, frozenset({JOB_TYPE}), cutoff(older_than), batch=batch):
        now = time.perf_counter()
        total += count
        batches.append(now - last)
        last = now
    seconds = time.perf_counter() - started
    datastore.close()
    queue.close()
    return {"deleted": total.deleted, "skipped": total.skipped, "seconds": seconds,
            "batch": statistics.median(batches), "longest_batch": max(batches),
            "delete": statistics.median(held), "longest_delete": max(held)}  # fmt: skip


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """Count, and p50, p99 and max in ms, of latencies in seconds."""
    if not latencies:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"count": len(ordered), "p50": statistics.median(ordered) * 1000,
            "p99": pick(0.99), "max": ordered[-1] * 1000}  # fmt: skip


@contextlib.contextmanager
def purge_child(url: str, batch: int) -> Iterator[Callable[[], dict[str, Any]]]:
    """A forked child that runs :func:`purge_store` when the function
    yielded is called, which returns its result."""
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    here, there = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_call, args=(there, go, purge_store, (url, 7 * 86400, batch)),
                        daemon=True)  # fmt: skip
    child.start()
    there.close()

    def start() -> dict[str, Any]:
        go.set()
        if not here.poll(3600):
            raise RuntimeError("the purge did not end in an hour")
        status, value = here.recv()
        if status != "ok":
            raise RuntimeError(f"the purge failed:\n{value}")
        return value  # type: ignore[no-any-return]

    try:
        yield start
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join(5)


class Posters:
    """Threads POSTing no-op jobs one after another until stopped."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post) for _ in range(clients)]

    def _post(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", "/bench/noop/job", b"{}",
                             {"Content-Type": "application/json"})  # fmt: skip
                response = conn.getresponse()
                response.read()
                if response.status != 201:
                    self.failures.append(str(response.status))
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            finally:
                conn.close()
            self.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> Posters:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/purge.sqlite3"
        seeded = in_child(seed, url, args.jobs)
        print(f"stored {args.jobs:,} finished jobs in {seeded:.1f} s")
        with gunicorn(url, url, ["-w", "2"]) as (port, _):
            with Posters(port, args.clients) as warm_up:
                time.sleep(1)
            with Posters(port, args.clients) as baseline:
                time.sleep(args.baseline)
            # forked before the client threads start: a fork while they are
            # in a request stalled those requests 2 s (the driver's, not the
            # server's)
            with purge_child(url, args.batch) as start:
                with Posters(port, args.clients) as during:
                    result = start()
        left = make_datastore(url)
        remaining = len(left.list_jobs(_query()))
        left.close()
    everyone = (warm_up, baseline, during)
    created = sum(len(p.latencies) - len(p.failures) for p in everyone)
    print(f"purge: {result['deleted']:,} jobs deleted ({result['skipped']} skipped) in"
          f" {result['seconds']:.1f} s = {result['deleted'] / result['seconds']:,.0f} jobs/s")
    print(f"batches of {args.batch}: {result['batch'] * 1000:.1f} ms each (median), longest"
          f" {result['longest_batch'] * 1000:.1f} ms; their delete transaction (the write lock)"
          f" {result['delete'] * 1000:.1f} ms, longest {result['longest_delete'] * 1000:.1f} ms")
    print(f"POSTs by {args.clients} client(s), gunicorn -w 2 (sync), one connection each:")
    print(f"{'':<16}{'POSTs':>8}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, posters, seconds in (("without purge", baseline, args.baseline),
                                   ("during purge", during, result["seconds"])):  # fmt: skip
        s = latency_summary(posters.latencies)
        print(f"{name:<16}{s['count']:>8}{s['count'] / seconds:>8.0f}{s['p50']:>9.1f}"
              f"{s['p99']:>9.1f}{s['max']:>9.1f}")
    failures = [failure for p in everyone for failure in p.failures]
    if failures or result["deleted"] != args.jobs or remaining != created:
        print(f"FAILED: {len(failures)} POST failures {failures[:3]}, {result['deleted']} of"
              f" {args.jobs} deleted, {remaining} jobs left for {created} POSTed")
        return 1
    worst = latency_summary(during.latencies)["max"]
    print(f"longest POST during the purge: {worst:.1f} ms "
          f"({'ok' if worst <= 100 else 'ABOVE'} the 100 ms target)")
    return 0


def _query() -> Any:
    from flask_spacewalk.runtime.query import JobQuery

    return JobQuery(limit=10**9)


if __name__ == "__main__":
    sys.exit(main())
