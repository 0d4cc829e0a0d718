"""The generated API: one blueprint per job tree (SPEC section 3).

Discovery and post-schema answers are encoded once, when the blueprint is
built. Every answer under the tree's root path is JSON, errors included: a
catch-all rule of the blueprint takes the paths and methods no other rule
takes, so even routing's 404 and 405 reach the blueprint's error handlers,
and OPTIONS reaches the view decorators. Unsafe requests a page of another
site could make a browser send are refused first (:mod:`.csrf`).
"""
from __future__ import annotations

import json
import logging
import math
import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    default_exceptions,
)
from werkzeug.routing import Map, Rule

from . import listing
from .csrf import check_request
from .errors import (
    DatastoreUnavailable,
    InvalidJobDocument,
    JobUpdateConflict,
    ParamsInvalid,
    QueueUnavailable,
    SpacewalkError,
)
from .runtime.cancel import CancelAnswer
from .runtime.job import NO_RESULT, RuntimeJob, make_key
from .runtime.lifecycle import Lifecycle, cancel_job
from .tree import Branch, Leaf

if TYPE_CHECKING:
    from .extension import SpacewalkState

log = logging.getLogger(__name__)

#: A uuid exactly as issued: lower-case hex in the canonical groups.
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: JSON's white space: a body of only these means ``{}``.
JSON_WHITESPACE = b" \t\r\n"
LOG_FIELDS = ("events", "errors", "warnings")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as a JSON response, keys in the order given."""
    return json_bytes_response(encode(data), status, headers)


def json_bytes_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status=status, headers=headers, mimetype="application/json")


def encode(data: Any) -> bytes:
    """``data`` as compact UTF-8 JSON text with a trailing newline.

    Whatever a stored document holds (a ZeroG writer, or a version before
    the door checked bodies, may have stored anything), the answer is JSON:
    a lone surrogate, which UTF-8 cannot encode, is written as its ASCII
    escape (``\\ud800``), and NaN or an infinity, which JSON has no word
    for, as ``null``.
    """
    try:
        return (json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(data, allow_nan=False) + "\n").encode()
    except ValueError:  # NaN or an infinity
        return encode(_finite(data))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def error_response(
    code: int,
    message: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The one error shape: ``{code, status, message[, errors]}``."""
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return json_response(body, code, headers)


