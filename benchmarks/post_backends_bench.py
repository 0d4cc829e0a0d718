"""POST job req/s with PostgreSQL alone (documents and queue) against
SQLite, gunicorn gthread (2 workers of 4 threads), wrk c16, 3 s runs
alternating, 3 rounds (issue 17's target: >= 0.8x SQLite's).

Run ``python benchmarks/post_backends_bench.py`` from the project root;
PostgreSQL at 127.0.0.1:5432, database ``test`` (a schema of its own,
dropped afterwards), and wrk are needed. Every answer must be 201.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import http_bench  # noqa: E402
from benchmarks.jobs_bench import postgres_schema  # noqa: E402

ROUNDS = 3


def main() -> None:
    rates: dict[str, list[float]] = {"SQLite": [], "PostgreSQL": []}
    with tempfile.TemporaryDirectory() as tmp, postgres_schema() as postgres:
        script = Path(tmp) / "post.lua"
        script.write_text(http_bench.POST_SCRIPT % {"body": '{"n": 20}'})
        urls = {"SQLite": f"sqlite:///{tmp}/post.sqlite3", "PostgreSQL": postgres}
        for round_ in range(ROUNDS):
            for name, url in urls.items():
                with http_bench.gunicorn(url, url, http_bench.SERVERS["gthread"]) as (port, _):
                    result = http_bench.run_wrk(
                        f"http://127.0.0.1:{port}/examples/fizz_buzz/job", 16, "3s", str(script)
                    )
                rates[name].append(result.requests_per_second)
                print(f"round {round_ + 1} {name:10} {result.requests_per_second:6.0f} req/s"
                      f"  p50 {result.p50_ms:6.2f} ms", flush=True)
    ratios = [p / s for p, s in zip(rates["PostgreSQL"], rates["SQLite"])]
    print(f"median: SQLite {statistics.median(rates['SQLite']):.0f} req/s, PostgreSQL"
          f" {statistics.median(rates['PostgreSQL']):.0f} req/s,"
          f" ratio {statistics.median(ratios):.2f}x (target >= 0.80x)")


if __name__ == "__main__":
    main()
