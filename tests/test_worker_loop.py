"""The worker's semantics, run in-process (SPEC section 5, "Worker semantics")."""
from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any

import pytest
from backend_support import QUEUES, _close
from marshmallow import Schema, fields
from runtime_jobs.jobs import (
    FailJob,
    InterruptJob,
    NoopJob,
    RequeueJob,
    ReturnsJob,
    SleepJob,
    StoresJob,
)
from runtime_jobs.jobs import TestRoot as RuntimeRoot

from flask_spacewalk import NO_RESULT
from flask_spacewalk.backends import make_queue
from flask_spacewalk.errors import DatastoreUnavailable
from flask_spacewalk.runtime.cancel import CancelWatch, request_cancel
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.outcome import MAX_DELAY, Outcome, interpret_result
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.worker_loop import LeaseKeeper, Worker


class FastWorker(Worker):
    """The real worker with retry delays of zero, so tests need not wait."""

    LOAD_RETRY_DELAY = 0.0
    ERROR_RETRY_DELAY = 0.0
    DEFAULT_REQUEUE_DELAY = 0.0
    RESERVE_TIMEOUT = 0.05
    MAX_BACKOFF = 0.0


def make_worker(registry, datastore, queue, cls=FastWorker, **kwargs: Any) -> Worker:
    return cls(registry, lambda: datastore, lambda name: queue, queue.queueName, **kwargs)


def submit(job_class, datastore, queue, **params: Any) -> str:
    job = job_class(datastore, queue, **params)
    job.enqueue()
    return job.uuid


def stored(datastore, uuid: str) -> dict:
    return datastore.read(make_key(uuid))


@pytest.mark.parametrize(
    "value, expected",
    [
        (200, Outcome(200, 7.0)),
        ((201, None), Outcome(201, 7.0)),
        ([202, 3], Outcome(202, 3.0)),
        ((NO_RESULT, 2.5), Outcome(NO_RESULT, 2.5)),
        (NO_RESULT, Outcome(NO_RESULT, 7.0)),
        (None, Outcome(200, 7.0)),
        ("not a code", Outcome(200, 7.0)),
        (("x", "y"), Outcome(200, 7.0)),
        ((), Outcome(200, 7.0)),
        ("404", Outcome(404, 7.0)),
        ((NO_RESULT, -5), Outcome(NO_RESULT, 0.0)),
    ],
)
def test_run_results_are_read_as_zerog_does(value, expected):
    assert interpret_result(value, 7.0) == expected


def test_a_job_runs_to_its_result(registry, datastore, queue):
    uuid = submit(NoopJob, datastore, queue)
    make_worker(registry, datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["resultCode"], doc["completeness"], doc["running"]) == (200, 1.0, False)
    assert queue.reserve(timeout=0) is None


@pytest.mark.parametrize("value, code", [([201, None], 201), ("junk", 200), (None, 200)])
def test_return_values_become_result_codes(registry, datastore, queue, value, code):
    uuid = submit(ReturnsJob, datastore, queue, value=value)
    make_worker(registry, datastore, queue).run(burst=True)
    assert stored(datastore, uuid)["resultCode"] == code


def test_the_result_goes_through_the_jobs_own_record_result(
    registry, datastore, queue, monkeypatch
):
    # ZeroG's worker records a result with the job's record_result, which
    # job classes override (to notify someone, say).
    calls = []
    original = ReturnsJob.record_result

    def record_result(self, resultCode: int) -> None:
        original(self, resultCode)
        calls.append((self.uuid, resultCode, stored(datastore, self.uuid)["resultCode"]))

    monkeypatch.setattr(ReturnsJob, "record_result", record_result)
    uuid = submit(ReturnsJob, datastore, queue, value=201)
    make_worker(registry, datastore, queue).run(burst=True)
    assert calls == [(uuid, 201, 201)]
    assert stored(datastore, uuid)["running"] is False


def test_no_result_requeues_with_the_delay(registry, datastore, queue):
    uuid = submit(RequeueJob, datastore, queue, times=3, delay=0.0)
    make_worker(registry, datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["runs"], doc["resultCode"]) == (3, 200)
    assert doc["queueKwargs"] == {"delay": 0.0}


