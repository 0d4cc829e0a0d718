"""The app the HTTP benchmark serves: the example tree plus a plain view.

Settings come from ``FLASK_SPACEWALK_*`` environment variables.
"""
from __future__ import annotations

from flask import Flask

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk import Spacewalk

app = Flask(__name__)
app.config.from_prefixed_env()
Spacewalk(app, "../examples/jobs", BaseExampleJob)


@app.get("/plain")
def plain() -> dict[str, object]:
    """The baseline: a plain Flask JSON view."""
    return {"completeness": 1.0, "result": 200}
