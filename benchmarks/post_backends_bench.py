"""POST job req/s with PostgreSQL alone (documents and queue) against
SQLite, gunicorn gthread (2 workers of 4 threads), wrk c16, runs
alternating (issue 17's target: >= 0.8x SQLite's).

Part of ``make bench`` (:func:`run_post_backends`); alone, run
``python benchmarks/post_backends_bench.py`` from the project root.
PostgreSQL at 127.0.0.1:5432, database ``test`` (a schema of its own,
dropped afterwards), and wrk are needed. Every answer must be 201.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import http_bench  # noqa: E402
from benchmarks.jobs_bench import postgres_schema  # noqa: E402

BACKENDS = ("SQLite", "PostgreSQL")


def run_post_backends(
    duration: str = "3s", rounds: int = 3, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """``{"rates": {backend: [req/s per round]}, "p50_ms": {...}}``, the
    backends alternating within each round."""
    rates: dict[str, list[float]] = {name: [] for name in BACKENDS}
    p50s: dict[str, list[float]] = {name: [] for name in BACKENDS}
    with tempfile.TemporaryDirectory() as tmp, postgres_schema() as postgres:
        script = Path(tmp) / "post.lua"
        script.write_text(http_bench.POST_SCRIPT % {"body": '{"n": 20}'})
        urls = {"SQLite": f"sqlite:///{tmp}/post.sqlite3", "PostgreSQL": postgres}
        for round_ in range(rounds):
            for name, url in urls.items():
                with http_bench.gunicorn(url, url, http_bench.SERVERS["gthread"]) as (port, _):
                    result = http_bench.run_wrk(
                        f"http://127.0.0.1:{port}/examples/fizz_buzz/job", 16, duration,
                        str(script),
                    )
                if result.errors:
                    raise http_bench.BenchError(
                        f"{name}: {result.errors} socket errors or non-2xx answers")
                rates[name].append(result.requests_per_second)
                p50s[name].append(result.p50_ms)
                log(f"  round {round_ + 1} POST job, gthread c16, {name:10} "
                    f"{result.requests_per_second:6.0f} req/s  p50 {result.p50_ms:6.2f} ms")
    return {"rates": rates, "p50_ms": p50s}


def main() -> None:
    rates = run_post_backends()["rates"]
    ratios = [p / s for p, s in zip(rates["PostgreSQL"], rates["SQLite"])]
    print(f"median: SQLite {statistics.median(rates['SQLite']):.0f} req/s, PostgreSQL"
          f" {statistics.median(rates['PostgreSQL']):.0f} req/s,"
          f" ratio {statistics.median(ratios):.2f}x (target >= 0.80x)")


if __name__ == "__main__":
    main()
