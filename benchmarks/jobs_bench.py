"""Jobs: worker throughput and POST-to-finished latency on each backend,
beside RQ's SimpleWorker on the same Redis, in the same run.

Part of ``make bench`` (``python -m benchmarks.run``, see
benchmarks/README.md). Backends: a SQLite file; PostgreSQL alone (a schema
of its own in database ``test``, documents and queue); PostgreSQL with a
beanstalkd of its own; Redis (a key prefix
of its own on the shared server, deleted afterwards). RQ uses its own queue
name, job ids and worker names on the same Redis, deleted afterwards too.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Callable

from .http_bench import (
    ROOT,
    SERVERS,
    BenchError,
    children,
    free_port,
    gunicorn,
    stop,
    vm_hwm_kib,
    wait_for,
)
from .procs import in_child, in_children

REDIS = ("127.0.0.1", 6379, 0)
POSTGRES = "postgresql://127.0.0.1:5432/test"
QUEUE_NAME = "spacewalk_jobs"  # bench_app's service is the default, "spacewalk"
BACKENDS = ("SQLite", "PostgreSQL", "PostgreSQL + beanstalkd", "Redis")
#: The backends whose queue shares its datastore's transactions again, each
#: worker claiming this many entries at a time (``worker --batch``): a
#: throughput row of their own, 1 process only, by row name.
BATCH = 50
BATCHED = {f"{backend}, --batch {BATCH}": backend for backend in ("SQLite", "PostgreSQL", "Redis")}
#: A job that has not finished this long after its POST fails the run.
JOB_DEADLINE = 10.0


# -- the backends ------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_backend() -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/jobs.sqlite3"
        yield url, url


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of a new schema in database ``test``, dropped afterwards."""
    import psycopg

    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES}?schema={schema}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def postgres_backend() -> Iterator[tuple[str, str]]:
    """Documents and queue in one schema."""
    with postgres_schema() as url:
        yield url, url


