"""``<prefix>/openapi.json`` and the interactive docs at ``<prefix>/docs``.

One small blueprint per (app, prefix), whatever the number of trees there.
The docs page is Swagger UI from the files the ``swagger-ui-bundle-v2``
package ships (import name ``swagger_ui_bundle``), served by the app itself:
no CDN, so it works on a closed network. It is started by our own
``static/docs/spacewalk-docs.js`` (no inline script, so the console's CSP
fits), which shows the document's descriptions as text, never as markup.
"""
from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request, send_from_directory, url_for
from werkzeug.exceptions import HTTPException, NotFound

from .console import CONTENT_SECURITY_POLICY as CONSOLE_POLICY
from .http import encode, http_error, json_bytes_response
from .openapi import openapi_document
from .state import states_at

if TYPE_CHECKING:
    from .state import SpacewalkState, ViewDecorator

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "INIT_SCRIPT", "docs_states", "register_docs"]

#: The bundled files the page uses, with their source maps (browser tools
#: ask for those); nothing else of the bundle is served.
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui.css.map",
        "swagger-ui-bundle.js",
        "swagger-ui-bundle.js.map",
        "favicon-32x32.png",
        "favicon-16x16.png",
    }
)
#: The assets' cache lifetime: their URLs carry the bundle's version.
ASSET_MAX_AGE = 7 * 24 * 3600
#: Our own script, which starts Swagger UI: served beside the bundle's files.
INIT_SCRIPT = "spacewalk-docs.js"
STATIC = Path(__file__).resolve().parent / "static" / "docs"
#: The console's (see console.py): the page runs only files of this origin,
#: no inline script, and no other site may frame it. Swagger UI fits in it:
#: it sets styles through the DOM, which ``style-src`` does not govern, and
#: draws its icons from ``data:`` URLs.
CONTENT_SECURITY_POLICY = CONSOLE_POLICY

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script type="application/json" id="swagger-ui-config">{config}</script>
<script src="{js}"></script>
<script src="{init}"></script>
</body>
</html>
"""


def _bundle() -> tuple[str, str]:
    """The bundle's directory and its Swagger UI version."""
    from swagger_ui_bundle import swagger_ui_path

    path = str(swagger_ui_path)
    match = re.search(r"swagger-ui-([0-9][^/\\]*)$", path)
    return path, match.group(1) if match else "0"


def docs_states(app: Flask, prefix: str) -> list[SpacewalkState]:
    """The trees at ``prefix`` whose document is served."""
    return states_at(app, prefix, lambda settings: settings.expose_docs)


def register_docs(app: Flask, prefix: str, decorators: Sequence[ViewDecorator] = ()) -> None:
    """Serve the document and docs of the trees at ``prefix``, once per app.

    ``decorators`` wrap the routes as they wrap a tree's: those of the first
    tree at ``prefix`` that serves its docs apply.
    """
    # Numbered: a name made from the prefix could be a tree's blueprint name
    # or another prefix's ("/a_b", "/a/b").
    served: dict[str, str] = app.extensions.setdefault("spacewalk_docs", {})
    if prefix not in served:
        served[prefix] = f"spacewalk-docs-{len(served)}"
        app.register_blueprint(_make_blueprint(served[prefix], prefix, decorators))


def _make_blueprint(name: str, prefix: str, decorators: Sequence[ViewDecorator]) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=prefix or None)

    def get(rule: str) -> Callable[[Callable[..., Response]], Any]:
        def register(view: Callable[..., Response]) -> Callable[..., Response]:
            endpoint = view.__name__
            view = _with_options(view)
            for decorator in decorators:
                view = decorator(view)
            # OPTIONS through the decorators, as under the tree (views.py)
            bp.add_url_rule(
                rule, endpoint, view, methods=["GET", "OPTIONS"], provide_automatic_options=False
            )
            return view

        return register

    bundle_dir, version = _bundle()
    #: Encoded documents by script root: the trees cannot change once the
    #: app serves requests.
    cache: dict[str, bytes] = {}

    @get("/openapi.json")
    def openapi_json() -> Response:
        root = request.script_root
        body = cache.get(root)
        if body is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            body = cache[root] = encode(openapi_document(docs_states(app, prefix), root or "/"))
        return json_bytes_response(body)

    @get("/docs")
    def page() -> Response:
        def asset(filename: str) -> str:
            return url_for(f"{name}.asset", filename=filename, v=version)

        states = docs_states(current_app, prefix)
        title = ", ".join(dict.fromkeys(s.settings.api_title for s in states)) or "Spacewalk"
        config = {
            "url": url_for(f"{name}.openapi_json"),
            "dom_id": "#swagger-ui",
            # Swagger UI would send the document to validator.swagger.io.
            "validatorUrl": None,
            "deepLinking": True,
        }
        # No "<" at all: nothing can end the script element early or open
        # a comment in it ("</script>", "<!--"); JSON reads the escape back.
        script_config = json.dumps(config).replace("<", "\\u003c")
        text = _PAGE.format(
            title=html.escape(title),
            css=html.escape(asset("swagger-ui.css")),
            icon=html.escape(asset("favicon-32x32.png")),
            js=html.escape(asset("swagger-ui-bundle.js")),
            init=html.escape(asset(INIT_SCRIPT)),
            config=script_config,
        )
        response = Response(text, mimetype="text/html")
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        # for browsers that know no frame-ancestors
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @get("/docs/<path:filename>")
    def asset(filename: str) -> Response:
        if filename == INIT_SCRIPT:
            # Versioned by the bundle only: revalidated on every load.
            response = send_from_directory(STATIC, filename, max_age=0)
            response.cache_control.no_cache = True
        elif filename in ASSETS:
            response = send_from_directory(bundle_dir, filename, max_age=ASSET_MAX_AGE)
        else:
            raise NotFound(f"no docs asset {filename}")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    bp.register_error_handler(HTTPException, http_error)
    return bp


def _with_options(view: Callable[..., Response]) -> Callable[..., Response]:
    """``view``, answering OPTIONS itself (inside the decorators)."""

    @functools.wraps(view)
    def answer(*args: Any, **kwargs: Any) -> Response:
        if request.method == "OPTIONS":
            return Response(status=200, headers={"Allow": "GET, HEAD, OPTIONS"})
        return view(*args, **kwargs)

    return answer
