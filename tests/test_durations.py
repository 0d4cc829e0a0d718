"""The run durations: what a worker observes, and how its flushes add to the
one record that outlives it (runtime/durations.py)."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from runtime_jobs.jobs import FailJob, NoopJob, RequeueJob, ReturnsJob, SleepJob

from flask_spacewalk import make_datastore, make_queue
from flask_spacewalk.errors import DatastoreUnavailable
from flask_spacewalk.runtime.durations import (
    BUCKETS,
    DURATIONS_KEY,
    DurationRecorder,
    Histogram,
    read_durations,
)
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.worker_loop import Worker


def test_a_duration_counts_in_the_first_bucket_that_holds_it() -> None:
    recorder = DurationRecorder()
    for seconds in (0.0, 0.005, 0.0051, 1.0, 3600.0, 3600.5, -1.0):
        recorder.observe("t", seconds, "finished")
    histogram = recorder.pending()["t"]
    assert histogram.count == 7
    cumulative = dict(histogram.cumulative())
    assert cumulative["0.005"] == 3  # -1 (a clock step) counts as 0, and le is "<="
    assert cumulative["0.01"] == 4
    assert cumulative["1.0"] == 5
    assert cumulative["3600.0"] == 6
    assert cumulative["+Inf"] == 7
    assert list(cumulative) == [repr(b) for b in BUCKETS] + ["+Inf"]
    assert histogram.sum == pytest.approx(0.005 + 0.0051 + 1 + 3600 + 3600.5)
    assert histogram.results == {"finished": 7}


def test_flushes_add_up_across_recorders(datastore: Any) -> None:
    first, second = DurationRecorder(), DurationRecorder()
    first.observe("a", 0.2, "finished")
    first.observe("b", 2.0, "failed")
    assert first.flush(datastore)
    assert first.pending() == {}
    assert first.flush(datastore)  # nothing pending: nothing written
    second.observe("a", 0.3, "finished")
    second.observe("a", 0.4, "cancelled")
    assert second.flush(datastore)
    stored = read_durations(datastore)
    assert stored["a"].count == 3 and stored["b"].count == 1
    assert stored["a"].sum == pytest.approx(0.9)
    assert stored["a"].results == {"finished": 2, "cancelled": 1}
    assert stored["b"].results == {"failed": 1}


def test_concurrent_flushes_lose_nothing(db_url: str) -> None:
    recorders = [DurationRecorder() for _ in range(4)]
    stores = [make_datastore(db_url) for _ in recorders]

    def work(recorder: DurationRecorder, store: Any) -> None:
        for _ in range(25):
            recorder.observe("t", 0.01, "finished")
            recorder.flush(store)  # a flush that kept conflicting keeps its counts
        while not recorder.flush(store):
            pass

    threads = [threading.Thread(target=work, args=pair) for pair in zip(recorders, stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_durations(stores[0])["t"].count == 100
    for store in stores:
        store.close()


def test_a_failed_flush_keeps_its_counts_for_the_next(datastore: Any) -> None:
    recorder = DurationRecorder()
    recorder.observe("t", 0.1, "finished")

    class Down:
        casException = existsException = Exception

        def read_with_cas(self, key: str) -> Any:
            raise DatastoreUnavailable("down")

    assert not recorder.flush(Down())  # type: ignore[arg-type]
    recorder.observe("t", 0.2, "failed")
    assert recorder.pending()["t"].count == 2
    assert recorder.flush(datastore)
    assert read_durations(datastore)["t"].count == 2


def test_a_record_that_is_not_ours_reads_as_empty_and_is_replaced(
    datastore: Any, caplog: pytest.LogCaptureFixture
) -> None:
    for junk in ("text", {"jobTypes": {"t": {"counts": [1], "sum": 0}}}, {"jobTypes": []}):
        datastore.set(DURATIONS_KEY, junk)
        assert read_durations(datastore) == {}
    assert DURATIONS_KEY in caplog.text
    recorder = DurationRecorder()
    recorder.observe("t", 0.1, "finished")
    assert recorder.flush(datastore)
    assert read_durations(datastore)["t"].count == 1
    with pytest.raises(ValueError):
        Histogram.from_json({"counts": [True] * (len(BUCKETS) + 1), "sum": 0})


def test_the_worker_observes_the_runs_that_recorded_a_result(
    db_url: str, registry: JobRegistry
) -> None:
    datastore, queue = make_datastore(db_url), make_queue(db_url, "test_jobs")
    for job in (NoopJob(datastore, queue), ReturnsJob(datastore, queue, value=500),
                RequeueJob(datastore, queue, times=2, delay=0), FailJob(datastore, queue)):
        job.enqueue()
    worker = Worker(registry, lambda: make_datastore(db_url),
                    lambda name: make_queue(db_url, name), "test_jobs")  # fmt: skip
    worker.run(burst=True)  # flushes as it returns
    stored = read_durations(datastore)
    # a run that requeued its job, or raised (retried in 30 s), recorded no
    # result: not counted
    assert {job_type: h.results for job_type, h in stored.items()} == {
        NoopJob.JOB_TYPE: {"finished": 1}, ReturnsJob.JOB_TYPE: {"failed": 1},
        RequeueJob.JOB_TYPE: {"finished": 1},
    }
    datastore.close()
    queue.close()


def test_a_running_worker_flushes_every_heartbeat(db_url: str, registry: JobRegistry) -> None:
    # What a worker killed with SIGKILL keeps: every flush before its death.
    datastore, queue = make_datastore(db_url), make_queue(db_url, "test_jobs")
    SleepJob(datastore, queue, seconds=0.05).enqueue()
    worker = Worker(registry, lambda: make_datastore(db_url),
                    lambda name: make_queue(db_url, name), "test_jobs",
                    heartbeat=0.1)  # fmt: skip
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not read_durations(datastore) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread.is_alive()  # still running: flushed on its own
        assert read_durations(datastore)[SleepJob.JOB_TYPE].sum >= 0.05
    finally:
        worker.stop()
        thread.join()
    datastore.close()
    queue.close()