@contextlib.contextmanager
def postgres_beanstalkd_backend() -> Iterator[tuple[str, str]]:
    import psycopg

    schema = f"bench_{secrets.token_hex(5)}"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        beanstalkd = subprocess.Popen(
            ["beanstalkd", "-l", "127.0.0.1", "-p", str(port), "-b", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            try:
                yield f"{POSTGRES}?schema={schema}", f"beanstalkd://127.0.0.1:{port}"
            finally:
                with psycopg.connect(POSTGRES, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            stop(beanstalkd, 10)


def redis_client() -> Any:
    import redis

    host, port, db = REDIS
    return redis.Redis(host=host, port=port, db=db, socket_connect_timeout=2)


def delete_matching(client: Any, pattern: str) -> int:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])
    return len(keys)


@contextlib.contextmanager
def redis_backend() -> Iterator[tuple[str, str]]:
    prefix = f"swbench_{secrets.token_hex(5)}:"
    host, port, db = REDIS
    url = f"redis://{host}:{port}/{db}?prefix={prefix}"
    client = redis_client()
    try:
        yield url, url
    finally:
        delete_matching(client, prefix + "*")
        client.close()


BACKEND_FACTORIES: dict[str, Callable[[], contextlib.AbstractContextManager[tuple[str, str]]]] = {
    "SQLite": sqlite_backend,
    "PostgreSQL": postgres_backend,
    "PostgreSQL + beanstalkd": postgres_beanstalkd_backend,
    "Redis": redis_backend,
}


# -- our worker ---------------------------------------------------------------------


def _enqueue(datastore_url: str, queue_url: str, count: int) -> float:
    from flask_spacewalk import make_datastore, make_queue

    from .bench_jobs import NoopJob

    datastore, queue = make_datastore(datastore_url), make_queue(queue_url, QUEUE_NAME)
    start = time.monotonic()
    for _ in range(count):
        NoopJob(datastore, queue).enqueue()
    return time.monotonic() - start


def _burst_worker(
    datastore_url: str, queue_url: str, batch: int = 1
) -> tuple[int, float, float, int | None]:
    from flask_spacewalk import make_datastore, make_queue
    from flask_spacewalk.runtime.registry import JobRegistry
    from flask_spacewalk.runtime.worker_loop import Worker

    from .bench_jobs import NoopJob

    worker = Worker(
        JobRegistry([NoopJob]), lambda: make_datastore(datastore_url),
        lambda name: make_queue(queue_url, name), QUEUE_NAME, batch=batch,
    )
    start = time.monotonic()
    worker.run(burst=True)
    return worker.jobs_done, start, time.monotonic(), vm_hwm_kib(os.getpid())


def throughput(
    datastore_url: str, queue_url: str, processes: int, count: int, batch: int = 1
) -> float:
    """No-op jobs per second of ``processes`` burst workers (claiming
    ``batch`` entries at a time) on ``count`` jobs enqueued beforehand (the
    enqueue is not timed)."""
    in_child(_enqueue, datastore_url, queue_url, count, timeout=600)
    results = in_children(
        _burst_worker, [(datastore_url, queue_url, batch)] * processes, timeout=600,
        together=True,
    )
    done = sum(r[0] for r in results)
    if done != count:
        raise BenchError(f"{processes} workers ran {done} of {count} jobs")
    return float(done / (max(r[2] for r in results) - min(r[1] for r in results)))


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def latency(datastore_url: str, queue_url: str, jobs: int) -> dict[str, Any]:
    """POST-to-finished latency over HTTP with an idle worker process.

    gunicorn (2 sync workers) serves bench_app; one ``python -m
    flask_spacewalk.worker`` process waits on the queue. For each job, on
    one keep-alive client: POST it, then GET its progress until the result
    is 200; the clock runs from before the POST to the finishing answer.
    Beside it: the POST's own answer time and each progress read's (p50).
    """
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", "benchmarks.bench_jobs",
         "--datastore", datastore_url, "--queue", queue_url, "--service", "spacewalk",
         "--processes", "1", "--log-level", "WARNING"],
        cwd=ROOT,
    )
    try:
        with gunicorn(datastore_url, queue_url, SERVERS["sync"]) as (port, _):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            samples, polls, answers, reads = [], [], [], []
            try:
                for n in range(jobs + 5):  # 5 to warm up
                    time.sleep(0.005)  # let the worker go back to waiting: idle
                    start = time.perf_counter()
                    conn.request("POST", "/bench/noop/job", b"{}",
                                 {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    body = response.read()
                    answered = time.perf_counter()
                    if response.status != 201:
                        raise BenchError(f"POST answered {response.status}: {body[:200]!r}")
                    uuid = json.loads(body)["uuid"]
                    gets = 0
                    while True:
                        asked = time.perf_counter()
                        conn.request("GET", f"/bench/progress/{uuid}")
                        gets += 1
                        finished = json.loads(conn.getresponse().read())["result"] == 200
                        if n >= 5:
                            reads.append(time.perf_counter() - asked)
                        if finished:
                            break
                        if time.perf_counter() - start > JOB_DEADLINE:
                            raise BenchError(f"job {uuid} unfinished after {JOB_DEADLINE} s")
                    if n >= 5:
                        samples.append(time.perf_counter() - start)
                        answers.append(answered - start)
                        polls.append(gets)
            finally:
                conn.close()
        peaks = [p for p in (vm_hwm_kib(c) for c in children(worker.pid)) if p]
    finally:
        stop(worker)
    return {
        "p50_ms": quantile(samples, 0.5) * 1e3,
        "p99_ms": quantile(samples, 0.99) * 1e3,
        "gets_per_job": statistics.mean(polls),
        # where the time goes: the POST's answer, and each progress read
        "post_p50_ms": quantile(answers, 0.5) * 1e3,
        "get_p50_ms": quantile(reads, 0.5) * 1e3,
        "jobs": len(samples),
        "worker_rss_kib": max(peaks) if peaks else None,
    }


# -- RQ -------------------------------------------------------------------------------


def _rq_enqueue(tag: str, first: int, count: int) -> float:
    from rq import Queue

    queue = Queue(tag, connection=redis_client())
    start = time.monotonic()
    for n in range(first, first + count):
        queue.enqueue("benchmarks.rq_jobs.noop", job_id=f"{tag}-{n}")
    return time.monotonic() - start


def _rq_burst_worker(tag: str, name: str) -> tuple[float, float]:
    from rq import Queue, SimpleWorker

    connection = redis_client()
    worker = SimpleWorker([Queue(tag, connection=connection)], connection=connection,
                          name=name)
    start = time.monotonic()
    # WARNING: RQ logs every job at INFO by default; ours logs none. This is
    # RQ's faster setting.
    worker.work(burst=True, logging_level="WARNING")
    return start, time.monotonic()


class RQ:
    """RQ on the shared Redis under one tag (queue name, job ids, worker
    names), cleaned up on close."""

    def __init__(self) -> None:
        self.tag = f"swbench{secrets.token_hex(5)}"
        self.next_id = 0

    def close(self) -> None:
        client = redis_client()
        delete_matching(client, f"rq:*{self.tag}*")
        # RQ also lists every queue (and worker) in shared sets
        client.srem("rq:queues", f"rq:queue:{self.tag}")
        stale = [w for w in client.smembers("rq:workers") if self.tag.encode() in w]
        if stale:
            client.srem("rq:workers", *stale)
        client.close()

    def throughput(self, processes: int, count: int) -> float:
        in_child(_rq_enqueue, self.tag, self.next_id, count, timeout=600)
        self.next_id += count
        names = [(self.tag, f"{self.tag}-burst-{self.next_id}-{n}") for n in range(processes)]
        results = in_children(_rq_burst_worker, names, timeout=600, together=True)
        # RQ 2 and 3 count a worker's jobs in Redis only: check the queue
        # instead, empty and nothing failed
        from rq import Queue

        queue = Queue(self.tag, connection=redis_client())
        if queue.count or queue.failed_job_registry.count:
            raise BenchError(f"{processes} RQ workers left {queue.count} jobs queued "
                             f"and {queue.failed_job_registry.count} failed")
        return float(count / (max(r[1] for r in results) - min(r[0] for r in results)))

    def latency(self, jobs: int) -> dict[str, Any]:
        """Enqueue-to-finished with an idle ``rq worker`` (SimpleWorker)
        process, polling the job's status in this process (no HTTP)."""
        from rq import Queue
        from rq.job import JobStatus

        host, port, db = REDIS
        worker = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "rq"), "worker",
             "-w", "rq.worker.SimpleWorker", "-u", f"redis://{host}:{port}/{db}",
             "-n", f"{self.tag}-idle", "--logging_level", "WARNING", "-P", str(ROOT),
             self.tag],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        connection = redis_client()
        queue = Queue(self.tag, connection=connection)
        samples = []
        try:
            wait_for(lambda: _rq_worker_up(connection, f"{self.tag}-idle"), "rq worker")
            for n in range(jobs + 5):
                time.sleep(0.005)
                start = time.perf_counter()
                job = queue.enqueue("benchmarks.rq_jobs.noop", job_id=f"{self.tag}-l{n}")
                while job.get_status(refresh=True) != JobStatus.FINISHED:
                    if time.perf_counter() - start > JOB_DEADLINE:
                        raise BenchError(f"RQ job unfinished after {JOB_DEADLINE} s")
                if n >= 5:
                    samples.append(time.perf_counter() - start)
            rss = vm_hwm_kib(worker.pid)
        finally:
            stop(worker)
            connection.close()
        return {
            "p50_ms": quantile(samples, 0.5) * 1e3,
            "p99_ms": quantile(samples, 0.99) * 1e3,
            "jobs": len(samples),
            "worker_rss_kib": rss,
        }