def test_no_result_waits_out_its_delay(registry, datastore, queue):
    uuid = submit(RequeueJob, datastore, queue, times=2, delay=60.0)
    worker = make_worker(registry, datastore, queue)
    worker.run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["runs"], doc["resultCode"], doc["running"]) == (1, NO_RESULT, False)
    assert doc["queueKwargs"] == {"delay": 60.0}
    assert queue.reserve(timeout=0) is None  # delayed, not lost


def test_no_result_without_delay_uses_the_default(registry, datastore, queue):
    uuid = submit(RequeueJob, datastore, queue, times=2, delay=None)
    make_worker(registry, datastore, queue, cls=Worker).process_entry(queue.reserve(0))
    assert stored(datastore, uuid)["queueKwargs"] == {"delay": Worker.DEFAULT_REQUEUE_DELAY}


def test_an_exception_is_recorded_and_retried(registry, datastore, queue):
    uuid = submit(FailJob, datastore, queue, failures=1)
    make_worker(registry, datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["runs"], doc["resultCode"], doc["errorCount"]) == (2, 200, 1)
    error = doc["errors"][0]
    assert error["errorCode"] == 500
    assert "Traceback" in error["msg"] and "RuntimeError: boom 1" in error["msg"]
    assert [e["msg"] for e in doc["events"]] == ["Error - restarting"]


def test_an_exception_retries_after_30_seconds(registry, datastore, queue):
    uuid = submit(FailJob, datastore, queue, failures=5)
    make_worker(registry, datastore, queue, cls=Worker).process_entry(queue.reserve(0))
    assert stored(datastore, uuid)["queueKwargs"] == {"delay": 30.0}
    assert queue.reserve(timeout=0) is None


def test_max_errors_ends_the_job(registry, datastore, queue):
    uuid = submit(FailJob, datastore, queue)
    make_worker(registry, datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["runs"], doc["resultCode"], doc["errorCount"]) == (3, 500, 3)
    assert doc["events"][-1]["msg"] == "Error - finished"


@pytest.mark.parametrize(
    "kind, runs, result, errors, warnings",
    [
        ("error_continue", 2, 200, 1, 0),
        ("warning_continue", 2, 200, 0, 1),
        ("error_finish", 1, 418, 1, 0),
        ("warning_finish", 1, 418, 0, 1),
    ],
)
def test_interrupts(registry, datastore, queue, kind, runs, result, errors, warnings):
    uuid = submit(InterruptJob, datastore, queue, kind=kind)
    make_worker(registry, datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["runs"], doc["resultCode"]) == (runs, result)
    assert (len(doc["errors"]), len(doc["warnings"])) == (errors, warnings)
    assert doc["completeness"] == 1.0 and doc["running"] is False


def test_continue_interrupts_retry_after_30_seconds(registry, datastore, queue):
    uuid = submit(InterruptJob, datastore, queue, kind="error_continue")
    make_worker(registry, datastore, queue, cls=Worker).process_entry(queue.reserve(0))
    assert stored(datastore, uuid)["queueKwargs"] == {"delay": 30.0}


