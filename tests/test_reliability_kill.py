"""Kill tests (issue 6, item 1): workers SIGKILLed at random lose no job and
record no final result twice, on SQLite, on PostgreSQL + beanstalkd, on
PostgreSQL alone (its queue) and on Redis (its queue beside its datastore:
the optimistic claims and commits).

Three worker processes run 1,000 jobs that each report progress four times
while a controller SIGKILLs a random worker every ~0.5 s; the supervisor
restarts it and the job it held comes back when its one-second lease runs
out. Re-runs are allowed (execution is at-least-once); two final records of
one job are not. ``pytest -s`` prints the counts; the JUnit report has them
as properties.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from backend_support import DATASTORES, QUEUES
from conftest import requires_ci_or_skip
from reliability_support import kill_round

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

BACKENDS = [("sqlite", "sqlite"), ("postgresql", "beanstalkd"), ("postgresql", "postgresql"),
            ("redis", "redis")]


@pytest.mark.parametrize(("datastore", "queue"), BACKENDS,
                         ids=["sqlite", "postgresql+beanstalkd", "postgresql", "redis"])
def test_sigkilled_workers_lose_no_job_and_record_no_result_twice(
    datastore: str, queue: str, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    if datastore not in DATASTORES or queue not in QUEUES:
        requires_ci_or_skip(f"the {datastore} and {queue} backends are not available")
    with contextlib.ExitStack() as stack:
        datastore_url = stack.enter_context(DATASTORES[datastore](tmp_path))
        # one database for both: the queue's entries beside the documents
        queue_url = datastore_url if queue == datastore else stack.enter_context(
            QUEUES[queue](tmp_path))
        report = kill_round(f"{datastore}+{queue}", datastore_url, queue_url, tmp_path)
    print(report.summary())
    for name in ("jobs", "kills", "reruns", "runs"):
        record_property(name, getattr(report, name))
    record_property("elapsed", round(report.elapsed, 1))
    assert report.problems == []
    # The controller really killed workers mid-run, and jobs really re-ran.
    assert report.kills >= 3
    assert report.runs >= report.jobs
