"""The job listing: ``list_jobs`` on every datastore, ``GET R/jobs``, and
the indexes that keep a page from scanning the store."""
from __future__ import annotations

import base64
import contextlib
import json
import sys
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from backend_support import DATASTORES, _close
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_spacewalk import Spacewalk, make_datastore
from flask_spacewalk.backends.base import MAX_TYPE_PROBES, JobQuery
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.status import job_index
from flask_spacewalk.web.listing import decode_cursor, encode_cursor

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.jobs.examples import BaseExampleJob  # noqa: E402

FB = "examples_fizz_buzz"
WT = "examples_waste_time"


def uid(n: int) -> str:
    return str(uuid_module.UUID(int=n, version=4))


def job(
    job_type: str, created: str, result: int = -1, running: bool = False, n: int = 0
) -> dict[str, Any]:
    return {
        "documentType": "zerog_job", "jobType": job_type, "uuid": uid(n),
        "createdAt": created, "updatedAt": created, "completeness": 1 if result >= 0 else 0,
        "resultCode": result, "running": running, "events": [], "errors": [], "warnings": [],
    }  # fmt: skip


def at(second: int, fraction: int = 0) -> str:
    """A createdAt as isoformat() writes it (no fraction when it is zero)."""
    text = f"2024-05-01T12:{second // 60:02d}:{second % 60:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


def ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["uuid"] for j in jobs]


# -- list_jobs on every datastore ----------------------------------------------


