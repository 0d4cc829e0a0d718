"""Claims on Redis (issue 17 item 2): the queue and the datastore on one
server claim an entry with its job and mark it running in two scripts, and
record a result with the entry's deletion and the webhook deliveries in
one (``RedisQueue.reserve_in`` and ``transact``, optimistic transactions).

The backend-neutral claim tests of test_claims.py run here again on Redis.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from backend_redis import redis_url, with_options
from runtime_jobs.jobs import SleepJob
from test_claims import (  # noqa: F401 - the tests run here again, on Redis
    QuietJob,
    StopsWorkerJob,
    entries,
    test_a_batch_worker_runs_every_claimed_job,
    test_a_claim_marks_its_first_job_running_in_the_reserving_transaction,
    test_a_claim_of_a_bad_count_is_refused,
    test_a_draining_batch_worker_gives_back_its_claims,
    test_a_job_cancelled_before_its_claim_does_not_start,
    test_a_job_cancelled_while_its_batch_runs_does_not_start,
    test_a_started_claim_whose_job_cannot_load_is_marked_not_running,
    test_a_stopping_batch_worker_gives_back_the_jobs_it_did_not_run,
    test_a_waiter_is_woken_at_once_by_a_claim_and_by_a_result,
)
from test_worker_loop import make_worker, stored, submit

from flask_spacewalk import errors
from flask_spacewalk.backends import make_datastore, make_queue
from flask_spacewalk.backends.redis import RedisQueueEntry
from flask_spacewalk.runtime.cancel import cancel_key, request_cancel
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.webhooks import WebhookRecorder, delivery_id, parse_webhooks

redis = pytest.importorskip("redis")

HOOK = "http://127.0.0.1:9/hook"


def recorder() -> WebhookRecorder:
    return WebhookRecorder(parse_webhooks([{
        "url": HOOK, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "events": ["job.finished"]}]))


@pytest.fixture
def quiet_registry() -> JobRegistry:
    return JobRegistry([QuietJob, StopsWorkerJob, SleepJob])


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with redis_url(tmp_path) as url:
        yield url


@pytest.fixture
def datastore(url: str) -> Iterator[Any]:
    store = make_datastore(url)
    yield store
    store.close()


@pytest.fixture
def queue(url: str, datastore: Any) -> Iterator[Any]:
    q = make_queue(url, "test_jobs")
    yield q
    q.close()


@contextmanager
def counting_round_trips() -> Iterator[collections.Counter[str]]:
    """Counts the requests this process sends to Redis, by command (a
    pipeline's commands are one request)."""
    counts: collections.Counter[str] = collections.Counter()
    connection = redis.connection.Connection
    send = connection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        first = command[0] if isinstance(command, list) else command
        # the command's name is the packed request's first bulk string
        counts[bytes(first).split(b"\r\n")[2].decode().upper()] += 1
        send(self, command, check_health)

    connection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        connection.send_packed_command = send  # type: ignore[method-assign]


def started_claim(lifecycle: Lifecycle) -> Any:
    claims = lifecycle.claim(1, 0)
    assert claims is not None and len(claims) == 1
    return claims[0]


# -- round trips ---------------------------------------------------------------


def test_a_no_op_job_costs_three_round_trips(quiet_registry, datastore, queue):
    # claim (reserve and read), mark running, record the result with the
    # entry's deletion (the cancel request checked there): 6 before
    for _ in range(20):
        submit(QuietJob, datastore, queue)
    make_worker(quiet_registry, datastore, queue).run(burst=True)  # scripts loaded
    uuids = [submit(QuietJob, datastore, queue) for _ in range(20)]
    worker = make_worker(quiet_registry, datastore, queue)
    with counting_round_trips() as sent:
        worker.run(burst=True)
    assert worker.jobs_done == 20
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in uuids)
    assert entries(queue) == {"ready": 0, "reserved": 0, "delayed": 0}
    # +2 scripts: the burst's last, empty claim and the flush of the run
    # durations; +2 reads: the queue's pause
    assert 3 * 20 + 2 <= sent["EVALSHA"] <= 3 * 20 + 4, sent
    assert 3 * 20 + 2 <= sum(sent.values()) <= 3 * 20 + 6, sent


def test_without_claims_a_no_op_job_costs_six_round_trips(
    quiet_registry, datastore, queue, monkeypatch
):
    # the separate steps (and the figure before claims on Redis)
    monkeypatch.setattr(Lifecycle, "shared", property(lambda self: None))
    for _ in range(10):
        submit(QuietJob, datastore, queue)
    worker = make_worker(quiet_registry, datastore, queue)
    with counting_round_trips() as sent:
        worker.run(burst=True)
    assert worker.jobs_done == 10
    assert 6 * 10 <= sum(sent.values()) <= 6 * 10 + 4, sent


