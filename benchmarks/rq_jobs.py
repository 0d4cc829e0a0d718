"""The job RQ runs in the benchmarks (an importable function, as RQ needs)."""
from __future__ import annotations


def noop() -> int:
    """Returns at once, as bench_jobs.NoopJob does."""
    return 200
