"""The app the HTTP benchmarks serve: the example tree, a no-op tree and a
plain view. Settings come from ``FLASK_SPACEWALK_*`` environment variables.
"""
from __future__ import annotations

from flask import Flask

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk import Spacewalk

from .bench_jobs import BenchRoot

app = Flask(__name__)
app.config.from_prefixed_env()
Spacewalk(app, "../examples/jobs", BaseExampleJob)
Spacewalk(app, "benchmarks.bench_jobs", BenchRoot)


@app.get("/plain")
def plain() -> dict[str, object]:
    """The baseline: a plain Flask JSON view."""
    return {"completeness": 1.0, "result": 200}