def test_a_job_found_running_was_killed(registry, datastore, queue):
    uuid = submit(NoopJob, datastore, queue)
    job = registry.get_job(uuid, datastore, queue)
    job.update_attrs(running=True)
    make_worker(registry, datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert doc["resultCode"] == 200
    assert doc["errors"][0]["errorCode"] == 500
    assert "died" in doc["errors"][0]["msg"]
    assert doc["events"][0]["msg"] == "Killed - restarting"


def test_a_job_killed_too_often_finishes_with_500(registry, datastore, queue):
    uuid = submit(NoopJob, datastore, queue)
    job = registry.get_job(uuid, datastore, queue)
    job.update_attrs(running=True, errorCount=2)
    make_worker(registry, datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["resultCode"], doc["running"]) == (500, False)
    assert doc["events"][-1]["msg"] == "Killed - finished"
    assert queue.reserve(timeout=0) is None


def test_a_finished_job_is_never_run_again(registry, datastore, queue):
    uuid = submit(ReturnsJob, datastore, queue, value=200)
    make_worker(registry, datastore, queue).run(burst=True)
    queue.put(uuid)  # as if a worker died between recording and deleting
    make_worker(registry, datastore, queue).run(burst=True)
    assert stored(datastore, uuid)["runs"] == 1
    assert queue.reserve(timeout=0) is None


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(lambda ds, q: q.put("missing-uuid"), id="missing document"),
        pytest.param(lambda ds, q: q.put({"not": "a uuid"}), id="body not a uuid"),
        pytest.param(lambda ds, q: _store(ds, q, jobType="nobody_handles_this"),
                     id="unknown jobType"),
        pytest.param(lambda ds, q: _store(ds, q, completeness="lots"), id="corrupt document"),
        pytest.param(lambda ds, q: _store(ds, q, bogus=1), id="unknown field"),
    ],
)
def test_unloadable_entries_are_retried_then_deleted(registry, datastore, queue, prepare, caplog):
    prepare(datastore, queue)
    worker = make_worker(registry, datastore, queue)
    entry = queue.reserve(timeout=0)
    reserves = 1
    while entry is not None:
        worker.process_entry(entry)
        entry = queue.reserve(timeout=0)
        reserves += entry is not None
    assert reserves == Worker.MAX_RESERVES + 1
    assert "deleting it" in caplog.text


def _store(datastore, queue, **changes: Any) -> None:
    job = NoopJob(datastore, queue)
    job.save()
    doc = datastore.read(job.key())
    doc.update(changes)
    datastore.set(job.key(), doc)
    queue.put(job.uuid)


def test_a_body_that_is_not_json_is_released(registry, datastore, queue, caplog):
    submit(NoopJob, datastore, queue)
    entry = queue.reserve(timeout=0)
    entry.body = "{not json"
    make_worker(registry, datastore, queue).process_entry(entry)
    assert "retrying" in caplog.text
    again = queue.reserve(timeout=0)
    assert again.stats()["releases"] == 1


def test_a_datastore_outage_never_deletes_the_entry(registry, datastore, queue, monkeypatch):
    uuid = submit(NoopJob, datastore, queue)

    def down(key: str) -> Any:
        raise DatastoreUnavailable("datastore down")

    monkeypatch.setattr(datastore, "read_with_cas", down)
    monkeypatch.setattr(datastore, "read_many", down)
    worker = make_worker(registry, datastore, queue)
    monkeypatch.setattr(worker, "_pause", lambda reason: None)
    for _ in range(Worker.MAX_RESERVES + 3):
        worker.process_entry(queue.reserve(timeout=1))
    monkeypatch.undo()
    worker.run(burst=True)
    assert stored(datastore, uuid)["resultCode"] == 200


def test_the_lease_is_renewed_while_a_job_runs(registry, datastore, queue, db_url):
    from flask_spacewalk import make_queue

    job = SleepJob(datastore, queue, seconds=2.5)
    job.enqueue(ttr=1)  # a short lease, which the keeper must renew
    uuid = job.uuid
    worker = make_worker(registry, datastore, queue, ttr=1)
    entry = queue.reserve(timeout=0)
    other = make_queue(db_url, queue.queueName)
    stolen = []
    thread = threading.Thread(target=worker.process_entry, args=(entry,))
    thread.start()
    deadline = time.monotonic() + 3.5
    while thread.is_alive() and time.monotonic() < deadline:
        got = other.reserve(timeout=0.2)
        if got is not None:
            stolen.append(got)
    thread.join(10)
    other.close()
    assert stolen == []
    assert stored(datastore, uuid)["runs"] == 1


def test_one_lease_thread_serves_every_job_and_ends_with_the_run(
    registry, datastore, queue, monkeypatch
):
    # A thread started per job cost about a fifth of a no-op job.
    started = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    uuids = [submit(NoopJob, datastore, queue) for _ in range(20)]
    make_worker(registry, datastore, queue).run(burst=True)
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in uuids)
    leases = [t for t in started if t.name == "spacewalk-lease"]
    assert len(leases) == 1 and not leases[0].is_alive()