class Views:
    """The view functions of one tree, bound to its state."""

    def __init__(self, state: SpacewalkState):
        self.state = state
        self._fast_progress = {
            job_type: cls.progress is RuntimeJob.progress and cls.info is RuntimeJob.info
            for job_type, cls in ((c.JOB_TYPE, c) for c in state.registry.get_registered_classes())
        }
        #: ``GET R/jobs``.
        self.jobs = listing.jobs_view(state)

    # -- discovery ---------------------------------------------------------

    @staticmethod
    def fixed(body: bytes) -> Callable[[], Response]:
        """A view that answers the same JSON every time."""
        return lambda: json_bytes_response(body)

    @staticmethod
    def branch_not_job(branch: Branch) -> Callable[[], Response]:
        def view() -> Response:
            raise BadRequest(f"{branch.path} is a branch, not a job")

        return view

    def view(self, route: Route) -> Callable[..., Response]:
        """The view function of one entry of :func:`routes`."""
        node = route.node
        if isinstance(node, Branch):
            if route.kind == "branches":
                return self.fixed(encode([_branch_item(b) for b in node.branches]))
            if route.kind == "leaves":
                return self.fixed(encode([_leaf_item(leaf) for leaf in node.leaves]))
            return self.branch_not_job(node)
        if isinstance(node, Leaf):
            if route.kind == "post_schema":
                return self.fixed(encode({"postSchema": self.state.schemas[node.path].post_schema}))
            return self.create_job(node)
        view: Callable[..., Response] = getattr(self, route.kind)
        return view

    # -- starting a job ----------------------------------------------------

    def create_job(self, leaf: Leaf) -> Callable[[], Response]:
        validator = self.state.schemas[leaf.path].validator

        def view() -> Response:
            params = validator.validate(read_json_body(self.state.settings.max_content_length))
            datastore, queue = self.state.connections()
            job = leaf.cls(datastore, queue, **params)
            lifecycle = Lifecycle(datastore, queue, self.state.registry)
            if self.state.run_inline(current_app):
                # a worker's run, in the request: users' tests need no worker
                lifecycle.run_inline(job)
            else:
                lifecycle.create(job)
            location = f"{request.script_root}{self.state.root_path}/progress/{job.uuid}"
            return json_response({"uuid": job.uuid}, 201, {"Location": location})

        return view

    # -- following a job ---------------------------------------------------

    def _document(self, uuid: str) -> tuple[dict[str, Any], int]:
        if not UUID_PATTERN.fullmatch(uuid):
            raise NotFound(f"no job {uuid}")
        datastore, _ = self.state.connections()
        document, cas = datastore.read_with_cas(make_key(uuid))
        if not isinstance(document, dict) or document.get("jobType") not in self.state.registry:
            raise NotFound(f"no job {uuid}")
        return document, cas

    def _job(self, document: dict[str, Any], cas: int) -> RuntimeJob:
        datastore, queue = self.state.connections()
        document["cas"] = cas
        return self.state.registry.make_job(document, datastore, queue)

    def progress(self, uuid: str) -> Response:
        document, cas = self._document(uuid)
        headers = _validators(cas)
        if _not_modified(headers):
            return _304(headers)
        if self._fast_progress[document["jobType"]]:
            return json_response(_progress(document), headers=headers)
        return json_response(self._job(document, cas).progress(), headers=headers)

    def info(self, uuid: str) -> Response:
        document, cas = self._document(uuid)
        headers = _validators(cas)
        if _not_modified(headers):
            return _304(headers)
        if self._fast_progress[document["jobType"]]:
            answer = _progress(document)
            answer.update((name, document.get(name, [])) for name in LOG_FIELDS)
            return json_response(answer, headers=headers)
        return json_response(self._job(document, cas).info(), headers=headers)

    def data(self, uuid: str) -> Response:
        document, cas = self._document(uuid)
        headers = _validators(cas)
        if _not_modified(headers):
            return _304(headers)
        return json_response(self._job(document, cas).get_data(), headers=headers)

    def dump(self, uuid: str) -> Response:
        show_logs = request.args.get("showLogs", "false").lower()
        if show_logs not in ("true", "false"):
            raise BadRequest("showLogs must be true or false")
        document, cas = self._document(uuid)
        headers = _validators(cas)
        if _not_modified(headers):
            return _304(headers)
        document["cas"] = cas
        if "completeness" in document:
            document["completeness"] = float(document["completeness"])
        if show_logs == "false":
            for name in LOG_FIELDS:
                document.pop(name, None)
        return json_response(document, headers=headers)

    def cancel(self, uuid: str) -> Response:
        """200 cancelled (never runs), 202 cancelling (running), 409 finished."""
        document, cas = self._document(uuid)
        answer = cancel_job(self._job(document, cas))
        if answer is CancelAnswer.FINISHED:
            raise Conflict(f"job {uuid} already has its result; nothing to cancel")
        status = 200 if answer is CancelAnswer.CANCELLED else 202
        return json_response({"uuid": uuid, "status": answer.value}, status)


def _validators(cas: int) -> dict[str, str]:
    """The ``ETag`` of a job's answers: its document's cas, which every write
    changes, read with the document (no hashing); ``no-cache`` so that no
    cache serves a stored copy without asking."""
    return {"ETag": f'"{cas}"', "Cache-Control": "no-cache"}


def _not_modified(headers: dict[str, str]) -> bool:
    """Whether the request's ``If-None-Match`` matches the ETag in
    ``headers`` (weak comparison, ``*`` and lists included, RFC 9110 13.1.2)."""
    if "If-None-Match" not in request.headers:
        return False
    return request.if_none_match.contains_weak(headers["ETag"][1:-1])


def _304(headers: dict[str, str]) -> Response:
    response = Response(status=304, headers=headers)
    del response.headers["Content-Type"]  # no body, so no type
    return response


def _progress(document: dict[str, Any]) -> dict[str, Any]:
    """``RuntimeJob.progress()`` of a stored document, without loading it."""
    return {
        "completeness": float(document.get("completeness", 0)),
        "result": document.get("resultCode", NO_RESULT),
    }


