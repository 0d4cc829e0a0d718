"""``POST R/retry/<uuid>`` (SPEC section 7, "Retry"): a failed or cancelled
job run again under its uuid, on every datastore and queue pairing, by
in-process workers and once by a worker process."""
from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import _close
from flask import Flask
from ops_support import (
    DIVIDE,
    PAIRINGS,
    RETRY_JOBS,
    doc,
    entries,
    error,
    failed_job,
    ops_app,
    post,
    state,
    work,
)
from test_worker_processes import stop, wait_for

from flask_spacewalk import make_queue
from flask_spacewalk.errors import QueueUnavailable
from flask_spacewalk.runtime.cancel import cancel_key, request_cancel
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.retry import RetryAnswer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=sorted(PAIRINGS))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """The ops tree on each pairing; POSTed jobs are queued."""
    with ops_app(request.param, tmp_path) as app:
        yield app


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Flask]:
    """The ops tree on SQLite, for what the web layer alone decides."""
    with ops_app("sqlite", tmp_path) as app:
        yield app


# -- the retry -----------------------------------------------------------------------


def test_a_failed_job_runs_again_under_its_uuid_with_its_logs(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    uuid = post(client, {"divisor": 0, "label": "kept"}, query="?priority=7")
    work(app)
    before = doc(app, uuid)
    assert (before["resultCode"], before["errorCount"], before["completeness"]) == (500, 1, 1.0)
    with caplog.at_level(logging.INFO, "flask_spacewalk.web"):
        response = client.post(f"/ops/retry/{uuid}", json={"divisor": 4})
    assert response.status_code == 200, response.json
    assert response.json == {"uuid": uuid, "status": "queued"}
    after = doc(app, uuid)
    assert (after["resultCode"], after["completeness"], after["errorCount"]) == (-1, 0.0, 0)
    assert after["running"] is False
    assert (after["divisor"], after["label"], after["dividend"]) == (4, "kept", 12)
    assert after["errors"] == before["errors"]  # the traceback stays
    assert after["events"][:-1] == before["events"]
    assert after["events"][-1]["msg"] == "Retried (was failed with 500); changed divisor"
    assert after["queueKwargs"] == {"priority": 7}  # the priority it was started with
    assert f"{uuid} retried (was failed with 500): queued" in caplog.text
    # one entry, never two
    assert entries(app) == [(after["queueJobId"], f'"{uuid}"')]
    work(app)
    done = doc(app, uuid)
    assert (done["resultCode"], done["quotient"], done["runs"]) == (200, 3, 2)
    assert client.get(f"/ops/info/{uuid}").json["events"][-1] == after["events"][-1]


def test_a_cancelled_job_with_a_stale_cancel_request_runs_after_its_retry(app: Flask) -> None:
    client = app.test_client()
    uuid = post(client, {"divisor": 3})
    assert client.post(f"/ops/cancel/{uuid}").json["status"] == "cancelled"
    datastore, _ = state(app).connections()
    request_cancel(datastore, uuid)  # left behind, as by a cancel that raced
    response = client.post(f"/ops/retry/{uuid}?priority=3", data=b"  ")  # empty: no overrides
    assert response.json == {"uuid": uuid, "status": "queued"}
    assert datastore.read(cancel_key(uuid)) is None
    assert doc(app, uuid)["queueKwargs"] == {"priority": 3}
    work(app)
    done = doc(app, uuid)
    assert (done["resultCode"], done["quotient"]) == (200, 4)
    assert [e["msg"] for e in done["events"]] == ["Retried (was cancelled with 410)"]
    assert [e["errorCode"] for e in done["errors"]] == [410]


def test_only_a_failed_or_cancelled_job_is_retried_409_before_its_body(app: Flask) -> None:
    client = app.test_client()
    queued = post(client, {"divisor": 2})
    body = error(client.post(f"/ops/retry/{queued}", data=b"not json", content_type="x/y"), 409)
    assert body["message"] == (f"job {queued} is queued; only a failed or cancelled job is"
                               " retried")
    datastore, _ = state(app).connections()
    running = post(client, {"divisor": 2})
    document = doc(app, running)
    document["running"] = True
    datastore.set(make_key(running), document)
    assert "is running" in error(client.post(f"/ops/retry/{running}?bad=1"), 409)["message"]
    work(app)
    assert doc(app, queued)["resultCode"] == 200
    finished = error(client.post(f"/ops/retry/{queued}", json={"divisor": "x"}), 409)
    assert "is finished" in finished["message"]
    assert doc(app, queued)["runs"] == 1
    for uuid in ("00000000-0000-4000-8000-000000000000", "not-a-uuid",
                 queued.upper()):
        error(client.post(f"/ops/retry/{uuid}"), 404)
    # a job whose class is not in this tree
    document = doc(app, queued)
    document["jobType"] = "elsewhere_job"
    datastore.set(make_key(queued), document)
    error(client.post(f"/ops/retry/{queued}"), 404)


def test_two_racing_retries_one_wins(app: Flask) -> None:
    client = app.test_client()
    uuid = failed_job(app, client)
    datastore, queue = state(app).connections()
    registry = state(app).registry
    # both read the job failed; the second one's write meets the first's
    first, second = (registry.get_job(uuid, datastore, queue) for _ in range(2))
    lifecycle = Lifecycle(datastore, queue, registry)
    assert lifecycle.retry(first, {"divisor": 6}) is RetryAnswer.RETRIED
    assert lifecycle.retry(second, {"divisor": 2}) is RetryAnswer.NOT_RETRYABLE
    stored = doc(app, uuid)
    assert stored["divisor"] == 6
    assert [e["msg"] for e in stored["events"]].count("Retried (was failed with 500);"
                                                      " changed divisor") == 1
    assert len(entries(app)) == 1
    # over HTTP, a retry that comes later is told why
    assert "is queued" in error(client.post(f"/ops/retry/{uuid}"), 409)["message"]


def test_an_entry_the_ended_job_left_is_deleted_or_waited_for(app: Flask) -> None:
    client = app.test_client()
    uuid = failed_job(app, client)
    datastore, _ = state(app).connections()
    queue = state(app).make_queue()
    try:
        # A worker died between the job's result and its entry's deletion.
        document = doc(app, uuid)
        document["queueJobId"] = queue.put(uuid)
        datastore.set(make_key(uuid), document)
        held = queue.reserve(timeout=0)
        assert held is not None
        body = error(client.post(f"/ops/retry/{uuid}", json={"divisor": 3}), 409)
        assert "a worker still holds the last queue entry" in body["message"]
        assert doc(app, uuid)["resultCode"] == 500  # nothing done
        held.release()  # the lease ran out: ready again, and no worker holds it
        assert client.post(f"/ops/retry/{uuid}", json={"divisor": 3}).status_code == 200
        assert [body for _, body in entries(app)] == [f'"{uuid}"']  # the new one only
    finally:
        _close(queue)


def test_a_queue_that_refuses_the_entry_leaves_the_job_as_it_was(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sqlite_app.test_client()
    uuid = failed_job(sqlite_app, client)
    before = doc(sqlite_app, uuid)
    _, queue = state(sqlite_app).connections()

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise QueueUnavailable("connection refused")

    monkeypatch.setattr(queue, "put", refuse)
    response = error(client.post(f"/ops/retry/{uuid}?priority=1", json={"divisor": 5}), 503)
    assert "queue unavailable" in response["message"]
    after = doc(sqlite_app, uuid)
    for field in ("resultCode", "completeness", "errorCount", "divisor", "queueKwargs",
                  "queueJobId", "errors"):
        assert after[field] == before[field], field
    assert [e["msg"] for e in after["events"][-2:]] == [
        "Retried (was failed with 500); changed divisor",
        "Retry undone: connection refused",
    ]
    monkeypatch.undo()
    assert client.post(f"/ops/retry/{uuid}", json={"divisor": 5}).status_code == 200


def test_overrides_are_validated_with_the_stored_params_as_post_validates(
    sqlite_app: Flask,
) -> None:
    client = sqlite_app.test_client()
    uuid = failed_job(sqlite_app, client, label="mine")
    before = doc(sqlite_app, uuid)
    url = f"/ops/retry/{uuid}"
    error(client.post(url, data=b'{"divisor": 1}', content_type="text/csv"), 415)
    assert "not valid JSON" in error(client.post(url, data=b"{", content_type="application/json"),
                                     400)["message"]
    assert "not an array" in error(client.post(url, json=[1]), 400)["message"]
    assert "unknown query parameter nope" in error(client.post(f"{url}?nope=1"), 400)["message"]
    # options before fields: a bad priority with bad fields is 400
    error(client.post(f"{url}?priority=-1", json={"divisor": "x"}), 400)
    error(client.post(f"{url}?delay=1&runAt=2030-01-01T00:00:00Z"), 400)
    cases = [
        ({"divisor": "x"}, {"divisor": ["Not a valid integer."]}),
        ({"divisor": 7}, {"divisor": ["Must not be 7."]}),  # marshmallow's own rule
        ({"divisor": 1000}, {"divisor": ["Must be greater than or equal to -100 and less than"
                                         " or equal to 100."]}),
        ({"label": "far too long a label"}, {"label": ["Longer than maximum length 10."]}),
        ({"nope": 1}, {"nope": ["Unknown field."]}),
        ({"divisor": None}, {"divisor": ["Field may not be null."]}),
    ]
    for body, errors in cases:
        answer = error(client.post(url, json=body), 422)
        assert answer["errors"] == errors, body
        # the same answer as POST L/job gives for the same whole body
        whole = {"divisor": 0, "dividend": 12, "label": "mine", **body}
        assert client.post(f"{DIVIDE}/job", json=whole).json == answer
    assert doc(sqlite_app, uuid) == before  # nothing changed
    # a valid one applies, the stored values filling in the rest
    assert client.post(f"{url}?delay=0", json={"dividend": 30, "divisor": 5}).status_code == 200
    stored = doc(sqlite_app, uuid)
    assert (stored["dividend"], stored["divisor"], stored["label"]) == (30, 5, "mine")
    assert stored["events"][-1]["msg"] == "Retried (was failed with 500); changed divisor, dividend"
    assert stored["queueKwargs"] == {"delay": 0}


def test_a_retry_runs_inline_where_jobs_do(tmp_path: Path) -> None:
    with ops_app("sqlite", tmp_path, SPACEWALK_RUN_INLINE=True) as app:
        client = app.test_client()
        uuid = post(client, {"divisor": 0})
        assert doc(app, uuid)["resultCode"] == 500  # run inside the POST
        answer = client.post(f"/ops/retry/{uuid}", json={"divisor": 6})
        assert answer.json == {"uuid": uuid, "status": "finished"}
        assert (doc(app, uuid)["quotient"], doc(app, uuid)["runs"]) == (2, 2)
        # a delayed retry waits for a worker, as a delayed POST does
        failed = post(client, {"divisor": 0})
        answer = client.post(f"/ops/retry/{failed}?delay=30")
        assert answer.json == {"uuid": failed, "status": "queued"}
        assert doc(app, failed)["queueKwargs"] == {"delay": 30}


def test_a_cross_site_retry_is_refused(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    uuid = failed_job(sqlite_app, client)
    before = doc(sqlite_app, uuid)
    browser = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    for path in (f"/ops/retry/{uuid}", "/ops/jobs/retry", "/ops/jobs/cancel"):
        body = error(client.post(path, headers=browser), 403)
        assert "another site (https://evil.example)" in body["message"]
        # a form, from whatever origin, is refused too
        error(client.post(path, data={"divisor": "1"}), 415)
    assert doc(sqlite_app, uuid) == before
    # the same request from the page's own origin goes through
    own = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"/ops/retry/{uuid}", headers=own).status_code == 200


@pytest.mark.slow
def test_a_worker_process_runs_the_retried_job(sqlite_app: Flask) -> None:
    app, client = sqlite_app, sqlite_app.test_client()
    db_url = app.config["SPACEWALK_DATASTORE_URL"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", str(RETRY_JOBS),
         "--datastore", db_url, "--service", "test"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        uuid = post(client, {"divisor": 0})
        wait_for(lambda: doc(app, uuid)["resultCode"] == 500, what="the failure")
        assert client.post(f"/ops/retry/{uuid}", json={"divisor": 4}).status_code == 200
        wait_for(lambda: doc(app, uuid)["resultCode"] == 200, what="the retried run")
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    done = doc(app, uuid)
    assert (done["quotient"], done["runs"], done["errorCount"]) == (3, 2, 0)
    assert "ZeroDivisionError" in done["errors"][0]["msg"]
    queue = make_queue(db_url, "test_jobs")
    assert queue.reserve(timeout=0) is None
    _close(queue)
