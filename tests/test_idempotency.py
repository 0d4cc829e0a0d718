"""``Idempotency-Key`` on ``POST L/job`` (SPEC section 7), on every datastore:
replays, mismatches, scopes, bad headers, failed POSTs, expiry, takeover of
a dead POST's claim, and 32 POSTs racing with one key."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES
from conftest import EXAMPLE_JOBS, MakeApp
from flask import Flask
from flask.testing import FlaskClient

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk.errors import ConfigurationError, DatastoreUnavailable, QueueUnavailable
from flask_spacewalk.runtime import keyrecords
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.keyrecords import KeyClaim, fingerprint
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.query import JobQuery

FIZZ = "/examples/fizz_buzz"
WASTE = "/examples/waste_time"


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


def state_of(app: Flask, root: str = "/examples") -> Any:
    return app.extensions["spacewalk"][root]


def job_uuids(app: Flask, root: str = "/examples") -> list[str]:
    datastore, _ = state_of(app, root).connections()
    return [job["uuid"] for job in datastore.list_jobs(JobQuery(limit=100))]


@pytest.fixture(params=list(DATASTORES))
def app(request: pytest.FixtureRequest, make_app: MakeApp, tmp_path: Path) -> Iterator[Flask]:
    """The example tree on each datastore (a SQLite queue); jobs are queued."""
    with DATASTORES[request.param](tmp_path) as url:
        app = make_app(
            SPACEWALK_DATASTORE_URL=url,
            SPACEWALK_QUEUE_URL=f"sqlite:///{tmp_path / 'queue.sqlite3'}",
            SPACEWALK_RUN_INLINE=False,
        )
        yield app
        for state in app.extensions["spacewalk"].values():
            state.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def created(response: Any) -> str:
    assert response.status_code == 201, response.get_json()
    assert "Idempotent-Replayed" not in response.headers
    return str(response.get_json()["uuid"])


def assert_replay(response: Any, uuid: str) -> None:
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"uuid": uuid}
    assert response.headers["Location"] == f"/examples/progress/{uuid}"
    assert response.headers["Idempotent-Replayed"] == "true"


def error(response: Any, code: int) -> str:
    assert response.status_code == code, response.get_json()
    body = response.get_json()
    assert body["code"] == code and "errors" not in body
    return str(body["message"])


# -- the rules, on every datastore --------------------------------------------------


def test_the_same_key_again_replays_the_first_job_and_changes_nothing(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    uuid = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("order-1")))
    datastore, _ = state_of(app).connections()
    document, cas = datastore.read_with_cas(make_key(uuid))
    etag = client.get(f"/examples/info/{uuid}").headers["ETag"]
    with caplog.at_level(logging.INFO, logger="flask_spacewalk.web.idempotency"):
        assert_replay(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("order-1")), uuid)
        # the same Params after loading (defaults filled in), other starting options
        same = {"n": 3, "fizzDivisor": 3, "buzzDivisor": 5}
        assert_replay(client.post(f"{FIZZ}/job?priority=7&delay=60", json=same,
                                  headers=key("order-1")), uuid)  # fmt: skip
    assert job_uuids(app) == [uuid]
    assert datastore.read_with_cas(make_key(uuid)) == (document, cas)
    assert client.get(f"/examples/info/{uuid}").headers["ETag"] == etag
    replays = [r for r in caplog.records if r.name == "flask_spacewalk.web.idempotency"]
    assert len(replays) == 2 and replays[0].levelno == logging.INFO
    assert all("'order-1'" in r.getMessage() and "/examples" in r.getMessage()
               and uuid in r.getMessage() for r in replays)  # fmt: skip
    # a POST without a key is not affected
    assert created(client.post(f"{FIZZ}/job", json={"n": 3})) != uuid


def test_the_same_key_with_other_params_or_another_leaf_is_422(
    app: Flask, client: FlaskClient
) -> None:
    uuid = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k-1")))
    message = error(client.post(f"{FIZZ}/job", json={"n": 4}, headers=key("k-1")), 422)
    assert "Idempotency-Key 'k-1'" in message and "other Params" in message
    message = error(client.post(f"{WASTE}/job", json={}, headers=key("k-1")), 422)
    assert "Idempotency-Key 'k-1'" in message and "another leaf (/examples/fizz_buzz)" in message
    assert job_uuids(app) == [uuid]
    assert_replay(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k-1")), uuid)


def test_a_post_that_fails_releases_its_key(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a 422 before the claim: the key was never taken
    assert client.post(f"{FIZZ}/job", json={"n": -1}, headers=key("k")).status_code == 422
    # a 503 from a queue that refuses (the job is stored, marked unqueued)
    _, queue = state_of(app).connections()

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise QueueUnavailable("beanstalkd refused the connection")

    monkeypatch.setattr(queue, "put", refuse)
    assert error(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")), 503)
    monkeypatch.undo()
    (unqueued,) = job_uuids(app)
    # any other exception: 500
    monkeypatch.setattr(Lifecycle, "create", lambda *args, **kwargs: 1 / 0)
    assert error(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")), 500)
    monkeypatch.undo()
    uuid = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")))
    assert uuid != unqueued
    assert_replay(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")), uuid)


def test_a_key_is_forgotten_after_its_ttl(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_of(app)
    # a real clock: Redis expires its records by itself
    monkeypatch.setattr(state, "settings", dataclasses.replace(state.settings,
                                                                idempotency_ttl=1.0))  # fmt: skip
    first = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")))
    assert_replay(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")), first)
    time.sleep(1.05)
    second = created(client.post(f"{FIZZ}/job", json={"n": 4}, headers=key("k")))
    assert second != first and set(job_uuids(app)) == {first, second}


def test_a_pending_key_is_409_until_its_dead_claim_is_taken_over(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a POST that claimed the key and was killed before it created its job
    state = state_of(app)
    datastore, _ = state.connections()
    validator = state.schemas[FIZZ].validator
    print_ = fingerprint(FIZZ, validator.schema.dump(validator.validate({"n": 3})))
    assert KeyClaim(datastore, "/examples", "k", print_, ttl=60).claim() is None
    response = client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k"))
    assert "Idempotency-Key 'k'" in error(response, 409)
    assert response.headers["Retry-After"] == "1"
    assert job_uuids(app) == []
    time.sleep(0.15)
    monkeypatch.setattr(keyrecords, "TAKEOVER_AFTER", 0.1)
    with caplog.at_level(logging.WARNING, logger="flask_spacewalk.web.idempotency"):
        uuid = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")))
    (warning,) = [r for r in caplog.records if r.name == "flask_spacewalk.web.idempotency"]
    assert "took over" in warning.getMessage() and uuid in warning.getMessage()
    assert_replay(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")), uuid)


def test_thirty_two_racing_posts_with_one_key_make_one_job(app: Flask) -> None:
    # Each client POSTs at once, and again 10 ms after each 409, as a client
    # that honours Retry-After would (sooner), until it has its answer.
    start = threading.Barrier(32)
    answers: list[tuple[float, float, int, Any, Any]] = []

    def post() -> None:
        client = app.test_client()
        start.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            began = time.monotonic()
            response = client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("race"))
            answers.append((began, time.monotonic(), response.status_code,
                            response.get_json(), response.headers))  # fmt: skip
            if response.status_code != 409:
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=post) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = Counter(answer[2] for answer in answers)
    assert set(statuses) <= {200, 201, 409} and statuses[201] == 1 and statuses[200] == 31
    (first,) = [answer for answer in answers if answer[2] == 201]
    uuid = first[3]["uuid"]
    assert job_uuids(app) == [uuid]
    for began, _, status, body, headers in answers:
        if status == 200:
            assert body == {"uuid": uuid} and headers["Idempotent-Replayed"] == "true"
        elif status == 409:
            # only while the first POST had not been answered
            assert began < first[1] and headers["Retry-After"] == "1"


# -- the web side, on one datastore ------------------------------------------------


@pytest.fixture
def sqlite_app(make_app: MakeApp) -> Flask:
    return make_app(SPACEWALK_RUN_INLINE=False)


@pytest.mark.parametrize("value, problem", [
    ("", "is empty"),
    ("x" * 256, "is 256 characters long"),
    ("a b", "holds ' ' (character 2)"),
    ("caf\u00e9", "holds '\u00e9' (character 4)"),
    ("tab\there", "holds '\\t' (character 4)"),
])  # fmt: skip
def test_a_malformed_key_is_400_naming_the_header(
    sqlite_app: Flask, value: str, problem: str
) -> None:
    client = sqlite_app.test_client()
    message = error(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key(value)), 400)
    assert message.startswith(f"Idempotency-Key {problem}: a key is 1 to 255 characters")
    assert job_uuids(sqlite_app) == []


def test_a_key_given_twice_is_400(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    headers = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    message = error(client.post(f"{FIZZ}/job", json={"n": 3}, headers=headers), 400)
    assert message == "Idempotency-Key is given more than once; send one key"


def test_every_character_from_bang_to_tilde_makes_a_key(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    every = "".join(chr(code) for code in range(ord("!"), ord("~") + 1))
    for value in (every, "x" * 255, "1"):
        uuid = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key(value)))
        assert_replay(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key(value)), uuid)


def test_the_key_is_checked_after_the_query_and_before_the_fields(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    bad = key("a b")
    assert client.post(f"{FIZZ}/job", data="{", content_type="text/plain",
                       headers=bad).status_code == 415  # fmt: skip
    message = error(client.post(f"{FIZZ}/job", data="{", content_type="application/json",
                                headers=bad), 400)  # fmt: skip
    assert "not valid JSON" in message
    assert "delay" in error(client.post(f"{FIZZ}/job?delay=x", json={"n": 3}, headers=bad), 400)
    assert "Idempotency-Key" in error(
        client.post(f"{FIZZ}/job", json={"n": "x"}, headers=bad), 400
    )


def test_the_same_key_under_another_root_is_another_key(make_app: MakeApp) -> None:
    app = make_app((BaseExampleJob, EXAMPLE_JOBS, {"url_prefix": "/a"}),
                   (BaseExampleJob, EXAMPLE_JOBS, {"url_prefix": "/b"}),
                   SPACEWALK_RUN_INLINE=False)  # fmt: skip
    client = app.test_client()
    one = created(client.post(f"/a{FIZZ}/job", json={"n": 3}, headers=key("k")))
    two = created(client.post(f"/b{FIZZ}/job", json={"n": 3}, headers=key("k")))
    assert one != two
    for prefix, uuid in (("/a", one), ("/b", two)):
        response = client.post(f"{prefix}{FIZZ}/job", json={"n": 3}, headers=key("k"))
        assert response.status_code == 200 and response.get_json() == {"uuid": uuid}
        assert response.headers["Location"] == f"{prefix}/examples/progress/{uuid}"


def test_an_inline_run_is_replayed_too(make_app: MakeApp) -> None:
    app = make_app(TESTING=True)
    client = app.test_client()
    uuid = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")))
    assert client.get(f"/examples/progress/{uuid}").get_json()["result"] == 200
    assert_replay(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")), uuid)
    assert job_uuids(app) == [uuid]


def test_a_key_that_cannot_be_recorded_still_answers_the_job(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = sqlite_app.test_client()
    datastore, queue = state_of(sqlite_app).connections()

    def down(*args: Any) -> bool:
        raise DatastoreUnavailable("the disk is full")

    monkeypatch.setattr(datastore, "replace_key", down)
    with caplog.at_level(logging.WARNING, logger="flask_spacewalk.web.idempotency"):
        uuid = created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k")))
    assert f"created job {uuid} but cannot record it" in caplog.text
    monkeypatch.setattr(datastore, "replace_key", lambda *args: False)  # claim lost
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_spacewalk.web.idempotency"):
        created(client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k2")))
    assert "another request may have created a job" in caplog.text
    # a failed POST whose release fails answers its own error
    monkeypatch.setattr(datastore, "release_key", down)
    monkeypatch.setattr(queue, "put_with_document", down)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_spacewalk.web.idempotency"):
        assert "the disk is full" in error(
            client.post(f"{FIZZ}/job", json={"n": 3}, headers=key("k3")), 503
        )
    assert "cannot release the key" in caplog.text


@pytest.mark.parametrize("ttl", [0, -5, "0", "-1", "nan", "inf", "a day"])
def test_a_ttl_that_is_no_positive_number_stops_start_up(make_app: MakeApp, ttl: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_app(SPACEWALK_IDEMPOTENCY_TTL=ttl)
    assert str(caught.value).startswith(f"bad SPACEWALK_IDEMPOTENCY_TTL {ttl!r} (from app.config)")


def test_the_ttl_is_read_from_the_environment(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPACEWALK_IDEMPOTENCY_TTL", "3600")
    app = make_app()
    assert state_of(app).settings.idempotency_ttl == 3600.0
    assert app.config["SPACEWALK_IDEMPOTENCY_TTL"] == 3600.0
    assert state_of(make_app(SPACEWALK_IDEMPOTENCY_TTL=0.5)).settings.idempotency_ttl == 0.5
