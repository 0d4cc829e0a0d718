"""The app the ``flask spacewalk serve`` tests run (``flask --app serve_app
spacewalk serve``, from tests/): the example app plus two routes that let a
test find a web worker and hold one past gunicorn's timeout."""
from __future__ import annotations

import os
import time

from flask import Flask

from examples.app import create_app as create_example_app


def create_app() -> Flask:
    app = create_example_app()

    @app.get("/serve-test/pid")
    def pid() -> dict[str, int]:
        return {"pid": os.getpid(), "ppid": os.getppid()}

    @app.get("/serve-test/sleep/<float:seconds>")
    def sleep(seconds: float) -> dict[str, float]:
        time.sleep(seconds)
        return {"slept": seconds}

    return app


app = create_app()
