"""``POST R/jobs/retry`` and ``POST R/jobs/cancel`` (SPEC section 7, "Bulk
actions") on every datastore and queue pairing, and the batches of
runtime/bulk.py."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from ops_support import PAIRINGS, doc, error, failed_job, ops_app, post, state, work

from flask_spacewalk.errors import JobUpdateConflict
from flask_spacewalk.runtime.bulk import act_on_jobs
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.query import JobQuery
from flask_spacewalk.web import actions
from flask_spacewalk.web.listing import decode_cursor


@pytest.fixture(params=sorted(PAIRINGS))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """The ops tree on each pairing; POSTed jobs are queued."""
    with ops_app(request.param, tmp_path) as app:
        yield app


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Flask]:
    with ops_app("sqlite", tmp_path) as app:
        yield app


def jobs_of_every_status(app: Flask, client: FlaskClient) -> dict[str, list[str]]:
    """Two failed, two cancelled, one finished, two queued jobs (and one
    failed job of the other leaf), newest last."""
    made: dict[str, list[str]] = {"failed": [], "cancelled": [], "finished": [], "queued": []}
    made["failed"] = [post(client, {"divisor": 0}), post(client, {"divisor": 0})]
    made["finished"] = [post(client, {"divisor": 1})]
    made["other"] = [post(client, {"code": 500}, path="/ops/other")]
    work(app)
    for _ in range(2):
        uuid = post(client, {"divisor": 2})
        assert client.post(f"/ops/cancel/{uuid}").status_code == 200
        made["cancelled"].append(uuid)
    made["queued"] = [post(client, {"divisor": 3}), post(client, {"divisor": 3})]
    return made


def bulk_post(client: FlaskClient, action: str, query: str = "") -> dict[str, Any]:
    response = client.post(f"/ops/jobs/{action}{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json  # type: ignore[no-any-return]


def statuses(client: FlaskClient) -> dict[str, str]:
    return {job["uuid"]: job["status"] for job in client.get("/ops/jobs?limit=500").json["jobs"]}


def retried(app: Flask, uuid: str) -> int:
    return sum(e["msg"].startswith("Retried") for e in doc(app, uuid)["events"])


def test_bulk_retry_and_cancel_act_on_the_jobs_they_apply_to(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    made = jobs_of_every_status(app, client)
    before = statuses(client)
    ended = made["failed"] + made["other"] + made["cancelled"]
    # a dry run counts and changes nothing
    assert bulk_post(client, "retry", "?dryRun=true") == {
        "matched": 5, "done": 0, "dryRun": True, "next": None}
    assert bulk_post(client, "cancel", "?dryRun=TRUE")["matched"] == 2
    assert statuses(client) == before
    # the listing's filters, narrowed to what the action applies to
    assert bulk_post(client, "retry", "?dryRun=true&status=failed")["matched"] == 3
    assert bulk_post(client, "retry", "?dryRun=true&jobType=ops_other")["matched"] == 1
    assert bulk_post(client, "retry", "?dryRun=true&status=finished,queued")["matched"] == 0
    assert bulk_post(client, "cancel", "?dryRun=true&status=cancelled")["matched"] == 0
    since = doc(app, made["cancelled"][0])["createdAt"]
    assert bulk_post(client, "retry", f"?dryRun=true&since={since}")["matched"] == 2
    with caplog.at_level(logging.INFO, "flask_spacewalk.web"):
        answer = bulk_post(client, "retry", "?status=failed,cancelled,finished")
    assert answer == {"matched": 5, "done": 5, "dryRun": False, "next": None}
    assert "bulk retry of /ops jobs: 5 matched, 5 done" in caplog.text
    now = statuses(client)
    assert all(now[uuid] == "queued" for uuid in ended)
    assert now[made["finished"][0]] == "finished"
    assert all(retried(app, uuid) == 1 for uuid in ended)
    # nothing is left to retry; cancel takes the 2 queued and the 5 retried
    assert bulk_post(client, "retry")["matched"] == 0
    assert bulk_post(client, "cancel") == {"matched": 7, "done": 7, "dryRun": False, "next": None}
    assert set(statuses(client).values()) == {"cancelled", "finished"}
    work(app)  # no entry is left behind to run
    assert all(doc(app, uuid)["runs"] <= 1 for uuid in ended + made["queued"])


def test_the_cursor_continues_where_the_batch_stopped(app: Flask) -> None:
    client = app.test_client()
    uuids = [post(client, {"divisor": 0}) for _ in range(5)]
    work(app)
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        query = "?dryRun=true&limit=2" + (f"&cursor={cursor}" if cursor else "")
        answer = bulk_post(client, "retry", query)
        seen.append(answer["matched"])
        cursor = answer["next"]
        if cursor is None:
            break
        # the listing's cursor: the last job of the batch, newest first
        assert decode_cursor(cursor)[1] == uuids[-sum(seen)]
    assert seen == [2, 2, 1]
    # acting batch by batch reaches each job once
    done, cursor = 0, None
    for _ in range(5):
        answer = bulk_post(client, "retry", "?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        done += answer["done"]
        cursor = answer["next"]
        if cursor is None:
            break
    assert done == 5 and all(retried(app, uuid) == 1 for uuid in uuids)


def test_a_job_that_changed_since_it_was_read_is_matched_not_done(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    first, second = failed_job(app, client), failed_job(app, client)
    datastore, _ = state(app).connections()
    read_many = datastore.read_many

    def read_then_retry(keys: Any) -> Any:
        stored = read_many(keys)
        # someone retries the first job between the read and the action
        assert client.post(f"/ops/retry/{first}").status_code == 200
        return stored

    monkeypatch.setattr(datastore, "read_many", read_then_retry)
    assert bulk_post(client, "retry") == {"matched": 2, "done": 1, "dryRun": False, "next": None}
    assert (retried(app, first), retried(app, second)) == (1, 1)


def test_a_job_that_keeps_changing_or_cannot_be_read_is_skipped(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = sqlite_app.test_client()
    busy, broken, plain = (post(client, {"divisor": 1}) for _ in range(3))
    datastore, _ = state(sqlite_app).connections()
    document = doc(sqlite_app, broken)
    document["divisor"] = "not a number"  # a document its class cannot load
    datastore.set(make_key(broken), document)
    cancel = Lifecycle.cancel

    def conflicting(self: Lifecycle, job: Any) -> Any:
        if job.uuid == busy:
            raise JobUpdateConflict(f"job {busy}: change not saved after 10 conflicts")
        return cancel(self, job)

    monkeypatch.setattr(Lifecycle, "cancel", conflicting)
    with caplog.at_level(logging.WARNING, "flask_spacewalk.web"):
        assert bulk_post(client, "cancel")["done"] == 1
    assert f"bulk cancel: job {busy} skipped: job {busy}: change not saved" in caplog.text
    assert f"bulk cancel: job {broken} skipped" in caplog.text
    assert [doc(sqlite_app, u)["resultCode"] for u in (busy, broken, plain)] == [-1, -1, 410]


def test_limit_defaults_to_1000_and_is_capped_at_10000(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sqlite_app.test_client()
    asked: list[JobQuery] = []

    def spy(datastore: Any, query: JobQuery, action: Any) -> Any:
        asked.append(query)
        return act_on_jobs(datastore, query, action)

    monkeypatch.setattr(actions, "act_on_jobs", spy)
    for query in ("", "?limit=20000", f"?limit={'9' * 5000}", "?limit=3", "?limit=+0010000"):
        bulk_post(client, "cancel", query)
    assert [q.limit for q in asked] == [1000, 10000, 10000, 3, 10000]
    assert asked[0].statuses == {"queued", "running"}
    assert asked[0].job_types == {"ops_divide", "ops_other"}  # this tree's only


def test_bad_parameters_are_400_and_do_nothing(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    uuid = failed_job(sqlite_app, client)
    for query, message in [
        ("?dryRun=maybe", "dryRun must be true or false"),
        ("?dryrun=true", "unknown query parameter 'dryrun'"),
        ("?priority=1", "unknown query parameter 'priority'"),
        ("?limit=0", "limit must be a whole number of at least 1"),
        ("?limit=-5", "limit must be a whole number"),
        ("?limit=ten", "limit must be a whole number"),
        ("?limit=1&limit=2", "give limit at most once"),
        ("?dryRun=true&dryRun=false", "give dryRun at most once"),
        ("?status=lost", "status 'lost' is not one of"),
        ("?jobType=examples_fizz_buzz", "is not a job type of this tree"),
        ("?since=yesterday", "since must be an ISO-8601 date-time"),
        ("?cursor=abc", "cursor is not one this API gave"),
    ]:
        for action in ("retry", "cancel"):
            assert message in error(client.post(f"/ops/jobs/{action}{query}"), 400)["message"]
    assert "takes no body" in error(client.post("/ops/jobs/retry", json={"status": "failed"}),
                                    400)["message"]
    error(client.post("/ops/jobs/retry", data=b"[]", content_type="application/json"), 400)
    error(client.post("/ops/jobs/retry", data=b"x", content_type="image/png"), 415)
    error(client.get("/ops/jobs/retry"), 405)
    assert doc(sqlite_app, uuid)["resultCode"] == 500
    assert bulk_post(client, "retry", "?dryRun=false")["done"] == 1


def test_a_bulk_retry_runs_the_jobs_inline_where_jobs_do(tmp_path: Path) -> None:
    with ops_app("sqlite", tmp_path, SPACEWALK_RUN_INLINE=True) as app:
        client = app.test_client()
        uuids = [post(client, {"divisor": 0}) for _ in range(3)]
        answer = bulk_post(client, "retry")
        assert (answer["matched"], answer["done"]) == (3, 3)
        assert all(doc(app, uuid)["runs"] == 2 for uuid in uuids)


def test_batches_read_the_index_a_part_at_a_time(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sqlite_app.test_client()
    uuids = [post(client, {"divisor": 3}) for _ in range(5)]
    datastore, _ = state(sqlite_app).connections()
    limits: list[int] = []
    list_jobs = datastore.list_jobs

    def counted(query: JobQuery) -> Any:
        limits.append(query.limit)
        return list_jobs(query)

    monkeypatch.setattr(datastore, "list_jobs", counted)
    query = JobQuery(statuses=frozenset({"queued"}), limit=4)
    acted: list[str] = []

    def act(document: dict[str, Any], cas: int) -> bool:
        acted.append(document["uuid"])
        return True

    result = act_on_jobs(datastore, query, act, batch=2)
    assert (result.matched, result.done) == (4, 4) and limits == [3, 3]
    assert acted == uuids[:0:-1]  # newest first
    assert result.next == (doc(sqlite_app, uuids[1])["createdAt"], uuids[1])
    rest = act_on_jobs(datastore, JobQuery(statuses=frozenset({"queued"}), after=result.next,
                                           limit=4), None, batch=2)
    assert (rest.matched, rest.done, rest.next) == (1, 0, None)