def test_a_batch_marks_each_next_job_running_in_the_previous_result_s_commit(
    quiet_registry, datastore, queue
):
    for _ in range(10):
        submit(QuietJob, datastore, queue)
    make_worker(quiet_registry, datastore, queue, batch=10).run(burst=True)
    uuids = [submit(QuietJob, datastore, queue) for _ in range(10)]
    worker = make_worker(quiet_registry, datastore, queue, batch=10)
    with counting_round_trips() as sent:
        worker.run(burst=True)
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in uuids)
    # per job: the commit (the next one's documents as the claim read them,
    # checked there); and the claim, the first one's mark, the last claim,
    # the durations
    assert 10 + 4 <= sent["EVALSHA"] <= 10 + 6, sent
    assert 10 + 4 <= sum(sent.values()) <= 10 + 8, sent


# -- what the commit writes -----------------------------------------------------


def test_the_result_s_commit_records_the_webhook_deliveries(quiet_registry, datastore, queue):
    uuid = submit(QuietJob, datastore, queue)
    worker = make_worker(quiet_registry, datastore, queue, webhooks=recorder())
    worker.run(burst=True)
    (delivery,) = datastore.list_deliveries(uuid=uuid)
    _, cas = datastore.read_with_cas(make_key(uuid))
    # the webhook-id of the stored end: made with the cas the commit wrote
    assert delivery.id == delivery_id(uuid, cas, HOOK)
    assert entries(queue) == {"ready": 0, "reserved": 0, "delayed": 0}
    assert stored(datastore, uuid)["resultCode"] == 200
    # and the listing's indexes follow the commit's writes
    counts = datastore.count_jobs()
    assert (counts[("rt_quiet", "finished")], counts[("rt_quiet", "running")]) == (1, 0)


def test_a_request_before_the_result_s_commit_is_seen_by_it(
    quiet_registry, datastore, queue, monkeypatch
):
    # the result's transaction takes the request as absent; the commit finds
    # it, the transaction reads it, and the save's retry records the cancellation
    uuid = submit(QuietJob, datastore, queue)
    claim = started_claim(Lifecycle(datastore, queue, quiet_registry))

    def cancel_itself(job: QuietJob) -> int:
        request_cancel(datastore, job.uuid)
        return 200

    monkeypatch.setattr(QuietJob, "run", cancel_itself)
    make_worker(quiet_registry, datastore, queue)._run_claim(claim, None)
    doc = stored(datastore, uuid)
    assert (doc["resultCode"], doc["running"]) == (410, False)
    assert datastore.read(cancel_key(uuid)) is None
    assert entries(queue) == {"ready": 0, "reserved": 0, "delayed": 0}


def test_a_claim_whose_job_changed_before_its_commit_reads_it_again(
    quiet_registry, datastore, queue
):
    uuid = submit(QuietJob, datastore, queue)
    key = make_key(uuid)
    calls = []

    def then(tx: Any, claimed: list[Any]) -> int:
        (document, cas), (request, _) = tx.read([key, cancel_key(uuid)])
        calls.append(cas)
        if len(calls) == 1:  # another writer, between the claim and its commit
            datastore.update_with_cas(key, {**document, "note": "changed"}, cas)
        return tx.write(key, {**document, "running": True}, cas)

    assert queue.shares_database(datastore)
    new_cas = queue.reserve_in(1, 0, then)
    assert len(calls) == 2 and calls[0] != calls[1]
    document, cas = datastore.read_with_cas(key)
    assert (document["note"], document["running"], cas) == ("changed", True, new_cas)
    assert entries(queue)["reserved"] == 1


def test_a_commit_whose_entry_was_taken_over_records_the_result_alone(
    quiet_registry, datastore, queue, url, caplog
):
    short = make_queue(with_options(url), "test_jobs", default_ttr=0.05)
    try:
        uuid = submit(QuietJob, datastore, short)
        claim = started_claim(Lifecycle(datastore, short, quiet_registry))
        time.sleep(0.1)
        assert short.reserve(timeout=0) is not None  # another worker's, after the lease
        worker = make_worker(quiet_registry, datastore, short)
        worker._run_claim(claim, None)
        assert stored(datastore, uuid)["resultCode"] == 200
        assert "was taken over by another worker" in caplog.text
        # left to its holder (whose lease may run out meanwhile: ready again)
        assert entries(short)["reserved"] + entries(short)["ready"] == 1
    finally:
        short.close()


def test_a_commit_with_a_stale_cas_writes_nothing(quiet_registry, datastore, queue):
    uuid = submit(QuietJob, datastore, queue)
    key = make_key(uuid)
    claim = started_claim(Lifecycle(datastore, queue, quiet_registry))
    document, cas = datastore.read_with_cas(key)
    job = quiet_registry.stored_job(uuid, {**document, "resultCode": 200}, cas, datastore, queue)

    def result(tx: Any) -> None:
        tx.write(key, {**document, "resultCode": 200}, cas - 1)
        assert tx.add_deliveries(recorder().deliveries(job, cas=cas)) == 1
        assert tx.delete_entry(claim.entry) is True

    with pytest.raises(datastore.casException):
        queue.transact(result)
    assert datastore.read_with_cas(key) == (document, cas)
    assert entries(queue)["reserved"] == 1
    assert datastore.list_deliveries(uuid=uuid) == []


