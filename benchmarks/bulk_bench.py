"""What a bulk action costs per job: ``POST R/jobs/retry`` and ``POST
R/jobs/cancel`` on 1,000 failed jobs, on every datastore that answers.

Run ``python benchmarks/bulk_bench.py [JOBS]`` (``make bench`` does not run
it). SQLite always (one file for documents and queue); PostgreSQL
(127.0.0.1:5432, database ``test``, with a SQLite queue) and Redis
(127.0.0.1:6379, documents and queue) when they answer. For each it stores
JOBS (default 1,000) failed jobs, then times, through Flask's test client,
a dry run and the retry of them all, then a dry run and the cancel of them
all, each one request with ``limit`` = JOBS. docs/api.rst quotes the figures.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402

from benchmarks.bench_jobs import BenchRoot, NoopJob  # noqa: E402
from flask_spacewalk import Spacewalk  # noqa: E402


@contextlib.contextmanager
def sqlite_urls(tmp: Path) -> Iterator[tuple[str, str]]:
    yield f"sqlite:///{tmp / 'jobs.sqlite3'}", f"sqlite:///{tmp / 'jobs.sqlite3'}"


@contextlib.contextmanager
def postgres_urls(tmp: Path) -> Iterator[tuple[str, str]]:
    import psycopg

    admin = "postgresql://127.0.0.1:5432/test"
    schema = f"bench_{uuid_module.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{admin}?schema={schema}", f"sqlite:///{tmp / 'queue.sqlite3'}"
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def redis_urls(tmp: Path) -> Iterator[tuple[str, str]]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    client.ping()
    prefix = f"bench_{uuid_module.uuid4().hex[:10]}:"
    try:
        url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
        yield url, url
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        if keys:
            client.delete(*keys)
        client.close()


def run(name: str, urls: contextlib.AbstractContextManager[tuple[str, str]], jobs: int,
        tmp: Path) -> None:
    with urls as (store_url, queue_url):
        app = Flask(__name__, instance_path=str(tmp))
        app.config.update(SPACEWALK_DATASTORE_URL=store_url, SPACEWALK_QUEUE_URL=queue_url,
                          SPACEWALK_RUN_INLINE=False)
        Spacewalk(app, "benchmarks.bench_jobs", BenchRoot)
        state = app.extensions["spacewalk"]["/bench"]
        try:
            datastore, queue = state.connections()
            for _ in range(jobs):
                job = NoopJob(datastore, queue, resultCode=500, completeness=1.0)
                job.save()
            client = app.test_client()
            for action in ("retry", "cancel"):
                for dry in ("true", "false"):
                    start = time.perf_counter()
                    answer = client.post(f"/bench/jobs/{action}?limit={jobs}&dryRun={dry}").json
                    took = time.perf_counter() - start
                    assert answer["matched"] == jobs, answer
                    print(f"{name:<10} {action:<6} dryRun={dry:<5} {jobs} jobs: "
                          f"{took * 1000:8.0f} ms, {took / jobs * 1000:6.2f} ms a job")
        finally:
            state.close()


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for name, urls in (("sqlite", sqlite_urls), ("postgresql", postgres_urls),
                       ("redis", redis_urls)):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                run(name, urls(Path(tmp)), jobs, Path(tmp))
            except Exception as exc:  # a backend that does not answer
                print(f"{name:<10} skipped: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
