"""``<root>/console``: the job tree, forms and live jobs in a browser.

The page is a small HTML shell; the console itself is vanilla JavaScript
(ES modules) and CSS shipped in ``static/console/`` and served by the tree's
own blueprint, so the tree's view decorators (the app's auth) and JSON
errors apply to it as to the API, and it works on a closed network: no CDN,
no build step. Everything the scripts show comes from the API (discovery,
post-schema, POST, progress with ``If-None-Match``, info, data, dump for
whether a job is running and for a retry's stored Params, when the tree
serves it, jobs, cancel, retry and the bulk actions, workers and their
drain, undrain and retire, queues and their pause and resume) and is put
on the page as text nodes, never as HTML.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from flask import Response, request, send_from_directory
from werkzeug.exceptions import NotFound

from ..runtime.status import STATUSES

if TYPE_CHECKING:
    from .state import SpacewalkState

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "STATIC", "console_routes"]

#: Where the console's files are, inside the package.
STATIC = Path(__file__).resolve().parent / "static" / "console"
#: The files served under ``<root>/console/``; nothing else is.
ASSETS = frozenset({"console.js", "form.js", "workers.js", "queues.js", "console.css"})
#: The page runs only its own files and talks only to its own origin; no
#: inline script or style, so injected markup could not run even if some
#: were ever put on the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} console</title>
<link rel="stylesheet" href="{assets}/console.css">
<link rel="icon" href="data:,">
<script type="module" src="{assets}/console.js"></script>
</head>
<body data-script-root="{script_root}" data-root="{root}" data-title="{title}"
      data-description="{description}" data-dump="{dump}" data-statuses="{statuses}"
      data-queue="{queue}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<h1><a href="#/">{title}</a> <span class="sub">job console</span></h1>
<p class="top-links"><a href="#/">Recent jobs</a> · <a href="#/workers">Workers</a>
 · <a href="#/queues">Queues</a>{docs_link}</p>
</header>
<div class="layout">
<nav id="tree" aria-label="Job tree"><h2>Jobs</h2><p>Loading the job tree…</p></nav>
<main id="main" tabindex="-1"><noscript>The console needs JavaScript; the API at
{root} works without it.</noscript></main>
</div>
</body>
</html>
"""


def console_routes(state: SpacewalkState) -> list[tuple[str, str, Callable[..., Response]]]:
    """``(rule, endpoint, view)`` of the console page and its assets, for
    the blueprint of ``state``'s tree."""
    root = state.root_path
    settings = state.settings
    docs_path = f"{state.tree.url_prefix}/docs" if settings.expose_docs else ""
    title = state.tree.root.name

    def page() -> Response:
        script_root = request.script_root
        docs = f"{script_root}{docs_path}" if docs_path else ""
        docs_link = f' · <a href="{html.escape(docs)}">API docs</a>' if docs else ""
        text = _PAGE.format(
            title=html.escape(title),
            assets=html.escape(f"{script_root}{root}/console"),
            script_root=html.escape(script_root),
            root=html.escape(f"{script_root}{root}"),
            description=html.escape(state.tree.root.description),
            docs_link=docs_link,
            dump="true" if settings.expose_dump else "false",
            statuses=" ".join(STATUSES),
            queue=html.escape(settings.queue_name),
        )
        response = Response(text, mimetype="text/html")
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.cache_control.no_cache = True
        return response

    def asset(filename: str) -> Response:
        if filename not in ASSETS:
            raise NotFound(f"no console file {filename}")
        # Revalidated on every load (ETag and Last-Modified from the file):
        # an upgrade of the package shows at once, and module imports
        # (console.js imports form.js) need no versioned URLs.
        response = send_from_directory(STATIC, filename, max_age=0)
        response.cache_control.no_cache = True
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return [
        (f"{root}/console", "console", page),
        (f"{root}/console/<path:filename>", "console_asset", asset),
    ]
