"""Fixtures shared by the whole suite."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_spacewalk import make_datastore, make_queue
from flask_spacewalk.runtime.registry import JobRegistry

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# The job modules the tests run live in tests/runtime_jobs; worker processes
# started by the tests import them by path, the tests by name.
sys.path.insert(0, str(TESTS))

from runtime_jobs import jobs as runtime_jobs  # noqa: E402


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


def requires_ci_or_skip(reason: str) -> None:
    """Skip with ``reason`` locally; fail in CI, where everything must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)