def test_a_transaction_reads_its_own_writes_and_refuses_another_cas(datastore, queue):
    datastore.set("zerog_job_x", {"n": 1})
    assert queue.shares_database(datastore)

    def change(tx: Any) -> int:
        [(document, cas)] = tx.read(["zerog_job_x"])
        for stale in (cas + 1, 0):
            with pytest.raises(datastore.casException):
                tx.write("zerog_job_x", document, stale)
        first = tx.write("zerog_job_x", {"n": 2}, cas)
        assert tx.read(["zerog_job_x"]) == [({"n": 2}, first)]
        return tx.write("zerog_job_x", {"n": 3}, first)

    cas = queue.transact(change)
    assert datastore.read_with_cas("zerog_job_x") == ({"n": 3}, cas)
    # a transaction that writes nothing sends no commit
    assert queue.transact(lambda tx: tx.read(["zerog_job_x", "none"])) == [
        ({"n": 3}, cas), (None, 0)]


def test_a_transaction_after_a_claim_starts_from_its_reads_and_checks_them(
    quiet_registry, datastore, queue
):
    uuid = submit(QuietJob, datastore, queue)
    key = make_key(uuid)
    assert queue.shares_database(datastore)
    queue.reserve_in(1, 0, lambda tx, claimed: None)
    document, cas = datastore.read_with_cas(key)
    datastore.update_with_cas(key, {**document, "note": "changed"}, cas)
    # read as the claim read it, which the commit finds changed: read again
    [(found, _)] = queue.transact(lambda tx: tx.read([key]))
    assert found["note"] == "changed"


def test_a_claim_that_fails_gives_its_entries_back(quiet_registry, datastore, queue):
    for _ in range(2):
        submit(QuietJob, datastore, queue)
    assert queue.shares_database(datastore)

    def then(tx: Any, claimed: list[Any]) -> None:
        assert len(claimed) == 2
        raise errors.QueueUnavailable("the server went away")

    with pytest.raises(errors.QueueUnavailable):
        queue.reserve_in(5, 0, then)
    assert entries(queue) == {"ready": 2, "reserved": 0, "delayed": 0}


def test_a_failed_claim_whose_entries_cannot_be_released_leaves_them_to_their_leases(
    quiet_registry, datastore, queue, monkeypatch
):
    submit(QuietJob, datastore, queue)
    assert queue.shares_database(datastore)

    def then(tx: Any, claimed: list[Any]) -> None:
        raise errors.QueueUnavailable("the server went away")

    def release(entry: Any, delay: float = 0) -> None:
        raise errors.QueueUnavailable("still away")

    monkeypatch.setattr(RedisQueueEntry, "release", release)
    with pytest.raises(errors.QueueUnavailable, match="went away"):
        queue.reserve_in(1, 0, then)
    assert entries(queue) == {"ready": 0, "reserved": 1, "delayed": 0}


def test_a_claim_of_an_entry_that_is_no_job_reads_nothing(quiet_registry, datastore, queue):
    queue.put(["not", "a", "uuid"])
    claims = Lifecycle(datastore, queue, quiet_registry).claim(1, 0)
    assert claims is not None
    assert (claims[0].uuid, claims[0].document, claims[0].started) == (None, None, False)


def test_a_claim_waits_for_a_put(quiet_registry, datastore, queue):
    lifecycle = Lifecycle(datastore, queue, quiet_registry)
    assert lifecycle.claim(1, 0.05) == []
    uuid = submit(QuietJob, datastore, queue)
    assert started_claim(lifecycle).uuid == uuid


# -- what shares a database ------------------------------------------------------


def test_what_shares_the_queue_s_database(datastore, queue, url, tmp_path):
    assert queue.shares_database(datastore)
    assert not queue.shares_database(make_datastore(f"sqlite:///{tmp_path / 'x.sqlite3'}"))
    other_db = make_datastore(url.replace("6379/0", "6379/1"))
    assert not queue.shares_database(other_db)
    other_user = make_datastore(url.replace("redis://", "redis://someone@"))
    assert not queue.shares_database(other_user)
    # one datastore prefix per queue: the transactions write its documents
    other_prefix = make_datastore(with_options(url, prefix="sw_test_other:"))
    assert not queue.shares_database(other_prefix)
    fresh = make_queue(url, "test_jobs")
    try:
        with pytest.raises(TypeError, match="shares no datastore"):
            fresh.transact(lambda tx: None)
        assert fresh.shares_database(datastore)
        foreign = make_queue(url, "other_jobs")
        foreign.put("x")
        entry = foreign.reserve(timeout=0)
        with pytest.raises(TypeError, match="is not an entry of"):
            fresh.transact(lambda tx: tx.delete_entry(entry))
        foreign.close()
    finally:
        fresh.close()


def test_a_batch_worker_on_redis_claims_in_batches(registry, datastore, queue, caplog):
    uuids = [submit(SleepJob, datastore, queue, seconds=0) for _ in range(4)]
    make_worker(registry, datastore, queue, batch=4).run(burst=True)
    assert all(stored(datastore, uuid)["resultCode"] == 200 for uuid in uuids)
    assert "cannot claim in batches" not in caplog.text
