"""Data integrity under contention (issue 6, item 5): writers in several
processes and cancel requests change one job document at once, on every
datastore; compare-and-swap retries must lose no event and no attribute."""
from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, SPAWN, _reporting
from runtime_jobs.contended import WRITERS, ContendedJob

from flask_spacewalk import make_datastore, make_queue
from flask_spacewalk.errors import JobUpdateConflict
from flask_spacewalk.runtime.cancel import CANCELLED, CancelAnswer, cancel_requested
from flask_spacewalk.runtime.job import MAX_SAVE_ATTEMPTS
from flask_spacewalk.runtime.lifecycle import cancel_job
from flask_spacewalk.runtime.registry import JobRegistry

pytestmark = pytest.mark.reliability

#: Writes per writer process: events and attribute updates, interleaved.
STEPS = 30
#: Longest pause between two writes of one process: short, so that four
#: processes nearly saturate one document. On PostgreSQL, where each write
#: waits for its commit, about every other write then conflicts, and a
#: writer meets MAX_SAVE_ATTEMPTS conflicts in a row now and then: the call
#: raises JobUpdateConflict, so the writer knows its change was not saved
#: and can make it again. Nothing is ever lost silently, which is what these
#: tests check.
MAX_PAUSE = 0.004
REGISTRY = JobRegistry([ContendedJob])


@pytest.fixture(params=sorted(DATASTORES))
def datastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with DATASTORES[request.param](tmp_path) as url:
        yield url


def open_job(datastore_url: str, queue_url: str, uuid: str) -> Any:
    return REGISTRY.get_job(uuid, make_datastore(datastore_url), make_queue(queue_url, "c_jobs"))


def count_conflicts(job: Any) -> list[int]:
    """A counter of the job's conflicts: record_change reloads after each."""
    counter = [0]
    reload = job.reload

    def counting_reload() -> None:
        counter[0] += 1
        reload()

    job.reload = counting_reload
    return counter


def until_saved(change: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Make ``change`` until it is saved: what it returned, and the times it
    gave up first."""
    for given_up in itertools.count():
        try:
            return change(*args, **kwargs), given_up
        except JobUpdateConflict:
            continue
    raise AssertionError("unreachable")


@_reporting
def write(
    datastore_url: str, queue_url: str, uuid: str, start: Any, writer: int
) -> tuple[int, int]:
    """What a running job does: events and attribute updates, each its own
    save; returns the conflicts met and the calls that gave up."""
    job = open_job(datastore_url, queue_url, uuid)
    conflicts = count_conflicts(job)
    start.wait(60)  # every process is up: they write at once
    given_up = 0
    for step in range(STEPS):
        given_up += until_saved(job.record_event, f"w{writer}-{step}")[1]
        time.sleep(random.uniform(0, MAX_PAUSE))
        given_up += until_saved(job.update_attrs, **{f"w{writer}": step})[1]
        time.sleep(random.uniform(0, MAX_PAUSE))
    return conflicts[0], given_up


@_reporting
def cancel(
    datastore_url: str, queue_url: str, uuid: str, start: Any, times: int
) -> list[str]:
    """What the API does on POST R/cancel/<uuid>, again and again."""
    answers = []
    start.wait(60)  # every process is up: they write at once
    for _ in range(times):
        job = open_job(datastore_url, queue_url, uuid)
        answers.append(until_saved(cancel_job, job)[0].value)
        time.sleep(random.uniform(0, MAX_PAUSE))
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
    # All start writing at once, once every process is up (spawn is slow,
    # and slower on a loaded machine: a fixed start time let them miss
    # each other).
    common = (datastore_url, queue_url, job.uuid, SPAWN.Barrier(WRITERS + 1))
    calls: list[tuple[Any, tuple[Any, ...]]] = [
        (write, (*common, writer)) for writer in range(WRITERS)
    ]
    calls.append((cancel, (*common, cancels)))
    out = run_together(calls)
    answers = next(o for o in out if isinstance(o, list))
    conflicts = sum(o[0] for o in out if isinstance(o, tuple))
    given_up = sum(o[1] for o in out if isinstance(o, tuple))
    print(f"{datastore_url.split(':')[0]}: {WRITERS * STEPS * 2} writes, "
          f"{conflicts} conflicts, {given_up} calls gave up after {MAX_SAVE_ATTEMPTS} attempts")
    assert conflicts > 0, "the writers never collided: this tested nothing"
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
