"""Cross-site request forgery (flask_spacewalk/web/csrf.py): what a page of
another site can make a logged-in browser send is refused, and what curl,
servers and the app's own pages send still works."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

import pytest
from conftest import EXAMPLE_JOBS, MakeApp
from flask import Flask, abort, request
from flask.testing import FlaskClient
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import EnvironBuilder, TestResponse

from examples.jobs.examples import BaseExampleJob

FIZZ = "/examples/fizz_buzz"
#: The test client's own origin.
OWN = "http://localhost"
EVIL = "https://evil.example"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
              "text/plain", "text/plain; charset=utf-8")


@pytest.fixture
def client(make_app: MakeApp) -> FlaskClient:
    return make_app(SPACEWALK_RUN_INLINE=False).test_client()


def error(response: TestResponse, code: int) -> dict[str, Any]:
    """``response`` is a ``code`` answer in the one JSON error shape."""
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"code", "status", "message"} and body["code"] == code
    return dict(body)


def jobs(client: FlaskClient) -> list[dict[str, Any]]:
    return list(client.get("/examples/jobs").get_json()["jobs"])


def start(client: FlaskClient) -> str:
    response = client.post(f"{FIZZ}/job", json={"n": 3})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["uuid"])


def status_of(client: FlaskClient, uuid: str) -> str:
    return next(job["status"] for job in jobs(client) if job["uuid"] == uuid)


# -- the attacks of the issue ---------------------------------------------------


def test_a_cross_site_form_starts_no_job(client: FlaskClient) -> None:
    # <form method=POST action=".../job"> on another site, submitted empty
    browser = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    for content_type in FORM_TYPES:
        response = client.post(f"{FIZZ}/job", data=b"", content_type=content_type,
                               headers=browser)
        body = error(response, 403)
        assert "another site" in body["message"]
    assert jobs(client) == []


@pytest.mark.parametrize("content_type", FORM_TYPES)
@pytest.mark.parametrize("data", [b"", b"n=3", b'{"n": 3}'])
def test_form_content_types_are_415_on_every_unsafe_route(
    client: FlaskClient, content_type: str, data: bytes
) -> None:
    # An older browser sends neither Origin nor Sec-Fetch-Site with a form:
    # its content type gives it away, even with an empty body.
    uuid = start(client)
    for method, path in (
        ("POST", f"{FIZZ}/job"),
        ("POST", f"/examples/cancel/{uuid}"),
        ("DELETE", f"/examples/job/{uuid}"),
        ("POST", "/examples/nope"),
        ("POST", "/examples/leaves"),
    ):
        response = client.open(path, method=method, data=data, content_type=content_type)
        body = error(response, 415)
        assert "application/json" in body["message"], (method, path)
    assert [job["uuid"] for job in jobs(client)] == [uuid]
    assert status_of(client, uuid) == "queued"  # not cancelled


def test_a_cross_site_urlencoded_post_cancels_nothing(client: FlaskClient) -> None:
    uuid = start(client)
    for headers in ({"Origin": EVIL}, {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}):
        for method, path in (("POST", f"/examples/cancel/{uuid}"),
                             ("DELETE", f"/examples/job/{uuid}")):
            response = client.open(path, method=method, data=b"x=1", headers=headers,
                                   content_type="application/x-www-form-urlencoded")
            error(response, 403)
            # nor with a JSON type (a fetch without credentials, or an old browser)
            error(client.open(path, method=method, json={}, headers=headers), 403)
    assert status_of(client, uuid) == "queued"


# -- what a browser says about where a request comes from ------------------------

CASES = [
    # no browser: curl, servers
    ({}, 201),
    ({"Sec-Fetch-Site": "same-origin"}, 201),
    ({"Sec-Fetch-Site": "same-origin", "Origin": OWN}, 201),
    # a same-origin POST from a page with Referrer-Policy: no-referrer
    ({"Sec-Fetch-Site": "same-origin", "Origin": "null"}, 201),
    # a typed URL or bookmark: the user's own doing
    ({"Sec-Fetch-Site": "none"}, 201),
    # a browser without Sec-Fetch-Site (Safari before 16.4)
    ({"Origin": OWN}, 201),
    ({"Origin": "HTTP://LOCALHOST"}, 201),
    ({"Origin": EVIL}, 403),
    ({"Origin": "http://localhost:8080"}, 403),  # another port is another origin
    ({"Origin": "https://localhost"}, 403),  # another scheme too
    # sandboxed iframes, file:// pages, redirects across origins
    ({"Origin": "null"}, 403),
    ({"Sec-Fetch-Site": "cross-site", "Origin": "null"}, 403),
    ({"Sec-Fetch-Site": "cross-site", "Origin": EVIL}, 403),
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    # the browser's word wins over an Origin that looks like ours
    ({"Sec-Fetch-Site": "cross-site", "Origin": OWN}, 403),
    # a sibling subdomain: another origin, refused unless CORS allows it
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://app.localhost"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),
    ({"Sec-Fetch-Site": "a-value-from-the-future", "Origin": EVIL}, 403),
]


@pytest.mark.parametrize(("headers", "code"), CASES)
def test_where_a_post_comes_from(client: FlaskClient, headers: dict[str, str], code: int) -> None:
    response = client.post(f"{FIZZ}/job", json={"n": 3}, headers=headers)
    if code == 403:
        error(response, 403)
        assert jobs(client) == []
    else:
        assert response.status_code == code, response.get_json()


@pytest.mark.parametrize(("headers", "code"), CASES)
def test_safe_methods_are_never_refused(
    client: FlaskClient, headers: dict[str, str], code: int
) -> None:
    # a cross-site page may still link to the console or read nothing
    for path in ("/examples/leaves", "/examples/console", "/examples/jobs"):
        for method in ("GET", "HEAD", "OPTIONS"):
            response = client.open(path, method=method, headers=headers)
            assert response.status_code == 200, (method, path, headers)


def test_the_seed_readmes_curl_requests_still_work(client: FlaskClient) -> None:
    # curl -X POST -H 'Content-Type: application/json' -d '{"n": 20}' .../job
    response = client.post(f"{FIZZ}/job", data=b'{"n": 20}', content_type="application/json")
    assert response.status_code == 201
    # curl -X POST .../job: no body, no Content-Type
    environ = EnvironBuilder(path=f"{FIZZ}/job", method="POST").get_environ()
    environ.pop("CONTENT_TYPE", None)
    response = client.open(environ)
    assert response.status_code == 201, response.get_json()
    uuid = response.get_json()["uuid"]
    assert client.post(f"/examples/cancel/{uuid}").status_code == 200


def test_unknown_paths_and_methods_are_403_too(client: FlaskClient) -> None:
    # The check runs before routing: a cross-site page learns nothing about
    # which paths exist.
    cross = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
    for method, path in (("POST", "/examples/nope"), ("POST", "/examples/leaves"),
                         ("PUT", f"{FIZZ}/job"), ("PATCH", "/examples/"), ("FOO", "/examples")):
        error(client.open(path, method=method, headers=cross), 403)
    # from the same origin they are what they always were
    error(client.post("/examples/nope", headers={"Origin": OWN}), 404)
    error(client.post("/examples/leaves", headers={"Origin": OWN}), 405)


def test_a_large_form_body_is_413_first(make_app: MakeApp) -> None:
    # size, then content type: the order of the POST checks
    client = make_app(SPACEWALK_MAX_CONTENT_LENGTH=100).test_client()
    response = client.post(f"{FIZZ}/job", data=b"x" * 500, content_type="text/plain")
    error(response, 413)
    response = client.post(f"{FIZZ}/job", data=b"x" * 50, content_type="text/plain")
    error(response, 415)


def test_the_apps_other_routes_are_left_alone(make_app: MakeApp) -> None:
    app = make_app()

    @app.post("/form")
    def form() -> dict[str, str]:
        return {"got": request.form["x"]}

    response = app.test_client().post("/form", data={"x": "1"}, headers={"Origin": EVIL})
    assert response.get_json() == {"got": "1"}


# -- origins CORS allows ---------------------------------------------------------


def test_origins_cors_allows_may_post(make_app: MakeApp) -> None:
    client = make_app(SPACEWALK_CORS_ORIGINS=["https://a.example", "http://app.localhost"],
                      SPACEWALK_RUN_INLINE=False).test_client()
    for headers in (
        {"Origin": "https://a.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://a.example"},
        {"Origin": "http://app.localhost", "Sec-Fetch-Site": "same-site"},
    ):
        response = client.post(f"{FIZZ}/job", json={"n": 3}, headers=headers)
        assert response.status_code == 201, headers
        assert response.headers["Access-Control-Allow-Origin"] == headers["Origin"]
        uuid = response.get_json()["uuid"]
        assert client.post(f"/examples/cancel/{uuid}", headers=headers).status_code == 200
    for headers in ({"Origin": "https://b.example", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "https://b.example"}, {"Origin": "null"}):
        error(client.post(f"{FIZZ}/job", json={"n": 3}, headers=headers), 403)
    # an allowed origin still cannot send a form
    response = client.post(f"{FIZZ}/job", data=b"", content_type="text/plain",
                           headers={"Origin": "https://a.example"})
    error(response, 415)


def test_any_origin_may_post_json_but_nothing_a_form_can_send(make_app: MakeApp) -> None:
    # Under "*" a credentialed request cannot pass a preflight, so JSON,
    # which needs one, carries no cookie; a request without a body needs
    # none, so it could carry one.
    client = make_app(SPACEWALK_CORS_ORIGINS="*").test_client()
    cross = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
    assert client.post(f"{FIZZ}/job", json={"n": 3}, headers=cross).status_code == 201
    assert client.post(f"{FIZZ}/job", data=b"{}", content_type="application/vnd.x+json",
                       headers=cross).status_code == 201
    error(client.post(f"{FIZZ}/job", headers=cross), 403)
    error(client.post(f"{FIZZ}/job", data=b"", content_type="text/plain", headers=cross), 403)
    error(client.post(f"{FIZZ}/job", json={}, headers={"Origin": "null"}), 403)


# -- behind a proxy --------------------------------------------------------------


def test_behind_a_proxy_the_public_origin_is_the_own_one(make_app: MakeApp) -> None:
    app = make_app()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "jobs.example",
                 "Origin": "https://jobs.example"}
    # Without ProxyFix werkzeug sees the proxy's request, so an older
    # browser's Origin looks foreign...
    error(app.test_client().post(f"{FIZZ}/job", json={}, headers=forwarded), 403)
    # ...while Sec-Fetch-Site, the browser's own word, needs no host at all.
    response = app.test_client().post(
        f"{FIZZ}/job", json={}, headers=forwarded | {"Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 201
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
    assert app.test_client().post(f"{FIZZ}/job", json={}, headers=forwarded).status_code == 201
    error(app.test_client().post(f"{FIZZ}/job", json={},
                                 headers=forwarded | {"Origin": "http://jobs.example"}), 403)


# -- with the app's auth ---------------------------------------------------------


def require_session(view: Callable[..., Any]) -> Callable[..., Any]:
    """Cookie auth, as a logged-in browser carries it to any site's request."""

    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if request.cookies.get("session") != "alice":
            abort(401, "log in first")
        return view(*args, **kwargs)

    return checked


def test_a_logged_in_browser_is_protected(make_app: MakeApp) -> None:
    app: Flask = make_app((BaseExampleJob, EXAMPLE_JOBS, {"decorators": [require_session]}))
    client = app.test_client()
    client.set_cookie("session", "alice")
    cross = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
    # before the auth: refused whether or not it would have passed
    error(client.post(f"{FIZZ}/job", headers=cross), 403)
    error(app.test_client().post(f"{FIZZ}/job", headers=cross), 403)
    error(client.post(f"{FIZZ}/job", data=b"", content_type="text/plain"), 415)
    assert jobs(client) == []
    # the app's own page, and curl with the cookie
    own = {"Origin": OWN, "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"{FIZZ}/job", json={"n": 1}, headers=own).status_code == 201
    assert client.post(f"{FIZZ}/job").status_code == 201
    error(app.test_client().post(f"{FIZZ}/job", headers=own), 401)
