"""The per-class run policy (SPEC section 7): retry delays and TIMEOUT."""
from __future__ import annotations

import logging
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from backend_support import DATASTORES, QUEUES, _close
from conftest import requires_ci_or_skip
from marshmallow import Schema, fields
from runtime_jobs.jobs import BackoffJob, NoopJob, TimeoutJob
from test_cancel import PAIRINGS
from test_worker_processes import children_of, start_worker, stop, wait_for

from flask_spacewalk import NO_RESULT, BaseJob, make_datastore, make_queue
from flask_spacewalk.errors import ConfigurationError, JobTreeError
from flask_spacewalk.runtime.cancel import (
    CancelWatch,
    JobCancelled,
    StopReason,
    cancel_key,
    request_cancel,
)
from flask_spacewalk.runtime.job import RuntimeJob, make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.outcome import JobTimedOut
from flask_spacewalk.runtime.policy import backoff_delay, policy_problems, retry_delay
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.worker_loop import Worker, install_cancel_handler
from flask_spacewalk.tree import build_tree
from flask_spacewalk.worker import main as worker_main

REGISTRY = JobRegistry([BackoffJob, NoopJob, TimeoutJob])


class MaxRng(random.Random):
    """Always draws the largest jitter."""

    def random(self) -> float:
        return 1.0


class MinRng(random.Random):
    def random(self) -> float:
        return 0.0


# -- the delay ---------------------------------------------------------------


def test_the_defaults_give_zerogs_30_seconds_every_time() -> None:
    assert (RuntimeJob.MAX_ERRORS, RuntimeJob.RETRY_DELAY, RuntimeJob.RETRY_BACKOFF,
            RuntimeJob.RETRY_MAX_DELAY, RuntimeJob.TIMEOUT) == (3, None, 1.0, 3600.0, None)
    assert policy_problems(NoopJob) == []
    assert [retry_delay(NoopJob, k, 30.0, MaxRng()) for k in range(1, 8)] == [30.0] * 7
    # The worker's own ERROR_RETRY_DELAY is the base of a class without one.
    assert retry_delay(NoopJob, 2, 4.0) == 4.0


# The table of docs/jobs.rst ("Run policy"): RETRY_DELAY 5, RETRY_BACKOFF 2.
@pytest.mark.parametrize("k, low, high", [(1, 5, 5.5), (2, 10, 11), (3, 20, 22), (4, 40, 44),
                                          (5, 80, 88), (6, 160, 176)])
def test_delays_grow_by_the_backoff_plus_up_to_a_tenth(k: int, low: float, high: float) -> None:
    assert retry_delay(BackoffJob, k, 30.0, MinRng()) == low
    assert retry_delay(BackoffJob, k, 30.0, MaxRng()) == pytest.approx(high)
    drawn = [retry_delay(BackoffJob, k, 30.0, random.Random(seed)) for seed in range(50)]
    assert all(low <= d <= high for d in drawn) and len(set(drawn)) == 50


def test_the_jitter_follows_the_rng_given() -> None:
    first = [backoff_delay(k, 5, 2, 600, random.Random(7)) for k in range(1, 7)]
    assert first == [backoff_delay(k, 5, 2, 600, random.Random(7)) for k in range(1, 7)]
    assert first != [backoff_delay(k, 5, 2, 600, random.Random(8)) for k in range(1, 7)]


def test_the_cap_comes_after_the_jitter() -> None:
    assert backoff_delay(7, 5, 2, 600, MinRng()) == 320
    assert backoff_delay(7, 5, 2, 330, MaxRng()) == 330  # 352 capped
    assert backoff_delay(8, 5, 2, 600, MinRng()) == 600  # 640 capped
    assert backoff_delay(1, 700, 1, 600) == 600


@pytest.mark.parametrize(
    "k, base, backoff",
    [(1_100, 5, 2), (10**6, 5, 2), (10**400, 5, 2), (1_080, 5e-324, 2), (10**400, 5e-324, 2),
     (3, 1, 1e308), (10**400, 5, 1 + 2**-52)],
    ids=["1100", "1e6", "1e400", "tiny-base", "tiny-base-1e400", "huge-backoff",
         "least-backoff-1e400"],
)
def test_huge_error_counts_never_overflow(k: int, base: float, backoff: float) -> None:
    # 2.0 ** 1100 and 1e308 ** 2 overflow: the cap is applied first
    assert backoff_delay(k, base, backoff, 600, MaxRng()) == 600