def test_the_cancel_request_is_read_with_the_job(registry, datastore, queue, monkeypatch):
    # One read less per job (a round trip on PostgreSQL and Redis): the
    # check before marking the job running answers from the load.
    from flask_spacewalk.runtime import cancel

    reads = []
    real = cancel.cancel_requested

    def counted(store: Any, uuid: str) -> bool:
        reads.append(uuid)
        return real(store, uuid)

    monkeypatch.setattr(cancel, "cancel_requested", counted)
    uuid = submit(NoopJob, datastore, queue)
    worker = make_worker(registry, datastore, queue)
    worker.run(burst=True)
    assert stored(datastore, uuid)["resultCode"] == 200
    # only the check before the result is saved, which a queue in the
    # datastore's database makes in the result's transaction
    assert reads == ([] if worker.lifecycle.shared else [uuid])


@pytest.mark.parametrize(
    "outcome, progress_after",
    [(Outcome(201), False), (Outcome(201), True), (Outcome(NO_RESULT, 0.0), False)],
    ids=["finished", "finished-after-reporting-progress", "requeued"],
)
def test_a_run_whose_lease_ran_out_keeps_the_other_runs_result(
    registry, datastore, queue, monkeypatch, outcome, progress_after
):
    # A worker too slow to renew its lease: the queue handed the job to
    # another, which recorded a result first. The job ran twice; its final
    # result is recorded once, and it is not queued again.
    from flask_spacewalk.runtime.cancel import CancelWatch

    recorded = []
    original = ReturnsJob.record_result

    def record_result(self, resultCode: int) -> None:
        original(self, resultCode)
        recorded.append(resultCode)

    monkeypatch.setattr(ReturnsJob, "record_result", record_result)
    uuid = submit(ReturnsJob, datastore, queue, value=201)
    entry = queue.reserve(timeout=0)
    slow = registry.get_job(uuid, datastore, queue)
    slow.update_attrs(running=True)
    registry.get_job(uuid, datastore, queue).record_result(200)  # the other run
    if progress_after:  # a conflict, and the slow run holds the stored result
        slow.set_completeness(0.5)
        assert slow.resultCode == 200
    watch = CancelWatch(datastore, uuid, lambda: None, grace=10)
    make_worker(registry, datastore, queue).lifecycle.finish(slow, outcome, watch, entry)
    doc = stored(datastore, uuid)
    assert (doc["resultCode"], doc["running"], recorded) == (200, False, [200])
    assert queue.reserve(timeout=0) is None


def test_lease_keeper_touch_is_throttled():
    touches = []

    class Entry:
        id = 1

        def touch(self) -> None:
            touches.append(time.monotonic())

    keeper = LeaseKeeper(ttr=30)
    with keeper.holding(Entry()):
        for _ in range(100):
            keeper.touch()
        assert touches == []  # 3 s between touches at ttr=30
        keeper.touch(force=True)
        assert len(touches) == 1
    keeper.touch(force=True)  # no entry held: nothing to renew
    assert len(touches) == 1
    keeper.close()


def test_max_jobs_stops_the_loop(registry, datastore, queue):
    for _ in range(3):
        submit(NoopJob, datastore, queue)
    worker = make_worker(registry, datastore, queue, max_jobs=2)
    worker.run()
    assert worker.jobs_done == 2
    assert queue.reserve(timeout=0) is not None


def test_max_memory_stops_the_loop(registry, datastore, queue):
    submit(NoopJob, datastore, queue)
    worker = make_worker(registry, datastore, queue, max_memory=1)
    worker.run()
    assert worker.jobs_done == 1


def test_job_context_wraps_every_run(registry, datastore, queue):
    import contextlib

    entered = []

    @contextlib.contextmanager
    def context():
        entered.append(True)
        yield

    submit(NoopJob, datastore, queue)
    make_worker(registry, datastore, queue, job_context=context).run(burst=True)
    assert entered == [True]


def test_enqueued_body_matches_zerog(datastore, queue):
    uuid = submit(NoopJob, datastore, queue)
    assert json.loads(queue.reserve(timeout=0).body) == uuid


