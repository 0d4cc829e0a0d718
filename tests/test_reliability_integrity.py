"""Data integrity under contention (issue 6, item 5): writers in several
processes and cancel requests change one job document at once, on every
datastore; compare-and-swap retries must lose no event and no attribute."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, SPAWN, _reporting
from runtime_jobs.contended import WRITERS, ContendedJob

from flask_spacewalk import make_datastore, make_queue
from flask_spacewalk.runtime.cancel import CANCELLED, CancelAnswer, cancel_job, cancel_requested
from flask_spacewalk.runtime.registry import JobRegistry

pytestmark = pytest.mark.reliability

#: Writes per writer process: events and attribute updates, interleaved.
STEPS = 30
REGISTRY = JobRegistry([ContendedJob])


@pytest.fixture(params=sorted(DATASTORES))
def datastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with DATASTORES[request.param](tmp_path) as url:
        yield url


def open_job(datastore_url: str, queue_url: str, uuid: str) -> Any:
    return REGISTRY.get_job(uuid, make_datastore(datastore_url), make_queue(queue_url, "c_jobs"))


@_reporting
def write(datastore_url: str, queue_url: str, uuid: str, writer: int) -> int:
    """What a running job does: events and attribute updates, each its own save."""
    job = open_job(datastore_url, queue_url, uuid)
    for step in range(STEPS):
        job.record_event(f"w{writer}-{step}")
        job.update_attrs(**{f"w{writer}": step})
    return writer


@_reporting
def cancel(datastore_url: str, queue_url: str, uuid: str, times: int) -> list[str]:
    """What the API does on POST R/cancel/<uuid>, again and again."""
    answers = []
    for _ in range(times):
        job = open_job(datastore_url, queue_url, uuid)
        answers.append(cancel_job(job).value)
    return answers


def run_together(calls: list[tuple[Any, tuple[Any, ...]]]) -> list[Any]:
    """Start every ``target(*args)`` in its own process at once; their results."""
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args, results)) for target, args in calls]
    for proc in procs:
        proc.start()
    try:
        out = [results.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
    failures = [o[1] for o in out if isinstance(o, tuple) and o[0] == "error"]
    assert not failures, failures[0]
    return out


def contend(
    datastore_url: str, tmp_path: Path, *, running: bool, cancels: int
) -> tuple[Any, list[str]]:
    """Writers and a canceller on one job at once; the job after, and the
    canceller's answers."""
    queue_url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    job = ContendedJob(make_datastore(datastore_url), make_queue(queue_url, "c_jobs"))
    job.running = running
    job.save()
    calls: list[tuple[Any, tuple[Any, ...]]] = [
        (write, (datastore_url, queue_url, job.uuid, writer)) for writer in range(WRITERS)
    ]
    calls.append((cancel, (datastore_url, queue_url, job.uuid, cancels)))
    out = run_together(calls)
    answers = next(o for o in out if isinstance(o, list))
    return open_job(datastore_url, queue_url, job.uuid), answers


def assert_every_write_kept(job: Any) -> None:
    events = [event.msg for event in job.events]
    assert len(events) == len(set(events)), "an event was recorded twice"
    for writer in range(WRITERS):
        # all of each writer's events, in its own order, and its last value
        mine = [e for e in events if e.startswith(f"w{writer}-")]
        assert mine == [f"w{writer}-{s}" for s in range(STEPS)]
        assert getattr(job, f"w{writer}") == STEPS - 1
    assert len(events) == WRITERS * STEPS


def test_writers_and_cancel_requests_on_a_running_job_lose_nothing(
    datastore_url: str, tmp_path: Path
) -> None:
    job, answers = contend(datastore_url, tmp_path, running=True, cancels=STEPS)
    assert_every_write_kept(job)
    # a running job is left to its worker: asked, not finished by the API
    assert answers == [CancelAnswer.CANCELLING.value] * STEPS
    assert job.resultCode == -1
    assert cancel_requested(job.datastore, job.uuid)


def test_a_cancel_among_writers_of_a_queued_job_keeps_their_writes(
    datastore_url: str, tmp_path: Path
) -> None:
    job, answers = contend(datastore_url, tmp_path, running=False, cancels=3)
    # the first request cancels the queued job; the others find its result
    assert answers == ["cancelled", "finished", "finished"]
    assert job.resultCode == CANCELLED
    assert [e.errorCode for e in job.errors] == [CANCELLED]
    assert_every_write_kept(job)
