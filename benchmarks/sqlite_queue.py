"""How fast is the SQLite backend?

Run ``python benchmarks/sqlite_queue.py``. It prints, on a fresh database in
a temporary directory:

- the cost of one put + reserve + delete cycle in one process;
- the cost of a no-op job as a worker runs it: reserve, read the job
  document, three compare-and-swap saves, delete;
- the time from a put in one process to a blocked reserve returning in
  another (the wake-up latency).
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

from flask_spacewalk.backends import resolve_sqlite_path
from flask_spacewalk.backends.sqlite import (
    SqliteDatastore,
    SqliteQueue,
    SqliteQueueEntry,
)

CYCLES = 5000
ROUNDS = 200


def per_op(label: str, seconds: float, count: int) -> None:
    print(f"{label:<44} {seconds / count * 1e6:8.1f} us  {count / seconds:9.0f} /s")


def take(queue: SqliteQueue, timeout: float = 0) -> SqliteQueueEntry:
    entry = queue.reserve(timeout=timeout)
    assert entry is not None
    return entry


def bench_cycles(path: str) -> None:
    queue = SqliteQueue(path, "bench")
    for _ in range(100):  # warm up: connect, create the schema
        queue.put("x")
        take(queue).delete()
    start = time.perf_counter()
    for _ in range(CYCLES):
        queue.put("x")
        take(queue).delete()
    per_op("put + reserve + delete", time.perf_counter() - start, CYCLES)

    start = time.perf_counter()
    for _ in range(CYCLES):
        queue.put("x")
    per_op("  put (into a growing backlog)", time.perf_counter() - start, CYCLES)
    start = time.perf_counter()
    for _ in range(CYCLES):
        take(queue).delete()
    per_op("  reserve + delete (from the backlog)", time.perf_counter() - start, CYCLES)
    start = time.perf_counter()
    for _ in range(CYCLES):
        queue.reserve(timeout=0)
    per_op("  reserve on an empty queue", time.perf_counter() - start, CYCLES)
    queue.close()


def bench_noop_job(path: str) -> None:
    store = SqliteDatastore(path)
    queue = SqliteQueue(path, "bench_jobs")
    document = {"documentType": "zerog_job", "uuid": "u", "events": [], "tickval": 0}
    for i in range(CYCLES):
        store.set(f"zerog_job_{i}", document)
        queue.put(f"{i}")
    start = time.perf_counter()
    for _ in range(CYCLES):
        entry = take(queue)
        key = f"zerog_job_{json.loads(entry.body)}"
        value, cas = store.read_with_cas(key)
        assert isinstance(value, dict)
        for field in ("running", "completeness", "resultCode"):
            value[field] = 1
            _, cas = store.update_with_cas(key, value, cas)
        entry.delete()
    per_op(
        "no-op job (reserve, read, 3 saves, delete)",
        time.perf_counter() - start,
        CYCLES,
    )
    store.close()
    queue.close()


def waiter(path: str, rounds: int, results: Any) -> None:
    queue = SqliteQueue(path, "bench_wake")
    results.put("ready")
    for _ in range(rounds):
        entry = queue.reserve(timeout=10)
        if entry is None:
            results.put(None)
            return
        results.put(time.time() - json.loads(entry.body))
        entry.delete()
    queue.close()


def bench_wake_latency(path: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=waiter, args=(path, ROUNDS, results))
    proc.start()
    assert results.get(timeout=60) == "ready"
    queue = SqliteQueue(path, "bench_wake")
    latencies = []
    for _ in range(ROUNDS):
        time.sleep(0.005)  # let the waiter block
        queue.put(time.time())
        latency = results.get(timeout=10)
        assert latency is not None, "the waiter was not woken"
        latencies.append(latency * 1000)
    proc.join()
    queue.close()
    latencies.sort()
    print(
        f"wake-up latency, put in A -> reserve returns in B ({ROUNDS} rounds):"
        f" median {statistics.median(latencies):.3f} ms,"
        f" p90 {latencies[int(len(latencies) * 0.9)]:.3f} ms,"
        f" max {latencies[-1]:.3f} ms"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = resolve_sqlite_path(f"sqlite:///{tmp}/bench.db")
        print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
        bench_cycles(path)
        bench_noop_job(path)
        bench_wake_latency(path)


if __name__ == "__main__":
    main()