@pytest.fixture(params=sorted(DATASTORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with DATASTORES[request.param](tmp_path) as url:
        datastore = make_datastore(url)
        yield datastore
        _close(datastore)


def put(store: Any, n: int, job_type: str, created: str, **kwargs: Any) -> str:
    store.set(make_key(uid(n)), job(job_type, created, n=n, **kwargs))
    return uid(n)


@pytest.fixture
def stored(store: Any) -> dict[str, str]:
    """Six jobs of two types and every status, two sharing a createdAt;
    and documents that are not jobs."""
    jobs = {
        "a_queued": put(store, 1, "a", at(1)),
        "b_running": put(store, 2, "b", at(2), running=True),
        "a_finished": put(store, 3, "a", at(3, 500), result=200),
        "b_failed": put(store, 4, "b", at(4), result=500),
        "a_cancelled": put(store, 5, "a", at(4), result=410),
        "b_finished": put(store, 6, "b", at(5), result=0),
    }
    store.set("spacewalk_cancel_" + uid(1), {"createdAt": at(9), "jobType": "a"})
    store.set("other", {"createdAt": at(9), "jobType": "a", "resultCode": -1})
    store.set(make_key(uid(99)), "a str under a job key")
    store.set(make_key(uid(98)), {"jobType": "a", "resultCode": -1})  # no createdAt
    return jobs


def listed(store: Any, **kwargs: Any) -> list[str]:
    for name in ("job_types", "statuses"):
        if name in kwargs:
            kwargs[name] = frozenset(kwargs[name])
    return ids(store.list_jobs(JobQuery(**kwargs)))


def test_newest_first_and_only_jobs(store: Any, stored: dict[str, str]) -> None:
    jobs = store.list_jobs(JobQuery())
    # equal createdAt: the greater uuid first
    assert ids(jobs) == [uid(6), uid(5), uid(4), uid(3), uid(2), uid(1)]
    assert jobs[3] == {
        "uuid": uid(3), "jobType": "a", "status": "finished", "createdAt": at(3, 500),
        "updatedAt": at(3, 500), "completeness": 1.0, "result": 200,
    }  # fmt: skip
    assert isinstance(jobs[0]["completeness"], float)
    assert [j["status"] for j in jobs] == [
        "finished", "cancelled", "failed", "finished", "running", "queued"
    ]


def test_filters(store: Any, stored: dict[str, str]) -> None:
    assert listed(store, job_types={"a"}) == [uid(5), uid(3), uid(1)]
    assert listed(store, job_types={"a", "b"}) == [uid(n) for n in (6, 5, 4, 3, 2, 1)]
    assert listed(store, job_types={"c"}) == []
    assert listed(store, statuses={"queued"}) == [uid(1)]
    assert listed(store, statuses={"running"}) == [uid(2)]
    assert listed(store, statuses={"failed"}) == [uid(4)]
    assert listed(store, statuses={"cancelled"}) == [uid(5)]
    assert listed(store, statuses={"failed", "cancelled"}) == [uid(5), uid(4)]
    assert listed(store, statuses={"finished", "queued"}) == [uid(6), uid(3), uid(1)]
    assert listed(store, since=at(4)) == [uid(6), uid(5), uid(4)]
    assert listed(store, since=at(3)) == [uid(6), uid(5), uid(4), uid(3)]
    assert listed(store, since=at(3, 500)) == [uid(6), uid(5), uid(4), uid(3)]
    assert listed(store, since=at(3, 501)) == [uid(6), uid(5), uid(4)]


def test_combined_filters(store: Any, stored: dict[str, str]) -> None:
    assert listed(store, job_types={"a"}, statuses={"failed"}) == []
    assert listed(store, job_types={"a"}, statuses={"cancelled"}) == [uid(5)]
    assert listed(store, job_types={"b"}, statuses={"failed", "running"}) == [uid(4), uid(2)]
    assert listed(store, job_types={"a"}, statuses={"running"}) == []
    assert listed(store, job_types={"b"}, since=at(2)) == [uid(6), uid(4), uid(2)]
    assert listed(store, statuses={"finished"}, since=at(4), job_types={"b"}) == [uid(6)]
    many = {"a"} | {f"x{i}" for i in range(MAX_TYPE_PROBES)}  # the createdAt index
    assert listed(store, job_types=many) == [uid(5), uid(3), uid(1)]
    assert listed(store, job_types=many, statuses={"queued", "failed"}) == [uid(1)]
    assert listed(store, job_types=many, statuses={"queued", "cancelled"}) == [uid(5), uid(1)]


def pages(store: Any, size: int, **kwargs: Any) -> list[list[str]]:
    out: list[list[str]] = []
    after = None
    while True:
        jobs = store.list_jobs(JobQuery(after=after, limit=size + 1, **kwargs))
        out.append(ids(jobs[:size]))
        if len(jobs) <= size:
            return out
        after = (jobs[size - 1]["createdAt"], jobs[size - 1]["uuid"])


def test_pagination_across_equal_created_at(store: Any) -> None:
    # eleven jobs in three instants: pages split runs of equal createdAt
    for n in range(1, 12):
        put(store, n, "ab"[n % 2], at(n // 4), result=[200, 500][n % 2])
    everything = [uid(n) for n in sorted(range(1, 12), key=lambda n: (n // 4, n), reverse=True)]
    for size in (1, 2, 3, 5, 11, 20):
        got = pages(store, size)
        assert sum(got, []) == everything, size
        assert all(len(page) == size for page in got[:-1])
    got = pages(store, 2, job_types=frozenset({"a"}))
    assert sum(got, []) == [u for u in everything if int(u[-2:], 16) % 2 == 0]
    got = pages(store, 2, statuses=frozenset({"failed"}), since=at(1))
    assert sum(got, []) == [u for u in everything if int(u[-2:], 16) % 2 and int(u[-2:], 16) >= 4]


def test_status_moves_with_the_document(store: Any) -> None:
    key = make_key(put(store, 1, "a", at(1)))
    assert listed(store, statuses={"queued"}) == [uid(1)]
    _, cas = store.read_with_cas(key)
    store.update_with_cas(key, job("a", at(1), running=True, n=1), cas)
    assert listed(store, statuses={"queued"}) == []
    assert listed(store, statuses={"running"}) == [uid(1)]
    store.update(key, job("a", at(1), result=410, n=1))
    assert listed(store, statuses={"running"}) == []
    assert listed(store, statuses={"failed"}, job_types={"a"}) == []
    assert listed(store, statuses={"cancelled"}, job_types={"a"}) == [uid(1)]
    store.update(key, job("a", at(1), result=500, n=1))
    assert listed(store, statuses={"cancelled"}) == []
    assert listed(store, statuses={"failed"}, job_types={"a"}) == [uid(1)]
    # a new jobType and createdAt move it too
    store.set(key, job("b", at(7), result=200, n=1))
    assert listed(store, job_types={"a"}) == []
    assert listed(store, job_types={"b"}, statuses={"finished"}) == [uid(1)]
    assert listed(store, since=at(7)) == [uid(1)]
    # no longer a job document: no longer listed
    store.set(key, "a str")
    assert listed(store) == listed(store, statuses={"finished"}) == []
    store.set(key, job("a", at(2), n=1))
    assert listed(store, statuses={"queued"}) == [uid(1)]


def test_deleted_jobs_vanish(store: Any, stored: dict[str, str]) -> None:
    assert store.delete(make_key(uid(3))) is True
    assert store.delete(make_key(uid(3))) is False
    assert listed(store) == [uid(6), uid(5), uid(4), uid(2), uid(1)]
    assert listed(store, statuses={"finished"}) == [uid(6)]
    assert listed(store, job_types={"a"}) == [uid(5), uid(1)]
    put(store, 3, "a", at(3), result=500)  # created again
    assert listed(store, statuses={"failed"}, job_types={"a"}) == [uid(3)]
    assert listed(store, statuses={"failed", "cancelled"}, job_types={"a"}) == [uid(5), uid(3)]


def test_created_jobs_are_listed(store: Any) -> None:
    store.create(make_key(uid(1)), job("a", at(1), n=1))
    assert listed(store, statuses={"queued"}, job_types={"a"}) == [uid(1)]


# -- GET R/jobs ------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.testing = True
    app.config["SPACEWALK_DATASTORE_URL"] = db_url
    Spacewalk(app, ROOT / "examples" / "jobs", BaseExampleJob)
    yield app
    app.extensions["spacewalk"]["/examples"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def app_store(app: Flask) -> Any:
    return app.extensions["spacewalk"]["/examples"].connections()[0]


def error(response: Any, code: int) -> str:
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"code", "status", "message"}
    assert body["code"] == code
    return str(body["message"])


def test_api_lists_posted_jobs(client: FlaskClient) -> None:
    assert client.get("/examples/jobs").get_json() == {"jobs": [], "next": None}
    posted = client.post("/examples/fizz_buzz/job", json={"n": 3}).get_json()["uuid"]
    response = client.get("/examples/jobs")
    assert response.status_code == 200
    assert "Link" not in response.headers
    body = response.get_json()
    assert body["next"] is None
    (item,) = body["jobs"]
    assert list(item) == ["uuid", "jobType", "status", "createdAt", "updatedAt",
                          "completeness", "result", "progress"]  # fmt: skip
    assert item["uuid"] == posted
    assert item["jobType"] == FB
    assert (item["status"], item["result"], item["completeness"]) == ("finished", 200, 1.0)
    assert item["progress"] == f"/examples/progress/{posted}"
    assert client.get(item["progress"]).get_json() == {"completeness": 1.0, "result": 200}


def test_api_filters_and_tree_scope(client: FlaskClient, app_store: Any) -> None:
    put(app_store, 1, FB, at(1))
    put(app_store, 2, WT, at(2), running=True)
    put(app_store, 3, FB, at(3), result=410)
    put(app_store, 4, "not_of_this_tree", at(4))

    def listed_by(query: str) -> list[str]:
        response = client.get("/examples/jobs" + query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return ids(response.get_json()["jobs"])

    assert listed_by("") == [uid(3), uid(2), uid(1)]
    assert listed_by("?status=queued") == [uid(1)]
    assert listed_by("?jobType=examples_fizz_buzz") == [uid(3), uid(1)]
    assert listed_by(f"?jobType={FB},{WT}&status=failed") == []
    assert listed_by(f"?jobType={FB},{WT}&status=cancelled") == [uid(3)]
    assert listed_by("?status=cancelled,failed") == [uid(3)]
    assert listed_by("?status=running&status=queued") == [uid(2), uid(1)]
    assert listed_by("?status=running,queued") == [uid(2), uid(1)]
    assert listed_by(f"?since={at(2)}") == [uid(3), uid(2)]
    assert listed_by(f"?since={at(2)}Z") == [uid(3), uid(2)]
    # 14:00:02+02:00 is 12:00:02 UTC
    assert listed_by("?since=2024-05-01T14:00:02%2B02:00") == [uid(3), uid(2)]
    assert listed_by("?since=2024-05-01T14:00:02.5%2B02:00") == [uid(3)]
    assert listed_by("?since=2024-05-02") == []
    assert listed_by("?limit=2&unknown=1") == [uid(3), uid(2)]


def test_api_pages_and_link_header(client: FlaskClient, app_store: Any) -> None:
    for n in range(1, 8):
        put(app_store, n, FB, at(n // 3))
    seen: list[str] = []
    url = "/examples/jobs?jobType=examples_fizz_buzz&limit=3&extra=x%20y"
    while True:
        response = client.get(url)
        body = response.get_json()
        seen += ids(body["jobs"])
        if body["next"] is None:
            assert "Link" not in response.headers
            break
        assert len(body["jobs"]) == 3
        link = response.headers["Link"]
        assert link.startswith("</examples/jobs?") and link.endswith('>; rel="next"')
        url = link[1 : link.index(">")]
        assert parse_qsl(urlsplit(url).query) == [
            ("jobType", FB), ("limit", "3"), ("extra", "x y"), ("cursor", body["next"])
        ]  # fmt: skip
    assert seen == [uid(n) for n in sorted(range(1, 8), key=lambda n: (n // 3, n), reverse=True)]


def test_api_script_root(app: Flask, app_store: Any) -> None:
    put(app_store, 1, FB, at(1))
    put(app_store, 2, FB, at(2))
    client = app.test_client()
    response = client.get("/examples/jobs?limit=1", base_url="http://localhost/mnt")
    assert response.get_json()["jobs"][0]["progress"] == f"/mnt/examples/progress/{uid(2)}"
    assert response.headers["Link"].startswith("</mnt/examples/jobs?limit=1&cursor=")


def test_api_limit_is_capped(client: FlaskClient, app_store: Any) -> None:
    for n in range(1, 503):
        put(app_store, n, FB, at(1))
    body = client.get("/examples/jobs?limit=100000").get_json()
    assert len(body["jobs"]) == 500 and body["next"] is not None
    assert len(client.get("/examples/jobs").get_json()["jobs"]) == 50
    assert len(client.get("/examples/jobs?limit=%2B2").get_json()["jobs"]) == 2


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("jobType=nope", "'nope' is not a job type"),
        ("jobType=examples_fizz_buzz,", "'' is not a job type"),
        ("jobType=", "'' is not a job type"),
        ("status=done", "'done' is not one of queued, running, finished, cancelled, failed"),
        ("status=unfinished", "'unfinished' is not one of"),
        ("status=queued&status=Failed", "'Failed'"),
        ("limit=0", "limit must be a whole number"),
        ("limit=-5", "limit must be a whole number"),
        ("limit=1.5", "limit must be a whole number"),
        ("limit=ten", "limit must be a whole number"),
        ("limit=1_0", "limit must be a whole number"),
        ("limit=", "limit must be a whole number"),
        ("limit=1&limit=2", "give limit at most once"),
        ("since=yesterday", "since must be an ISO-8601 date-time"),
        ("since=2024-13-01T00:00:00", "since must be an ISO-8601 date-time"),
        ("since=", "since must be an ISO-8601 date-time"),
        ("cursor=abc", "cursor is not one this API gave"),
        ("cursor=%E2%82%AC", "cursor is not one this API gave"),
        ("cursor=", "cursor is not one this API gave"),
        ("cursor=" + base64.urlsafe_b64encode(b'{"c": 1, "u": "x"}').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'["c", "u"]').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode(), "cursor"),
    ],
)
def test_api_bad_input(client: FlaskClient, query: str, words: str) -> None:
    assert words in error(client.get(f"/examples/jobs?{query}"), 400)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def cursor_of(created: Any, uuid: Any) -> str:
    return b64(json.dumps({"c": created, "u": uuid}).encode())


UPPER_UUID = "ABCDEF01-0000-4000-8000-00000000000A"
ODD_QUERIES = [
    ("since=0001-01-01T00:00:00%2B01:00", "since is out of range"),
    ("since=9999-12-31T23:59:59-01:00", "since is out of range"),
    ("since=2024-05-01T12:00:00%00", "since must be an ISO-8601 date-time"),
    ("since=%ED%A0%80", "since must be an ISO-8601 date-time"),
    ("since=2024-05-01T12:00:00%2B25:00", "since must be an ISO-8601 date-time"),
    ("limit=-" + "9" * 5000, "limit must be a whole number"),
    ("limit=%00", "limit must be a whole number"),
    ("cursor=%00", "cursor is not one this API gave"),
    ("cursor=%C3%A9t%C3%A9", "cursor is not one this API gave"),
    ("cursor=" + "A" * 100_000, "cursor is not one this API gave"),
    ("cursor=" + cursor_of("2024-05-01T12:00:00", "not-a-uuid"), "cursor is not one"),
    ("cursor=" + cursor_of("2024-05-01T12:00:00", UPPER_UUID), "cursor is not one"),
    ("cursor=" + cursor_of("yesterday", uid(1)), "cursor is not one"),
    ("cursor=" + cursor_of("2024-13-01T12:00:00", uid(1)), "cursor is not one"),
    ("cursor=" + cursor_of("2024-05-01T12:00:00+01:00", uid(1)), "cursor is not one"),
    ("cursor=" + cursor_of("\ud800", uid(1)), "cursor is not one"),
    ("cursor=" + cursor_of("2024-05-01T12:00:00", "\u0000"), "cursor is not one"),
    ("cursor=" + b64(b'{"c": "2024-05-01T12:00:00", "u": "\\ud800"}'), "cursor is not one"),
    ("cursor=" + b64(b'{"c": "\xed\xa0\x80", "u": "x"}'), "cursor is not one"),
    ("cursor=" + cursor_of(["2024"], {"u": 1}), "cursor is not one"),
    ("cursor=" + b64(b'{"c": "' + b"9" * 10_000 + b'", "u": 1}'), "cursor is not one"),
]


@pytest.fixture
def store_client(tmp_path: Path, db_url: str, store_url: str) -> Iterator[FlaskClient]:
    """The example app on each datastore, the queue in SQLite."""
    app = Flask(__name__, instance_path=str(tmp_path))
    app.testing = True
    app.config.update(SPACEWALK_DATASTORE_URL=store_url, SPACEWALK_QUEUE_URL=db_url)
    Spacewalk(app, ROOT / "examples" / "jobs", BaseExampleJob)
    yield app.test_client()
    app.extensions["spacewalk"]["/examples"].close()


@pytest.fixture(params=sorted(DATASTORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with DATASTORES[request.param](tmp_path) as url:
        yield url


@pytest.mark.parametrize(("query", "words"), ODD_QUERIES)
def test_api_odd_input_is_400_on_every_datastore(
    store_client: FlaskClient, query: str, words: str
) -> None:
    assert words in error(store_client.get(f"/examples/jobs?{query}"), 400)


def test_api_a_huge_limit_is_the_largest_page(client: FlaskClient) -> None:
    for limit in ("9" * 5000, "+00000000000000000000000000000000000007"):
        response = client.get(f"/examples/jobs?limit={limit}")
        assert response.status_code == 200, response.get_data(as_text=True)


def test_api_cursors_of_stored_timestamps_with_and_without_fraction(
    client: FlaskClient, app_store: Any
) -> None:
    """ZeroG writes createdAt with or without a fraction: both page on."""
    for n, created in enumerate([at(1), at(2, 5), at(3), at(4, 999_999)]):
        put(app_store, n, FB, created)
    seen, cursor = [], ""
    while True:
        page = client.get(f"/examples/jobs?limit=1{cursor}").get_json()
        seen += ids(page["jobs"])
        if page["next"] is None:
            break
        cursor = f"&cursor={page['next']}"
    assert seen == [uid(3), uid(2), uid(1), uid(0)]


QUERY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["2024-05-01", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                     "queued", FB, "50", "0", "-1", "\ud800", "\x00", "eyJjIjoiMSIsInUiOiIyIn0"]),
    st.builds(lambda c, u: cursor_of(c, u), st.text(max_size=30), st.text(max_size=40)),
)  # fmt: skip
PARAMETERS = st.sampled_from(["since", "cursor", "limit", "jobType", "status"])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(st.tuples(PARAMETERS, QUERY_TEXT), max_size=4))
def test_api_never_answers_500(client: FlaskClient, query: list[tuple[str, str]]) -> None:
    """Whatever the query string holds, lone surrogates and NUL included."""
    encoded = "&".join(
        f"{name}={quote(value.encode('utf-8', 'surrogatepass'))}" for name, value in query
    )
    response = client.get(f"/examples/jobs?{encoded}")
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    assert set(response.get_json()) in ({"jobs", "next"}, {"code", "status", "message"})


def test_api_wrong_method(client: FlaskClient) -> None:
    response = client.post("/examples/jobs")
    assert "GET" in error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_cursor_round_trip() -> None:
    cursor = encode_cursor(at(1, 5), uid(7))
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (at(1, 5), uid(7))


class WithoutListing:
    """A datastore of the user's own, without ``list_jobs``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def read(self, key: str) -> Any:
        return self.inner.read(key)


def test_api_datastore_without_list_jobs(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = app.extensions["spacewalk"]["/examples"]
    datastore, _ = state.connections()
    # where a datastore enters: a ZeroG one is given the abilities it lacks
    monkeypatch.setattr(state, "make_datastore", lambda: WithoutListing(datastore))
    state.close()
    message = error(client.get("/examples/jobs"), 501)
    assert message == "this datastore (WithoutListing) cannot list jobs: it has no list_jobs method"
    # bad input is still a 400 first
    error(client.get("/examples/jobs?limit=0"), 400)


def test_api_datastore_unavailable(client: FlaskClient, tmp_path: Path) -> None:
    (tmp_path / "spacewalk.sqlite3").mkdir()  # not a database file
    assert "datastore unavailable" in error(client.get("/examples/jobs"), 503)


# -- indexes -------------------------------------------------------------------

# Every way of reading the listing: (query, what the plan reads).
SHAPES = [
    (JobQuery(), "jobs_created"),
    (JobQuery(job_types=frozenset({"t1"})), "jobs_type_created"),
    (JobQuery(job_types=frozenset({"t1", "t2"}), since=at(100)), "jobs_type_created"),
    (JobQuery(statuses=frozenset({"failed"})), "jobs_status_created"),
    (JobQuery(statuses=frozenset({"queued", "running"}), job_types=frozenset({"t0"})),
     "jobs_status_created"),
    (JobQuery(job_types=frozenset({"t1"}), after=(at(500), uid(1000))), "jobs_type_created"),
    (JobQuery(statuses=frozenset({"finished"}), since=at(10), after=(at(500), uid(1000))),
     "jobs_status_created"),
    (JobQuery(after=(at(500), uid(1000))), "jobs_created"),
]  # fmt: skip
ROWS = 5000


def bulk_documents() -> Iterator[tuple[Any, ...]]:
    """Rows of SQLite's table: key, value and the listing's columns."""
    for n in range(ROWS):
        document = job(f"t{n % 3}", at(n // 5), result=[-1, -1, 200, 500][n % 4],
                       running=n % 4 == 1, n=n)  # fmt: skip
        key = make_key(uid(n))
        index = job_index(key, document)
        assert index is not None
        yield key, json.dumps(document), index.created_at, index.job_type, index.status.value
    for n in range(200):
        yield f"spacewalk_cancel_{uid(n)}", "{}", None, None, None


@pytest.mark.parametrize(("query", "index"), SHAPES)
def test_sqlite_plans_use_an_index(tmp_path: Path, query: JobQuery, index: str) -> None:
    from flask_spacewalk.backends.sqlite import SqliteDatastore, listing_sql

    store = SqliteDatastore(tmp_path / "plans.db")
    try:
        with store._db.connect(write=True) as conn:
            conn.executemany(
                "INSERT INTO documents VALUES (?, ?, 1, 0, ?, ?, ?)", bulk_documents()
            )
            conn.execute("ANALYZE")
        sql, ranges = listing_sql(query)
        with store._db.connect() as conn:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ranges[0])]
        # one search of the index, in its order: no scan, no sort
        assert plan == [plan[0]] and plan[0].startswith(f"SEARCH documents USING INDEX {index} (")
        if query.after is not None:
            assert "job_created<?" in plan[0]  # the cursor bounds the search
        assert len(store.list_jobs(query)) == query.limit
    finally:
        store.close()


def test_sqlite_store_of_an_older_version_gains_the_indexes(tmp_path: Path) -> None:
    import sqlite3

    from flask_spacewalk.backends.sqlite import SqliteDatastore

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE documents (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                 " cas INTEGER NOT NULL, updated_at REAL NOT NULL)")  # fmt: skip
    rows = [
        (make_key(uid(1)), job("a", at(1), n=1)),
        (make_key(uid(2)), job("b", at(2), running=True, n=2)),
        (make_key(uid(3)), job("a", at(3), result=200, n=3)),
        (make_key(uid(4)), job("b", at(4), result=410, n=4)),
        (make_key(uid(5)), dict(job("b", at(5), n=5), resultCode=True, jobType=7)),
        (make_key(uid(6)), {"jobType": "a", "resultCode": -1}),
        (make_key(uid(7)), "a str"),
        ("spacewalk_cancel_" + uid(1), {"createdAt": at(9)}),
    ]
    conn.executemany("INSERT INTO documents VALUES (?, ?, 1, 0)",
                     [(key, json.dumps(value)) for key, value in rows])  # fmt: skip
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteDatastore(path)
    try:
        # the backfill derives what a write would have set
        assert listed(store) == [uid(5), uid(4), uid(3), uid(2), uid(1)]
        assert listed(store, statuses={"queued"}) == [uid(1)]
        assert listed(store, statuses={"running"}) == [uid(2)]
        assert listed(store, statuses={"finished"}) == [uid(3)]
        assert listed(store, statuses={"failed"}) == [uid(5)]
        assert listed(store, statuses={"cancelled"}) == [uid(4)]
        assert listed(store, job_types={"b"}) == [uid(4), uid(2)]
        store.update(make_key(uid(2)), job("b", at(2), result=200, n=2))
        assert listed(store, statuses={"finished"}) == [uid(3), uid(2)]
        with store._db.connect() as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"jobs_created", "jobs_type_created", "jobs_status_created"} <= names
    finally:
        store.close()


@pytest.fixture(scope="module")
def pg_table() -> Iterator[tuple[Any, Any]]:
    """A PostgreSQL store of ROWS * 4 jobs, analysed, and an admin connection."""
    from backend_postgres import admin, dropped_afterwards, new_schema_name

    from flask_spacewalk.backends.postgres import PostgresDatastore

    schema = new_schema_name()
    with admin() as conn, dropped_afterwards(schema):
        store = PostgresDatastore(f"postgresql://127.0.0.1:5432/test?schema={schema}")
        store.read("x")  # creates the table
        # with the listing's columns, as the datastore's writes set them
        conn.execute(
            f"""INSERT INTO {store.table}
            SELECT key, value, 1, now(), value->>'createdAt', value->>'jobType', CASE
                WHEN value->>'resultCode' = '200' THEN 'finished'
                WHEN value->>'resultCode' = '500' THEN 'failed'
                WHEN value->>'running' = 'true' THEN 'running' ELSE 'queued' END
            FROM (SELECT 'zerog_job_' || lpad(n::text, 12, '0'), jsonb_build_object(
                'jobType', 't' || mod(n, 3), 'uuid', lpad(n::text, 12, '0'),
                'createdAt', to_char(timestamp '2024-05-01 12:00' + n / 5 * interval '1 s',
                                     'YYYY-MM-DD"T"HH24:MI:SS'),
                'updatedAt', '', 'completeness', 0, 'running', mod(n, 4) = 1,
                'resultCode', (ARRAY[-1, -1, 200, 500])[mod(n, 4) + 1])
            FROM generate_series(0, %s) AS n) AS d (key, value)""",
            (ROWS * 4 - 1,),
        )
        conn.execute(f"INSERT INTO {store.table} SELECT 'spacewalk_cancel_' || n, '{{}}',"
                     " 1, now() FROM generate_series(1, 500) AS n")  # fmt: skip
        conn.execute(f"ANALYZE {store.table}")
        yield store, conn
        store.close()


@pytest.mark.parametrize(("query", "index"), SHAPES)
def test_postgres_plans_use_an_index(
    pg_table: tuple[Any, Any], query: JobQuery, index: str
) -> None:
    from flask_spacewalk.backends.postgres import listing_sql

    store, conn = pg_table
    sql, ranges = listing_sql(query, store.table)
    plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, ranges[0]))
    assert f"Index Scan Backward using spacewalk_documents_{index} " in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
    if query.after is not None:
        assert "ROW(" in plan  # the cursor bounds the scan
    assert len(store.list_jobs(query)) == query.limit


def test_postgres_store_of_an_older_version_gains_the_indexes(
    pg_table: tuple[Any, Any],
) -> None:
    from flask_spacewalk.backends.postgres import PostgresDatastore

    store, conn = pg_table
    schema = store.table.split(".")[0]
    conn.execute(f"DROP INDEX {schema}.spacewalk_documents_jobs_status_created")
    conn.execute(f"CREATE INDEX spacewalk_documents_job_type_created_at ON {store.table}"
                 " ((value->>'jobType'), (value->>'createdAt'))")  # fmt: skip
    again = PostgresDatastore(f"postgresql://127.0.0.1:5432/test?schema={schema.strip(chr(34))}")
    try:
        assert len(again.list_jobs(JobQuery(statuses=frozenset({"queued"})))) == 50
    finally:
        again.close()
    names = {row[0] for row in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema.strip('"'),))}
    assert "spacewalk_documents_jobs_status_created" in names
    assert "spacewalk_documents_job_type_created_at" not in names


# -- one status vocabulary: what the backends are given, and older stores -------


def test_backends_index_the_status_they_are_given(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend stores the JobIndex of the write and never derives its own."""
    import flask_spacewalk.backends.base as base
    from flask_spacewalk.runtime.status import JobIndex, JobStatus

    monkeypatch.setattr(base, "job_index", lambda key, value: JobIndex(
        "given", at(1), JobStatus.FINISHED) if key.startswith("zerog_job_") else None)
    put(store, 1, "a", at(2))  # queued, by the document
    store.create(make_key(uid(2)), "a str")
    assert listed(store, statuses={"finished"}) == [uid(2), uid(1)]
    assert listed(store, job_types={"given"}, since=at(1)) == [uid(2), uid(1)]
    assert listed(store, statuses={"queued"}) == listed(store, job_types={"a"}) == []


def test_zerog_writes_are_indexed(store: Any) -> None:
    """ZeroG's workers save with set_with_cas / update_with_cas."""
    key = make_key(uid(1))
    ok, cas = store.set_with_cas(key, job("a", at(1), n=1))
    assert ok and listed(store, statuses={"queued"}) == [uid(1)]
    store.set_with_cas(key, job("a", at(1), result=410, n=1), cas)
    assert listed(store, statuses={"cancelled"}) == [uid(1)]
    assert listed(store, statuses={"failed"}) == []


def test_api_lists_a_cancelled_job_as_cancelled(tmp_path: Path, db_url: str) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SPACEWALK_DATASTORE_URL=db_url, SPACEWALK_RUN_INLINE=False)
    Spacewalk(app, ROOT / "examples" / "jobs", BaseExampleJob)
    client = app.test_client()
    try:
        uuid = client.post("/examples/fizz_buzz/job", json={"n": 3}).get_json()["uuid"]
        queued = client.get("/examples/jobs?status=queued").get_json()["jobs"]
        assert [(j["uuid"], j["status"]) for j in queued] == [(uuid, "queued")]
        assert client.post(f"/examples/cancel/{uuid}").status_code == 200
        (item,) = client.get("/examples/jobs?status=cancelled").get_json()["jobs"]
        assert (item["uuid"], item["status"], item["result"]) == (uuid, "cancelled", 410)
        assert client.get("/examples/jobs?status=failed").get_json()["jobs"] == []
        assert client.get("/examples/jobs?status=queued").get_json()["jobs"] == []
    finally:
        app.extensions["spacewalk"]["/examples"].close()


#: What an older store holds: jobs 1..7 cancelled (result 410, indexed
#: failed), 8 failed, 9 finished, 10 queued.
OLD_JOBS = [(n, job("a" if n % 2 else "b", at(n), result=410, n=n)) for n in range(1, 8)] + [
    (8, job("a", at(8), result=500, n=8)),
    (9, job("b", at(9), result=200, n=9)),
    (10, job("a", at(10), n=10)),
]


def old_sqlite(tmp_path: Path, version: int) -> str:
    """A file of schema ``version`` (2 or 3) as that version left it."""
    import sqlite3

    from flask_spacewalk.backends.sqlite import SqliteDatastore

    path = tmp_path / "old.db"
    store = SqliteDatastore(path)
    for n, document in OLD_JOBS:
        store.set(make_key(uid(n)), document)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE documents SET job_status = 'failed' WHERE job_status = 'cancelled'")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@contextlib.contextmanager
def old_postgres(tmp_path: Path) -> Iterator[str]:
    """A table as version 1 made it: no listing columns, indexes over the
    JSON (the status one listing 410 as failed), no version comment."""
    from backend_postgres import admin, dropped_afterwards, new_schema_name

    schema = new_schema_name()
    table = f'"{schema}".spacewalk_documents'
    with admin() as conn, dropped_afterwards(schema):
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f"""CREATE TABLE {table} (key text COLLATE "C" PRIMARY KEY,
            value jsonb NOT NULL, cas bigint NOT NULL, updated_at timestamptz NOT NULL)""")
        conn.execute(f"CREATE INDEX spacewalk_documents_updated_at ON {table} (updated_at)")
        for name, first in [("jobs_created", ""), ("jobs_type_created", "(value->>'jobType'), "),
                            ("jobs_status_created", "(value->>'resultCode'), ")]:
            conn.execute(
                f"CREATE INDEX spacewalk_documents_{name} ON {table} ({first}"
                """((value->>'createdAt') COLLATE "C"), key)"""
                " WHERE substr(key, 1, 10) = 'zerog_job_'"
            )
        for n, document in OLD_JOBS:
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s, 1, now())",
                         (make_key(uid(n)), json.dumps(document)))  # fmt: skip
        yield f"postgresql://127.0.0.1:5432/test?schema={schema}"


@contextlib.contextmanager
def old_redis(tmp_path: Path) -> Iterator[str]:
    """Indexes as version 1 left them: 410 under status:failed, no version."""
    import redis
    from backend_redis import redis_url

    with redis_url(tmp_path) as url:
        store = make_datastore(url)
        for n, document in OLD_JOBS:
            store.set(make_key(uid(n)), document)
        _close(store)
        prefix = dict(parse_qsl(urlsplit(url).query))["prefix"]
        raw = redis.Redis(host="127.0.0.1", port=6379, db=0, decode_responses=True)
        try:
            for n, document in OLD_JOBS[:7]:
                member = f"{document['createdAt']} {uid(n)}"
                raw.zrem(f"{prefix}jobs:status:cancelled", member)
                raw.zadd(f"{prefix}jobs:status:failed", {member: 0})
                raw.hset(f"{prefix}doc:{make_key(uid(n))}", "ix_status", "failed")
            raw.delete(f"{prefix}jobs:version")
        finally:
            raw.close()
        yield url


@pytest.mark.parametrize("kind", ["sqlite 2", "sqlite 3", "postgresql", "redis"])
def test_an_older_store_lists_cancelled_jobs_as_cancelled(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_spacewalk.backends import postgres, redis, sqlite

    for module in (sqlite, postgres, redis):
        monkeypatch.setattr(module, "MIGRATION_BATCH", 2)  # several batches
    with contextlib.ExitStack() as stack:
        if kind.startswith("sqlite"):
            url = old_sqlite(tmp_path, int(kind[-1]))
        else:
            url = stack.enter_context({"postgresql": old_postgres, "redis": old_redis}[kind](
                tmp_path))
        if kind != "postgresql":  # the old indexes list 410 as failed
            assert listed_in(url, statuses={"failed"}) == [uid(n) for n in range(8, 0, -1)]
        store = make_datastore(url)
        try:
            assert listed(store, statuses={"cancelled"}) == [uid(n) for n in range(7, 0, -1)]
            assert listed(store, statuses={"failed"}) == [uid(8)]
            assert listed(store, statuses={"finished"}) == [uid(9)]
            assert listed(store, statuses={"queued"}) == [uid(10)]
            assert listed(store, job_types={"b"}, statuses={"cancelled"}) == [uid(6), uid(4),
                                                                               uid(2)]
            assert listed(store) == [uid(n) for n in range(10, 0, -1)]
            # and writes go on moving them
            store.update(make_key(uid(1)), job("a", at(1), result=200, n=1))
            assert listed(store, statuses={"finished"}) == [uid(9), uid(1)]
        finally:
            _close(store)
        again = make_datastore(url)  # migrated once: nothing left to do
        try:
            assert listed(again, statuses={"cancelled"}) == [uid(n) for n in range(7, 1, -1)]
        finally:
            _close(again)


def listed_in(url: str, **kwargs: Any) -> list[str]:
    """What the store at ``url`` lists, read without opening it as a
    datastore would (which migrates it)."""
    if url.startswith("sqlite"):
        import sqlite3

        (status,) = kwargs["statuses"]
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            rows = conn.execute(
                "SELECT key FROM documents WHERE job_status = ?"
                " ORDER BY job_created DESC, key DESC",
                (status,),
            ).fetchall()
        finally:
            conn.close()
        return [key[len("zerog_job_"):] for (key,) in rows]
    import redis

    raw = redis.Redis(host="127.0.0.1", port=6379, db=0, decode_responses=True)
    try:
        (status,) = kwargs["statuses"]
        prefix = dict(parse_qsl(urlsplit(url).query))["prefix"]
        members = raw.zrevrange(f"{prefix}jobs:status:{status}", 0, -1)
    finally:
        raw.close()
    return [member.rpartition(" ")[2] for member in members]


def test_api_pages_on_past_jobs_of_zerog_and_hand_made_stores(
    store_client: FlaskClient, store_url: str
) -> None:
    """A page that ends on a job whose id is no uuid, or whose createdAt is
    no ISO date-time, still gets a cursor that leads on."""
    datastore = make_datastore(store_url)
    odd = [("job-17", "2024-05-01 12:00:03"), ("A_B.c~9", "yesterday"), (uid(5), at(1))]
    for key_id, created in odd:
        datastore.set(make_key(key_id), dict(job(FB, created), uuid=key_id))
    seen = []
    query = "/examples/jobs?limit=1"
    for _ in range(5):
        page = store_client.get(query)
        assert page.status_code == 200, page.get_data(as_text=True)
        body = page.get_json()
        seen += [item["uuid"] for item in body["jobs"]]
        if body["next"] is None:
            break
        query = f"/examples/jobs?limit=1&cursor={body['next']}"
    # newest first, by createdAt as text: "y" > "2024-05-01T" > "2024-05-01 "
    assert seen == ["A_B.c~9", uid(5), "job-17"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=st.text(max_size=40), job_id=st.text(max_size=40))
def test_api_cursors_of_any_position_never_answer_500(
    client: FlaskClient, created: str, job_id: str
) -> None:
    # even with a valid checksum, a position the stores cannot hold is 400
    cursor = encode_cursor(created, job_id)
    answer = client.get("/examples/jobs", query_string={"cursor": cursor})
    assert answer.status_code in (200, 400), answer.get_data(as_text=True)
