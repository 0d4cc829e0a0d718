"""The generated HTTP API through Flask's test client (SPEC sections 3 and 4).

The seed walkthrough on the example tree, a deeper tree under a URL prefix,
every bad-input row of SPEC section 3, and the agreement rule between the
published post-schema and what POST accepts.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import os
import re
import sqlite3
import sys
import uuid as uuid_module
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from flask_spacewalk import Spacewalk
from flask_spacewalk.backends import sqlite as sqlite_backend
from flask_spacewalk.errors import DatastoreUnavailable, QueueUnavailable
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.worker_loop import Worker
from flask_spacewalk.web.http import MAX_DEPTH, encode
from flask_spacewalk.web.routes import Route, RouteKind, blueprint_name, routes
from flask_spacewalk.web.views import Views

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) leaves it out
    sys.path.insert(0, str(ROOT))

from backend_support import DATASTORES  # noqa: E402
from jobtrees.api_tree import ApiRoot  # noqa: E402
from jobtrees.raw_tree import RawRoot  # noqa: E402

from examples.jobs.examples import BaseExampleJob  # noqa: E402

EXAMPLE_JOBS = ROOT / "examples" / "jobs"
API_JOBS = Path(__file__).resolve().parent / "jobtrees" / "api_tree"
PREFIX = "/api/v1"
SVC = f"{PREFIX}/svc"

MakeApp = Callable[..., Flask]

from seed import (  # noqa: E402
    LOG_FIELDS,
    SEED_LEAVES,
    SEED_OUTPUT,
    SEED_POST_SCHEMA,
    ZEROG_FIELDS,
)

FIZZ_BUZZ_FIELDS = {"n", "fizzDivisor", "buzzDivisor", "output"}
NAIVE_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?")
CAMEL_CASE = re.compile(r"[a-z][a-zA-Z0-9]*")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# -- fixtures and helpers -----------------------------------------------------


@pytest.fixture
def make_app(tmp_path: Path, db_url: str) -> Iterator[MakeApp]:
    """Build an app serving a tree; its connections are closed afterwards."""
    apps: list[Flask] = []

    def make(
        root: type = BaseExampleJob,
        modules_dir: str | Path = EXAMPLE_JOBS,
        *,
        testing: bool = True,
        config: dict[str, Any] | None = None,
        **options: Any,
    ) -> Flask:
        app = Flask(__name__, instance_path=str(tmp_path))
        app.testing = testing
        app.config["SPACEWALK_DATASTORE_URL"] = db_url
        app.config.update(config or {})
        Spacewalk(app, modules_dir, root, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        for state in app.extensions["spacewalk"].values():
            datastore, queue = state.connections()
            datastore.close()
            queue.close()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    """The example service of the seed README, in testing mode."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api_app(make_app: MakeApp) -> Flask:
    """The deeper test tree, mounted under ``/api/v1``."""
    return make_app(ApiRoot, API_JOBS, url_prefix=PREFIX)


@pytest.fixture
def api_client(api_app: Flask) -> FlaskClient:
    return api_app.test_client()


def state_of(app: Flask, root: str = "/examples") -> Any:
    return app.extensions["spacewalk"][root]


def assert_error(
    response: TestResponse, code: int, *, field_errors: bool = False
) -> dict[str, Any]:
    """``response`` is a ``code`` answer in the one JSON error shape."""
    text = response.get_data(as_text=True)
    assert response.status_code == code, text
    assert response.mimetype == "application/json", text
    body = json.loads(text)
    expected = {"code", "status", "message"} | ({"errors"} if field_errors else set())
    assert set(body) == expected
    assert body["code"] == code
    assert body["status"] == HTTPStatus(code).phrase
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in text and "<html" not in text.lower()
    return body


def post_job(client: FlaskClient, leaf: str, body: Any = None, **kwargs: Any) -> TestResponse:
    if body is not None:
        kwargs["json"] = body
    return client.post(f"{leaf}/job", **kwargs)


def start(client: FlaskClient, leaf: str, body: Any = None) -> str:
    """POST a job that must be accepted; its uuid."""
    response = post_job(client, leaf, body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.get_json()["uuid"])


def is_naive_iso(value: str) -> bool:
    return bool(NAIVE_ISO.fullmatch(value)) and dt.datetime.fromisoformat(value).tzinfo is None


def sqlite_path(db_url: str) -> str:
    return db_url[len("sqlite:///"):]


# -- 1. the seed walkthrough --------------------------------------------------


def test_seed_discovery(client: FlaskClient) -> None:
    response = client.get("/examples/branches")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == []

    response = client.get("/examples/leaves")
    assert response.status_code == 200
    assert response.get_json() == SEED_LEAVES

    response = client.get("/examples/fizz_buzz/post-schema")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == SEED_POST_SCHEMA


def test_seed_walkthrough_inline(client: FlaskClient, datastore: Any) -> None:
    response = client.post(
        "/examples/fizz_buzz/job", data='{"n":20}', content_type="application/json"
    )
    assert response.status_code == 201
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["uuid"]
    uuid = body["uuid"]
    assert UUID4.fullmatch(uuid)
    assert response.headers["Location"] == f"/examples/progress/{uuid}"

    progress = client.get(response.headers["Location"])
    assert progress.status_code == 200
    assert progress.get_json() == {"completeness": 1.0, "result": 200}
    assert isinstance(progress.get_json()["completeness"], float)
    assert '"completeness": 1.0' in progress.get_data(as_text=True)

    info = client.get(f"/examples/info/{uuid}")
    assert info.status_code == 200
    info_body = info.get_json()
    assert set(info_body) == {"completeness", "result", "events", "errors", "warnings"}
    assert info_body["completeness"] == 1.0 and isinstance(info_body["completeness"], float)
    assert info_body["result"] == 200
    assert info_body["errors"] == [] and info_body["warnings"] == []
    [event] = info_body["events"]
    assert set(event) == {"msg", "timeStamp"}
    assert event["msg"] == f"starting examples_fizz_buzz job {uuid}"
    assert is_naive_iso(event["timeStamp"])

    data = client.get(f"/examples/data/{uuid}")
    assert data.status_code == 200
    assert data.get_json() == {"output": SEED_OUTPUT}

    dump = client.get(f"/examples/dump/{uuid}")
    assert dump.status_code == 200
    document = dump.get_json()
    # Inline, the job never went through a queue: no queueName yet.
    assert set(document) == (ZEROG_FIELDS - LOG_FIELDS - {"queueName"}) | FIZZ_BUZZ_FIELDS
    assert all(CAMEL_CASE.fullmatch(name) for name in document)
    stored, cas = datastore.read_with_cas(make_key(uuid))
    assert document["cas"] == cas and isinstance(cas, int) and cas > 0
    assert document["documentType"] == "zerog_job"
    assert document["jobType"] == "examples_fizz_buzz"
    assert document["uuid"] == uuid
    assert document["logId"] == f"examples_fizz_buzz_{uuid}"
    assert document["schemaVersion"] == 1.0
    assert is_naive_iso(document["createdAt"]) and is_naive_iso(document["updatedAt"])
    assert document["createdAt"] <= document["updatedAt"]
    assert document["running"] is False
    assert document["errorCount"] == 0
    assert document["completeness"] == 1.0 and isinstance(document["completeness"], float)
    assert document["resultCode"] == 200
    assert isinstance(document["tickcount"], float) and isinstance(document["tickval"], float)
    assert isinstance(document["queueKwargs"], dict)
    assert isinstance(document["queueJobId"], int)
    assert (document["n"], document["fizzDivisor"], document["buzzDivisor"]) == (20, 3, 5)
    assert document["output"] == SEED_OUTPUT
    assert document == {k: v for k, v in stored.items() if k not in LOG_FIELDS} | {"cas": cas}

    assert client.get(f"/examples/dump/{uuid}?showLogs=false").get_json() == document
    with_logs = client.get(f"/examples/dump/{uuid}?showLogs=true")
    assert with_logs.status_code == 200
    logged = with_logs.get_json()
    assert set(logged) == set(document) | LOG_FIELDS
    assert logged["events"] == info_body["events"]
    assert logged["errors"] == [] and logged["warnings"] == []
    assert {k: v for k, v in logged.items() if k not in LOG_FIELDS} == document


def test_documents_written_by_zerog_are_served(client: FlaskClient, datastore: Any) -> None:
    """ZeroG stores ``completeness`` as it likes (``1``), timestamps without a
    fraction and no ``queueName``: the answers are the same."""
    uuid = start(client, FIZZ, {"n": 3})
    document = datastore.read(make_key(uuid))
    document.pop("queueName", None)
    document.update(
        completeness=1,
        createdAt="2021-11-20T02:55:10",
        updatedAt="2021-11-20T02:55:25",
        events=[{"msg": "starting", "timeStamp": "2021-11-20T02:55:11"}],
    )
    datastore.set(make_key(uuid), document)
    progress = client.get(f"/examples/progress/{uuid}")
    assert '"completeness": 1.0' in progress.get_data(as_text=True)
    info = client.get(f"/examples/info/{uuid}").get_json()
    assert info["completeness"] == 1.0 and isinstance(info["completeness"], float)
    assert info["events"] == [{"msg": "starting", "timeStamp": "2021-11-20T02:55:11"}]
    assert client.get(f"/examples/data/{uuid}").get_json() == {"output": ["1", "2", "Fizz"]}
    dump = client.get(f"/examples/dump/{uuid}").get_json()
    assert dump["completeness"] == 1.0 and isinstance(dump["completeness"], float)
    assert "queueName" not in dump


def test_a_job_class_may_add_to_its_progress(api_client: FlaskClient, datastore: Any) -> None:
    uuid = start(api_client, f"{SVC}/special/staged")
    answer = api_client.get(f"{SVC}/progress/{uuid}").get_json()
    assert answer == {"completeness": 1.0, "result": 200, "stage": "done"}
    document = datastore.read(make_key(uuid))
    datastore.set(make_key(uuid), document | {"completeness": 0, "resultCode": -1})
    answer = api_client.get(f"{SVC}/progress/{uuid}").get_json()
    assert answer == {"completeness": 0.0, "result": -1, "stage": "waiting"}
    assert isinstance(answer["completeness"], float)