def read_json_body(limit: int) -> dict[str, Any]:
    """The POST body as a JSON object, checked in SPEC order.

    Size (413), content type (415), JSON syntax and type (400); an empty
    body means ``{}``.
    """
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    try:
        raw = request.stream.read(limit + 1)
    except HTTPException:
        raise
    except Exception as exc:
        # The server's dechunking (a bad chunk size, data without its CRLF)
        # or a client gone mid-body: werkzeug raises OSError, gunicorn
        # exceptions of its own that this package cannot import. Nothing
        # in a read of the body is the server's fault.
        raise BadRequest(f"the body could not be read: {exc}") from exc
    if len(raw) > limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    if request.content_length is not None and len(raw) < request.content_length:
        # gunicorn marks its input terminated, so werkzeug does not check
        # the length: a client that stops sending early must not have a
        # prefix of its body taken for the whole of it.
        raise BadRequest(
            f"the body ended after {len(raw)} of the {request.content_length} bytes"
            " its Content-Length announced"
        )
    if not raw.strip(JSON_WHITESPACE):
        return {}
    mimetype = request.mimetype
    if not (
        mimetype == "application/json"
        or (mimetype.startswith("application/") and mimetype.endswith("+json"))
    ):
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: application/json), not {mimetype or 'untyped'}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {_json_type(body)}")
    # Only a \u escape makes a NUL or a lone surrogate, and only that many
    # brackets can nest that deep: most bodies need no walk.
    if b"\\u" in raw or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_storable(body)
    return body


