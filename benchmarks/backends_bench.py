"""The distributed backends against the embedded one, in the same run.

Run ``python benchmarks/backends_bench.py`` (``make bench`` runs it; needs
``wrk``, ``beanstalkd`` and PostgreSQL on 127.0.0.1:5432, database
``test``). For SQLite and for PostgreSQL + beanstalkd it serves
``benchmarks/bench_app.py`` with gunicorn (2 gthread workers of 4 threads,
as examples/distributed/gunicorn.conf.py does: a request waiting on a remote
commit should not hold a whole process) beside one job worker process and
measures:

- ``POST /bench/noop/job`` throughput with wrk (a Lua script whose summary
  proves every answer was a 201);
- the latency from POST to a finished no-op job with an idle worker: one
  client POSTs, then polls progress until the result is in (median, p90).

Targets (issue 4): PostgreSQL + beanstalkd POST throughput >= 70 % of
SQLite's; no-op latency under 50 ms median.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_bench import POST_SCRIPT, free_port, wrk  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LATENCY_ROUNDS = int(os.environ.get("BENCH_LATENCY_ROUNDS", "100"))
NOOP_POST_SCRIPT = POST_SCRIPT.replace('wrk.body = \'{"n": 20}\'', "wrk.body = '{}'")


@contextlib.contextmanager
def postgres_beanstalkd() -> Iterator[tuple[str, str]]:
    import psycopg

    schema = f"bench_{uuid_module.uuid4().hex[:10]}"
    admin = "postgresql://127.0.0.1:5432/test"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        beanstalkd = subprocess.Popen(
            ["beanstalkd", "-l", "127.0.0.1", "-p", str(port), "-b", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{admin}?schema={schema}", f"beanstalkd://127.0.0.1:{port}"
        finally:
            beanstalkd.terminate()
            beanstalkd.wait()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def sqlite() -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.sqlite3"
        yield url, url


@contextlib.contextmanager
def service(datastore_url: str, queue_url: str) -> Iterator[str]:
    port = free_port()
    env = dict(
        os.environ,
        FLASK_SPACEWALK_DATASTORE_URL=datastore_url,
        FLASK_SPACEWALK_QUEUE_URL=queue_url,
        FLASK_SPACEWALK_RUN_INLINE="false",
    )
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "4",
         "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "benchmarks.bench_app:app"],
        cwd=ROOT, env=env,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "benchmarks.bench_app", "spacewalk",
         "worker", "--tree", "/bench"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/bench/leaves")
                conn.getresponse().read()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in (worker, web):
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def latency(base: str) -> list[float]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    samples = []
    for _ in range(LATENCY_ROUNDS):
        time.sleep(0.005)  # an idle worker, waiting on the queue
        start = time.perf_counter()
        conn.request("POST", "/bench/noop/job", b"{}", {"Content-Type": "application/json"})
        response = conn.getresponse()
        uuid = json.loads(response.read())["uuid"]
        assert response.status == 201
        while True:
            conn.request("GET", f"/bench/progress/{uuid}")
            if json.loads(conn.getresponse().read())["result"] == 200:
                break
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(NOOP_POST_SCRIPT)
        for name, backend in (("SQLite", sqlite), ("PostgreSQL + beanstalkd",
                                                   postgres_beanstalkd)):
            with backend() as (datastore_url, queue_url):
                with service(datastore_url, queue_url) as base:
                    samples = latency(base)
                    rates = [wrk(base + "/bench/noop/job", str(script)) for _ in range(3)]
            results[name] = (statistics.median(rates), sorted(samples))
    baseline = results["SQLite"][0]
    print("gunicorn 2 gthread workers x 4 threads + 1 job worker; wrk -t2 -c16, median of 3")
    failed = False
    for name, (rate, samples) in results.items():
        median = statistics.median(samples) * 1e3
        p90 = samples[int(len(samples) * 0.9)] * 1e3
        print(f"{name:<24} POST {rate:7.0f} req/s ({rate / baseline:4.0%} of SQLite)  "
              f"no-op POST-to-finished median {median:5.1f} ms  p90 {p90:5.1f} ms")
        failed |= median >= 50
    failed |= results["PostgreSQL + beanstalkd"][0] < 0.7 * baseline
    print("targets: PostgreSQL + beanstalkd POST >= 70 % of SQLite; latency median < 50 ms:",
          "missed" if failed else "met")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
