"""The example service of the original Spacewalk README, on Flask.

Run it with ``make run``, or::

    flask --app examples.app spacewalk serve --bind 127.0.0.1:8888

Settings come from the environment: ``SPACEWALK_*`` variables, which
flask-spacewalk reads itself and so does ``python -m flask_spacewalk.worker``
(e.g. ``SPACEWALK_DATASTORE_URL=sqlite:////tmp/jobs.sqlite3``), or
``FLASK_SPACEWALK_*`` ones (Flask's ``from_prefixed_env``), which win. Its
instance folder is ``./instance`` of the repository's root, where the
standalone worker run from the root looks by default.
"""
from __future__ import annotations

from flask import Flask

from flask_spacewalk import Spacewalk

from .jobs.examples import BaseExampleJob


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()
    Spacewalk(app, "jobs", BaseExampleJob)

    @app.get("/")
    def index() -> dict[str, str]:
        return {
            "jobs": "/examples/leaves",
            "branches": "/examples/branches",
            "stored jobs": "/examples/jobs",
            "docs": "/docs",
            "console": "/examples/console",
            "openapi": "/openapi.json",
        }

    return app


app = create_app()
