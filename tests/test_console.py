"""The console's page and files through Flask's test client: what is served,
where, under which switch and protection. tests/test_console_browser.py
drives it in a real browser."""
from __future__ import annotations

import re
import sys
from functools import wraps
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Flask, abort, request

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk.web.console import ASSETS, CONTENT_SECURITY_POLICY, STATIC

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) leaves it out
    sys.path.insert(0, str(ROOT))

from console_jobs.jobs import ConsoleRoot  # noqa: E402

EXAMPLE_JOBS = ROOT / "examples" / "jobs"
CONSOLE_JOBS = TESTS / "console_jobs"

MakeApp = Callable[..., Flask]


class _Page(HTMLParser):
    """The page's links (src, href) and its body's data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.body: dict[str, str | None] = {}
        self.inline_scripts = 0
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "body":
            self.body = dict(attrs)
        self._script = tag == "script" and not dict(attrs).get("src")

    def handle_data(self, data: str) -> None:
        if self._script and data.strip():
            self.inline_scripts += 1

    @classmethod
    def of(cls, text: str) -> _Page:
        parser = cls()
        parser.feed(text)
        return parser


def test_the_page_and_every_file_it_loads_come_from_the_app(make_app: MakeApp) -> None:
    client = make_app().test_client()
    response = client.get("/examples/console")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["Cache-Control"] == "no-cache"
    text = response.get_data(as_text=True)
    assert "http://" not in text and "https://" not in text
    page = _Page.of(text)
    assert page.inline_scripts == 0  # the CSP allows none
    assert page.body["data-root"] == "/examples"
    assert page.body["data-title"] == "Spacewalk Example"
    fetched = set()
    for link in page.links:
        if link.startswith("#") or link.startswith("data:"):
            continue
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, link
        with client.get(link) as answer:
            assert answer.status_code == 200, link
        fetched.add(link.rsplit("/", 1)[1])
    assert {"console.js", "console.css", "docs"} <= fetched
    # console.js imports form.js and queues.js itself
    script = client.get("/examples/console/console.js")
    assert script.mimetype in ("text/javascript", "application/javascript")
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-cache" in script.headers["Cache-Control"]
    imports = re.findall(r'from "\./([\w.]+)"', script.get_data(as_text=True))
    script.close()
    assert imports == ["form.js", "queues.js", "workers.js"]
    assert {"console.js", "console.css", *imports} == ASSETS


def test_names_are_escaped_and_the_script_root_is_kept(make_app: MakeApp) -> None:
    app = make_app((ConsoleRoot, CONSOLE_JOBS, {"url_prefix": "/api"}))
    client = app.test_client()
    text = client.get("/api/console_tests/console", base_url="http://localhost/mount").get_data(
        as_text=True
    )
    assert "<test>" not in text and "Console &lt;test&gt; jobs" in text
    assert "<em>" not in text
    page = _Page.of(text)
    assert page.body["data-script-root"] == "/mount"
    assert page.body["data-root"] == "/mount/api/console_tests"
    assert page.body["data-title"] == "Console <test> jobs"  # the parser unescapes
    assert "/mount/api/console_tests/console/console.js" in page.links
    assert "/mount/api/docs" in page.links


def test_every_tree_has_its_console(make_app: MakeApp) -> None:
    app = make_app((BaseExampleJob, EXAMPLE_JOBS, {}), (ConsoleRoot, CONSOLE_JOBS, {}))
    client = app.test_client()
    for root in ("/examples", "/console_tests"):
        assert client.get(f"{root}/console").status_code == 200
        with client.get(f"{root}/console/form.js") as answer:
            assert answer.status_code == 200


def test_only_the_consoles_files_are_served(make_app: MakeApp) -> None:
    client = make_app().test_client()
    for name in ("nope.js", "../console.py", "../../__init__.py", "CONSOLE.JS", ""):
        response = client.get(f"/examples/console/{name}")
        assert response.status_code == 404, name
        assert response.get_json()["code"] == 404
    for name in ASSETS:
        assert (STATIC / name).is_file()
        with client.get(f"/examples/console/{name}") as answer:
            assert answer.status_code == 200


def test_wrong_methods_are_the_apis_405(make_app: MakeApp) -> None:
    client = make_app().test_client()
    response = client.post("/examples/console")
    assert response.status_code == 405
    assert response.get_json()["code"] == 405
    assert "GET" in response.headers["Allow"]


def test_the_switch_turns_it_off(make_app: MakeApp) -> None:
    app = make_app(SPACEWALK_CONSOLE=False)
    client = app.test_client()
    for url in ("/examples/console", "/examples/console/console.js"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.get_json()["code"] == 404  # JSON, as for any unknown path
    assert app.config["SPACEWALK_CONSOLE"] is False
    assert make_app().config["SPACEWALK_CONSOLE"] is True  # the default, written back
    off = make_app((BaseExampleJob, EXAMPLE_JOBS, {"console": False}))
    assert off.test_client().get("/examples/console").status_code == 404


def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if request.headers.get("Authorization") != "Bearer sesame":
            abort(401, "a valid bearer token is required")
        return view(*args, **kwargs)

    return checked


def test_the_apis_decorators_protect_the_console(make_app: MakeApp) -> None:
    client = make_app((BaseExampleJob, EXAMPLE_JOBS, {"decorators": [require_token]})).test_client()
    for url in ("/examples/console", "/examples/console/console.js", "/examples/console/nope"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.get_json()["message"] == "a valid bearer token is required"
    token = {"Authorization": "Bearer sesame"}
    assert client.get("/examples/console", headers=token).status_code == 200
    with client.get("/examples/console/console.js", headers=token) as answer:
        assert answer.status_code == 200


def test_the_openapi_document_leaves_the_console_out(make_app: MakeApp) -> None:
    paths = make_app().test_client().get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if "/console" in path]


def test_the_scripts_never_parse_data_as_html() -> None:
    # Every node is made with createElement and filled with textContent.
    for name in ("console.js", "form.js"):
        source = (STATIC / name).read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function"):
            assert sink not in source, (name, sink)


def test_the_files_are_package_data() -> None:
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert '"static/console/*"' in setup
    assert {p.name for p in STATIC.iterdir()} == ASSETS
