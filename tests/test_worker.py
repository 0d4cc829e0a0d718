"""The worker's semantics, run in-process (SPEC section 5, "Worker semantics")."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from runtime_jobs.jobs import (
    FailJob,
    InterruptJob,
    NoopJob,
    RequeueJob,
    ReturnsJob,
    SleepJob,
)

from flask_spacewalk import NO_RESULT
from flask_spacewalk.errors import DatastoreUnavailable
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.worker import LeaseKeeper, Outcome, Worker, interpret_result


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
    make_worker(registry, datastore, queue).run(burst=True)
    assert stored(datastore, uuid)["resultCode"] == 200
    assert reads == [uuid]  # only the check before the result is saved


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
    make_worker(registry, datastore, queue)._finish(slow, entry, outcome, watch)
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