class ForkingJob(RuntimeRoot):
    """Forks in run(); the child leaves run() as the posted ``how`` says."""

    NAME = "Forking"
    LEAF_NAME = "forking"
    DESCRIPTION = "forks a child that leaves run()"

    class Params(Schema):
        how = fields.String()

    def run(self) -> Any:
        pid = os.fork()
        if pid == 0:
            if self.how == "exit":
                sys.exit(7)
            if self.how == "raise":
                raise RuntimeError("in the child")
            return 201
        _, status = os.waitpid(pid, 0)
        self.update_attrs(runs=os.waitstatus_to_exitcode(status))
        return 200


@pytest.mark.parametrize("how, code", [("exit", 7), ("raise", 1), ("return", 0)])
def test_a_process_the_job_forks_ends_where_it_leaves_run(datastore, queue, how, code):
    # Anything else would record on the job from the child, or run a second
    # worker loop in it on the parent's connections.
    uuid = submit(ForkingJob, datastore, queue, how=how)
    make_worker(JobRegistry([ForkingJob]), datastore, queue).run(burst=True)
    doc = stored(datastore, uuid)
    assert (doc["resultCode"], doc["runs"], doc["errors"]) == (200, code, [])


# -- values no document holds, results no worker takes (issue 12) ----------------


@pytest.fixture
def stores_registry(registry):
    registry.add_classes([StoresJob])
    return registry


@pytest.mark.parametrize(
    "value",
    [
        float("inf"), float("-inf"), float("nan"), 2.5e300, 2**31, -(2**31) - 1, 10**400,
        (NO_RESULT, float("nan")), (NO_RESULT, float("inf")), (NO_RESULT, float("-inf")),
        (NO_RESULT, 1e300), (NO_RESULT, 10**400), (NO_RESULT, "nan"),
    ],
)
def test_run_results_outside_32_bits_or_bad_delays_are_errors(value):
    with pytest.raises(ValueError, match="result code|delay"):
        interpret_result(value, 7.0)


@pytest.mark.parametrize(
    "value, expected",
    [
        (2**31 - 1, Outcome(2**31 - 1, 7.0)),
        (-(2**31), Outcome(-(2**31), 7.0)),
        (True, Outcome(1, 7.0)),
        (404.9, Outcome(404, 7.0)),
        ((200, float("nan")), Outcome(200, 7.0)),  # the delay of a result is ignored
        ((NO_RESULT, MAX_DELAY), Outcome(NO_RESULT, MAX_DELAY)),
        ((NO_RESULT, "soon"), Outcome(NO_RESULT, 7.0)),
    ],
)
def test_run_results_at_the_edges(value, expected):
    assert interpret_result(value, 7.0) == expected


def _only_job(datastore, uuid):
    doc = stored(datastore, uuid)
    assert doc["running"] is False and doc["completeness"] == 1.0
    assert all("died" not in e["msg"] for e in doc["errors"])
    return doc


@pytest.mark.parametrize("how", ["update_attrs", "assign", "requeue"])
@pytest.mark.parametrize(
    "kind, problem",
    [
        ("nan", "nan is not a JSON number"),
        ("inf", "inf is not a JSON number"),
        ("set", "a set is not a JSON value"),
        ("bytes", "a bytes is not a JSON value"),
        ("object", "a object is not a JSON value"),
        ("deep", "nested deeper than 100 levels"),
        ("nul", "NUL character"),
        ("surrogate", "lone surrogate"),
    ],
)
def test_a_value_that_cannot_be_saved_ends_the_job_with_its_error_after_one_run(
    stores_registry, datastore, queue, kind, problem, how
):
    uuid = submit(StoresJob, datastore, queue, kind=kind, how=how)
    after = submit(NoopJob, datastore, queue)
    worker = make_worker(stores_registry, datastore, queue)
    worker.run(burst=True)  # the worker survives and goes on to the next job
    doc = _only_job(datastore, uuid)
    assert (doc["runs"], doc["resultCode"], doc["errorCount"]) == (1, 500, 1)
    assert "payload" not in doc
    error = doc["errors"][0]
    assert error["errorCode"] == 500
    assert "cannot store field payload" in error["msg"] and problem in error["msg"]
    assert doc["events"][-1]["msg"] == "Error - finished"
    assert stored(datastore, after)["resultCode"] == 200
    assert worker.jobs_done == 2
    assert queue.reserve(timeout=0) is None


