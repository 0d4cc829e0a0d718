"""Commits per no-op job on SQLite, and the worker figures of issue 17.

Run ``python -m benchmarks.sqlite_commits [--jobs N] [--rounds R]``. It
prints, on fresh SQLite files in a temporary directory:

- the commits (write transactions, and single writing statements) a
  burst worker makes per no-op job: as before claims (reserve, mark running,
  record the result, delete the entry, each a commit of its own), with
  claims (claim and mark running in one transaction, result and deletion in
  another), and with ``--batch 50``;
- no-op jobs per second of one worker process, of two, and of one with
  ``--batch 50``, beside RQ's SimpleWorker (one process) on the local
  Redis, in the same run, each the median of ``rounds`` rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from typing import Any

from .jobs_bench import QUEUE_NAME, RQ, _enqueue, throughput
from .procs import in_child

BATCH = 50


def _count_commits(url: str, count: int, batch: int, claims: bool) -> float:
    """Commits per job of one burst worker on ``count`` queued no-op jobs
    (in a child: the patches stay there)."""
    from contextlib import contextmanager

    from flask_spacewalk import make_datastore, make_queue
    from flask_spacewalk.backends import sqlite
    from flask_spacewalk.runtime.lifecycle import Lifecycle
    from flask_spacewalk.runtime.registry import JobRegistry
    from flask_spacewalk.runtime.worker_loop import Worker

    from .bench_jobs import NoopJob

    _enqueue(url, url, count)
    commits = 0
    connect = sqlite._Database.connect

    @contextmanager
    def counting(self: Any, write: bool = False, lock: bool = False) -> Any:
        nonlocal commits
        with connect(self, write, lock) as conn:
            yield conn
        commits += write or lock

    sqlite._Database.connect = counting  # type: ignore[method-assign,assignment]
    if not claims:
        Lifecycle.shared = property(lambda self: None)  # type: ignore[assignment,method-assign]
    worker = Worker(JobRegistry([NoopJob]), lambda: make_datastore(url),
                    lambda name: make_queue(url, name), QUEUE_NAME, batch=batch)  # fmt: skip
    worker.run(burst=True)
    assert worker.jobs_done == count, worker.jobs_done
    return commits / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        def url(name: str) -> str:
            return f"sqlite:///{tmp}/{name}.sqlite3"

        print("commits per no-op job (one burst worker, 1,000 jobs):")
        for label, batch, claims in (("separate (before)", 1, False), ("claims", 1, True),
                                     (f"claims, --batch {BATCH}", BATCH, True)):
            per_job = in_child(_count_commits, url(f"c{batch}{claims}"), 1000, batch, claims)
            print(f"  {label:<24} {per_job:5.2f}")
        rates: dict[str, list[float]] = {"RQ, 1": [], "1": [], "2": [], f"1, --batch {BATCH}": []}
        rq = RQ()
        try:
            for round_ in range(args.rounds):
                rates["RQ, 1"].append(rq.throughput(1, max(1000, args.jobs // 5)))
                for key, processes, batch in (("1", 1, 1), ("2", 2, 1),
                                              (f"1, --batch {BATCH}", 1, BATCH)):
                    name = url(f"r{round_}p{processes}b{batch}")
                    rates[key].append(throughput(name, name, processes, args.jobs, batch))
        finally:
            rq.close()
        median = {key: statistics.median(values) for key, values in rates.items()}
        print(f"no-op jobs/s, median of {args.rounds} rounds of {args.jobs:,} jobs:")
        for key, rate in median.items():
            print(f"  {key:<24} {rate:9,.0f} /s  {rate / median['RQ, 1']:5.1f}x RQ")
        print(f"  2 processes to 1: {median['2'] / median['1']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
