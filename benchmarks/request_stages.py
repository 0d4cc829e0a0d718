"""Where a POST and a progress poll spend their time, stage by stage.

The figures of ``make bench`` say how far ``POST L/job`` and ``GET
R/progress/<uuid>`` are from a plain Flask view; this says why. It calls
``benchmarks/bench_app.py``'s WSGI app in process (no server, no client: the
app's own cost, without gunicorn's and wrk's), on a SQLite store in a
temporary directory, and for each of ``/plain``, a FizzBuzz POST, a finished
job's progress and info prints

- the microseconds of one whole request, and the plain view's over it;
- each stage's inclusive microseconds per request (time.perf_counter_ns
  around the functions of :data:`STAGES`, wrapped only for a second pass so
  that the first pass's totals carry no wrapper);
- every SQL statement's microseconds per request, and the distribution of
  the COMMIT of a POST: its median is the database's own cost, its mean what
  the requests paid, the difference the writes the kernel held up (the
  shared machine's disk).

Run from the repository's root, with the code to measure first on the path::

    python -m benchmarks.request_stages [--requests 2000] [--rounds 5]

Each figure of a whole request is the least of the rounds: on a machine
shared with other work, the round it disturbed least.
"""
from __future__ import annotations

import argparse
import collections
import functools
import importlib
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable

#: (module, attribute path, label) of each stage timed.
STAGES = (
    ("flask.app", "Flask.request_context", "request context (routing)"),
    ("flask.app", "Flask.preprocess_request", "before_request hooks"),
    ("flask.app", "Flask.dispatch_request", "view"),
    ("flask.app", "Flask.process_response", "after_request hooks"),
    ("flask_spacewalk.web.views", "read_json_body", "body read and parse"),
    ("flask_spacewalk.web.views", "read_start_options", "query options"),
    ("flask_spacewalk.web.views", "read_idempotency_key", "Idempotency-Key"),
    ("flask_spacewalk.web.views", "read_wait", "Prefer: wait"),
    ("flask_spacewalk.validation", "ParamsValidator.validate", "validation"),
    ("flask_spacewalk.runtime.job", "RuntimeJob.__init__", "job object"),
    ("flask_spacewalk.runtime.job", "RuntimeJob.dump", "document build"),
    ("flask_spacewalk.backends.sqlite", "SqliteQueue.put_with_document", "store+queue write"),
    ("flask_spacewalk.backends.sqlite", "encode_value", "document JSON encode"),
    ("flask_spacewalk.backends.sqlite", "_Database._still_there", "file identity stat"),
    ("flask_spacewalk.backends.sqlite", "Waker.notify", "wake-ups"),
    ("flask_spacewalk.backends.sqlite", "SqliteDatastore.read_with_cas", "document read"),
    ("flask_spacewalk.web.views", "json_response", "answer build"),
)