@pytest.mark.parametrize("kind", ["set", "nan", "nul", "surrogate"])
def test_an_exception_is_recorded_whatever_the_run_left_unsaved(
    stores_registry, datastore, queue, kind
):
    # run() set a value no document holds, then raised (quoting it, NUL or
    # lone surrogate included): the real error is recorded, and the
    # exception is retried as any is.
    uuid = submit(StoresJob, datastore, queue, kind=kind, how="raise")
    make_worker(stores_registry, datastore, queue).run(burst=True)
    doc = _only_job(datastore, uuid)
    assert (doc["runs"], doc["resultCode"], doc["errorCount"]) == (3, 500, 3)
    for error in doc["errors"]:
        assert "RuntimeError: failed with" in error["msg"]
        assert "the job's unsaved changes were dropped: cannot store field payload" in error["msg"]
    if kind == "nul":
        assert "failed with a \\x00 b" in doc["errors"][0]["msg"]
    if kind == "surrogate":
        assert "failed with half \\udc80" in doc["errors"][0]["msg"]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("inf", "run() returned inf: the result code inf is not a number"),
        ("nan", "run() returned nan: the result code nan is not a number"),
        ("huge", "run() returned 2.5e+300: the result code 25000"),
        ("big_code", "run() returned 2147483648: the result code 2147483648 is outside 32 bits"),
        ("small_code", "the result code -2147483649 is outside 32 bits"),
        ("nan_delay", "run() returned (-1, nan): the delay nan is not a number of seconds"),
        ("inf_delay", "the delay inf is not a number of seconds up to 2147483647"),
        ("huge_delay", "the delay 1e+300 is not a number of seconds"),
    ],
)
def test_a_bad_run_result_is_an_error_and_continue_running_decides(
    stores_registry, datastore, queue, kind, message
):
    uuid = submit(StoresJob, datastore, queue, kind=kind, how="return")
    make_worker(stores_registry, datastore, queue).run(burst=True)
    doc = _only_job(datastore, uuid)
    assert (doc["runs"], doc["resultCode"], doc["errorCount"]) == (3, 500, 3)
    assert all(message in e["msg"] and e["errorCode"] == 500 for e in doc["errors"])
    assert [e["msg"] for e in doc["events"]] == ["Error - restarting"] * 2 + ["Error - finished"]


def test_a_bad_run_result_retries_after_30_seconds(stores_registry, datastore, queue):
    uuid = submit(StoresJob, datastore, queue, kind="inf", how="return")
    make_worker(stores_registry, datastore, queue, cls=Worker).process_entry(queue.reserve(0))
    doc = stored(datastore, uuid)
    assert (doc["resultCode"], doc["queueKwargs"]) == (NO_RESULT, {"delay": 30.0})


@pytest.mark.parametrize("shared", [True, False], ids=["claimed", "reserved"])
def test_a_bad_value_is_refused_before_a_cancel_is_recorded(
    stores_registry, datastore, queue, monkeypatch, shared
):
    # The cancel read with the result: the run's unsaved value is dropped
    # and the cancellation recorded, after the error.
    if not shared:
        monkeypatch.setattr(Lifecycle, "shared", property(lambda self: None))
    uuid = submit(StoresJob, datastore, queue, kind="set", how="assign")
    worker = make_worker(stores_registry, datastore, queue)
    if shared:
        # the claim reads the request, the result's transaction too (the
        # guard's first look), where one stored during the run is found
        run = StoresJob.run

        def run_then_cancel(job: Any) -> Any:
            value = run(job)
            request_cancel(datastore, job.uuid)
            return value

        monkeypatch.setattr(StoresJob, "run", run_then_cancel)
    else:
        # mark running, the first look before the result, then cancelled
        checks = iter([False, False] + [True] * 10)
        monkeypatch.setattr(CancelWatch, "check", lambda self: next(checks))
    worker.run(burst=True)
    doc = _only_job(datastore, uuid)
    assert doc["resultCode"] == 410
    assert [e["errorCode"] for e in doc["errors"]] == [500, 410]
    assert "cannot store field payload: a set" in doc["errors"][0]["msg"]