#: The deepest nesting of arrays and objects a POST body may have, the body
#: itself being level 1. Deeper values would make the checks and the stores'
#: encoders recurse past Python's limit.
MAX_DEPTH = 100
_TOO_DEEP = f"the body is nested deeper than {MAX_DEPTH} levels of arrays and objects"
#: What no store keeps: NUL (PostgreSQL's jsonb refuses it) and lone
#: surrogates (not Unicode text: no UTF-8 encoder writes them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check_storable(body: dict[str, Any]) -> None:
    """Raise :exc:`BadRequest` for a body nested deeper than
    :data:`MAX_DEPTH` or holding a string no store can keep, in time linear
    in its size (a loop, not recursion)."""
    # (value, depth, path) where path is (key, parent path): built in O(1)
    # per value, spelled out only for the answer.
    stack: list[tuple[Any, int, Any]] = [(body, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            _check_string(value, "string", path)
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise BadRequest(_TOO_DEEP)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_string(key, "key", (key, path))
                if isinstance(item, (str, dict, list)):
                    stack.append((item, depth + 1, (key, path)))


def _check_string(text: str, what: str, path: Any) -> None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return
    keys = []
    while path:
        key, path = path
        keys.append(key)
    where = json.dumps(keys[::-1])  # ASCII: the key itself may be the culprit
    char = found.group()
    kind = "a NUL character" if char == "\x00" else "a lone surrogate"
    raise BadRequest(
        f"the body holds {kind} (\\u{ord(char):04x}) in the {what} at {where};"
        " no job store can keep it"
    )


def _parse_int(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        # Longer than Python converts (4300 digits): valid JSON, but beyond
        # any range a field accepts, like 1e999; validation says so per field.
        return float("-inf") if text.startswith("-") else float("inf")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def blueprint_name(root_path: str) -> str:
    """The blueprint name of the tree at ``root_path`` (unique per app)."""
    return "spacewalk" + re.sub(r"[^A-Za-z0-9_]", "_", root_path)


class Route(NamedTuple):
    """One rule of a tree's API: what the blueprint serves and the OpenAPI
    document describes (:func:`routes`)."""

    #: The werkzeug rule, prefix included.
    path: str
    method: str
    endpoint: str
    #: What the route does: ``branches``, ``leaves``, ``branch_post_schema``,
    #: ``branch_job``, ``post_schema``, ``job``, ``progress``, ``info``,
    #: ``data`` or ``dump``.
    kind: str
    #: The branch or leaf of a discovery or POST route; None under the root.
    node: Branch | Leaf | None = None


def routes(state: SpacewalkState) -> list[Route]:
    """Every route of ``state``'s tree: the one list both
    :func:`make_blueprint` and :mod:`~flask_spacewalk.openapi` read."""
    table = []
    for index, branch in enumerate(state.tree.branches()):
        table += [
            Route(f"{branch.path}/branches", "GET", f"branches_{index}", "branches", branch),
            Route(f"{branch.path}/leaves", "GET", f"leaves_{index}", "leaves", branch),
            Route(f"{branch.path}/post-schema", "GET", f"branch_post_schema_{index}",
                  "branch_post_schema", branch),
            Route(f"{branch.path}/job", "POST", f"branch_job_{index}", "branch_job", branch),
        ]
    for index, leaf in enumerate(state.tree.leaves()):
        table += [
            Route(f"{leaf.path}/post-schema", "GET", f"post_schema_{index}", "post_schema", leaf),
            Route(f"{leaf.path}/job", "POST", f"job_{index}", "job", leaf),
        ]
    root = state.root_path
    for kind in ("progress", "info", "data", "dump"):
        if kind != "dump" or state.settings.expose_dump:
            table.append(Route(f"{root}/{kind}/<uuid>", "GET", kind, kind))
    table += [
        Route(f"{root}/jobs", "GET", "jobs", "jobs"),
        Route(f"{root}/cancel/<uuid>", "POST", "cancel", "cancel"),
        Route(f"{root}/job/<uuid>", "DELETE", "cancel_job", "cancel"),
    ]
    return table


def make_blueprint(state: SpacewalkState) -> Blueprint:
    """The blueprint serving ``state``'s tree, with every route added."""
    tree = state.tree
    views = Views(state)
    bp = Blueprint(blueprint_name(tree.root.path), __name__)
    own_rules: list[Rule] = []

    def decorate(view: Callable[..., Response]) -> Callable[..., Response]:
        for decorator in state.decorators:
            view = decorator(view)
        return view

    def route(path: str, endpoint: str, view: Callable[..., Response], method: str) -> None:
        # No automatic OPTIONS: Flask would answer it before the decorators
        # run; the fallback below answers it, decorated.
        bp.add_url_rule(
            path, endpoint, decorate(view), methods=[method], provide_automatic_options=False
        )
        own_rules.append(Rule(path, endpoint=endpoint, methods=[method, "OPTIONS"]))

    for entry in routes(state):
        route(entry.path, entry.endpoint, views.view(entry), entry.method)
    if state.settings.console:
        # HTML for people, so not in routes(), which the OpenAPI document lists
        from .console import console_routes

        for path, endpoint, view in console_routes(state):
            route(path, endpoint, view, "GET")
    root = tree.root.path

    own_map = Map(own_rules)

    #: Every method the tree takes somewhere: what a preflight is allowed.
    all_methods = ", ".join(sorted(set().union(*(rule.methods or () for rule in own_rules))))

    def fallback(**kwargs: Any) -> Response:
        # Whatever no route took: OPTIONS, 405 with Allow where a route has
        # the path, else 404, all from our own rules and so in our JSON shape.
        adapter = own_map.bind("")
        if request.method == "OPTIONS":
            allowed = adapter.allowed_methods(request.path)
            if not allowed:
                raise NotFound()
            return Response(status=200, headers={"Allow": ", ".join(sorted(allowed))})
        adapter.match(request.path, method=request.method)
        raise NotFound()  # pragma: no cover - match() always raises here

    @bp.record_once
    def add_fallback(setup: Any) -> None:
        app: Flask = setup.app
        endpoint = f"{bp.name}.fallback"
        # methods=None: the rule takes every method, unknown ones included,
        # which Flask's add_url_rule cannot express.
        app.url_map.add(Rule(root, endpoint=endpoint, methods=None))
        app.url_map.add(Rule(f"{root}/", endpoint=endpoint, methods=None))
        app.url_map.add(Rule(f"{root}/<path:rest>", endpoint=endpoint, methods=None))
        # Decorated too: a client the app's auth turns away learns nothing
        # about which paths exist.
        app.view_functions[endpoint] = decorate(fallback)

    # Flask looks for handlers by status code (blueprint, then app) before it
    # looks by class: without these an app's errorhandler(404) would answer
    # for the tree.
    for code in default_exceptions:
        bp.register_error_handler(code, _http_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(ParamsInvalid, _params_invalid)
    bp.register_error_handler(SpacewalkError, _spacewalk_error)
    bp.register_error_handler(Exception, _unexpected_error)
    settings = state.settings
    if settings.cors_origins:
        bp.before_request(_preflight(settings.cors_origins, all_methods))
        bp.after_request(_cors(settings.cors_origins))

    @bp.before_request
    def refuse_cross_site() -> None:
        # Before the decorators and before routing matters: a cross-site
        # POST is 403 at every path, so it learns nothing about which exist.
        check_request(settings.cors_origins, settings.max_content_length)

    return bp


def _branch_item(branch: Branch) -> dict[str, str]:
    return {"path": branch.path, "name": branch.name, "description": branch.description}


def _leaf_item(leaf: Leaf) -> dict[str, str]:
    return {
        "path": leaf.path,
        "jobType": leaf.job_type,
        "name": leaf.name,
        "description": leaf.description,
    }


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    headers = {}
    if _own_description(exc):
        message = exc.description or ""
    elif isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        message = f"{request.method} is not allowed on {request.path}; use {headers['Allow']}"
    elif isinstance(exc, NotFound):
        message = f"nothing at {request.path}"
    else:
        message = HTTPStatus(code).description
    return error_response(code, message, headers=headers)


def _own_description(exc: HTTPException) -> bool:
    # Werkzeug's stock descriptions speak of browsers and URLs; ours say
    # what was wrong with the request.
    return bool(exc.description) and exc.description != type(exc).description


def _params_invalid(exc: ParamsInvalid) -> Response:
    return error_response(422, "the job parameters are not valid", exc.errors)


def _spacewalk_error(exc: SpacewalkError) -> Response:
    if isinstance(exc, DatastoreUnavailable):
        log.warning("datastore unavailable: %s", exc)
        return error_response(503, f"datastore unavailable: {exc}")
    if isinstance(exc, QueueUnavailable):
        log.warning("queue unavailable: %s", exc)
        return error_response(503, f"queue unavailable: {exc}")
    if isinstance(exc, JobUpdateConflict):
        # Transient: the job's workers kept writing; a retry will get through.
        log.warning("job update conflict: %s", exc)
        return error_response(
            503, "the job kept changing under the request; try again", headers={"Retry-After": "1"}
        )
    if isinstance(exc, InvalidJobDocument):
        log.error("unreadable job document: %s", exc)
        return error_response(500, "the stored job document cannot be read")
    return _unexpected_error(exc)


def _unexpected_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):  # pragma: no cover - handled above
        return _http_error(exc)
    log.exception("unhandled error in a Spacewalk view", exc_info=exc)
    return error_response(500, "internal server error")


def _allowed_origin(origins: tuple[str, ...]) -> str | None:
    """The request's ``Origin`` when CORS allows it, else None."""
    origin = request.headers.get("Origin")
    if not origin or not ("*" in origins or origin in origins):
        return None
    return origin


def _preflight(origins: tuple[str, ...], methods: str) -> Callable[[], Response | None]:
    def answer() -> Response | None:
        # A browser sends a preflight without credentials, so it is answered
        # before the decorators (the app's auth); the same at every path, so
        # it tells nothing about which paths exist. The request that follows
        # is checked in full.
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and _allowed_origin(origins) is not None
        ):
            return Response(status=200, headers={"Allow": methods})
        return None

    return answer


def _cors(origins: tuple[str, ...]) -> Callable[[Response], Response]:
    allow_any = "*" in origins

    def add_headers(response: Response) -> Response:
        origin = _allowed_origin(origins)
        if origin is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
        if not allow_any:
            response.vary.add("Origin")
        response.headers["Access-Control-Expose-Headers"] = "Location, Link, ETag"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = response.headers.get(
                "Allow", "GET, POST, OPTIONS"
            )
            requested = request.headers.get("Access-Control-Request-Headers")
            if requested:
                response.headers["Access-Control-Allow-Headers"] = requested
            response.headers["Access-Control-Max-Age"] = "600"
        return response

    return add_headers