def test_no_backoff_no_jitter_and_zero_delays() -> None:
    assert backoff_delay(4, 7, 1, 600, MaxRng()) == 7
    assert backoff_delay(4, 0, 2, 600, MaxRng()) == 0
    assert backoff_delay(4, 7, 2, 0, MaxRng()) == 0
    # A warning interrupt counts no error: the first delay, not a shorter one.
    assert backoff_delay(0, 5, 2, 600, MinRng()) == 5


# -- refused at registration ---------------------------------------------------


def policy_class(**attributes: Any) -> type[RuntimeJob]:
    return type("Policed", (NoopJob,), {"__module__": __name__, "JOB_TYPE": "policed",
                                        **attributes})


@pytest.mark.parametrize(
    "attributes, problem",
    [
        ({"RETRY_DELAY": -1}, "RETRY_DELAY must be None or a number of seconds from 0 to"
                              " 2147483647, not -1"),
        ({"RETRY_DELAY": "30"}, "RETRY_DELAY must be None or a number of seconds"),
        ({"RETRY_DELAY": float("nan")}, "RETRY_DELAY must be None or a number of seconds"),
        ({"RETRY_DELAY": True}, "RETRY_DELAY must be None"),
        ({"RETRY_BACKOFF": 0.5}, "RETRY_BACKOFF must be a finite number >= 1 (1: every retry"
                                 " waits RETRY_DELAY), not 0.5"),
        ({"RETRY_BACKOFF": float("inf")}, "RETRY_BACKOFF must be a finite number >= 1"),
        ({"RETRY_BACKOFF": None}, "RETRY_BACKOFF must be a finite number >= 1"),
        ({"RETRY_MAX_DELAY": 2**31}, "RETRY_MAX_DELAY must be a number of seconds from 0"),
        ({"RETRY_MAX_DELAY": None}, "RETRY_MAX_DELAY must be a number of seconds from 0"),
        ({"TIMEOUT": 0}, "TIMEOUT must be None or a number of seconds from 0 to 2147483647,"
                         " above 0, not 0"),
        ({"TIMEOUT": "2m"}, "TIMEOUT must be None or a number of seconds"),
        ({"TIMEOUT": float("inf")}, "TIMEOUT must be None or a number of seconds"),
        ({"MAX_ERRORS": -1}, "MAX_ERRORS must be a number >= 0, not -1"),
        ({"MAX_ERRORS": None}, "MAX_ERRORS must be a number >= 0, not None"),
        ({"RETRY_DELAY": 7200}, "RETRY_DELAY 7200 is above RETRY_MAX_DELAY 3600.0, which caps"
                                " every retry: raise RETRY_MAX_DELAY"),
    ],
)
def test_bad_policy_attributes_are_refused_at_registration(
    attributes: dict[str, Any], problem: str
) -> None:
    job_class = policy_class(**attributes)
    assert len(policy_problems(job_class)) == 1
    with pytest.raises(ConfigurationError) as refused:
        JobRegistry([job_class])
    assert str(refused.value).startswith(f"{__name__}.Policed: {problem}")


def test_good_policies_pass() -> None:
    for attributes in ({"RETRY_DELAY": 0, "RETRY_MAX_DELAY": 0}, {"MAX_ERRORS": float("inf")},
                       {"TIMEOUT": 0.001, "RETRY_BACKOFF": 1}, {"RETRY_DELAY": 3600}):
        assert policy_problems(policy_class(**attributes)) == []


def test_the_tree_lists_policy_problems_with_the_others() -> None:
    class Root(BaseJob):
        BRANCH_NAME = "root"

    class Slow(Root):
        LEAF_NAME = "slow"
        TIMEOUT = -5
        RETRY_BACKOFF = "2"

        def run(self) -> int:
            return 200

    with pytest.raises(JobTreeError) as refused:
        build_tree(Root, [Root, Slow])
    assert [p.split(": ", 1)[1].split(",")[0] for p in refused.value.problems] == [
        "RETRY_BACKOFF must be a finite number >= 1 (1: every retry waits RETRY_DELAY)",
        "TIMEOUT must be None or a number of seconds from 0 to 2147483647",
    ]


