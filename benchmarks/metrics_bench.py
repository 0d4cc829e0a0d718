"""A scrape of ``/metrics`` at 1,000 and at 100,000 stored jobs, on every
datastore.

Run ``python benchmarks/metrics_bench.py`` (``make bench`` runs it). SQLite
always; PostgreSQL (127.0.0.1:5432, database ``test``) and Redis
(127.0.0.1:6379) when they answer. For each datastore it bulk-loads 1,000 job
documents into one store and 100,000 into a second, with the loaders of
``listing_bench.py`` (big transactions, ``COPY``, pipelined scripts; every
write keeps the job counts as a real one does), and times ``GET /metrics``
through a Flask test client on each, in turns. The scrape reads maintained
counts, never the jobs, so the ratio of the two times should be near 1; a
count over the jobs would make it grow with them.

Then, on SQLite and PostgreSQL, what keeping the counts costs a write: a
job's four writes (create, start, progress, finish), 1,500 of each on a
store with the counts' triggers and on one without, in batches taken in
turns.

Each figure is the median of ``BENCH_METRICS_ROUNDS`` (default 100) scrapes.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.listing_bench import postgres_store, redis_store, sqlite_store  # noqa: E402
from examples.jobs.examples import BaseExampleJob  # noqa: E402
from flask_spacewalk import Spacewalk  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "100"))
#: Entries waiting in the queue while it is scraped (the same at both sizes).
QUEUED = 20


def store_url(store: Any) -> str:
    """The URL of a store that listing_bench opened."""
    if hasattr(store, "path"):
        return f"sqlite:///{store.path}"
    if hasattr(store, "_connections"):
        settings = store._connections.settings
        return f"postgresql://{settings.where}?schema={store.table.split('.')[0].strip(chr(34))}"
    return f"redis://127.0.0.1:6379/0?prefix={store.prefix[: -len('doc:')]}"


def scraper(store: Any, load: Callable[[Any, int, int], None], jobs: int, tmp: str) -> Any:
    """A test client of an app over ``store``, loaded with ``jobs`` jobs and
    :data:`QUEUED` queue entries."""
    url = store_url(store)
    app = Flask(__name__, instance_path=tmp)
    app.config.update(
        SPACEWALK_DATASTORE_URL=url,
        SPACEWALK_QUEUE_URL=url if not url.startswith("postgresql") else
        f"sqlite:///{tmp}/queue.sqlite3",
        SPACEWALK_RUN_INLINE=False,
    )  # fmt: skip
    Spacewalk(app, ROOT / "examples" / "jobs", BaseExampleJob)
    _, queue = app.extensions["spacewalk"]["/examples"].connections()
    for _ in range(QUEUED):
        queue.put("bench")
    load(store, 0, jobs)
    return app.test_client()


def reported_jobs(client: Any) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "spacewalk_jobs"
        for sample in family.samples
    )


def run(name: str, opener: Callable[[], Any]) -> tuple[float, float] | None:
    contexts = []
    try:
        for _ in range(2):
            contexts.append(opener())
        pairs = [context.__enter__() for context in contexts]
    except Exception as exc:  # noqa: BLE001 - an absent server is skipped
        print(f"{name}: skipped ({type(exc).__name__}: {exc})")
        return None
    try:
        with tempfile.TemporaryDirectory() as small_tmp, tempfile.TemporaryDirectory() as large_tmp:
            clients = [scraper(*pairs[0], 1_000, small_tmp), scraper(*pairs[1], 100_000, large_tmp)]
            assert [reported_jobs(c) for c in clients] == [1_000, 100_000]
            # the two stores' scrapes taken in turns: the shared machine's
            # load changes between rounds far more than between neighbours
            times: list[list[float]] = [[], []]
            for round in range(ROUNDS):
                for i in (0, 1) if round % 2 else (1, 0):
                    started = time.perf_counter()
                    response = clients[i].get("/metrics")
                    times[i].append(time.perf_counter() - started)
                    assert response.status_code == 200, response.get_data(as_text=True)
            for client in clients:
                client.application.extensions["spacewalk"]["/examples"].close()
    finally:
        for context in contexts:
            context.__exit__(None, None, None)
    small, large = (statistics.median(t) * 1000 for t in times)
    print(f"{name:<12}{small:>12.3f}{large:>14.3f}{large / small:>8.2f}")
    return small, large


# -- what the counts cost a write -------------------------------------------------

#: Job document writes per kind and store, in batches taken in turns.
WRITES, BATCH = 1_500, 50


def _job(result: int, running: bool, completeness: float = 0.0) -> dict[str, Any]:
    return {"documentType": "zerog_job", "jobType": "bench_noop", "resultCode": result,
            "createdAt": "2024-05-01T00:00:00", "running": running,
            "completeness": completeness, "events": [], "errors": []}  # fmt: skip


#: A job's writes: the POST's create, then a worker's start, a progress
#: report and the finish (only the progress changes no count).
STEPS = (("create", None), ("start", _job(-1, True)), ("progress", _job(-1, True, 0.5)),
         ("finish", _job(200, False, 1.0)))  # fmt: skip


def without_counts(store: Any) -> None:
    """Drop the triggers that keep ``store``'s job counts."""
    if hasattr(store, "path"):
        with store._db.connect(write=True) as conn:
            for name in ("insert", "update", "delete"):
                conn.execute(f"DROP TRIGGER job_counts_{name}")
    else:
        with store._connections.connection() as conn:
            conn.execute(f"ALTER TABLE {store.table} DISABLE TRIGGER USER")


