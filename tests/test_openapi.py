"""The OpenAPI document, the interactive docs and ``flask spacewalk openapi``.

The document validates, lists exactly the routes the app serves, gives each
leaf its post-schema's ``Params`` as the request body, and the example
service answers within it under schemathesis.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft7Validator, Draft202012Validator
from marshmallow import Schema, fields, validate
from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator import validate as validate_spec
from schemathesis import GenerationMode, checks

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk.post_schema import post_schema
from flask_spacewalk.web.console import CONTENT_SECURITY_POLICY as CONSOLE_POLICY
from flask_spacewalk.web.docs import ASSETS
from flask_spacewalk.web.openapi import openapi_document, params_components
from flask_spacewalk.web.routes import UUID_PATTERN, Route, RouteKind, blueprint_name, routes

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) leaves it out
    sys.path.insert(0, str(ROOT))

from jobtrees.api_tree import ApiRoot  # noqa: E402
from jobtrees.deep import DeepRoot  # noqa: E402

EXAMPLE_JOBS = ROOT / "examples" / "jobs"
API_JOBS = TESTS / "jobtrees" / "api_tree"
DEEP_JOBS = TESTS / "jobtrees" / "deep"
METHODS = {"get", "post", "put", "patch", "delete"}

MakeApp = Callable[..., Flask]


def document(client: FlaskClient, url: str = "/openapi.json", **kwargs: Any) -> Any:
    response = client.get(url, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def status(client: FlaskClient, url: str) -> int:
    with client.get(url) as response:
        return response.status_code


def served_pairs(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every rule of every tree, fallbacks, the
    console (an HTML page for people) and the branches' "not a job" routes
    (they only answer 400) left out, as the document leaves them out."""
    names = {blueprint_name(root) + "." for root in app.extensions["spacewalk"]}
    pairs = set()
    left_out = ("fallback", "console", "console_asset", "branch_post_schema_", "branch_job_")
    for rule in app.url_map.iter_rules():
        prefix, _, endpoint = rule.endpoint.rpartition(".")
        if f"{prefix}." in names and not endpoint.startswith(left_out):
            path = re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"{\1}", rule.rule)
            pairs |= {(path, m.lower()) for m in rule.methods or () if m.lower() in METHODS}
    return pairs


def documented_pairs(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, m) for path, item in doc["paths"].items() for m in item if m in METHODS}


# -- the document -------------------------------------------------------------