def test_the_standalone_worker_refuses_a_bad_policy(tmp_path: Path, capsys: Any) -> None:
    jobs = tmp_path / "bad_policy_jobs"
    jobs.mkdir()
    (jobs / "jobs.py").write_text(
        "from flask_spacewalk import BaseJob\n"
        "class Root(BaseJob):\n"
        "    BRANCH_NAME = 'root'\n"
        "class Hasty(Root):\n"
        "    LEAF_NAME = 'hasty'\n"
        "    RETRY_DELAY = -3\n"
        "    def run(self):\n"
        "        return 200\n"
    )
    before = set(sys.modules)
    try:
        code = worker_main(["--jobs", str(jobs), "--datastore", f"sqlite:///{tmp_path / 'db'}"])
    finally:
        # the job modules, imported under private names (test_discovery counts them)
        for name in set(sys.modules) - before:
            if name.startswith("_spacewalk_modules_"):
                del sys.modules[name]
    assert code == 2
    assert "Hasty: RETRY_DELAY must be None or a number of seconds" in capsys.readouterr().err


# -- retries on a worker -------------------------------------------------------


class PolicyWorker(Worker):
    """The real worker, with the loop's waits short; it never exits the
    test's process, even for a job that does not stop."""

    LOAD_RETRY_DELAY = 0.0
    RESERVE_TIMEOUT = 0.05
    MAX_BACKOFF = 0.0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gave_up: list[StopReason] = []

    def _give_up(self, uuid: str, entry: Any, reason: StopReason, timeout: Any) -> None:
        self.gave_up.append(reason)


def make_worker(datastore: Any, queue: Any) -> PolicyWorker:
    return PolicyWorker(REGISTRY, lambda: datastore, lambda name: queue, queue.queueName)


@pytest.fixture
def forced() -> Iterator[Callable[[PolicyWorker], PolicyWorker]]:
    """Makes a worker stop jobs by force, as worker processes do."""
    previous = signal.getsignal(Worker.CANCEL_SIGNAL)

    def force(worker: PolicyWorker) -> PolicyWorker:
        install_cancel_handler(worker)
        return worker

    yield force
    signal.signal(Worker.CANCEL_SIGNAL, previous)