def _rq_worker_up(connection: Any, name: str) -> None:
    from rq import Worker

    if name not in {w.name for w in Worker.all(connection=connection)}:
        raise OSError("not registered yet")


# -- the suite -------------------------------------------------------------------------


def run_jobs(count: int, rq_count: int, rounds: int, latency_jobs: int,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Throughput (1 and 2 processes, ``rounds`` rounds, RQ first in each)
    and latency on every backend and on RQ.

    :return: ``{"throughput": {name: {"1": [..], "2": [..]}}, "latency":
        {name: {...}}, "errors": {name: message}}``.
    """
    names = ("RQ", *BACKENDS, *BATCHED)
    throughputs: dict[str, dict[str, list[float]]] = {n: {"1": [], "2": []} for n in names}
    latencies: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        rq = RQ()
        stack.callback(rq.close)
        urls = {}
        for name in BACKENDS:
            try:
                urls[name] = stack.enter_context(BACKEND_FACTORIES[name]())
            except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
                errors[name] = f"backend unavailable: {exc}"
                log(f"  {name}: {errors[name]}")
        for round_ in range(rounds):
            for processes in (1, 2):
                for name in names:
                    backend = BATCHED.get(name, name)
                    if name in errors or (name != "RQ" and backend not in urls):
                        continue
                    if name in BATCHED and processes != 1:
                        continue
                    try:
                        if name == "RQ":
                            rate = rq.throughput(processes, rq_count)
                        elif name in BATCHED:
                            rate = throughput(*urls[backend], 1, count, batch=BATCH)
                        else:
                            rate = throughput(*urls[name], processes, count)
                    except (BenchError, RuntimeError) as exc:
                        errors[name] = f"throughput: {exc}"
                        log(f"  {name}: FAILED {errors[name]}")
                        continue
                    throughputs[name][str(processes)].append(rate)
                    log(f"  round {round_ + 1} {name:24} {processes} process(es) "
                        f"{rate:8.0f} jobs/s")
        for name in names:
            if name in BATCHED or (name != "RQ" and name not in urls):
                continue
            try:
                result = rq.latency(latency_jobs) if name == "RQ" else latency(
                    *urls[name], latency_jobs)
            except (BenchError, RuntimeError, OSError) as exc:
                errors[f"{name} latency"] = str(exc).splitlines()[0]
                log(f"  {name} latency: FAILED {errors[f'{name} latency']}")
                continue
            latencies[name] = result
            log(f"  {name:24} POST-to-finished p50 {result['p50_ms']:6.2f} ms  "
                f"p99 {result['p99_ms']:6.2f} ms")
    return {"throughput": throughputs, "latency": latencies, "errors": errors}