def test_a_bug_outside_run_never_ends_the_worker(registry, datastore, queue, monkeypatch, caplog):
    def broken(self, resultCode):
        raise TypeError("a bug in an overridden record_result")

    monkeypatch.setattr(ReturnsJob, "record_result", broken)
    first = submit(ReturnsJob, datastore, queue, value=200)
    after = submit(NoopJob, datastore, queue)
    worker = make_worker(registry, datastore, queue)
    worker.run(burst=True)
    assert stored(datastore, after)["resultCode"] == 200
    assert stored(datastore, first)["resultCode"] == NO_RESULT  # its lease brings it back
    assert any("processing failed" in r.getMessage() and r.exc_info for r in caplog.records)


# -- the worker's log (issue 12) ---------------------------------------------------


class SlowRetryWorker(FastWorker):
    ERROR_RETRY_DELAY = 30.0


def _log_lines(caplog) -> list[str]:
    name = "flask_spacewalk.runtime.worker_loop"
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_a_failed_run_is_logged_with_what_follows(registry, datastore, queue, caplog):
    caplog.set_level("INFO", logger="flask_spacewalk.runtime.worker_loop")
    retried = submit(FailJob, datastore, queue, failures=5)
    make_worker(registry, datastore, queue, cls=SlowRetryWorker).run(burst=True)
    assert _log_lines(caplog) == [f"job rt_fail {retried}: RuntimeError: boom 1; retry in 30 s"]
    assert caplog.records[-1].levelname == "WARNING"
    caplog.clear()
    failed = submit(FailJob, datastore, queue, failures=5)
    make_worker(registry, datastore, queue).run(burst=True)
    lines = _log_lines(caplog)
    assert lines == [
        f"job rt_fail {failed}: RuntimeError: boom 1; retry in 0 s",
        f"job rt_fail {failed}: RuntimeError: boom 2; retry in 0 s",
        f"job rt_fail {failed}: RuntimeError: boom 3; failed with 500",
    ]
    assert caplog.records[-1].levelname == "ERROR"


@pytest.mark.parametrize(
    "kind, line",
    [
        ("error_continue", "raise_error_continue: error_continue now; retry in 30 s"),
        ("warning_continue", "raise_warning_continue: warning_continue now; retry in 30 s"),
        ("error_finish", "raise_error_finish: error_finish now; failed with 418"),
        ("warning_finish", "raise_warning_finish: warning_finish now; failed with 418"),
    ],
)
def test_interrupts_are_logged(registry, datastore, queue, caplog, kind, line):
    caplog.set_level("INFO", logger="flask_spacewalk.runtime.worker_loop")
    uuid = submit(InterruptJob, datastore, queue, kind=kind)
    make_worker(registry, datastore, queue, cls=SlowRetryWorker).run(burst=True)
    assert _log_lines(caplog) == [f"job rt_interrupt {uuid}: {line}"]


def test_a_killed_run_found_on_load_is_logged(registry, datastore, queue, caplog):
    caplog.set_level("INFO", logger="flask_spacewalk.runtime.worker_loop")
    restarted = submit(NoopJob, datastore, queue)
    registry.get_job(restarted, datastore, queue).update_attrs(running=True)
    make_worker(registry, datastore, queue).run(burst=True)
    ended = submit(NoopJob, datastore, queue)
    registry.get_job(ended, datastore, queue).update_attrs(running=True, errorCount=2)
    make_worker(registry, datastore, queue).run(burst=True)
    assert _log_lines(caplog) == [
        f"job rt_noop {restarted}: its last run was killed (worker died); running it again",
        f"job rt_noop {ended}: its last run was killed (worker died); failed with 500",
    ]


