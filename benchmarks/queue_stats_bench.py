"""``queue_stats`` (``GET R/queues``, the metrics' queue gauges) at 1,000 and
at 100,000 queued entries, on every queue.

Run ``python benchmarks/queue_stats_bench.py``. SQLite always; PostgreSQL
(a schema of its own in database ``test`` at 127.0.0.1:5432, dropped
afterwards) and Redis (127.0.0.1:6379) when they answer; beanstalkd when it is installed (a server
of its own on a free port). Each queue gets 1,000 entries (one in ten
delayed, ten reserved), is timed, gets 99,000 more and is timed again. Redis
and beanstalkd answer from sorted sets and counters (the ratio should be near
1); SQLite and PostgreSQL count ranges of their indexes, so their cost grows
with the entries.

Each figure is the median of ``BENCH_QUEUE_ROUNDS`` (default 30) calls.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_spacewalk.backends import make_queue  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_QUEUE_ROUNDS", "30"))
SIZES = (1_000, 100_000)


@contextlib.contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/queue.sqlite3"


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    import psycopg

    server = "postgresql://127.0.0.1:5432/test"
    schema = f"bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        raise OSError(f"no PostgreSQL server at 127.0.0.1:5432: {exc}") from exc
    try:
        yield f"{server}?schema={schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
    prefix = f"bench_{secrets.token_hex(4)}:"
    try:
        try:
            client.ping()
        except redis.exceptions.ConnectionError as exc:
            raise OSError(f"no Redis server at 127.0.0.1:6379: {exc}") from exc
        yield f"redis://127.0.0.1:6379/0?prefix={prefix}&socket_timeout=5"
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


@contextlib.contextmanager
def beanstalkd_url() -> Iterator[str]:
    executable = shutil.which("beanstalkd")
    if executable is None:
        raise OSError("beanstalkd is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([executable, "-l", "127.0.0.1", "-p", str(port)])
    try:
        time.sleep(0.3)
        yield f"beanstalkd://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


QUEUES: dict[str, Callable[[], contextlib.AbstractContextManager[str]]] = {
    "SQLite": sqlite_url, "PostgreSQL": postgres_url, "Redis": redis_url,
    "beanstalkd": beanstalkd_url,
}


def fill(queue: Any, start: int, stop: int) -> None:
    for n in range(start, stop):
        queue.put(f"entry-{n}", delay=3600 if n % 10 == 0 else 0)


def median_ms(call: Callable[[], Any]) -> float:
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    print(f"{'queue':12} {'1,000 entries':>14} {'100,000 entries':>16} {'ratio':>6}")
    for name, make_url in QUEUES.items():
        try:
            with make_url() as url:
                queue = make_queue(url, "bench_jobs", default_ttr=3600)
                try:
                    fill(queue, 0, SIZES[0])
                    held = [queue.reserve(timeout=0) for _ in range(10)]
                    small = median_ms(queue.queue_stats)
                    fill(queue, SIZES[0], SIZES[1])
                    large = median_ms(queue.queue_stats)
                    assert queue.queue_stats()[0].reserved == len(held)
                finally:
                    queue.close()
        except (OSError, ImportError) as exc:  # a server or driver that is not there
            print(f"{name:12} skipped: {exc}")
            continue
        print(f"{name:12} {small:11.3f} ms {large:13.3f} ms {large / small:6.1f}")


if __name__ == "__main__":
    main()