def summarize(samples_ns: Sequence[int]) -> dict[str, float]:
    """Median, mean and p99 in microseconds of ``samples_ns``, and the share
    of the sum spent in samples over 1 ms."""
    if not samples_ns:
        raise ValueError("no samples")
    ordered = sorted(samples_ns)
    total = sum(ordered)
    slow = sum(s for s in ordered if s > 1_000_000)
    return {
        "median_us": ordered[len(ordered) // 2] / 1e3,
        "mean_us": total / len(ordered) / 1e3,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e3,
        "share_over_1ms": slow / total if total else 0.0,
    }


def check_status(name: str, status: str) -> None:
    """Stop the run when ``name`` answered anything but 200 or 201: its
    timings would be an error's."""
    if not status.startswith(("200 ", "201 ")):
        raise SystemExit(f"{name} answered {status}: no timings of an error")


class _Timings:
    """Nanoseconds by label, and every COMMIT's duration."""

    def __init__(self) -> None:
        self.ns: collections.Counter[str] = collections.Counter()
        self.commits: list[int] = []

    def clear(self) -> None:
        self.ns.clear()
        self.commits.clear()


TIMINGS = _Timings()


class _TimedConnection(sqlite3.Connection):
    """A connection that times each statement, by its first words."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        start = time.perf_counter_ns()
        try:
            return super().execute(sql, *args)
        finally:
            spent = time.perf_counter_ns() - start
            words = sql.split()
            TIMINGS.ns["SQL " + " ".join(words[:3] if words[0] == "INSERT" else words[:1])] += spent
            if words[0] == "COMMIT":
                TIMINGS.commits.append(spent)


def _wrap(module: str, path: str, label: str) -> None:
    owner: Any = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    func: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            return func(*args, **kwargs)
        finally:
            TIMINGS.ns[label] += time.perf_counter_ns() - start

    setattr(owner, name, timed)


@contextmanager
def _app(directory: str) -> Iterator[Any]:
    url = f"sqlite:///{directory}/stages.sqlite3"
    os.environ.update(
        FLASK_SPACEWALK_DATASTORE_URL=url,
        FLASK_SPACEWALK_QUEUE_URL=url,
        FLASK_SPACEWALK_RUN_INLINE="false",
    )
    connect = sqlite3.connect
    sqlite3.connect = functools.partial(connect, factory=_TimedConnection)  # type: ignore[assignment]
    try:
        from .bench_app import app

        yield app, url
    finally:
        sqlite3.connect = connect  # type: ignore[assignment]


def _caller(app: Any, method: str, path: str, body: bytes = b"") -> Callable[[], str]:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path=path, method=method, data=body or None,
        content_type="application/json" if body else None,
    ).get_environ()

    def call() -> str:
        env = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        status: list[str] = []
        for _ in app(env, lambda s, h, e=None: status.append(s)):
            pass
        return status[0]

    return call


def _finished_job(app: Any, url: str) -> str:
    """POST a no-op job, run it with a burst worker, and return its uuid."""
    from werkzeug.test import EnvironBuilder

    from flask_spacewalk import make_datastore, make_queue
    from flask_spacewalk.runtime.registry import JobRegistry
    from flask_spacewalk.runtime.worker_loop import Worker

    from .bench_jobs import NoopJob

    environ = EnvironBuilder(path="/bench/noop/job", method="POST", data=b"{}",
                             content_type="application/json").get_environ()
    body = b"".join(app(environ, lambda s, h, e=None: None))
    uuid = str(json.loads(body)["uuid"])
    Worker(JobRegistry([NoopJob]), lambda: make_datastore(url),
           lambda name: make_queue(url, name), "spacewalk_jobs").run(burst=True)
    return uuid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per endpoint and round")
    parser.add_argument("--rounds", type=int, default=5, help="the least is reported")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, _app(tmp) as (app, url):
        uuid = _finished_job(app, url)
        calls = {
            "plain": _caller(app, "GET", "/plain"),
            "POST job": _caller(app, "POST", "/examples/fizz_buzz/job", b'{"n": 20}'),
            "progress": _caller(app, "GET", f"/bench/progress/{uuid}"),
            "info": _caller(app, "GET", f"/bench/info/{uuid}"),
        }
        for name, call in calls.items():
            for _ in range(200):  # warm up, and check the answers
                check_status(name, call())
        # pass 1: whole requests, interleaved rounds, nothing wrapped; CPU
        # time too, which the other processes of a shared machine do not
        # inflate (nor does it count the time a write waits on the disk)
        wall: dict[str, list[float]] = {name: [] for name in calls}
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
                for _ in range(args.requests):
                    call()
                cpu[name].append((time.thread_time_ns() - start_cpu) / args.requests / 1e3)
                wall[name].append((time.perf_counter_ns() - start) / args.requests / 1e3)
        print(f"python {sys.version.split()[0]}, {args.requests} requests x {args.rounds} rounds,"
              f" in process (no server); the least of the rounds, the one other work"
              f" disturbed least")
        plain_wall, plain_cpu = min(wall["plain"]), min(cpu["plain"])
        for name in calls:
            us, cpu_us = min(wall[name]), min(cpu[name])
            print(f"{name:9} wall {us:7.1f} us/request (plain/this {plain_wall / us:4.2f})"
                  f"   CPU {cpu_us:7.1f} us/request (plain/this {plain_cpu / cpu_us:4.2f})")
        # pass 2: the stages, wrapped
        for stage in STAGES:
            _wrap(*stage)
        for name, call in calls.items():
            TIMINGS.clear()
            for _ in range(args.requests):
                call()
            print(f"\n{name}: stages, inclusive us/request (wrapped)")
            for label, ns in TIMINGS.ns.most_common():
                print(f"  {label:28} {ns / args.requests / 1e3:7.1f}")
            if TIMINGS.commits:
                stats = summarize(TIMINGS.commits)
                print("  COMMIT: median {median_us:.1f} us, mean {mean_us:.1f} us,"
                      " p99 {p99_us:.1f} us; {share_over_1ms:.0%} of its time in commits"
                      " over 1 ms".format(**stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
