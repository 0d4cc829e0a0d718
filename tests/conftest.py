"""Fixtures shared by the whole suite."""
from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask

from flask_spacewalk import Spacewalk, make_datastore, make_queue
from flask_spacewalk.runtime.registry import JobRegistry

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# The job modules the tests run live in tests/runtime_jobs; worker processes
# started by the tests import them by path, the tests by name.
sys.path.insert(0, str(TESTS))

from runtime_jobs import jobs as runtime_jobs  # noqa: E402

EXAMPLE_JOBS = ROOT / "examples" / "jobs"


def pytest_report_header() -> str:
    return f"marshmallow {importlib.metadata.version('marshmallow')}"


def pytest_configure(config: pytest.Config) -> None:
    # `make test-mm3` shadows marshmallow 4 with a marshmallow 3 on PYTHONPATH
    # and names the version it expects: a run on another one must not pass.
    expected = os.environ.get("SPACEWALK_TEST_MARSHMALLOW")
    found = importlib.metadata.version("marshmallow")
    if expected and found != expected and not found.startswith(expected + "."):
        raise pytest.UsageError(f"expected marshmallow {expected}, imported {found}")
MakeApp = Callable[..., Flask]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """An absolute ``sqlite:////...`` URL in this test's own directory."""
    return f"sqlite:///{tmp_path / 'spacewalk.sqlite3'}"


@pytest.fixture
def datastore(db_url: str) -> Iterator[object]:
    store = make_datastore(db_url)
    yield store
    store.close()


@pytest.fixture
def queue(db_url: str) -> Iterator[object]:
    q = make_queue(db_url, "test_jobs")
    yield q
    q.close()


@pytest.fixture
def registry() -> JobRegistry:
    return JobRegistry(
        [
            runtime_jobs.NoopJob,
            runtime_jobs.ReturnsJob,
            runtime_jobs.RequeueJob,
            runtime_jobs.FailJob,
            runtime_jobs.InterruptJob,
            runtime_jobs.SleepJob,
        ]
    )


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """Apps with trees added by ``(root, modules_dir, options)``."""
    from examples.jobs.examples import BaseExampleJob

    apps: list[Flask] = []

    def make(*trees: tuple[type, Path, dict[str, Any]], **config: Any) -> Flask:
        app = Flask(__name__, instance_path=str(tmp_path))
        app.config["SPACEWALK_DATASTORE_URL"] = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        app.config.update(config)
        for root, modules_dir, options in trees or [(BaseExampleJob, EXAMPLE_JOBS, {})]:
            Spacewalk(app, modules_dir, root, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        for state in app.extensions["spacewalk"].values():
            state.close()


def requires_ci_or_skip(reason: str) -> None:
    """Skip with ``reason`` locally; fail in CI, where everything must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)