def test_bad_values_and_results_are_logged(stores_registry, datastore, queue, caplog):
    caplog.set_level("INFO", logger="flask_spacewalk.runtime.worker_loop")
    saved = submit(StoresJob, datastore, queue, kind="set", how="update_attrs")
    returned = submit(StoresJob, datastore, queue, kind="inf", how="return")
    assigned = submit(StoresJob, datastore, queue, kind="nan", how="assign")
    make_worker(stores_registry, datastore, queue, cls=SlowRetryWorker).run(burst=True)
    assert _log_lines(caplog) == [
        f"job rt_stores {saved}: UnstorableValue: cannot store field payload: a set is not a"
        " JSON value (a document holds dicts, lists, str, int, float, bool and None);"
        " failed with 500",
        f"job rt_stores {returned}: run() returned inf: the result code inf is not a number;"
        " retry in 30 s",
        f"job rt_stores {assigned}: the job's state after its run cannot be saved: cannot"
        " store field payload: nan is not a JSON number (NaN and Infinity are not standard"
        " JSON); failed with 500",
    ]


def test_a_datastore_refusing_writes_backs_off_and_gives_the_entry_back(
    registry, datastore, queue, monkeypatch, caplog
):
    uuid = submit(NoopJob, datastore, queue)

    def refused(key: str, value: Any, cas: Any = None) -> Any:
        raise DatastoreUnavailable("the store refused the write: out of memory")

    worker = make_worker(registry, datastore, queue, cls=Worker)  # ZeroG's delays
    with monkeypatch.context() as patch:
        patch.setattr(datastore, "set_with_cas", refused)
        worker.process_entry(queue.reserve(timeout=0))
    # not the job's fault: no 30 s error delay, the worker paused instead
    assert "out of memory; retrying in" in caplog.text
    entry = queue.reserve(timeout=2)
    assert entry is not None and entry.stats()["releases"] == 1
    worker.process_entry(entry)
    assert stored(datastore, uuid)["resultCode"] == 200
    assert stored(datastore, uuid)["errors"] == []


def test_a_queue_refusing_the_requeue_backs_the_worker_off(
    registry, datastore, queue, monkeypatch, caplog
):
    from flask_spacewalk.errors import QueueUnavailable

    uuid = submit(RequeueJob, datastore, queue, times=2, delay=0.0)
    entry = queue.reserve(timeout=0)

    def draining(*args: Any, **kwargs: Any) -> Any:
        raise QueueUnavailable("beanstalkd refused: it answered DRAINING")

    worker = make_worker(registry, datastore, queue)
    monkeypatch.setattr(queue, "put", draining)
    worker.process_entry(entry)
    assert "DRAINING; retrying in" in caplog.text
    assert stored(datastore, uuid)["runs"] == 1


# -- starting options (SPEC section 7) ----------------------------------------------


@pytest.fixture(params=sorted(QUEUES))
def any_queue(request, tmp_path):
    with QUEUES[request.param](tmp_path) as url:
        queue = make_queue(url, "options")
        yield queue
        _close(queue)


def test_jobs_queued_while_no_worker_runs_then_run_by_priority(
    registry, datastore, any_queue, monkeypatch
):
    lifecycle = Lifecycle(datastore, any_queue, registry)
    priorities = random.Random(14).choices([0, 1, 1000, 2**31, 2**32 - 1], k=20)
    queued = []
    for priority in priorities:
        job = NoopJob(datastore, any_queue)
        lifecycle.create(job, priority=priority)
        queued.append((priority, job.uuid))
    # a delayed urgent job waits its turn whatever its priority
    later = NoopJob(datastore, any_queue)
    lifecycle.create(later, delay=60, priority=0)
    ran = []
    run = Lifecycle.run

    def recording_run(self, job, watch=None, **kwargs):
        ran.append(job.uuid)
        return run(self, job, watch, **kwargs)

    monkeypatch.setattr(Lifecycle, "run", recording_run)
    make_worker(registry, datastore, any_queue).run(burst=True)
    assert ran == [uuid for _, uuid in sorted(queued, key=lambda pair: pair[0])]
    assert stored(datastore, later.uuid)["resultCode"] == NO_RESULT
    assert stored(datastore, later.uuid)["queueKwargs"] == {"delay": 60, "priority": 0}