def test_example_document_is_valid_openapi_3_1(make_app: MakeApp) -> None:
    doc = document(make_app().test_client())
    assert doc["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(doc).validate()
    validate_spec(doc)
    assert doc["servers"] == [{"url": "/"}]


@pytest.mark.parametrize(
    ("root", "modules_dir", "prefix"),
    [(DeepRoot, DEEP_JOBS, "/api/v1"), (ApiRoot, API_JOBS, ""), (BaseExampleJob, EXAMPLE_JOBS, "")],
)
def test_document_lists_exactly_the_served_routes(
    make_app: MakeApp, root: type, modules_dir: Path, prefix: str
) -> None:
    app = make_app((root, modules_dir, {"url_prefix": prefix}))
    doc = document(app.test_client(), f"{prefix}/openapi.json")
    OpenAPIV31SpecValidator(doc).validate()
    # Derived from the url_map: exact whatever routes the trees gain.
    assert documented_pairs(doc) == served_pairs(app)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_deep_tree_tags_summaries_and_responses(make_app: MakeApp) -> None:
    app = make_app((DeepRoot, DEEP_JOBS, {"url_prefix": "/api/v1"}))
    doc = document(app.test_client(), "/api/v1/openapi.json")
    tags = {tag["name"]: tag["description"] for tag in doc["tags"]}
    assert tags == {
        "deep": "The root of the deep tree",
        "deep/alpha": "The first branch",
        "deep/alpha/inner": "A branch in a branch",
        "deep/beta": "The second branch",
        "deep/beta/gamma": "A branch from a folder without __init__.py",
        "deep/empty": "A branch without leaves",
    }
    paths = doc["paths"]
    echo = paths["/api/v1/deep/alpha/echo/job"]["post"]
    assert echo["tags"] == ["deep/alpha"]
    assert (echo["summary"], echo["description"]) == ("Echo", "Echoes its message")
    assert echo["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/alpha_echo.Params"
    }
    assert set(echo["responses"]) == {
        "200", "201", "400", "405", "409", "413", "415", "422", "503"
    }
    assert echo["responses"]["201"]["headers"]["Location"]["required"] is True
    deepest = paths["/api/v1/deep/alpha/inner/deepest/job"]["post"]
    assert deepest["tags"] == ["deep/alpha/inner"]
    assert paths["/api/v1/deep/beta/leaves"]["get"]["tags"] == ["deep/beta"]
    # A branch's post-schema and job only ever answer 400: not operations.
    assert "/api/v1/deep/beta/job" not in paths
    assert "/api/v1/deep/beta/post-schema" not in paths
    assert app.test_client().post("/api/v1/deep/beta/job").status_code == 400

    progress = paths["/api/v1/deep/progress/{uuid}"]["get"]
    assert progress["tags"] == ["deep"]
    (uuid, if_none_match, prefer) = progress["parameters"]
    assert uuid["in"] == "path" and uuid["required"] is True
    assert uuid["schema"]["pattern"] == f"^{UUID_PATTERN.pattern}$"
    assert (if_none_match["in"], if_none_match["name"]) == ("header", "If-None-Match")
    # the long poll (SPEC section 9)
    assert (prefer["in"], prefer["name"]) == ("header", "Prefer")
    assert set(progress["responses"]) == {"200", "304", "404", "405", "500", "503"}
    assert set(progress["responses"]["200"]["headers"]) == {"ETag", "Preference-Applied"}
    assert set(progress["responses"]["304"]["headers"]) == {"ETag", "Preference-Applied"}
    assert "content" not in progress["responses"]["304"]
    # the other GETs of a job do not wait
    data = paths["/api/v1/deep/data/{uuid}"]["get"]
    assert [p["name"] for p in data["parameters"]] == ["uuid", "If-None-Match"]
    assert set(data["responses"]["200"]["headers"]) == {"ETag"}
    dump = paths["/api/v1/deep/dump/{uuid}"]["get"]
    show_logs = dump["parameters"][1]
    assert show_logs["name"] == "showLogs" and show_logs["in"] == "query"
    assert "400" in dump["responses"]

    components = doc["components"]
    assert components["responses"]["UnprocessableEntity"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/ValidationError"}
    assert "errors" in components["schemas"]["ValidationError"]["required"]
    assert "errors" not in components["schemas"]["Error"].get("required", [])
    assert components["responses"]["MethodNotAllowed"]["headers"]["Allow"]["required"]
    info = components["schemas"]["Info"]["properties"]
    assert info["errors"]["items"] == {"$ref": "#/components/schemas/ErrorRecord"}


def test_dump_is_left_out_when_not_exposed(make_app: MakeApp) -> None:
    app = make_app(SPACEWALK_EXPOSE_DUMP=False)
    doc = document(app.test_client())
    assert "/examples/dump/{uuid}" not in doc["paths"]
    assert "/examples/data/{uuid}" in doc["paths"]
    assert documented_pairs(doc) == served_pairs(app)


def test_the_event_stream_is_documented(make_app: MakeApp) -> None:
    app = make_app()
    doc = document(app.test_client())
    operation = doc["paths"]["/examples/events/{uuid}"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"uuid", "Last-Event-ID"}
    assert params["Last-Event-ID"]["in"] == "header"
    assert set(operation["responses"]) == {"200", "400", "404", "405", "500", "503"}
    stream = operation["responses"]["200"]["content"]["text/event-stream"]
    kinds = {
        item["properties"]["event"]["const"]: item["properties"]["data"]["contentSchema"]
        for item in stream["x-itemSchema"]["oneOf"]
    }
    assert kinds == {
        "log": {"$ref": "#/components/schemas/StreamLog"},
        "progress": {"$ref": "#/components/schemas/Progress"},
        "end": {"$ref": "#/components/schemas/Progress"},
    }
    log = doc["components"]["schemas"]["StreamLog"]
    assert log["properties"]["kind"]["enum"] == ["event", "warning", "error"]
    assert set(log["required"]) == {"kind", "msg", "timeStamp"}
    for word in ("id", "Last-Event-ID", "end"):
        assert word in operation["responses"]["200"]["description"]


def test_listing_and_cancel_are_documented(make_app: MakeApp) -> None:
    # Their views come from other branches; the document knows their routes.
    state = make_app().extensions["spacewalk"]["/examples"]

    def table(state: Any) -> list[Route]:
        return [
            *routes(state),
            Route("/examples/jobs", "GET", "jobs", "jobs"),
            Route("/examples/cancel/<uuid>", "POST", "cancel", "cancel"),
            Route("/examples/job/<uuid>", "DELETE", "cancel_job", "cancel"),
        ]

    doc = openapi_document([state], table=table)
    OpenAPIV31SpecValidator(doc).validate()
    listing = doc["paths"]["/examples/jobs"]["get"]
    assert set(listing["responses"]) == {"200", "400", "405", "501", "503"}
    assert "Link" in listing["responses"]["200"]["headers"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {"jobType", "status", "since", "limit", "cursor"}
    assert params["status"]["schema"]["items"]["enum"] == [
        "queued", "running", "finished", "cancelled", "failed"
    ]
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "default": 50}
    for path, method in (("/examples/cancel/{uuid}", "post"), ("/examples/job/{uuid}", "delete")):
        cancel = doc["paths"][path][method]
        assert set(cancel["responses"]) == {"200", "202", "404", "405", "409", "500", "503"}
    answer = doc["components"]["schemas"]["CancelAnswer"]["properties"]["status"]
    assert answer["enum"] == ["cancelled", "cancelling"]
    assert doc["components"]["schemas"]["JobList"]["properties"]["next"]["type"] == [
        "string", "null"
    ]


def test_post_job_documents_its_starting_options(make_app: MakeApp) -> None:
    client = make_app().test_client()
    doc = document(client)
    OpenAPIV31SpecValidator(doc).validate()
    post = doc["paths"]["/examples/fizz_buzz/job"]["post"]
    params = {p["name"]: p for p in post["parameters"] if p["in"] == "query"}
    assert set(params) == {"delay", "runAt", "priority"}
    assert params["delay"]["schema"] == {"type": "number", "minimum": 0, "maximum": 2_592_000}
    assert params["runAt"]["schema"] == {"type": "string", "format": "date-time"}
    assert params["priority"]["schema"] == {
        "type": "integer", "minimum": 0, "maximum": 4_294_967_295, "default": 2_147_483_648
    }
    assert "whole seconds" in params["delay"]["description"]
    assert "400" in post["responses"]
    # the documented bounds are the accepted ones
    for query in ("delay=2592000", "priority=4294967295", "priority=0",
                  "runAt=2001-01-01T00:00:00Z"):
        assert client.post(f"/examples/fizz_buzz/job?{query}", json={"n": 1}).status_code == 201


def test_retry_and_the_bulk_actions_are_documented(make_app: MakeApp) -> None:
    client = make_app(SPACEWALK_RUN_INLINE=False).test_client()
    doc = document(client)
    OpenAPIV31SpecValidator(doc).validate()
    retry = doc["paths"]["/examples/retry/{uuid}"]["post"]
    assert {p["name"] for p in retry["parameters"]} == {"uuid", "delay", "runAt", "priority"}
    assert set(retry["responses"]) == {"200", "400", "404", "405", "409", "413", "415", "422",
                                       "500", "503"}
    assert retry["requestBody"]["required"] is False
    answer = doc["components"]["schemas"]["RetryAnswer"]["properties"]
    assert answer["status"]["enum"] == ["queued", "running", "finished", "cancelled", "failed"]
    for action in ("retry", "cancel"):
        bulk = doc["paths"][f"/examples/jobs/{action}"]["post"]
        params = {p["name"]: p for p in bulk["parameters"]}
        assert set(params) == {"jobType", "status", "since", "dryRun", "limit", "cursor"}
        assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "default": 1000}
        assert "above 10000 means 10000" in params["limit"]["description"]
        assert params["dryRun"]["schema"]["enum"] == ["true", "false"]
        assert set(bulk["responses"]) == {"200", "400", "405", "413", "415", "501", "503"}
    bulk_answer = doc["components"]["schemas"]["BulkAnswer"]
    assert set(bulk_answer["required"]) == {"matched", "done", "dryRun", "next"}
    # an answer as documented
    uuid = client.post("/examples/fizz_buzz/job", json={"n": 1}).get_json()["uuid"]
    assert client.post(f"/examples/cancel/{uuid}").status_code == 200
    assert client.post("/examples/jobs/retry?dryRun=true").get_json() == {
        "matched": 1, "done": 0, "dryRun": True, "next": None}
    assert client.post(f"/examples/retry/{uuid}").get_json() == {"uuid": uuid, "status": "queued"}


def test_post_job_documents_its_idempotency_key(make_app: MakeApp) -> None:
    doc = document(make_app().test_client())
    OpenAPIV31SpecValidator(doc).validate()
    post = doc["paths"]["/examples/fizz_buzz/job"]["post"]
    (header, prefer) = [p for p in post["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    assert header["schema"] == {
        "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"
    }
    assert prefer["name"] == "Prefer"
    replay = post["responses"]["200"]
    assert replay["content"]["application/json"]["schema"] == {"anyOf": [
        {"$ref": "#/components/schemas/JobResult"}, {"$ref": "#/components/schemas/Created"}
    ]}
    assert replay["headers"]["Idempotent-Replayed"]["schema"] == {
        "type": "string", "enum": ["true"]
    }
    assert replay["headers"]["Location"]["required"] is True
    assert replay["headers"]["Preference-Applied"]["schema"]["pattern"] == "^wait=[0-9]+$"
    assert "Preference-Applied" in post["responses"]["201"]["headers"]
    assert doc["components"]["schemas"]["JobResult"]["required"] == [
        "completeness", "data", "result", "uuid"
    ]
    assert post["responses"]["409"]["headers"]["Retry-After"]["required"] is True
    # a key used with other Params is 422 without field errors
    refs = post["responses"]["422"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/Error"} in refs


def test_an_undocumented_route_kind_fails_loudly(make_app: MakeApp) -> None:
    state = make_app().extensions["spacewalk"]["/examples"]
    with pytest.raises(LookupError, match="route kind 'mystery'"):
        openapi_document([state], table=lambda s: [Route("/examples/x", "GET", "x", "mystery")])


def test_every_route_kind_is_documented_or_left_out_on_purpose(make_app: MakeApp) -> None:
    from flask_spacewalk.web import openapi

    state = make_app().extensions["spacewalk"]["/examples"]
    makers = openapi._Operations(state, {}, {}).makers
    assert set(makers) | openapi._NOT_OPERATIONS == set(RouteKind)
    assert not set(makers) & openapi._NOT_OPERATIONS


# -- request bodies: the post-schema's Params ---------------------------------


def _back_to_draft_07(schema: Any, names: dict[str, str]) -> Any:
    """A component in the post-schema's own terms (the inverse translation)."""
    if isinstance(schema, list):
        return [_back_to_draft_07(item, names) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = f"#/definitions/{names[value.rsplit('/', 1)[1]]}"
        elif key == "prefixItems":
            out["items"] = _back_to_draft_07(value, names)
        elif key in ("default", "enum", "examples"):
            out[key] = value
        else:
            out[key] = _back_to_draft_07(value, names)
    return out


@pytest.mark.parametrize(
    ("root", "modules_dir"),
    [(ApiRoot, API_JOBS), (BaseExampleJob, EXAMPLE_JOBS), (DeepRoot, DEEP_JOBS)],
)
def test_request_body_is_the_post_schema_params(
    make_app: MakeApp, root: type, modules_dir: Path
) -> None:
    app = make_app((root, modules_dir, {}))
    client = app.test_client()
    doc = document(client)
    schemas = doc["components"]["schemas"]
    (state,) = app.extensions["spacewalk"].values()
    seen_nested = False
    for leaf in state.tree.leaves():
        operation = doc["paths"][f"{leaf.path}/job"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[1]
        base = name[: -len(".Params")]
        published = client.get(f"{leaf.path}/post-schema").get_json()["postSchema"]
        names = {f"{base}.{d}": d for d in published["definitions"]}
        assert name == f"{base}.Params" and names[name] == "Params"
        for component, definition in names.items():
            assert _back_to_draft_07(schemas[component], names) == (
                published["definitions"][definition]
            )
        seen_nested |= len(names) > 1
    assert seen_nested == (root is ApiRoot)  # KitchenSink nests Point


class _Pair(Schema):
    a = fields.Integer(required=True)


class _TupleParams(Schema):
    pair = fields.Tuple((fields.Integer(), fields.String(validate=validate.Length(max=2))))
    inner = fields.Nested(_Pair, allow_none=True)
    many = fields.List(fields.Nested(_Pair))


def test_tuples_become_prefix_items_with_the_same_meaning() -> None:
    published = post_schema(_TupleParams)
    components = params_components(published, "t")
    params = components["t.Params"]["properties"]
    assert "items" not in params["pair"]
    assert params["pair"]["prefixItems"] == [
        {"type": "integer"}, {"type": "string", "maxLength": 2}
    ]
    assert params["inner"]["anyOf"][0] == {"$ref": "#/components/schemas/t._Pair"}
    # Both validators agree on what a POST body may be.
    openapi = {"$defs": {}, "$ref": "#/components/schemas/t.Params",
               "components": {"schemas": components}}
    new, old = Draft202012Validator(openapi), Draft7Validator(published)
    for body in (
        {}, {"pair": [1, "ab"]}, {"pair": [1, "abc"]}, {"pair": [1]}, {"pair": ["x", "a"]},
        {"pair": [1, "a", 3]}, {"inner": None}, {"inner": {}}, {"inner": {"a": 1}},
        {"many": [{"a": 1}, {"a": "x"}]}, {"other": 1},
    ):
        assert new.is_valid(body) == old.is_valid(body), body


def test_ref_siblings_draft_07_ignores_are_dropped() -> None:
    published = {
        "definitions": {
            "Params": {"type": "object", "properties": {
                "p": {"title": "p", "$ref": "#/definitions/P", "minimum": 3},
            }},
            "P": {"type": "object"},
        }
    }
    components = params_components(published, "x")
    assert components["x.Params"]["properties"]["p"] == {
        "title": "p", "$ref": "#/components/schemas/x.P"
    }


# -- several trees, mounts and switches ---------------------------------------


def test_title_and_version_default_to_the_apps_name_and_1(make_app: MakeApp) -> None:
    app = make_app((BaseExampleJob, EXAMPLE_JOBS, {}))
    info = document(app.test_client())["info"]
    assert (info["title"], info["version"]) == (app.name, "1")
    assert app.config["SPACEWALK_API_TITLE"] is None
    assert app.config["SPACEWALK_API_VERSION"] == "1"


def test_title_and_version_come_from_config_or_keywords(make_app: MakeApp) -> None:
    app = make_app(
        (BaseExampleJob, EXAMPLE_JOBS, {"url_prefix": "/a", "api_title": "Reports"}),
        (DeepRoot, DEEP_JOBS, {"url_prefix": "/a"}),
        (ApiRoot, API_JOBS, {"url_prefix": "/b", "api_version": "2.3.0"}),
        SPACEWALK_API_TITLE="Jobs of ACME",
        SPACEWALK_API_VERSION="7",
    )
    client = app.test_client()
    info = document(client, "/a/openapi.json")["info"]
    # several trees at one prefix: each title once, in their order
    assert (info["title"], info["version"]) == ("Reports, Jobs of ACME", "7")
    info = document(client, "/b/openapi.json")["info"]
    assert (info["title"], info["version"]) == ("Jobs of ACME", "2.3.0")
    with client.get("/b/docs") as page:
        assert "<title>Jobs of ACME</title>" in page.get_data(as_text=True)


def test_several_trees_at_one_prefix_share_one_document(make_app: MakeApp) -> None:
    app = make_app(
        (BaseExampleJob, EXAMPLE_JOBS, {"url_prefix": "/api"}),
        (DeepRoot, DEEP_JOBS, {"url_prefix": "/api"}),
        (ApiRoot, API_JOBS, {"url_prefix": "/other"}),
    )
    client = app.test_client()
    doc = document(client, "/api/openapi.json")
    OpenAPIV31SpecValidator(doc).validate()
    roots = {path.split("/")[2] for path in doc["paths"]}
    assert roots == {"examples", "deep"}
    other = document(client, "/other/openapi.json")
    assert {path.split("/")[2] for path in other["paths"]} == {"svc"}
    assert documented_pairs(doc) | documented_pairs(other) == served_pairs(app)
    assert client.get("/openapi.json").status_code == 404
    # one docs blueprint per prefix
    assert app.extensions["spacewalk_docs"] == {
        "/api": "spacewalk-docs-0", "/other": "spacewalk-docs-1"
    }


def test_docs_of_prefixes_that_look_alike_stay_apart(make_app: MakeApp) -> None:
    # "/docs" + root "x" and prefix "/x"; "/a_b" and "/a/b"
    app = make_app(
        (BaseExampleJob, EXAMPLE_JOBS, {"url_prefix": "/docs"}),
        (DeepRoot, DEEP_JOBS, {"url_prefix": "/examples"}),
        (ApiRoot, API_JOBS, {"url_prefix": "/a_b"}),
        (BaseExampleJob, EXAMPLE_JOBS, {"url_prefix": "/a/b"}),
    )
    client = app.test_client()
    for prefix in ("/docs", "/examples", "/a_b", "/a/b"):
        assert status(client, f"{prefix}/docs") == 200, prefix
        paths = document(client, f"{prefix}/openapi.json")["paths"]
        assert all(path.startswith(f"{prefix}/") for path in paths), prefix


def test_a_tree_that_hides_its_docs_is_left_out(make_app: MakeApp) -> None:
    app = make_app(
        (BaseExampleJob, EXAMPLE_JOBS, {}),
        (DeepRoot, DEEP_JOBS, {"expose_docs": False}),
    )
    doc = document(app.test_client())
    assert {path.split("/")[1] for path in doc["paths"]} == {"examples"}


def test_expose_docs_false_serves_neither(make_app: MakeApp) -> None:
    app = make_app(SPACEWALK_EXPOSE_DOCS=False)
    client = app.test_client()
    for url in ("/openapi.json", "/docs", "/docs/swagger-ui.css"):
        assert client.get(url).status_code == 404
    assert app.config["SPACEWALK_EXPOSE_DOCS"] is False
    assert make_app().config["SPACEWALK_EXPOSE_DOCS"] is True  # the default, written back


def test_script_root_reaches_servers_and_links(make_app: MakeApp) -> None:
    client = make_app().test_client()
    mounted = document(client, base_url="http://localhost/mount")
    assert mounted["servers"] == [{"url": "/mount"}]
    assert document(client)["servers"] == [{"url": "/"}]  # cached per script root
    assert document(client, base_url="http://localhost/mount")["servers"] == [{"url": "/mount"}]
    page = client.get("/docs", base_url="http://localhost/mount").get_data(as_text=True)
    links = _DocsLinks.of(page)
    assert links and all(link.startswith("/mount/") for link in links)


def test_the_document_is_built_once_per_script_root(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_spacewalk.web import docs

    built: list[str] = []

    def counting(states: Any, server_url: str = "/") -> dict[str, Any]:
        built.append(server_url)
        return openapi_document(states, server_url)

    monkeypatch.setattr(docs, "openapi_document", counting)
    client = make_app().test_client()
    for _ in range(2):
        document(client)
        document(client, base_url="http://localhost/mount")
    assert built == ["/", "/mount"]


# -- the docs page --------------------------------------------------------------


class _DocsLinks(HTMLParser):
    """Every src and href of a page, and the document URL its script loads."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.scripts.append(data)

    @classmethod
    def of(cls, page: str) -> list[str]:
        parser = cls()
        parser.feed(page)
        # one script that is data, not code: the Content-Security-Policy
        # runs no inline script
        [script] = parser.scripts
        config = json.loads(script)
        assert config["validatorUrl"] is None  # no call to validator.swagger.io
        parser.links.append(config["url"])
        return parser.links


def test_docs_page_and_every_asset_load_from_the_app(make_app: MakeApp) -> None:
    client = make_app(SPACEWALK_URL_PREFIX="/api").test_client()
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "http://" not in page and "https://" not in page
    assert '<script type="application/json" id="swagger-ui-config">' in page
    links = _DocsLinks.of(page)
    assert "/api/openapi.json" in links and len(links) == 5
    for link in links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, link
        with client.get(link) as asset:  # a file: closed after
            assert asset.status_code == 200, link
            max_age = asset.cache_control.max_age
            text = asset.get_data()
        if link.startswith("/api/docs/spacewalk-docs"):
            assert asset.cache_control.no_cache  # ours: revalidated
        elif link.startswith("/api/docs/"):
            assert max_age and max_age >= 3600
            # and what the asset itself points at (source maps)
            for ref in re.findall(rb"sourceMappingURL=([\w.-]+)", text):
                target = link.rsplit("/", 1)[0] + "/" + ref.decode()
                assert status(client, target) == 200, target


def test_docs_page_has_the_consoles_security_headers(make_app: MakeApp) -> None:
    client = make_app().test_client()
    response = client.get("/docs")
    policy = response.headers["Content-Security-Policy"]
    assert policy == CONSOLE_POLICY  # one policy for both pages
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["frame-ancestors"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    with client.get("/docs/spacewalk-docs.js") as script:
        assert script.status_code == 200 and script.mimetype == "text/javascript"
        assert script.headers["X-Content-Type-Options"] == "nosniff"


def test_only_the_pages_assets_are_served(make_app: MakeApp) -> None:
    client = make_app().test_client()
    for name in ("index.html", "swagger-initializer.js", "../__init__.py", "nope.js"):
        response = client.get(f"/docs/{name}")
        assert response.status_code == 404, name
        assert response.get_json()["code"] == 404
    assert all(status(client, f"/docs/{name}") == 200 for name in ASSETS)


def test_bundled_swagger_ui_renders_openapi_3_1() -> None:
    # Swagger UI renders OpenAPI 3.1 from version 5 on; swagger-ui-bundle
    # 1.x (Swagger UI 4) refuses the document.
    from swagger_ui_bundle import swagger_ui_path

    version = re.search(r"swagger-ui-(\d+)\.", str(swagger_ui_path))
    assert version and int(version[1]) >= 5


# -- flask spacewalk openapi ----------------------------------------------------


def test_cli_prints_the_document(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app(SPACEWALK_EXPOSE_DOCS=False)  # published even when not served
    runner = app.test_cli_runner()
    result = runner.invoke(args=["spacewalk", "openapi"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc == openapi_document(list(app.extensions["spacewalk"].values()))
    assert result.output.startswith('{\n  "openapi": "3.1.0"')
    one_line = runner.invoke(args=["spacewalk", "openapi", "--indent", "0"])
    assert one_line.output.count("\n") == 1 and json.loads(one_line.output) == doc
    target = tmp_path / "openapi.json"
    written = runner.invoke(args=["spacewalk", "openapi", "--output", str(target)])
    assert written.exit_code == 0 and written.output == ""
    assert json.loads(target.read_text(encoding="utf-8")) == doc


def test_cli_chooses_a_prefix(make_app: MakeApp) -> None:
    app = make_app(
        (BaseExampleJob, EXAMPLE_JOBS, {"url_prefix": "/a"}),
        (DeepRoot, DEEP_JOBS, {"url_prefix": "/b"}),
    )
    runner = app.test_cli_runner()
    result = runner.invoke(args=["spacewalk", "openapi"])
    assert result.exit_code == 2 and "--prefix" in result.output and "'/b'" in result.output
    result = runner.invoke(args=["spacewalk", "openapi", "--prefix", "b/"])
    assert result.exit_code == 0, result.output
    assert all(path.startswith("/b/deep/") for path in json.loads(result.output)["paths"])
    result = runner.invoke(args=["spacewalk", "openapi", "--prefix", "/c"])
    assert result.exit_code == 2 and "no tree at prefix '/c'" in result.output


# -- schemathesis on the example service ----------------------------------------


@pytest.fixture
def example_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Flask]:
    """The example service, as ``make run`` serves it; POSTed jobs are only queued."""
    from examples.app import create_app

    monkeypatch.setenv("FLASK_SPACEWALK_DATASTORE_URL", f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    monkeypatch.setenv("FLASK_SPACEWALK_RUN_INLINE", "false")
    app = create_app()
    yield app
    for state in app.extensions["spacewalk"].values():
        state.close()


#: Every answer must be no 5xx and exactly as documented.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_example_service_answers_within_its_document(
    example_app: Flask, mode: GenerationMode
) -> None:
    # Each operation in turn, a bounded number of cases each. (schemathesis's
    # own pytest loaders rely on a pytest attribute that pytest 9 dropped.)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", example_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(served_pairs(example_app))
    for operation in operations:
        raw = operation.definition.raw
        if mode is GenerationMode.NEGATIVE and not ({"parameters", "requestBody"} & set(raw)):
            continue  # nothing in the request to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=10, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        answers_as_documented()

    # Random uuids only find 404s: the answers about a stored job too.
    by_label = {operation.label: operation for operation in operations}
    created = by_label["POST /examples/fizz_buzz/job"].Case(body={"n": 3})
    uuid = created.call_and_validate(checks=CHECKS).json()["uuid"]
    for kind in ("progress", "info", "data", "dump"):
        case = by_label[f"GET /examples/{kind}/{{uuid}}"].Case(path_parameters={"uuid": uuid})
        response = case.call_and_validate(checks=CHECKS)
        assert response.status_code == 200, kind