@pytest.fixture
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A fresh datastore and queue of the pairing ``request.param`` names."""
    store, queue_kind = PAIRINGS[request.param]
    if store not in DATASTORES or queue_kind not in QUEUES:
        requires_ci_or_skip(f"the {request.param} backends are not available")
    with DATASTORES[store](tmp_path) as store_url, QUEUES[queue_kind](tmp_path) as queue_url:
        datastore, queue = make_datastore(store_url), make_queue(queue_url, "test_jobs")
        yield datastore, queue
        _close(datastore)
        _close(queue)


def stored(datastore: Any, uuid: str) -> dict[str, Any]:
    return datastore.read(make_key(uuid))  # type: ignore[no-any-return]


@pytest.mark.parametrize("backends", sorted(PAIRINGS), indirect=True)
def test_retries_of_a_job_that_always_raises_back_off(backends: Any, caplog: Any) -> None:
    datastore, queue = backends
    job = BackoffJob(datastore, queue)
    job.save()
    worker = make_worker(datastore, queue)
    delays = []
    with caplog.at_level(logging.WARNING, "flask_spacewalk.runtime.worker_loop"):
        for _ in range(BackoffJob.MAX_ERRORS):
            # What the queue does once the delay ran out, without the wait.
            queue.put(job.uuid)
            worker.process_entry(queue.reserve(timeout=0))
            delays.append(stored(datastore, job.uuid)["queueKwargs"].get("delay"))
    document = stored(datastore, job.uuid)
    assert (document["runs"], document["errorCount"], document["resultCode"]) == (5, 5, 500)
    for k, delay in enumerate(delays[:4], start=1):
        assert 5 * 2 ** (k - 1) <= delay <= 5.5 * 2 ** (k - 1)
    assert [e["msg"] for e in document["events"]] == ["Error - restarting"] * 4 + [
        "Error - finished"]
    lines = [r.getMessage() for r in caplog.records]
    retries = [line.rsplit("; ", 1)[1] for line in lines if line.startswith("job rt_backoff")]
    assert retries == [f"retry in {round(d, 1):g} s" for d in delays[:4]] + ["failed with 500"]


@pytest.mark.parametrize("how", ["raise", "error_continue", "warning_continue"])
def test_the_policy_applies_to_exceptions_and_continue_interrupts(
    datastore: Any, queue: Any, how: str
) -> None:
    job = BackoffJob(datastore, queue, how=how)
    job.enqueue()
    make_worker(datastore, queue).process_entry(queue.reserve(timeout=0))
    delay = stored(datastore, job.uuid)["queueKwargs"]["delay"]
    assert 5 <= delay <= 5.5
    assert queue.reserve(timeout=0) is None  # delayed


def test_the_policy_applies_to_timeouts(datastore: Any, queue: Any) -> None:
    job = TimeoutJob(datastore, queue, mode="progress")
    job.enqueue()
    worker = make_worker(datastore, queue)
    worker.ERROR_RETRY_DELAY = 9.0  # the base of a class without RETRY_DELAY
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TimeoutJob, "RETRY_DELAY", None)
        worker.process_entry(queue.reserve(timeout=0))
    assert stored(datastore, job.uuid)["queueKwargs"]["delay"] == 9.0


# -- timeouts ------------------------------------------------------------------


def errors_of(document: dict[str, Any]) -> list[tuple[int, str]]:
    return [(e["errorCode"], e["msg"]) for e in document["errors"]]


@pytest.mark.parametrize(
    "backends, final, result",
    [("sqlite", None, 500), ("sqlite", 408, 408), ("postgresql+beanstalkd", None, 500),
     ("redis", None, 500)],
    indirect=["backends"],
)
def test_a_job_that_sleeps_forever_ends_after_max_errors_timeouts(
    backends: Any, forced: Any, caplog: Any, final: int | None, result: int
) -> None:
    datastore, queue = backends
    job = TimeoutJob(datastore, queue, mode="sleep", final=final)
    job.enqueue()
    worker = forced(make_worker(datastore, queue))
    with caplog.at_level(logging.WARNING, "flask_spacewalk.runtime.worker_loop"):
        worker.run(burst=True)
    document = stored(datastore, job.uuid)
    assert (document["runs"], document["resultCode"], document["running"]) == (3, result, False)
    assert errors_of(document) == [(504, "timed out after 0.3 s")] * 3
    assert [e["msg"] for e in document["events"]] == ["Timed out - restarting"] * 2 + [
        "Timed out - finished"]
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("worker_loop")]
    assert lines == [f"job rt_timeout {job.uuid}: timed out after 0.3 s; retry in 0 s"] * 2 + [
        f"job rt_timeout {job.uuid}: timed out after 0.3 s; failed with {result}"]
    assert worker.gave_up == [] and queue.reserve(timeout=0) is None


def test_a_loop_without_progress_calls_is_stopped_by_force(
    datastore: Any, queue: Any, forced: Any
) -> None:
    job = TimeoutJob(datastore, queue, mode="spin", final=500, max_errors=1)
    job.enqueue()
    worker = forced(make_worker(datastore, queue))
    worker.run(burst=True)
    document = stored(datastore, job.uuid)
    assert (document["runs"], document["resultCode"]) == (1, 500)
    assert errors_of(document) == [(504, "timed out after 0.3 s")]
    assert worker.gave_up == []


def test_a_job_reporting_progress_stops_at_its_keepalive(datastore: Any, queue: Any) -> None:
    # No force (an in-process worker): the next progress call stops the run.
    job = TimeoutJob(datastore, queue, mode="progress", final=500, max_errors=2)
    job.enqueue()
    make_worker(datastore, queue).run(burst=True)
    document = stored(datastore, job.uuid)
    assert (document["runs"], document["resultCode"]) == (2, 500)
    assert errors_of(document) == [(504, "timed out after 0.3 s")] * 2
    assert 0 < document["completeness"] and document["running"] is False


def test_a_run_that_catches_its_timeout_and_returns_keeps_its_result(
    datastore: Any, queue: Any, forced: Any
) -> None:
    job = TimeoutJob(datastore, queue, mode="catch")
    job.enqueue()
    forced(make_worker(datastore, queue)).run(burst=True)
    document = stored(datastore, job.uuid)
    assert (document["runs"], document["resultCode"], document["errors"]) == (1, 201, [])


def test_a_cancel_requested_while_timing_out_wins(
    datastore: Any, queue: Any, forced: Any
) -> None:
    job = TimeoutJob(datastore, queue, mode="cancel")
    job.enqueue()
    forced(make_worker(datastore, queue)).run(burst=True)
    document = stored(datastore, job.uuid)
    assert (document["runs"], document["resultCode"]) == (1, 410)
    assert errors_of(document) == [(410, "cancelled")]
    assert datastore.read(cancel_key(job.uuid)) is None and queue.reserve(timeout=0) is None


def test_the_watch_says_cancel_when_both_apply(datastore: Any) -> None:
    watch = CancelWatch(datastore, "u", lambda: None, grace=10)
    with watch.running(0.5):
        assert watch.stop_error() is None
        watch.timed_out = True
        assert isinstance(watch.stop_error(), JobTimedOut)
        assert watch.stop_reason is StopReason.TIMEOUT
        watch.requested = True
        assert isinstance(watch.stop_error(), JobCancelled)
        assert watch.stop_reason is StopReason.CANCEL
    assert watch.stop_error() is None  # not armed: the run is over


def test_a_timed_out_job_that_does_not_stop_is_recorded_by_time_out_stuck(
    datastore: Any, queue: Any
) -> None:
    # What a worker process does before it exits: the job's timeout
    # recorded, and continue_running() obeyed.
    lifecycle = Lifecycle(datastore, queue, REGISTRY, error_retry_delay=0.0)
    job = TimeoutJob(datastore, queue)
    lifecycle.create(job)
    entry = queue.reserve(timeout=0)
    assert lifecycle.start(job) is None
    lifecycle.time_out_stuck(job.uuid, entry, 0.3)
    document = stored(datastore, job.uuid)
    assert (document["running"], document["resultCode"]) == (False, NO_RESULT)
    assert errors_of(document) == [(504, "timed out after 0.3 s")]
    assert document["events"][-1]["msg"] == "Timed out - restarting"
    again = queue.reserve(timeout=0)  # requeued; the stuck run's entry is gone
    assert again is not None and again.id == document["queueJobId"] != entry.id
    # A cancel request stored meanwhile wins.
    assert lifecycle.start(job) is None
    request_cancel(datastore, job.uuid)
    lifecycle.time_out_stuck(job.uuid, again, 0.3)
    document = stored(datastore, job.uuid)
    assert (document["resultCode"], errors_of(document)[1:]) == (410, [(410, "cancelled")])
    assert datastore.read(cancel_key(job.uuid)) is None
    assert queue.reserve(timeout=0) is None
    with pytest.raises(TypeError, match="registry"):
        Lifecycle(datastore, queue).time_out_stuck(job.uuid, again, 0.3)


def test_inline_runs_ignore_the_timeout(datastore: Any, queue: Any) -> None:
    job = TimeoutJob(datastore, queue, mode="sleep", seconds=0.5)
    Lifecycle(datastore, queue, REGISTRY).run_inline(job)
    document = stored(datastore, job.uuid)
    assert (document["runs"], document["resultCode"], document["errors"]) == (1, 200, [])


def test_a_run_within_its_timeout_is_not_touched(
    datastore: Any, queue: Any, forced: Any, caplog: Any
) -> None:
    job = TimeoutJob(datastore, queue, mode="sleep", seconds=0.05)
    job.enqueue()
    with caplog.at_level(logging.WARNING, "flask_spacewalk.runtime"), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(TimeoutJob, "TIMEOUT", 5)  # room for a loaded machine
        forced(make_worker(datastore, queue)).run(burst=True)
    document = stored(datastore, job.uuid)
    assert (document["resultCode"], document["errors"]) == (200, [])
    assert [r for r in caplog.records if r.name.startswith("flask_spacewalk.runtime")] == []


# -- a process that gives up ---------------------------------------------------


@pytest.mark.slow
def test_a_job_that_swallows_its_timeout_is_recorded_as_its_process_exits(
    db_url: str, datastore: Any
) -> None:
    queue = make_queue(db_url, "test_jobs")
    job = TimeoutJob(datastore, queue, mode="swallow", final=500, max_errors=2)
    job.enqueue()
    proc = start_worker(db_url, "--cancel-grace", "1")
    try:
        final = wait_for(lambda: stored(datastore, job.uuid)["resultCode"] == 500
                         and stored(datastore, job.uuid), what="result 500")
        wait_for(lambda: children_of(proc.pid), what="a new child")
        after = NoopJob(datastore, queue)
        after.enqueue()
        wait_for(lambda: stored(datastore, after.uuid)["resultCode"] == 200, what="next job")
    finally:
        out = stop(proc)
        queue.close()
    assert proc.returncode == 0, out
    assert out.count("exit 3") == 2, out
    assert "recording its timeout and exiting" in out
    # Each run in its own process, each recorded; never lost, never stuck.
    assert final["runs"] == 2 and len(set(final["pids"])) == 2 and final["running"] is False
    assert errors_of(final) == [(504, "timed out after 0.3 s")] * 2
    assert [e["msg"] for e in final["events"]] == ["Timed out - restarting",
                                                   "Timed out - finished"]


def test_params_cannot_take_a_policy_attributes_name() -> None:
    class Root(BaseJob):
        BRANCH_NAME = "root"

    class Clash(Root):
        LEAF_NAME = "clash"

        class Params(Schema):
            TIMEOUT = fields.Float()

        def run(self) -> int:
            return 200

    with pytest.raises(JobTreeError, match=r"'TIMEOUT' \(\S+RuntimeJob\.TIMEOUT\)"):
        build_tree(Root, [Root, Clash])
