"""The job listing at 1,000 and at 100,000 stored jobs, on every datastore.

Run ``python benchmarks/listing_bench.py`` (``make bench`` runs it). SQLite
always; PostgreSQL (127.0.0.1:5432, database ``test``) and Redis
(127.0.0.1:6379) when they answer. For each datastore it stores 1,000 job
documents, times ``list_jobs`` for each filter shape (the first page, and
the tenth page reached by following cursors, or the last full one when a
narrow filter has fewer pages at 1,000 jobs), stores 99,000 more and times
again. A page that reads an index costs O(log n + limit), so the ratio of
the two times should be near 1; a full scan would make it near 100.

Each figure is the median of ``BENCH_LISTING_ROUNDS`` (default 30) calls.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import uuid as uuid_module
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_spacewalk.backends import make_datastore  # noqa: E402
from flask_spacewalk.runtime.job import make_key  # noqa: E402
from flask_spacewalk.runtime.query import JobQuery  # noqa: E402
from flask_spacewalk.runtime.status import index_columns, job_index  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_LISTING_ROUNDS", "30"))
PAGE = 50
DEEP = 10
TYPES = [f"bench_type_{i}" for i in range(3)]
START = dt.datetime(2024, 5, 1)

SHAPES: dict[str, dict[str, Any]] = {
    "all (any type)": {},
    "the tree's 3 types": {"job_types": frozenset(TYPES)},
    "one type": {"job_types": frozenset(TYPES[:1])},
    "status=failed": {"statuses": frozenset({"failed"})},
    "status=queued,running": {"statuses": frozenset({"queued", "running"})},
    "type + status": {"job_types": frozenset(TYPES[:1]), "statuses": frozenset({"finished"})},
    "since (half)": {"since": "SINCE"},
}


def document(n: int) -> tuple[str, dict[str, Any]]:
    """Job ``n``: five jobs a second, every status (mostly finished)."""
    uuid = str(uuid_module.UUID(int=n, version=4))
    created = (START + dt.timedelta(seconds=n // 5)).isoformat()
    result, running = [(200, False), (200, False), (500, False), (-1, False), (-1, True)][n % 5]
    return make_key(uuid), {
        "documentType": "zerog_job", "jobType": TYPES[n % 3], "schemaVersion": 1.0,
        "createdAt": created, "updatedAt": created, "uuid": uuid,
        "logId": f"{TYPES[n % 3]}_{uuid}", "queueName": "bench_jobs", "queueKwargs": {},
        "queueJobId": n, "events": [{"msg": "started", "timeStamp": created}],
        "errors": [], "warnings": [], "running": running, "errorCount": 0,
        "completeness": 1.0 if result >= 0 else 0.5, "tickcount": 0.0, "tickval": 0.0,
        "resultCode": result, "n": n,
    }  # fmt: skip


# -- bulk loading: far faster than one write a job ---------------------------------


def load_sqlite(store: Any, start: int, stop: int) -> None:
    with store._db.connect(write=True) as conn:
        conn.executemany(
            "INSERT INTO documents VALUES (?, ?, 1, 0, ?, ?, ?)",
            ((key, json.dumps(doc), *index_columns(job_index(key, doc)))
             for key, doc in map(document, range(start, stop))),
        )  # fmt: skip
        conn.execute("ANALYZE")


def load_postgres(store: Any, start: int, stop: int) -> None:
    with store._connections.connection() as conn:
        with conn.cursor() as cursor:
            copy_sql = (
                f"COPY {store.table} (key, value, cas, updated_at, job_created, job_type,"
                " job_status) FROM STDIN"
            )
            with cursor.copy(copy_sql) as copy:
                now = dt.datetime.now(dt.timezone.utc)
                for n in range(start, stop):
                    key, doc = document(n)
                    columns = index_columns(job_index(key, doc))
                    copy.write_row((key, json.dumps(doc), 1, now, *columns))
        conn.execute(f"ANALYZE {store.table}")


def load_redis(store: Any, start: int, stop: int) -> None:
    # through the write script itself, so the index sets are the real ones
    from flask_spacewalk.backends.redis import _SCRIPTS, _entry

    script = _SCRIPTS["write"]
    with store._server.connect() as client:
        client.script_load(script.text)
        for first in range(start, stop, 2000):
            pipe = client.pipeline(transaction=False)
            for n in range(first, min(first + 2000, stop)):
                key, doc = document(n)
                pipe.evalsha(script.sha, 1, store.prefix + key, json.dumps(doc), "", "set",
                             store._jobs, *_entry(key, job_index(key, doc)))  # fmt: skip
            pipe.execute()


@contextlib.contextmanager
def sqlite_store() -> Iterator[tuple[Any, Callable[[Any, int, int], None]]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = make_datastore(f"sqlite:///{tmp}/listing.db")
        yield store, load_sqlite
        store.close()


@contextlib.contextmanager
def postgres_store() -> Iterator[tuple[Any, Callable[[Any, int, int], None]]]:
    import psycopg

    admin = "postgresql://127.0.0.1:5432/test"
    schema = f"bench_{uuid_module.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            store = make_datastore(f"{admin}?schema={schema}")
            yield store, load_postgres
            store.close()
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def redis_store() -> Iterator[tuple[Any, Callable[[Any, int, int], None]]]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    client.ping()
    prefix = f"bench_{uuid_module.uuid4().hex[:10]}:"
    try:
        store = make_datastore(f"redis://127.0.0.1:6379/0?prefix={prefix}")
        yield store, load_redis
        store.close()
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        for first in range(0, len(keys), 5000):
            client.delete(*keys[first : first + 5000])
        client.close()


# -- timing ----------------------------------------------------------------------


def median_ms(store: Any, query: JobQuery) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        store.list_jobs(query)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(store: Any, stored: int) -> dict[str, tuple[float, float]]:
    """Per shape: ms of the first page and of the DEEP-th page (or of the
    deepest full page, when fewer pages are stored)."""
    since = (START + dt.timedelta(seconds=stored // 10)).isoformat()
    out = {}
    for name, shape in SHAPES.items():
        shape = {k: since if v == "SINCE" else v for k, v in shape.items()}
        first = JobQuery(limit=PAGE + 1, **shape)
        query = first
        deep = first
        for _ in range(DEEP - 1):  # follow the cursors to the DEEP-th page
            jobs = store.list_jobs(query)
            if len(jobs) <= PAGE:
                break  # 1,000 jobs may not fill DEEP pages of a narrow filter
            deep = query
            last = jobs[PAGE - 1]
            query = JobQuery(limit=PAGE + 1, after=(last["createdAt"], last["uuid"]), **shape)
        else:
            deep = query
        out[name] = (median_ms(store, first), median_ms(store, deep))
    return out


def run(name: str, opener: Callable[[], Any]) -> None:
    try:
        context = opener()
        store, load = context.__enter__()
    except Exception as exc:  # noqa: BLE001 - an absent server is skipped
        print(f"\n{name}: skipped ({type(exc).__name__}: {exc})")
        return
    try:
        started = time.perf_counter()
        load(store, 0, 1_000)
        small = measure(store, 1_000)
        load(store, 1_000, 100_000)
        loaded = time.perf_counter() - started
        large = measure(store, 100_000)
    finally:
        context.__exit__(None, None, None)
    print(f"\n{name} (100,000 jobs loaded in {loaded:.1f} s; ms, median of {ROUNDS})")
    print(f"{'shape':<24}{'1k first':>10}{'100k first':>12}{'ratio':>7}"
          f"{'1k deep':>9}{'100k p10':>10}{'ratio':>7}")  # fmt: skip
    for shape in SHAPES:
        (a, b), (c, d) = small[shape], large[shape]
        print(f"{shape:<24}{a:>10.3f}{c:>12.3f}{c / a:>7.2f}{b:>9.3f}{d:>10.3f}{d / b:>7.2f}")


def main() -> None:
    run("SQLite", sqlite_store)
    run("PostgreSQL", postgres_store)
    run("Redis", redis_store)


if __name__ == "__main__":
    main()