def test_dump_cas_follows_the_datastore(client: FlaskClient, datastore: Any) -> None:
    uuid = start(client, "/examples/fizz_buzz", {"n": 3})
    first = client.get(f"/examples/dump/{uuid}").get_json()["cas"]
    document, cas = datastore.read_with_cas(make_key(uuid))
    assert first == cas
    _, new_cas = datastore.set_with_cas(make_key(uuid), document, cas=cas)
    assert new_cas != cas
    assert client.get(f"/examples/dump/{uuid}").get_json()["cas"] == new_cas


# -- conditional requests: ETag and If-None-Match ------------------------------

BY_UUID = ("progress", "info", "data", "dump")


@pytest.mark.parametrize("kind", BY_UUID)
def test_answers_about_a_job_carry_its_cas_as_etag(
    client: FlaskClient, datastore: Any, kind: str
) -> None:
    uuid = start(client, "/examples/fizz_buzz", {"n": 3})
    url = f"/examples/{kind}/{uuid}"
    first = client.get(url)
    _, cas = datastore.read_with_cas(make_key(uuid))
    assert first.status_code == 200
    assert first.headers["ETag"] == f'"{cas}"'
    assert first.headers["Cache-Control"] == "no-cache"

    unchanged = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert unchanged.status_code == 304
    assert unchanged.data == b""
    assert unchanged.headers["ETag"] == first.headers["ETag"]
    assert "Content-Type" not in unchanged.headers

    # Any write changes the cas, so the copy the client holds is stale.
    document, cas = datastore.read_with_cas(make_key(uuid))
    datastore.set_with_cas(make_key(uuid), {**document, "completeness": 0.5}, cas=cas)
    changed = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert changed.get_json() != first.get_json() or kind == "data"


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ('"{cas}"', 304),
        ('W/"{cas}"', 304),  # If-None-Match compares weakly (RFC 9110 13.1.2)
        ('"1", "{cas}"', 304),
        ('"1",W/"{cas}" , "2"', 304),
        ("*", 304),
        ('"1"', 200),
        ('"1", W/"2"', 200),
        ('"{cas}1"', 200),
        ("{cas}", 304),  # unquoted: not RFC 9110, but werkzeug (and so we) accept it
        ("", 200),
    ],
)
def test_if_none_match_forms(
    client: FlaskClient, datastore: Any, header: str, status: int
) -> None:
    uuid = start(client, "/examples/fizz_buzz", {"n": 3})
    _, cas = datastore.read_with_cas(make_key(uuid))
    response = client.get(
        f"/examples/progress/{uuid}", headers={"If-None-Match": header.format(cas=cas)}
    )
    assert response.status_code == status
    assert response.headers["ETag"] == f'"{cas}"'


def test_if_none_match_does_not_hide_errors(client: FlaskClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    response = client.get(f"/examples/progress/{missing}", headers={"If-None-Match": "*"})
    assert_error(response, 404)
    assert "ETag" not in response.headers


def test_a_job_class_with_its_own_progress_has_the_etag_too(
    api_client: FlaskClient, datastore: Any
) -> None:
    uuid = start(api_client, f"{SVC}/special/staged")  # overrides progress()
    _, cas = datastore.read_with_cas(make_key(uuid))
    for kind in ("progress", "info"):
        response = api_client.get(f"{SVC}/{kind}/{uuid}", headers={"If-None-Match": f'"{cas}"'})
        assert response.status_code == 304, kind


def test_seed_walkthrough_queued_then_worker(make_app: MakeApp) -> None:
    app = make_app(testing=False)
    client = app.test_client()
    response = client.post("/examples/fizz_buzz/job", json={"n": 20})
    assert response.status_code == 201
    uuid = response.get_json()["uuid"]
    assert response.headers["Location"] == f"/examples/progress/{uuid}"

    progress = client.get(f"/examples/progress/{uuid}").get_json()
    assert progress == {"completeness": 0.0, "result": -1}
    assert isinstance(progress["completeness"], float)
    assert client.get(f"/examples/data/{uuid}").get_json() == {"output": []}
    document = client.get(f"/examples/dump/{uuid}?showLogs=true").get_json()
    assert set(document) == ZEROG_FIELDS | FIZZ_BUZZ_FIELDS
    assert document["queueName"] == "spacewalk_jobs"
    assert document["queueJobId"] > 0
    assert document["events"] == []

    state = state_of(app)
    worker = Worker(
        state.registry, state.make_datastore, state.make_queue, state.settings.queue_name
    )
    try:
        worker.run(burst=True)
    finally:
        worker.datastore.close()
        worker.queue.close()
    assert worker.jobs_done == 1

    assert client.get(f"/examples/progress/{uuid}").get_json() == {
        "completeness": 1.0,
        "result": 200,
    }
    info = client.get(f"/examples/info/{uuid}").get_json()
    assert [e["msg"] for e in info["events"]] == [f"starting examples_fizz_buzz job {uuid}"]
    assert client.get(f"/examples/data/{uuid}").get_json() == {"output": SEED_OUTPUT}


def test_location_includes_the_script_root(client: FlaskClient) -> None:
    response = client.post(
        "/examples/fizz_buzz/job", json={"n": 1}, base_url="http://localhost/mounted"
    )
    assert response.status_code == 201
    uuid = response.get_json()["uuid"]
    assert response.headers["Location"] == f"/mounted/examples/progress/{uuid}"


def test_post_fills_in_defaults(client: FlaskClient) -> None:
    uuid = start(client, "/examples/fizz_buzz", {"fizzDivisor": 2})
    document = client.get(f"/examples/dump/{uuid}").get_json()
    assert (document["n"], document["fizzDivisor"], document["buzzDivisor"]) == (50, 2, 5)
    assert len(client.get(f"/examples/data/{uuid}").get_json()["output"]) == 50


# -- 2. a deeper tree under a URL prefix --------------------------------------

API_BRANCHES = {
    SVC: [
        {"path": f"{SVC}/tools", "name": "Tools", "description": "The first branch"},
        {
            "path": f"{SVC}/special",
            "name": "Special",
            "description": "Jobs that misbehave or look around",
        },
        {"path": f"{SVC}/empty", "name": "Empty", "description": "A branch without leaves"},
    ],
    f"{SVC}/tools": [
        {"path": f"{SVC}/tools/inner", "name": "Inner", "description": "A branch in a branch"},
    ],
    f"{SVC}/tools/inner": [],
    f"{SVC}/special": [],
    f"{SVC}/empty": [],
}


def leaf(path: str, job_type: str, name: str, description: str) -> dict[str, str]:
    return {"path": path, "jobType": job_type, "name": name, "description": description}


API_LEAVES = {
    SVC: [
        leaf(f"{SVC}/ping", "svc_ping", "Ping", "A root leaf without parameters"),
        leaf(f"{SVC}/echo", "svc_echo", "Echo", "A root leaf with a required parameter"),
    ],
    # Definition order, not alphabetical order.
    f"{SVC}/tools": [
        leaf(f"{SVC}/tools/zeta", "tools_zeta", "Zeta", "Defined first, listed first"),
        leaf(f"{SVC}/tools/counter", "tools_counter", "Counter", "One optional integer"),
        leaf(
            f"{SVC}/tools/kitchen_sink",
            "tools_kitchen_sink",
            "Kitchen sink",
            "Every kind of parameter",
        ),
        leaf(f"{SVC}/tools/alpha", "tools_alpha", "Alpha", "Defined last, listed last"),
    ],
    f"{SVC}/tools/inner": [
        leaf(f"{SVC}/tools/inner/deepest", "inner_deepest", "Deepest", "The deepest leaf"),
    ],
    f"{SVC}/special": [
        leaf(f"{SVC}/special/boom", "special_boom", "Boom", "Raises inside run()"),
        leaf(f"{SVC}/special/again", "special_again", "Again", "Answers NO_RESULT for ever"),
        leaf(
            f"{SVC}/special/context",
            "special_context",
            "Context",
            "Records the current app's name and MARK setting",
        ),
        leaf(f"{SVC}/special/bad_data", "special_bad_data", "Bad data", "get_data() raises"),
        leaf(f"{SVC}/special/staged", "special_staged", "Staged", "Adds its stage to progress()"),
    ],
    f"{SVC}/empty": [],
}
ALL_LEAVES = [item["path"] for items in API_LEAVES.values() for item in items]


def test_deep_tree_listings(api_client: FlaskClient) -> None:
    # Walk the tree from its root, following only the paths it answers.
    seen_branches, pending = [], [SVC]
    while pending:
        path = pending.pop(0)
        seen_branches.append(path)
        branches = api_client.get(f"{path}/branches")
        assert branches.status_code == 200
        assert branches.get_json() == API_BRANCHES[path]
        leaves = api_client.get(f"{path}/leaves")
        assert leaves.status_code == 200
        assert leaves.get_json() == API_LEAVES[path]
        pending += [item["path"] for item in branches.get_json()]
        for item in leaves.get_json():
            assert item["path"].startswith(f"{path}/")
            schema = api_client.get(f"{item['path']}/post-schema")
            assert schema.status_code == 200
            assert schema.get_json()["postSchema"]["$ref"] == "#/definitions/Params"
    assert sorted(seen_branches) == sorted(API_BRANCHES)


def test_deep_tree_post_schemas(api_client: FlaskClient) -> None:
    def params(path: str) -> dict[str, Any]:
        body = api_client.get(f"{path}/post-schema").get_json()
        assert set(body) == {"postSchema"}
        schema = body["postSchema"]
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        assert schema["$ref"] == "#/definitions/Params"
        Draft7Validator.check_schema(schema)
        return dict(schema["definitions"]["Params"])

    no_params = {"properties": {}, "type": "object", "additionalProperties": False}
    assert params(f"{SVC}/ping") == no_params
    assert params(f"{SVC}/tools/zeta") == no_params
    assert params(f"{SVC}/echo") == {
        "properties": {"message": {"title": "message", "type": "string"}},
        "type": "object",
        "required": ["message"],
        "additionalProperties": False,
    }
    assert params(f"{SVC}/tools/inner/deepest")["properties"] == {
        "depth": {"title": "depth", "type": "integer", "default": 3}
    }
    sink = params(f"{SVC}/tools/kitchen_sink")
    assert sink["required"] == ["name", "count"]
    assert sink["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert sink["properties"]["count"]["minimum"] == -5


def test_deep_tree_jobs_run_under_the_prefix(api_client: FlaskClient) -> None:
    for path in (f"{SVC}/ping", f"{SVC}/tools/zeta", f"{SVC}/tools/inner/deepest"):
        response = api_client.post(f"{path}/job")
        assert response.status_code == 201
        uuid = response.get_json()["uuid"]
        assert response.headers["Location"] == f"{SVC}/progress/{uuid}"
        assert api_client.get(response.headers["Location"]).get_json() == {
            "completeness": 1.0,
            "result": 200,
        }
        for kind in ("info", "data", "dump"):
            assert api_client.get(f"{SVC}/{kind}/{uuid}").status_code == 200
    uuid = start(api_client, f"{SVC}/echo", {"message": "hello"})
    assert api_client.get(f"{SVC}/data/{uuid}").get_json() == {"message": "hello"}
    # Job routes exist at the root only, not per branch, and not unprefixed.
    assert_error(api_client.get(f"{SVC}/tools/progress/{uuid}"), 404)
    unprefixed = api_client.get(f"/svc/progress/{uuid}")
    assert unprefixed.status_code == 404 and unprefixed.mimetype == "text/html"


def test_deep_tree_branch_paths_are_not_jobs(api_client: FlaskClient) -> None:
    for path in API_BRANCHES:
        body = assert_error(api_client.get(f"{path}/post-schema"), 400)
        assert body["message"] == f"{path} is a branch, not a job"
        body = assert_error(api_client.post(f"{path}/job", json={}), 400)
        assert body["message"] == f"{path} is a branch, not a job"
        # Whatever the body: the path is wrong before the body is read (a
        # form content type is refused before any path: see test_csrf.py).
        body = assert_error(
            api_client.post(f"{path}/job", data=b"{", content_type="application/xml"), 400
        )
        assert body["message"] == f"{path} is a branch, not a job"


def test_deep_tree_unknown_paths(api_client: FlaskClient) -> None:
    for path in (
        f"{SVC}/nope",
        f"{SVC}/nope/branches",
        f"{SVC}/tools/nope/leaves",
        f"{SVC}/tools/zeta/branches",
        f"{SVC}/tools/zeta/leaves",
        f"{SVC}/tools/inner/deepest/nope",
        f"{SVC}/empty/nope",
        f"{SVC}/tools/leaves/",
        f"{SVC}/tools/zeta/post-schema/",
        f"{SVC}/tools",
        SVC,
    ):
        assert_error(api_client.get(path), 404)
    # The prefix alone is not under the tree: the app's own 404.
    for path in (PREFIX, f"{PREFIX}/nope", "/svc/leaves"):
        response = api_client.get(path)
        assert response.status_code == 404
        assert response.mimetype == "text/html"


# -- the route table: one kind, one view -----------------------------------------


def test_every_route_kind_is_served_through_the_views_table(app: Flask) -> None:
    state = state_of(app)
    table = routes(state)
    # the example tree (dump exposed) has a route of every kind
    assert {route.kind for route in table} == set(RouteKind)
    served = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    views = Views(state)
    assert set(views.makers) == set(RouteKind)
    for route in table:
        assert callable(views.view(route))
        assert served[route.path] == f"{blueprint_name(state.root_path)}.{route.endpoint}"


def test_a_route_kind_the_views_do_not_know_fails_at_start_up(app: Flask) -> None:
    views = Views(state_of(app))
    with pytest.raises(ValueError, match="'mystery' is not a valid RouteKind"):
        views.view(Route("/examples/x", "GET", "x", "mystery"))  # type: ignore[arg-type]


def test_a_route_on_the_wrong_kind_of_node_fails_at_start_up(app: Flask) -> None:
    state = state_of(app)
    leaf = next(iter(state.tree.leaves()))
    branch = state.tree.root
    views = Views(state)
    with pytest.raises(TypeError, match="a branches route needs a branch"):
        views.view(Route("/x", "GET", "x", RouteKind.BRANCHES, leaf))
    with pytest.raises(TypeError, match="a job route needs a leaf"):
        views.view(Route("/x", "POST", "x", RouteKind.JOB, branch))
    with pytest.raises(TypeError, match="a post_schema route needs a leaf"):
        views.view(Route("/x", "GET", "x", RouteKind.POST_SCHEMA, None))


# -- 3. bad input ---------------------------------------------------------------

FIZZ = "/examples/fizz_buzz"


@pytest.fixture
def small_client(make_app: MakeApp) -> FlaskClient:
    """The example service with a 100-byte body limit."""
    return make_app(config={"SPACEWALK_MAX_CONTENT_LENGTH": 100}).test_client()


def padded(size: int) -> bytes:
    """A valid JSON body of exactly ``size`` bytes."""
    head = b'{"n": 7'
    return head + b" " * (size - len(head) - 1) + b"}"


def test_body_size_limit(small_client: FlaskClient) -> None:
    ok = small_client.post(f"{FIZZ}/job", data=padded(100), content_type="application/json")
    assert ok.status_code == 201
    body = assert_error(
        small_client.post(f"{FIZZ}/job", data=padded(101), content_type="application/json"),
        413,
    )
    assert "100" in body["message"]
    assert_error(
        small_client.post(f"{FIZZ}/job", data=padded(10_000), content_type="application/json"),
        413,
    )


def test_body_size_limit_without_content_length(make_app: MakeApp) -> None:
    """A chunked body says nothing of its size: it is counted as it is read."""
    app = make_app(config={"SPACEWALK_MAX_CONTENT_LENGTH": 100})

    def send(body: bytes) -> tuple[str, bytes]:
        environ = EnvironBuilder(
            path=f"{FIZZ}/job", method="POST", data=body, content_type="application/json"
        ).get_environ()
        del environ["CONTENT_LENGTH"]
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
        app_iter, status, _ = run_wsgi_app(app, environ, buffered=True)
        return status, b"".join(app_iter)

    status, answer = send(padded(10_000))
    assert status.startswith("413") and json.loads(answer)["code"] == 413
    status, answer = send(padded(100))
    assert status.startswith("201"), answer


def post_chunked(app: Flask, wsgi_input: Any) -> tuple[str, dict[str, Any]]:
    """POST a chunked body read from ``wsgi_input``, as a server hands it over."""
    environ = EnvironBuilder(path=f"{FIZZ}/job", method="POST", content_type="application/json",
                             data=b"").get_environ()  # fmt: skip
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True,
                    "wsgi.input": wsgi_input})  # fmt: skip
    app_iter, status, _ = run_wsgi_app(app, environ, buffered=True)
    return status, json.loads(b"".join(app_iter))


