"""Job classes the benchmarks run."""
from __future__ import annotations

from typing import Any

from flask_spacewalk import BaseJob


class BenchRoot(BaseJob):
    NAME = "Benchmarks"
    BRANCH_NAME = "bench"
    DESCRIPTION = "jobs the benchmarks run"


class NoopJob(BenchRoot):
    NAME = "No-op"
    LEAF_NAME = "noop"
    DESCRIPTION = "returns 200 at once"

    def run(self) -> Any:
        return 200
