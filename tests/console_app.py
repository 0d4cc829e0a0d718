"""The app the console's browser tests serve: the example app plus the
tree of tests/console_jobs (``flask --app console_app spacewalk serve``,
run from tests/)."""
from __future__ import annotations

from pathlib import Path

from flask import Flask

from examples.app import create_app as create_example_app
from flask_spacewalk import Spacewalk

CONSOLE_JOBS = Path(__file__).resolve().parent / "console_jobs"


def create_app() -> Flask:
    app = create_example_app()
    from console_jobs.jobs import ConsoleRoot

    Spacewalk(app, CONSOLE_JOBS, ConsoleRoot)
    return app


app = create_app()