@pytest.mark.parametrize(
    "chunks, says",
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", "Invalid chunk header"),  # a bad chunk size
        (b"-2\r\n{}\r\n0\r\n\r\n", "Invalid chunk header"),
        (b"8\r\n{\"n\": 3}", "unexpected EOF"),  # the client went away mid-chunk
        (b"8\r\n{\"n\": 3}XX0\r\n\r\n", "Invalid chunk"),  # no CRLF after the data
    ],
    ids=["bad-size", "negative-size", "gone-mid-chunk", "no-terminator"],
)
def test_malformed_chunked_bodies_are_400(make_app: MakeApp, chunks: bytes, says: str) -> None:
    """The werkzeug server's dechunking, as ``flask run`` reads bodies."""
    from werkzeug.serving import DechunkedInput

    status, answer = post_chunked(make_app(), DechunkedInput(io.BytesIO(chunks)))
    assert status.startswith("400") and answer["code"] == 400, answer
    assert answer["message"].startswith("the body could not be read"), answer


class BrokenInput(io.RawIOBase):
    """A server's input that fails as gunicorn's does: its own exception type."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise type("InvalidChunkSize", (Exception,), {})("Invalid chunk size: 'zz'")


def test_a_body_the_server_cannot_read_is_400_whatever_it_raises(make_app: MakeApp) -> None:
    status, answer = post_chunked(make_app(), io.BufferedReader(BrokenInput()))
    assert status.startswith("400"), answer
    assert answer["message"] == "the body could not be read: Invalid chunk size: 'zz'"


def test_a_content_length_that_lies_small_reads_only_that_much(make_app: MakeApp) -> None:
    """The server reads Content-Length bytes and no more: a big body behind a
    small Content-Length is cut, so it never gets past the size check."""
    app = make_app(config={"SPACEWALK_MAX_CONTENT_LENGTH": 100})
    environ = EnvironBuilder(
        path=f"{FIZZ}/job", method="POST", data=padded(10_000), content_type="application/json"
    ).get_environ()
    environ["CONTENT_LENGTH"] = "5"
    app_iter, status, _ = run_wsgi_app(app, environ, buffered=True)
    answer = json.loads(b"".join(app_iter))
    assert status.startswith("400") and answer["code"] == 400  # '{"n":' is not JSON


def test_a_body_shorter_than_its_content_length_is_400(make_app: MakeApp) -> None:
    """gunicorn marks its input terminated, so werkzeug does not check the
    length; a client that half-closes early must not have the prefix it
    sent (valid JSON here) taken for the whole body."""
    app = make_app()
    environ = EnvironBuilder(
        path=f"{FIZZ}/job", method="POST", data=b'{"n": 3}', content_type="application/json"
    ).get_environ()
    environ["CONTENT_LENGTH"] = "100"
    environ["wsgi.input_terminated"] = True
    app_iter, status, _ = run_wsgi_app(app, environ, buffered=True)
    answer = json.loads(b"".join(app_iter))
    assert status.startswith("400") and answer["code"] == 400
    assert answer["message"] == (
        "the body ended after 8 of the 100 bytes its Content-Length announced"
    )


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x",
     "application/jsonx", "json", None],
)  # fmt: skip
def test_non_json_content_type_is_415(client: FlaskClient, content_type: str | None) -> None:
    response = client.post(f"{FIZZ}/job", data=b'{"n": 1}', content_type=content_type)
    body = assert_error(response, 415)
    assert "JSON" in body["message"] or "json" in body["message"]


def test_curl_d_without_a_content_type_is_415(client: FlaskClient) -> None:
    # curl -d '{"n":20}' sends application/x-www-form-urlencoded
    environ = EnvironBuilder(path=f"{FIZZ}/job", method="POST", data=b'{"n":20}').get_environ()
    environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    assert_error(client.open(environ), 415)
    environ = EnvironBuilder(path=f"{FIZZ}/job", method="POST", data=b'{"n":20}').get_environ()
    environ.pop("CONTENT_TYPE", None)
    assert_error(client.open(environ), 415)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/vnd.api+json", "application/merge-patch+json; charset=utf-8"],
)  # fmt: skip
def test_json_content_types_are_accepted(client: FlaskClient, content_type: str) -> None:
    response = client.post(f"{FIZZ}/job", data=b'{"n": 2}', content_type=content_type)
    assert response.status_code == 201, response.get_data(as_text=True)
    uuid = response.get_json()["uuid"]
    assert client.get(f"/examples/dump/{uuid}").get_json()["n"] == 2


@pytest.mark.parametrize("data", [b"", b" ", b" \t\r\n  \n"])
@pytest.mark.parametrize("content_type", [None, "application/json", "application/xml"])
def test_an_empty_body_means_no_parameters(
    client: FlaskClient, data: bytes, content_type: str | None
) -> None:
    response = client.post(f"{FIZZ}/job", data=data, content_type=content_type)
    assert response.status_code == 201, response.get_data(as_text=True)
    document = client.get(f"/examples/dump/{response.get_json()['uuid']}").get_json()
    assert (document["n"], document["fizzDivisor"], document["buzzDivisor"]) == (50, 3, 5)


@pytest.mark.parametrize("data", [b"", b" "])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_an_empty_form_body_is_415(client: FlaskClient, data: bytes, content_type: str) -> None:
    # What a plain <form method=POST> of any site sends (see test_csrf.py).
    assert_error(client.post(f"{FIZZ}/job", data=data, content_type=content_type), 415)


def test_content_type_parameters_are_ignored(api_client: FlaskClient) -> None:
    """The body is UTF-8 whatever charset the header claims (RFC 8259)."""
    response = api_client.post(
        f"{SVC}/echo/job",
        data='{"message": "d\u00e9j\u00e0 \u2713"}'.encode(),
        content_type="application/json; charset=iso-8859-1",
    )
    assert response.status_code == 201
    data = api_client.get(f"{SVC}/data/{response.get_json()['uuid']}")
    assert data.get_json() == {"message": "d\u00e9j\u00e0 \u2713"}
    assert data.mimetype == "application/json"


def test_an_empty_body_still_needs_the_required_fields(api_client: FlaskClient) -> None:
    body = assert_error(api_client.post(f"{SVC}/echo/job"), 422, field_errors=True)
    assert body["errors"] == {"message": ["Missing data for required field."]}


@pytest.mark.parametrize(
    "data, says",
    [
        (b'{"n":', "JSON"),
        (b'{"n": 1,}', "JSON"),
        (b"{'n': 1}", "JSON"),
        (b'{"n": 1} {"n": 2}', "JSON"),
        (b'{"n": 1', "JSON"),
        (b'{"n": "\xff"}', "UTF-8"),
        (b'\xef\xbb\xbf{"n": 1}', ""),  # a BOM: not JSON text (RFC 8259)
        (b'{"n": "\xed\xa0\x80"}', "UTF-8"),  # an encoded surrogate
        (b"[]", "object"),
        (b'[{"n": 1}]', "object"),
        (b'"n"', "object"),
        (b"1", "object"),
        (b"1.5", "object"),
        (b"true", "object"),
        (b"null", "object"),
        (b"NaN", ""),
        (b'{"n": NaN}', ""),
        (b'{"n": Infinity}', ""),
        (b'{"n": -Infinity}', ""),
    ],
)
def test_bodies_that_are_not_a_json_object_are_400(
    client: FlaskClient, data: bytes, says: str
) -> None:
    body = assert_error(client.post(f"{FIZZ}/job", data=data, content_type="application/json"), 400)
    assert says in body["message"]


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        b"[" * 100_000,
    ],
    ids=["arrays", "in-a-field", "objects", "unclosed"],
)
def test_deeply_nested_json_is_400_not_500(client: FlaskClient, data: bytes) -> None:
    assert_error(client.post(f"{FIZZ}/job", data=data, content_type="application/json"), 400)


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"zz": 1}, {"zz": ["Unknown field."]}),
        ({"n": 1, "N": 2}, {"N": ["Unknown field."]}),
        ({"n": "5"}, {"n": ["Not a valid integer."]}),
        ({"n": 7.5}, {"n": ["Not a valid integer."]}),
        ({"n": True}, {"n": ["Not a valid integer."]}),
        ({"n": None}, {"n": ["Field may not be null."]}),
        ({"n": [5]}, {"n": ["Not a valid integer."]}),
        ({"n": -1}, {"n": None}),
        ({"n": 100_001}, {"n": None}),
        ({"fizzDivisor": 0}, {"fizzDivisor": None}),
        ({"n": "x", "buzzDivisor": 0, "extra": 1}, {"n": None, "buzzDivisor": None, "extra": None}),
    ],
)
def test_bad_fields_are_422(client: FlaskClient, body: Any, errors: dict[str, Any]) -> None:
    answer = assert_error(client.post(f"{FIZZ}/job", json=body), 422, field_errors=True)
    assert set(answer["errors"]) == set(errors)
    for name, messages in answer["errors"].items():
        assert isinstance(messages, list) and messages
        assert all(isinstance(m, str) and m for m in messages)
        if errors[name] is not None:
            assert messages == errors[name]


def test_field_errors_of_many_kinds(api_client: FlaskClient) -> None:
    sink = f"{SVC}/tools/kitchen_sink"
    assert post_job(api_client, sink, {"name": "ok", "count": 0}).status_code == 201
    cases = [
        ({"count": 0}, "name", "Missing data for required field."),
        ({"name": "ok"}, "count", "Missing data for required field."),
        ({"name": "ok", "count": 0, "flag": 1}, "flag", "Not a valid boolean."),
        ({"name": "ok", "count": 0, "flag": "true"}, "flag", "Not a valid boolean."),
        ({"name": "ok", "count": 0, "mode": "medium"}, "mode", None),
        ({"name": "", "count": 0}, "name", None),
        ({"name": "toolongname", "count": 0}, "name", None),
        ({"name": 5, "count": 0}, "name", "Not a valid string."),
        ({"name": "ok", "count": 0, "code": "abc"}, "code", None),
        ({"name": "ok", "count": 0, "ratio": 1}, "ratio", None),
        ({"name": "ok", "count": 0, "ratio": "0.5"}, "ratio", "Not a valid number."),
        ({"name": "ok", "count": 0, "tags": "a"}, "tags", "Not a valid list."),
        ({"name": "ok", "count": 0, "tags": ["a", "b", "c", "d"]}, "tags", None),
        ({"name": "ok", "count": 0, "point": {"y": 1}}, "point", None),
        ({"name": "ok", "count": 0, "point": {"x": 1, "z": 1}}, "point", None),
        ({"name": "ok", "count": 0, "path": []}, "path", None),
        ({"name": "ok", "count": 0, "color": "RED"}, "color", None),
        ({"name": "ok", "count": 0, "shade": "red"}, "shade", None),
        ({"name": "ok", "count": 0, "level": -1}, "level", None),
        ({"name": "ok", "count": 0, "when": "2021-01-01"}, "when", None),
        ({"name": "ok", "count": 0, "day": "2021-02-30"}, "day", None),
        ({"name": "ok", "count": 0, "ident": "not-a-uuid"}, "ident", None),
        ({"name": "ok", "count": 0, "weights": {"a": "b"}}, "weights", None),
    ]
    for body, field, message in cases:
        answer = assert_error(post_job(api_client, sink, body), 422, field_errors=True)
        assert list(answer["errors"]) == [field], (body, answer)
        if message is not None:
            assert answer["errors"][field] == [message], (body, answer)
    # Nullable fields take null; the others do not.
    accepted = post_job(api_client, sink, {"name": "ok", "count": 0, "note": None, "level": None})
    assert accepted.status_code == 201


def test_checks_run_in_order(small_client: FlaskClient) -> None:
    # size before content type
    response = small_client.post(f"{FIZZ}/job", data=b"x" * 500, content_type="text/plain")
    assert_error(response, 413)
    # content type before JSON syntax
    response = small_client.post(f"{FIZZ}/job", data=b'{"n":', content_type="text/plain")
    assert_error(response, 415)
    # JSON syntax before fields
    response = small_client.post(
        f"{FIZZ}/job", data=b'{"zz": 1, "n": "x",', content_type="application/json"
    )
    assert_error(response, 400)
    # a JSON type that is not an object is 400, not 422
    response = small_client.post(f"{FIZZ}/job", data=b'["zz"]', content_type="application/json")
    assert_error(response, 400)


def test_branch_paths_are_not_jobs(client: FlaskClient) -> None:
    body = assert_error(client.get("/examples/post-schema"), 400)
    assert body["message"] == "/examples is a branch, not a job"
    body = assert_error(client.post("/examples/job", json={"n": 1}), 400)
    assert body["message"] == "/examples is a branch, not a job"


@pytest.mark.parametrize(
    "path",
    [
        "/examples/nope",
        "/examples/nope/",
        "/examples/fizz_buzz/nope",
        "/examples/fizz_buzz/",
        "/examples/fizz_buzz",
        "/examples/fizz_buzz/post-schema/",
        "/examples/fizz_buzz/job/",
        "/examples/fizz_buzz/branches",
        "/examples/fizz_buzz/leaves",
        "/examples/leaves/",
        "/examples/branches/",
        "/examples/progress",
        "/examples/progress/",
        "/examples/examples/leaves",
        "/examples",
    ],
)
def test_unknown_paths_under_the_tree_are_json_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404)
    assert_error(client.post(path, json={}), 404)


def test_the_root_path_with_a_trailing_slash_is_json_404(client: FlaskClient) -> None:
    assert_error(client.get("/examples/"), 404)


def test_the_root_path_with_a_trailing_slash_is_404(client: FlaskClient) -> None:
    assert client.get("/examples/").status_code == 404


def test_unknown_and_malformed_uuids_are_404(client: FlaskClient) -> None:
    uuid = start(client, FIZZ, {"n": 1})
    for bad in (
        uuid.upper(),
        uuid[:-1],
        uuid + "0",
        uuid.replace("-", ""),
        f"{{{uuid}}}",
        f"urn:uuid:{uuid}",
        " " + uuid,
        str(uuid_module.uuid4()),
        "x" * 10_000,
        "0" * 10_000,
        "%00",
        "..",
        uuid + "%0A",
        uuid + "%20",
    ):
        for kind in ("progress", "info", "data", "dump"):
            assert_error(client.get(f"/examples/{kind}/{bad}"), 404)
    for kind in ("progress", "info", "data", "dump"):
        assert client.get(f"/examples/{kind}/{uuid}").status_code == 200


def test_a_stored_job_of_another_type_is_404(client: FlaskClient, datastore: Any) -> None:
    uuid = start(client, FIZZ, {"n": 1})
    document = datastore.read(make_key(uuid))
    foreign = str(uuid_module.uuid4())
    datastore.set(
        make_key(foreign),
        document | {"uuid": foreign, "jobType": "elsewhere_job", "logId": f"x_{foreign}"},
    )
    datastore.set(make_key(str(uuid_module.uuid4())), "just a string")
    for kind in ("progress", "info", "data", "dump"):
        assert_error(client.get(f"/examples/{kind}/{foreign}"), 404)


def test_a_document_that_does_not_load_is_500_without_details(
    client: FlaskClient, datastore: Any
) -> None:
    uuid = start(client, FIZZ, {"n": 1})
    document = datastore.read(make_key(uuid))
    datastore.set(make_key(uuid), document | {"n": "not a number"})
    body = assert_error(client.get(f"/examples/data/{uuid}"), 500)
    assert "not a number" not in body["message"]


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("POST", "/examples/leaves", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/examples/branches", {"GET", "HEAD", "OPTIONS"}),
        ("POST", f"{FIZZ}/post-schema", {"GET", "HEAD", "OPTIONS"}),
        ("GET", f"{FIZZ}/job", {"POST", "OPTIONS"}),
        ("PUT", f"{FIZZ}/job", {"POST", "OPTIONS"}),
        ("DELETE", "/examples/progress/{uuid}", {"GET", "HEAD", "OPTIONS"}),
        ("POST", "/examples/info/{uuid}", {"GET", "HEAD", "OPTIONS"}),
        ("PATCH", "/examples/data/{uuid}", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/examples/dump/{uuid}", {"GET", "HEAD", "OPTIONS"}),
        ("FOO", "/examples/leaves", {"GET", "HEAD", "OPTIONS"}),
        ("FOO", f"{FIZZ}/job", {"POST", "OPTIONS"}),
        ("GET", "/examples/job", {"POST", "OPTIONS"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    client: FlaskClient, method: str, path: str, allowed: set[str]
) -> None:
    uuid = start(client, FIZZ, {"n": 1})
    response = client.open(path.format(uuid=uuid), method=method)
    assert_error(response, 405)
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed


def test_head_and_options_are_answered(client: FlaskClient) -> None:
    head = client.head("/examples/leaves")
    assert head.status_code == 200 and head.get_data() == b""
    assert client.options(f"{FIZZ}/job").status_code == 200
    assert client.options("/examples/leaves").status_code == 200
    assert_error(client.options("/examples/nope"), 404)


def test_options_lists_the_allowed_methods(client: FlaskClient) -> None:
    options = client.options(f"{FIZZ}/job")
    assert {m.strip() for m in options.headers.get("Allow", "").split(",")} == {"POST", "OPTIONS"}
    options = client.options("/examples/leaves")
    assert {m.strip() for m in options.headers.get("Allow", "").split(",")} == {
        "GET", "HEAD", "OPTIONS"
    }


@pytest.mark.parametrize("value", ["maybe", "1", "0", "yes", ""])
def test_show_logs_must_be_true_or_false(client: FlaskClient, value: str) -> None:
    uuid = start(client, FIZZ, {"n": 1})
    body = assert_error(client.get(f"/examples/dump/{uuid}?showLogs={value}"), 400)
    assert "showLogs" in body["message"]


def test_dump_can_be_switched_off(make_app: MakeApp) -> None:
    client = make_app(config={"SPACEWALK_EXPOSE_DUMP": False}).test_client()
    uuid = start(client, FIZZ, {"n": 1})
    assert client.get(f"/examples/info/{uuid}").status_code == 200
    assert_error(client.get(f"/examples/dump/{uuid}"), 404)
    assert_error(client.get(f"/examples/dump/{uuid}?showLogs=true"), 404)


def test_unreachable_datastore_is_503_then_recovers(make_app: MakeApp, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    app = make_app(
        config={
            "SPACEWALK_DATASTORE_URL": f"sqlite:///{store}",
            "SPACEWALK_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.sqlite3'}",
        }
    )
    client = app.test_client()
    store.mkdir()  # after start-up: a directory is no database
    unknown = str(uuid_module.uuid4())
    for response in (
        client.post(f"{FIZZ}/job", json={"n": 1}),
        client.get(f"/examples/progress/{unknown}"),
        client.get(f"/examples/dump/{unknown}"),
    ):
        body = assert_error(response, 503)
        assert "datastore" in body["message"]
        assert "queue" not in body["message"].split(":")[0]
    store.rmdir()
    assert_error(client.get(f"/examples/progress/{unknown}"), 404)
    uuid = start(client, FIZZ, {"n": 1})
    assert client.get(f"/examples/progress/{uuid}").get_json()["result"] == 200


def test_unreachable_queue_is_503_then_recovers(make_app: MakeApp, tmp_path: Path) -> None:
    queue_file = tmp_path / "queue.sqlite3"
    app = make_app(testing=False, config={"SPACEWALK_QUEUE_URL": f"sqlite:///{queue_file}"})
    client = app.test_client()
    queue_file.mkdir()
    body = assert_error(client.post(f"{FIZZ}/job", json={"n": 1}), 503)
    assert body["message"].startswith("queue")
    assert "datastore" not in body["message"].split(":")[0]
    queue_file.rmdir()
    response = client.post(f"{FIZZ}/job", json={"n": 1})
    assert response.status_code == 201
    document = client.get(f"/examples/dump/{response.get_json()['uuid']}").get_json()
    assert document["queueJobId"] > 0


@pytest.mark.parametrize(
    "error, name", [(DatastoreUnavailable, "datastore"), (QueueUnavailable, "queue")]
)
def test_connection_failures_are_503_naming_which(
    app: Flask, monkeypatch: pytest.MonkeyPatch, error: type[Exception], name: str
) -> None:
    client = app.test_client()
    state = state_of(app)

    def refuse() -> Any:
        raise error("connection refused")

    monkeypatch.setattr(state, "connections", refuse)
    for response in (
        client.post(f"{FIZZ}/job", json={"n": 1}),
        client.get(f"/examples/info/{uuid_module.uuid4()}"),
    ):
        body = assert_error(response, 503)
        assert body["message"].startswith(name)
    monkeypatch.undo()
    assert client.post(f"{FIZZ}/job", json={"n": 1}).status_code == 201


def test_a_locked_datastore_is_503_after_the_busy_timeout(
    make_app: MakeApp, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flask_spacewalk.backends.sqlite.BUSY_TIMEOUT", 0.05)
    client = make_app().test_client()
    start(client, FIZZ, {"n": 1})  # opens the file with the short timeout
    locker = sqlite3.connect(sqlite_path(db_url), isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        body = assert_error(client.post(f"{FIZZ}/job", json={"n": 1}), 503)
        assert body["message"].startswith("datastore")
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    start(client, FIZZ, {"n": 1})


def test_a_job_that_cannot_be_enqueued_is_marked_and_503(
    make_app: MakeApp, datastore: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ZeroG's order, where the queue is not the datastore's file: stored,
    # then queued, then marked when the put fails.
    app = make_app(testing=False)
    client = app.test_client()
    _, queue = state_of(app).connections()
    put_with: list[Any] = []

    def refuse(data: Any, **kwargs: Any) -> int:
        put_with.append(data)
        raise QueueUnavailable("beanstalkd refused the connection")

    monkeypatch.setattr(queue, "put", refuse)
    monkeypatch.setattr(queue, "put_with_document", lambda *args, **kwargs: None)
    body = assert_error(client.post(f"{FIZZ}/job", json={"n": 1}), 503)
    assert body["message"].startswith("queue")
    [uuid] = put_with
    assert datastore.read(make_key(uuid))["queueJobId"] == -1
    assert client.get(f"/examples/dump/{uuid}").get_json()["queueJobId"] == -1


def test_in_one_sqlite_file_a_job_is_stored_and_queued_at_once_or_not_at_all(
    make_app: MakeApp, datastore: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(testing=False)
    client = app.test_client()
    _, queue = state_of(app).connections()
    uuid = client.post(f"{FIZZ}/job", json={"n": 1}).get_json()["uuid"]
    document = datastore.read(make_key(uuid))
    entry = queue.reserve(timeout=0)
    assert entry is not None and json.loads(entry.body) == uuid
    assert document["queueJobId"] == entry.id and document["queueName"] == queue.queueName
    entry.delete()

    def full(*args: Any) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    # The document is written after the entry, in the same transaction.
    monkeypatch.setattr(sqlite_backend, "_write_document", full)
    body = assert_error(client.post(f"{FIZZ}/job", json={"n": 1}), 503)
    assert body["message"].startswith("queue unavailable")
    assert queue.reserve(timeout=0) is None
    monkeypatch.undo()
    listed = client.get("/examples/jobs").get_json()["jobs"]
    assert [job["uuid"] for job in listed] == [uuid]


def test_a_job_that_raises_inline_is_created_with_its_error(api_client: FlaskClient) -> None:
    response = api_client.post(f"{SVC}/special/boom/job")
    assert response.status_code == 201
    assert "Traceback" not in response.get_data(as_text=True)
    uuid = response.get_json()["uuid"]
    info = api_client.get(f"{SVC}/info/{uuid}").get_json()
    assert info["result"] == 500 and info["completeness"] == 1.0
    assert info["errors"]
    for error in info["errors"]:
        assert error["errorCode"] == 500
        assert error["msg"].startswith("Traceback (most recent call last)")
        assert "RuntimeError: kaboom from inside the job" in error["msg"]
        assert is_naive_iso(error["timeStamp"])
    assert "Traceback" not in api_client.get(f"{SVC}/progress/{uuid}").get_data(as_text=True)


@pytest.mark.parametrize(
    "kind, how, runs, message",
    [
        ("set", "update_attrs", 1, "cannot store field payload: a set"),
        ("nan", "assign", 1, "cannot store field payload: nan"),
        ("nul", "requeue", 1, "cannot store field payload: a str holding a NUL"),
        ("deep", "assign", 1, "nested deeper than 100 levels"),
        ("inf", "return", 3, "run() returned inf: the result code inf is not a number"),
        ("huge", "return", 3, "run() returned 2.5e+300: the result code"),
        ("nan_delay", "return", 3, "the delay nan is not a number of seconds"),
    ],
)
def test_an_inline_run_ends_as_a_workers_run_never_500(
    make_app: MakeApp, kind: str, how: str, runs: int, message: str
) -> None:
    from runtime_jobs.jobs import TestRoot

    client = make_app(TestRoot, Path(__file__).resolve().parent / "runtime_jobs").test_client()
    response = client.post("/rt/stores/job", json={"kind": kind, "how": how})
    assert response.status_code == 201, response.get_data(as_text=True)
    uuid = response.get_json()["uuid"]
    info = client.get(f"/rt/info/{uuid}").get_json()
    assert (info["result"], info["completeness"]) == (500, 1.0)
    assert len(info["errors"]) == runs
    assert all(message in error["msg"] for error in info["errors"])
    dump = client.get(f"/rt/dump/{uuid}").get_json()
    assert (dump["runs"], dump["running"]) == (runs, False) and "payload" not in dump
    assert client.get(f"/rt/data/{uuid}").status_code == 200


def test_an_exception_in_a_view_is_500_without_traceback(api_client: FlaskClient) -> None:
    uuid = start(api_client, f"{SVC}/special/bad_data")
    body = assert_error(api_client.get(f"{SVC}/data/{uuid}"), 500)
    assert "secret detail" not in body["message"]


def test_paths_outside_the_tree_are_the_apps(make_app: MakeApp) -> None:
    app = make_app()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    client = app.test_client()
    assert client.get("/hello").get_json() == {"hello": "world"}
    for path in ("/nope", "/examplesfoo", "/examples.json", "/"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.mimetype == "text/html"
    assert client.post("/hello").status_code == 405
    assert client.post("/hello").mimetype == "text/html"
    assert client.get("/examples/leaves").get_json() == SEED_LEAVES


def test_the_apps_own_error_handler_outside_the_tree(make_app: MakeApp) -> None:
    app = make_app()

    @app.errorhandler(Exception)
    def everything(error: Exception) -> tuple[str, int]:
        return "the app's own page", 418

    client = app.test_client()
    assert client.get("/nope").get_data(as_text=True) == "the app's own page"
    assert_error(client.get("/examples/nope"), 404)
    assert_error(client.post(f"{FIZZ}/job", json={"n": "x"}), 422, field_errors=True)


def test_the_apps_code_handlers_do_not_reach_into_the_tree(make_app: MakeApp) -> None:
    app = make_app()

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return "<html>the app's 404</html>", 404

    @app.errorhandler(405)
    def not_allowed(error: Exception) -> tuple[str, int]:
        return "<html>the app's 405</html>", 405

    client = app.test_client()
    assert client.get("/nope").get_data(as_text=True) == "<html>the app's 404</html>"
    assert_error(client.get("/examples/nope"), 404)
    assert_error(client.get(f"/examples/progress/{uuid_module.uuid4()}"), 404)
    assert_error(client.get(f"{FIZZ}/job"), 405)


# -- 4. the agreement rule ------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
#: Values near the edges of common validators and types.
INTERESTING = st.sampled_from(
    [0, 1, -1, 5, 6, -5, -6, 9, 10, 100, 100_000, 100_001, 0.0, 5.0, 0.5, 1.0, -0.0, 7.5,
     1e300, -1e300, 10**20, True, False, None, "", "a", "5", "ABC", "abc", "ABCD", "fast",
     "slow", "red", "RED", "true", "2021-01-01", "2021-01-01T00:00:00Z",
     "2021-01-01T00:00:00", "12345678-1234-1234-1234-123456789abc", [], {}, [1], {"x": 1},
     [{"x": 1}], ["a"]]
)  # fmt: skip
ANY_VALUE = INTERESTING | JSON_VALUES
DATE_TIMES = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)
).flatmap(
    lambda moment: st.sampled_from(
        [
            moment.isoformat() + "Z",
            moment.isoformat() + "+01:30",
            moment.isoformat() + "-00:00",
            moment.isoformat(),
            moment.isoformat().replace("T", " ") + "Z",
            moment.isoformat() + "z",
            moment.isoformat(timespec="minutes") + "Z",
            moment.isoformat(timespec="milliseconds") + "Z",
        ]
    )
) | st.sampled_from(
    # not in the calendar, or at its edges
    ["2021-02-30T00:00:00Z", "1900-02-29T12:00:00Z", "2000-02-29T12:00:00Z",
     "2021-04-31T00:00:00Z", "0000-01-01T00:00:00Z", "2021-01-01T00:00:60Z",
     "2021-01-01T24:00:00Z", "2021-12-31T23:59:59.9999999Z"]
)  # fmt: skip
DATES = st.dates().flatmap(
    lambda day: st.sampled_from([day.isoformat(), day.strftime("%Y%m%d"), day.isoformat() + "T"])
)
UUIDS = st.uuids().flatmap(
    lambda u: st.sampled_from([str(u), str(u).upper(), u.hex, f"{{{u}}}", f"urn:uuid:{u}"])
)


def valid_values(schema: dict[str, Any], definitions: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that mostly satisfy ``schema`` (a hint, not a promise)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: valid_values(definitions[name], definitions))
    if "anyOf" in schema:
        return st.one_of([valid_values(s, definitions) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([valid_values({**schema, "type": k}, definitions) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        integers = st.integers(
            min_value=None if low is None else int(low),
            max_value=None if high is None else int(high),
        )
        if kind == "integer":
            return integers | integers.map(float)
        floats = st.floats(
            min_value=low,
            max_value=high,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
        return floats | integers
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return DATE_TIMES
        if fmt == "date":
            return DATES
        if fmt == "uuid":
            return UUIDS
        if "pattern" in schema:
            return st.from_regex(schema["pattern"])
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 10))
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(
            valid_values(items, definitions) if isinstance(items, dict) else JSON_VALUES,
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 3), 3),
        )
    if kind == "object":
        if "properties" in schema:
            required = set(schema.get("required", []))
            properties = {
                name: valid_values(prop, definitions)
                for name, prop in schema["properties"].items()
            }
            return st.fixed_dictionaries(
                {name: s for name, s in properties.items() if name in required},
                optional={name: s for name, s in properties.items() if name not in required},
            )
        extra = schema.get("additionalProperties", {})
        return st.dictionaries(
            st.text(max_size=4),
            valid_values(extra, definitions) if isinstance(extra, dict) else JSON_VALUES,
            max_size=3,
        )
    return JSON_VALUES


@st.composite
def near_valid_bodies(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """A body built from the schema's properties, then maybe broken a little."""
    definitions = schema["definitions"]
    params = definitions["Params"]
    body = dict(draw(valid_values(params, definitions)))
    names = list(params["properties"])
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        how = draw(st.sampled_from(["replace", "drop", "add", "nested"]))
        if how == "replace" and names:
            body[draw(st.sampled_from(names))] = draw(ANY_VALUE)
        elif how == "drop" and body:
            del body[draw(st.sampled_from(sorted(body)))]
        elif how == "add":
            body[draw(st.text(max_size=6))] = draw(ANY_VALUE)
        elif how == "nested" and names:
            name = draw(st.sampled_from(names))
            value = body.get(name)
            if isinstance(value, dict):
                value = dict(value)
                value[draw(st.sampled_from([*value, "x", "y", "z"]))] = draw(ANY_VALUE)
            elif isinstance(value, list) and value:
                value = list(value)
                value[draw(st.integers(0, len(value) - 1))] = draw(ANY_VALUE)
            body[name] = value
    return body