def write_cost(name: str, opener: Callable[[], Any]) -> None:
    """Microseconds per write of each step, with and without the counts."""
    contexts = []
    try:
        for _ in range(2):
            contexts.append(opener())
        stores = [context.__enter__()[0] for context in contexts]
    except Exception as exc:  # noqa: BLE001 - an absent server is skipped
        print(f"{name}: skipped ({type(exc).__name__}: {exc})")
        return
    try:
        stores[1].read("warm")  # made, so that its triggers can go
        without_counts(stores[1])
        spent = [dict.fromkeys([step for step, _ in STEPS], 0.0) for _ in stores]
        keys = [f"zerog_job_{n}" for n in range(WRITES)]
        for step, value in STEPS:
            for first in range(0, WRITES, BATCH):
                for i in (0, 1) if first // BATCH % 2 else (1, 0):
                    started = time.perf_counter()
                    for key in keys[first:first + BATCH]:
                        if value is None:
                            stores[i].create(key, _job(-1, False))
                        else:
                            stores[i].update(key, value)
                    spent[i][step] += time.perf_counter() - started
    finally:
        for context in contexts:
            context.__exit__(None, None, None)
    print(f"{name:<12}" + "".join(
        f"{spent[1][step] / WRITES * 1e6:>9.0f} ->{spent[0][step] / WRITES * 1e6:>5.0f}"
        for step, _ in STEPS
    ))  # fmt: skip


def main() -> None:
    print(f"GET /metrics, ms (median of {ROUNDS} scrapes)")
    print(f"{'datastore':<12}{'1,000 jobs':>12}{'100,000 jobs':>14}{'ratio':>8}")
    for name, opener in (("SQLite", sqlite_store), ("PostgreSQL", postgres_store),
                         ("Redis", redis_store)):  # fmt: skip
        run(name, opener)
    print(f"\njob document writes, us without -> with the counts (mean of {WRITES} each)")
    print(f"{'datastore':<12}" + "".join(f"{step:>17}" for step, _ in STEPS))
    for name, opener in (("SQLite", sqlite_store), ("PostgreSQL", postgres_store)):
        write_cost(name, opener)


if __name__ == "__main__":
    main()