def bodies(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.sampled_from(list(schema["definitions"]["Params"]["properties"]) or ["x"])
    arbitrary = st.dictionaries(names | st.text(max_size=6), ANY_VALUE, max_size=5)
    return near_valid_bodies(schema) | arbitrary


def holds_unstorable(value: Any) -> bool:
    """Whether a string or key in ``value`` holds NUL or a lone surrogate."""
    if isinstance(value, str):
        return re.search("[\x00\ud800-\udfff]", value) is not None
    if isinstance(value, dict):
        return any(holds_unstorable(k) or holds_unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_unstorable(item) for item in value)
    return False


def check_agreement(client: FlaskClient, leaf: str, body: dict[str, Any]) -> None:
    schema = client.get(f"{leaf}/post-schema").get_json()["postSchema"]
    validator = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    response = client.post(f"{leaf}/job", data=json.dumps(body), content_type="application/json")
    if holds_unstorable(body):  # the door's 400 comes before the fields' checks
        assert_error(response, 400)
        return
    assert response.status_code in (201, 422), response.get_data(as_text=True)
    errors = [e.message for e in validator.iter_errors(body)]
    if response.status_code == 201:
        assert not errors, f"POST accepted {body!r} but the schema says {errors}"
    else:
        answer = response.get_json()
        assert not validator.is_valid(body), (
            f"{body!r} validates against the schema but POST answered {answer}"
        )


AGREEMENT = settings(
    max_examples=int(os.environ.get('AGREEMENT_EXAMPLES', 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def queued_client(make_app: MakeApp) -> FlaskClient:
    """The example service that only queues jobs (FizzBuzz of 100000 is slow)."""
    return make_app(config={"SPACEWALK_RUN_INLINE": False}).test_client()


@pytest.fixture
def queued_api_client(make_app: MakeApp) -> FlaskClient:
    return make_app(
        ApiRoot, API_JOBS, url_prefix=PREFIX, config={"SPACEWALK_RUN_INLINE": False}
    ).test_client()


@AGREEMENT
@given(data=st.data())
def test_agreement_fizz_buzz(queued_client: FlaskClient, data: st.DataObject) -> None:
    schema = SEED_POST_SCHEMA["postSchema"]
    check_agreement(queued_client, FIZZ, data.draw(bodies(schema)))


@AGREEMENT
@given(data=st.data())
def test_agreement_kitchen_sink(queued_api_client: FlaskClient, data: st.DataObject) -> None:
    leaf_path = f"{SVC}/tools/kitchen_sink"
    schema = queued_api_client.get(f"{leaf_path}/post-schema").get_json()["postSchema"]
    check_agreement(queued_api_client, leaf_path, data.draw(bodies(schema)))


@pytest.mark.parametrize(
    "body",
    [
        {"name": "ok", "count": 5.0},
        {"name": "ok", "count": -5, "point": {"x": 1e20}},
        {"name": "ok", "count": 0, "when": "2021-01-01T00:00:00.123456+05:30"},
        {"name": "ok", "count": 0, "when": "2020-02-29T23:59:59Z", "day": "2020-02-29"},
        {"name": "ok", "count": 0, "ident": "12345678-1234-1234-1234-123456789ABC"},
        {"name": "ok", "count": 0, "path": [{"x": 1}, {"x": 2, "y": -100}]},
        {"name": "ok", "count": 0, "weights": {"": 1, "b": 2.5}},
        {"name": "ABC", "count": 0, "code": "ABCdef", "color": "red", "shade": "RED"},
        {"name": "ok", "count": 0, "ratio": 0.9999999999999999, "big": -1e6},
        {"name": "ok", "count": 0, "big": 1e308, "scores": [0, 10**20]},
        {"name": "ok", "count": 0, "when": "2021-01-01T00:00:00Z\n"},
        {"name": "ok", "count": 0, "day": "2021-01-01\n"},
        {"name": "ok", "count": 0, "day": "20210101"},
        {"name": "ok", "count": 0, "code": "ABC\n"},
        {"name": "ok", "count": 0, "when": "2021-02-30T00:00:00Z"},
        {"name": "ok", "count": 0, "when": "1900-02-29T00:00:00Z"},
        {"name": "ok", "count": 0, "when": "2000-02-29T00:00:00+14:00"},
        {"name": "ok", "count": 0, "day": "2021-02-29"},
        {"name": "ok", "count": 0, "ident": "12345678123412341234123456789abc"},
        {"name": "ok", "count": 0, "ident": "{12345678-1234-1234-1234-123456789abc}"},
        {"name": "ok", "count": 0, "ident": "urn:uuid:12345678-1234-1234-1234-123456789abc"},
        {"name": "ok", "count": 0, "big": 10**400},
        {"name": "ok", "count": 0, "big": 1.7976931348623157e308},
        {"name": "ok", "count": 0, "weights": {"a": -(10**400)}},
        {"name": "ok", "count": 0, "point": {"x": 10**400}},
    ],
)
def test_agreement_examples(queued_api_client: FlaskClient, body: dict[str, Any]) -> None:
    check_agreement(queued_api_client, f"{SVC}/tools/kitchen_sink", body)




def test_a_very_long_integer_is_a_field_error(client: FlaskClient) -> None:
    data = b'{"n": 1' + b"0" * 5000 + b"}"
    answer = client.post(f"{FIZZ}/job", data=data, content_type="application/json")
    assert "set_int_max_str_digits" not in answer.get_data(as_text=True)
    body = assert_error(answer, 422, field_errors=True)
    assert list(body["errors"]) == ["n"]


# -- what the door keeps out: strings no store keeps, deep nesting -------------

RAW = "/raw/keep"


@pytest.fixture(params=sorted(DATASTORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh datastore of each kind (PostgreSQL and Redis skip when absent)."""
    with DATASTORES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
def raw_client(make_app: MakeApp, store_url: str, db_url: str) -> FlaskClient:
    """A tree whose leaf takes any JSON, on each datastore (the queue in SQLite)."""
    config = {"SPACEWALK_DATASTORE_URL": store_url, "SPACEWALK_QUEUE_URL": db_url}
    return make_app(RawRoot, "jobtrees.raw_tree", config=config).test_client()


def post_raw(client: FlaskClient, data: bytes) -> TestResponse:
    return client.post(f"{RAW}/job", data=data, content_type="application/json")


@pytest.mark.parametrize(
    "data, says",
    [
        (b'{"value": "\\ud800"}', 'a lone surrogate (\\ud800) in the string at ["value"]'),
        (b'{"value": "a\\udfffb"}', "a lone surrogate (\\udfff)"),
        (b'{"value": "a\\u0000b"}', 'a NUL character (\\u0000) in the string at ["value"]'),
        (b'{"value": {"\\udc00": 1}}', 'in the key at ["value", "\\udc00"]'),
        (b'{"value": [[{"x": ["ok", "\\u0000"]}]]}', 'string at ["value", 0, 0, "x", 1]'),
        (b'{"\\ud800": 1}', "a lone surrogate (\\ud800) in the key"),
        (b'{"nope": {"k": "\\u0000"}}', 'in the string at ["nope", "k"]'),
        (b'{"mapping": {"a\\u0000": 1}}', 'NUL character (\\u0000) in the key at ["mapping", "a'),
        (b'{"value": "\\ude00\\ud83d"}', "a lone surrogate"),  # a pair in the wrong order
    ],
)
def test_strings_no_store_keeps_are_400_at_the_door(
    raw_client: FlaskClient, data: bytes, says: str
) -> None:
    body = assert_error(post_raw(raw_client, data), 400)
    assert says in body["message"]
    assert raw_client.get("/raw/jobs").get_json()["jobs"] == []


def test_escaped_text_that_is_unicode_is_kept(raw_client: FlaskClient) -> None:
    response = post_raw(raw_client, b'{"value": ["\\ud83d\\ude00", "\\u00e9", "\\\\u0000"]}')
    assert response.status_code == 201, response.get_data(as_text=True)
    data = raw_client.get(f"/raw/data/{response.get_json()['uuid']}")
    assert data.get_json() == {"value": ["\U0001f600", "\u00e9", "\\u0000"]}


def test_stored_strings_utf_8_cannot_encode_are_answered_as_escapes(
    client: FlaskClient, datastore: Any
) -> None:
    """A document a ZeroG writer (or an earlier version) stored with a lone
    surrogate is still answered, the surrogate as its escape."""
    uuid = start(client, FIZZ, {"n": 3})
    document = datastore.read(make_key(uuid))
    document.update(output=["\ud800", "Fizz"])
    document["events"].append({"msg": "bad \udfff", "timeStamp": "2021-11-20T02:55:11"})
    # written as such a writer would: our datastores refuse it (UnstorableValue)
    with contextlib.closing(sqlite3.connect(datastore.path)) as conn, conn:
        conn.execute("UPDATE documents SET value = ? WHERE key = ?",
                     (json.dumps(document), make_key(uuid)))
    for kind in BY_UUID:
        response = client.get(f"/examples/{kind}/{uuid}?showLogs=true")
        assert response.status_code == 200, (kind, response.get_data(as_text=True))
        assert response.data.isascii() or kind == "progress"
        json.loads(response.data)
    assert client.get(f"/examples/data/{uuid}").data == b'{"output": ["\\ud800", "Fizz"]}\n'
    dump = json.loads(client.get(f"/examples/dump/{uuid}?showLogs=true").data)
    assert dump["events"][-1]["msg"] == "bad \udfff"


def test_non_finite_numbers_are_answered_as_null() -> None:
    """JSON has no NaN: one that reached a stored document is answered null."""
    assert encode({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": "\ud800"}) == (
        b'{"a": null, "b": [null, null, 1.5], "c": "\\ud800"}\n'
    )
    assert encode({"text": "d\u00e9j\u00e0"}) == '{"text": "d\u00e9j\u00e0"}\n'.encode()


def nested(depth: int, leaf: bytes = b"1", kind: bytes = b"[]") -> bytes:
    """A JSON value of ``depth`` levels of arrays (or objects) around ``leaf``."""
    if kind == b"[]":
        return b"[" * depth + leaf + b"]" * depth
    return b'{"a": ' * depth + leaf + b"}" * depth


@pytest.mark.parametrize(
    "data",
    [
        b'{"value": ' + nested(960) + b"}",
        b'{"value": ' + nested(960, kind=b"{}") + b"}",
        b'{"mapping": ' + nested(960, kind=b"{}") + b"}",
        b'{"nope": ' + nested(960) + b"}",
        b'{"value": ' + nested(MAX_DEPTH) + b"}",  # one level too many
        b'{"value": [' + b"1, " * 1000 + nested(MAX_DEPTH, b'"\\u00e9"') + b"]}",
    ],
    ids=["raw-960", "raw-objects-960", "dict-960", "unknown-960", "raw-101", "raw-101-late"],
)
def test_bodies_nested_deeper_than_the_limit_are_400_naming_it(
    raw_client: FlaskClient, data: bytes
) -> None:
    body = assert_error(post_raw(raw_client, data), 400)
    assert f"nested deeper than {MAX_DEPTH} levels" in body["message"]


@pytest.mark.parametrize("kind", [b"[]", b"{}"])
def test_a_body_nested_just_under_the_limit_is_stored_and_answered(
    raw_client: FlaskClient, kind: bytes
) -> None:
    """The body is level 1, so its field may hold MAX_DEPTH - 1 levels."""
    value = nested(MAX_DEPTH - 1, b'"deep \\u00e9"', kind)
    response = post_raw(raw_client, b'{"value": ' + value + b"}")
    assert response.status_code == 201, response.get_data(as_text=True)
    uuid = response.get_json()["uuid"]
    expected = json.loads(value)
    assert raw_client.get(f"/raw/data/{uuid}").get_json() == {"value": expected}
    assert raw_client.get(f"/raw/dump/{uuid}").get_json()["value"] == expected
    assert raw_client.get(f"/raw/info/{uuid}").get_json()["result"] == 200


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One gunicorn sync worker serving ``examples.app``, as ``flask spacewalk
    serve`` and ``make run`` do (no job workers: POSTs here never get far)."""
    import subprocess

    from reliability_support import control_socket, free_port, request, stop_process, wait_until

    tmp = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = dict(os.environ, FLASK_SPACEWALK_DATASTORE_URL=f"sqlite:///{tmp / 'jobs.sqlite3'}")
    with open(tmp / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
             *control_socket(tmp), "examples.app:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def ready() -> bool:
        assert proc.poll() is None, (tmp / "gunicorn.log").read_text()
        try:
            return request(port, "GET", "/examples/branches")[0] == 200
        except OSError:
            return False

    try:
        assert wait_until(ready, timeout=30, interval=0.1), (tmp / "gunicorn.log").read_text()
        yield port
    finally:
        stop_process(proc)
    assert "Traceback" not in (tmp / "gunicorn.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, shut_write",
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", False),  # a bad chunk size
        (b"8\r\n{\"n\": 3}XX0\r\n\r\n", False),  # no CRLF after the chunk's data
        (b"8\r\n{\"n\"", True),  # the client stops sending mid-chunk
    ],
    ids=["bad-size", "no-terminator", "gone-mid-chunk"],
)
def test_malformed_chunked_bodies_are_400_under_gunicorn(
    gunicorn_port: int, body: bytes, shut_write: bool
) -> None:
    from reliability_support import post_head, raw_exchange, request

    status, payload = raw_exchange(
        gunicorn_port, post_head(f"{FIZZ}/job", None), body, shut_write=shut_write, timeout=20
    )
    assert status == 400, payload
    answer = json.loads(payload)
    assert answer["code"] == 400 and answer["message"].startswith("the body could not be read")
    assert request(gunicorn_port, "GET", "/examples/branches")[0] == 200  # the worker lives on


@pytest.mark.parametrize("job_type", [["examples_fizz_buzz"], {"a": 1}, 5, None])
def test_a_stored_job_whose_job_type_is_no_string_is_404(
    client: FlaskClient, datastore: Any, job_type: Any
) -> None:
    uuid = start(client, FIZZ, {"n": 3})
    document = datastore.read(make_key(uuid))
    datastore.set(make_key(uuid), dict(document, jobType=job_type))
    for kind in BY_UUID:
        assert_error(client.get(f"/examples/{kind}/{uuid}"), 404)


# -- starting options (SPEC section 7) ------------------------------------------------


def dumped(client: FlaskClient, uuid: str) -> dict[str, Any]:
    document: dict[str, Any] = client.get(f"/examples/dump/{uuid}").get_json()
    return document


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("later=5", "unknown query parameter later"),
        ("Delay=5", "unknown query parameter Delay"),
        ("delay=soon", "delay must be a number"),
        ("delay=", "delay must be a number"),
        ("delay=%205", "delay must be a number"),
        ("delay=1_0", "delay must be a number"),
        ("delay=nan", "delay must be a number"),
        ("delay=inf", "delay must be a number"),
        ("delay=-1", "between 0 and 2592000"),
        ("delay=2592000.5", "between 0 and 2592000"),
        ("delay=1e999", "between 0 and 2592000"),
        ("delay=1&delay=2", "delay is given more than once"),
        ("delay=1&runAt=2030-01-01T00:00:00Z", "not both"),
        ("runAt=tomorrow", "runAt must be an ISO-8601 date-time"),
        ("runAt=2030-01-01T00:00:00", "runAt needs a time zone offset"),
        ("runAt=2999-01-01T00:00:00Z", "at most 2592000 seconds"),
        ("priority=-1", "priority must be an integer from 0 to 4294967295"),
        ("priority=4294967296", "priority must be an integer from 0 to 4294967295"),
        ("priority=1.0", "priority must be an integer"),
        ("priority=1e3", "priority must be an integer"),
        ("priority=%2B1", "priority must be an integer"),
        ("priority=", "priority must be an integer"),
        ("priority=%D9%A3", "priority must be an integer"),  # an Arabic-Indic 3
        ("priority=" + "9" * 5000, "priority must be an integer"),
        ("runAt=2030-01-01T00:00:00Z%00", "runAt must be an ISO-8601 date-time"),
        ("runAt=", "runAt must be an ISO-8601 date-time"),
        ("runAt=2030-01-01", "runAt needs a time zone offset"),
        ("delay=" + "9" * 5000, "between 0 and 2592000"),
    ],
)
def test_a_bad_starting_option_is_400(client: FlaskClient, query: str, says: str) -> None:
    body = assert_error(client.post(f"{FIZZ}/job?{query}", json={"n": 3}), 400)
    assert says in body["message"]


def test_a_long_bad_value_is_quoted_cut_short(client: FlaskClient) -> None:
    for query in ("delay=" + "x" * 10_000, "priority=" + "1" * 10_000,
                  "runAt=" + "2" * 10_000, "x" * 10_000 + "=1"):
        body = assert_error(client.post(f"{FIZZ}/job?{query}", json={"n": 3}), 400)
        assert len(body["message"]) < 200


def test_leading_zeros_and_a_lower_case_z_are_read(queued_client: FlaskClient) -> None:
    uuid = start_with(queued_client, "priority=0007&runAt=2001-02-03t04:05:06z")
    assert dumped(queued_client, uuid)["queueKwargs"] == {"delay": 0.0, "priority": 7}


def test_bad_starting_options_start_nothing(queued_client: FlaskClient) -> None:
    assert_error(queued_client.post(f"{FIZZ}/job?priority=-1", json={"n": 3}), 400)
    assert queued_client.get("/examples/jobs").get_json()["jobs"] == []


def test_the_body_is_checked_before_the_query_and_the_query_before_the_fields(
    small_client: FlaskClient,
) -> None:
    bad = f"{FIZZ}/job?delay=-1"
    assert_error(small_client.post(bad, data=padded(101), content_type="application/json"), 413)
    assert_error(small_client.post(bad, data=b"{}", content_type="text/plain"), 415)
    body = assert_error(small_client.post(bad, data=b"{", content_type="application/json"), 400)
    assert "not valid JSON" in body["message"]
    body = assert_error(small_client.post(bad, data=b"[]", content_type="application/json"), 400)
    assert "JSON object" in body["message"]
    body = assert_error(small_client.post(bad, json={"n": "x", "nope": 1}), 400)
    assert "delay" in body["message"]
    # with good options the same fields are 422
    assert_error(small_client.post(f"{FIZZ}/job?delay=1", json={"nope": 1}), 422,
                 field_errors=True)


def test_starting_options_are_stored_in_queue_kwargs(queued_client: FlaskClient) -> None:
    uuid = start_with(queued_client, "delay=5&priority=7")
    assert dumped(queued_client, uuid)["queueKwargs"] == {"delay": 5, "priority": 7}
    uuid = start_with(queued_client, "delay=0.25&priority=0")
    assert dumped(queued_client, uuid)["queueKwargs"] == {"delay": 0.25, "priority": 0}
    uuid = start_with(queued_client, "priority=4294967295")
    assert dumped(queued_client, uuid)["queueKwargs"] == {"priority": 4294967295}
    assert dumped(queued_client, start_with(queued_client, ""))["queueKwargs"] == {}


def start_with(client: FlaskClient, query: str, body: Any = None) -> str:
    response = client.post(f"{FIZZ}/job?{query}", json={"n": 3} if body is None else body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.get_json()["uuid"])


@pytest.mark.parametrize("offset", ["Z", "+00:00", "+02:00", "-05:30"])
def test_run_at_is_stored_as_the_delay_left(queued_client: FlaskClient, offset: str) -> None:
    zone = dt.timezone.utc if offset == "Z" else dt.datetime.strptime(offset, "%z").tzinfo
    when = dt.datetime.now(zone) + dt.timedelta(seconds=100)
    text = when.replace(tzinfo=None).isoformat(timespec="seconds") + offset
    uuid = start_with(queued_client, "runAt=" + text.replace("+", "%2B"))
    delay = dumped(queued_client, uuid)["queueKwargs"]["delay"]
    assert 90 < delay <= 100


def test_a_past_run_at_means_now(queued_client: FlaskClient) -> None:
    uuid = start_with(queued_client, "runAt=2001-02-03T04:05:06Z&priority=1")
    assert dumped(queued_client, uuid)["queueKwargs"] == {"delay": 0.0, "priority": 1}


def test_a_delayed_job_stays_queued_in_the_listing(make_app: MakeApp) -> None:
    app = make_app(testing=False)
    client = app.test_client()
    uuid = start_with(client, "delay=60")
    (item,) = client.get("/examples/jobs?status=queued").get_json()["jobs"]
    assert (item["uuid"], item["status"]) == (uuid, "queued")
    # no worker takes it before its time
    _, queue = state_of(app).connections()
    assert queue.reserve(timeout=0) is None


def test_inline_a_delayed_job_is_queued_and_an_undelayed_one_runs(client: FlaskClient) -> None:
    # app.testing runs jobs inline; a delay is a promise not to run it now
    delayed = start_with(client, "delay=30&priority=5")
    assert client.get(f"/examples/progress/{delayed}").get_json()["result"] == -1
    document = dumped(client, delayed)
    assert document["queueKwargs"] == {"delay": 30, "priority": 5}
    assert document["queueJobId"] > 0
    for query in ("delay=0&priority=5", "runAt=2001-02-03T04:05:06Z", "priority=5"):
        uuid = start_with(client, query)
        assert client.get(f"/examples/progress/{uuid}").get_json()["result"] == 200
