"""The generated API: one blueprint per job tree (SPEC section 3).

Discovery and post-schema answers are encoded once, when the blueprint is
built. Every answer under the tree's root path is JSON, errors included: a
catch-all rule of the blueprint takes the paths and methods no other rule
takes, so even routing's 404 and 405 reach the blueprint's error handlers,
and OPTIONS reaches the view decorators. Unsafe requests a page of another
site could make a browser send are refused first (:mod:`.csrf`). The
routes come from :func:`.routes.routes`; the HTTP helpers from :mod:`.http`.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    HTTPException,
    NotFound,
    default_exceptions,
)
from werkzeug.routing import Map, Rule

from ..errors import ParamsInvalid, SpacewalkError
from ..runtime.cancel import CancelAnswer
from ..runtime.job import NO_RESULT, RuntimeJob, make_key
from ..runtime.keyrecords import KeyClaim, fingerprint
from ..runtime.lifecycle import Lifecycle, cancel_job
from ..runtime.queue_control import is_paused
from ..tree import Branch, Leaf
from . import listing
from .actions import bulk_view, retry_answer
from .csrf import check_request
from .events import events_view
from .http import (
    cors_headers,
    encode,
    etag_headers,
    http_error,
    json_bytes_response,
    json_response,
    not_modified,
    not_modified_response,
    params_invalid,
    preflight_answer,
    read_json_body,
    spacewalk_error,
    unexpected_error,
)
from .idempotency import holding, read_idempotency_key, taken_key_answer
from .options import read_start_options
from .prefer import preference_applied, read_wait
from .queues import QueueViews
from .routes import UUID_PATTERN, Route, RouteKind, blueprint_name, routes, worker_action
from .workers import action_view, workers_view

if TYPE_CHECKING:
    from .state import SpacewalkState

log = logging.getLogger(__name__)

LOG_FIELDS = ("events", "errors", "warnings")


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
        self._retry = retry_answer(state)
        queues = QueueViews(state)
        kind = RouteKind
        #: How each kind of route gets its view, from the route.
        self.makers: dict[RouteKind, Callable[[Route], Callable[..., Response]]] = {
            kind.BRANCHES: lambda route: self.fixed(
                encode([_branch_item(b) for b in _branch(route).branches])
            ),
            kind.LEAVES: lambda route: self.fixed(
                encode([_leaf_item(leaf) for leaf in _branch(route).leaves])
            ),
            kind.BRANCH_POST_SCHEMA: lambda route: self.branch_not_job(_branch(route)),
            kind.BRANCH_JOB: lambda route: self.branch_not_job(_branch(route)),
            kind.POST_SCHEMA: lambda route: self.fixed(
                encode({"postSchema": state.schemas[_leaf(route).path].post_schema})
            ),
            kind.JOB: lambda route: self.create_job(_leaf(route)),
            kind.PROGRESS: lambda route: self.progress,
            kind.INFO: lambda route: self.info,
            kind.DATA: lambda route: self.data,
            kind.DUMP: lambda route: self.dump,
            kind.EVENTS: lambda route: events_view(state, self._document, self.progress_of),
            kind.JOBS: lambda route: self.jobs,
            kind.CANCEL: lambda route: self.cancel,
            kind.RETRY: lambda route: self.retry,
            kind.BULK_RETRY: lambda route: bulk_view(state, "retry"),
            kind.BULK_CANCEL: lambda route: bulk_view(state, "cancel"),
            kind.WORKERS: lambda route: workers_view(state),
            kind.WORKER_ACTION: lambda route: action_view(state, worker_action(route)),
            kind.QUEUES: lambda route: queues.queues,
            kind.QUEUE_PAUSE: lambda route: queues.pause,
            kind.QUEUE_RESUME: lambda route: queues.resume,
        }

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
        """The view function of one entry of :func:`.routes.routes`."""
        return self.makers[RouteKind(route.kind)](route)

    # -- starting a job ----------------------------------------------------

    def create_job(self, leaf: Leaf) -> Callable[[], Response]:
        validator = self.state.schemas[leaf.path].validator
        root = self.state.root_path

        def view() -> Response:
            body = read_json_body(self.state.settings.max_content_length)
            # SPEC order: the body's size, type and syntax, the query and the
            # Idempotency-Key header, its fields
            options = read_start_options()
            key = read_idempotency_key()
            # never an error: a wait not understood is no wait (RFC 7240)
            wait = read_wait(self.state.settings.max_wait)
            params = validator.validate(body)
            datastore, queue = self.state.connections()
            job = leaf.cls(datastore, queue, **params)
            if key is None:
                self._start(job, options)
            else:
                claim = KeyClaim(
                    datastore, root, key, fingerprint(leaf.path, validator.schema.dump(params)),
                    self.state.settings.idempotency_ttl,
                )  # fmt: skip
                found = claim.claim()
                if found is not None:
                    answer = taken_key_answer(claim, found, root)
                    if wait is None or found.uuid is None or answer.status_code != 200:
                        return answer
                    # a replay waits as the first POST would have (docs/live.rst)
                    return self._result_answer(found.uuid, wait, 200, dict(answer.headers))
                with holding(claim, root, job.uuid):
                    self._start(job, options)
            location = f"{request.script_root}{root}/progress/{job.uuid}"
            if wait is None:
                return json_response({"uuid": job.uuid}, 201, {"Location": location})
            return self._result_answer(job.uuid, wait, 201, {"Location": location})

        return view

    def _result_answer(
        self, uuid: str, wait: int, pending: int, headers: dict[str, str]
    ) -> Response:
        """The answer of a POST that prefers to wait ``wait`` seconds for
        job ``uuid``'s result: 200 with the result and the job's data once
        it has one, else status ``pending`` with the uuid."""
        headers = {name: value for name, value in headers.items()
                   if name not in ("Content-Type", "Content-Length")}  # fmt: skip
        headers.update(preference_applied(wait))
        datastore, _ = self.state.connections()
        document, cas = datastore.read_with_cas(make_key(uuid))
        deadline = time.monotonic() + wait
        watch = self.state.watch()
        while isinstance(document, dict) and document.get("resultCode", NO_RESULT) == NO_RESULT:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            document, cas = watch.wait(uuid, cas, left)
        if not isinstance(document, dict) or document.get("resultCode", NO_RESULT) == NO_RESULT:
            return json_response({"uuid": uuid}, pending, headers)
        # data as GET R/data answers it: what the loaded job's get_data() gives
        body = {"uuid": uuid, **_progress(document), "data": self._job(document, cas).get_data()}
        return json_response(body, 200, headers)

    def _start(self, job: RuntimeJob, options: dict[str, Any]) -> None:
        """Create ``job`` with its starting options, or run it inline."""
        datastore, queue = self.state.connections()
        lifecycle = Lifecycle(datastore, queue, self.state.registry,
                              webhooks=self.state.recorder(current_app))
        if (
            self.state.run_inline(current_app)
            and not options.get("delay")
            and not is_paused(datastore, self.state.settings.queue_name)
        ):
            # a worker's run, in the request: users' tests need no worker;
            # a delayed job, or one of a paused queue, is queued, as it
            # would be (docs/api.rst)
            lifecycle.run_inline(job, **options)
        else:
            lifecycle.create(job, **options)

    # -- following a job ---------------------------------------------------

    def _document(self, uuid: str) -> tuple[dict[str, Any], int]:
        if not UUID_PATTERN.fullmatch(uuid):
            raise NotFound(f"no job {uuid}")
        datastore, _ = self.state.connections()
        document, cas = datastore.read_with_cas(make_key(uuid))
        if not isinstance(document, dict):
            raise NotFound(f"no job {uuid}")
        job_type = document.get("jobType")
        # a str first: a list or dict cannot even be looked up
        if not isinstance(job_type, str) or job_type not in self.state.registry:
            raise NotFound(f"no job {uuid}")
        return document, cas

    def _job(self, document: dict[str, Any], cas: int) -> RuntimeJob:
        datastore, queue = self.state.connections()
        document["cas"] = cas
        return self.state.registry.make_job(document, datastore, queue)

    def progress_of(self, document: dict[str, Any], cas: int) -> dict[str, Any]:
        """The progress object of a stored document, as ``progress`` answers it."""
        if self._fast_progress[document["jobType"]]:
            return _progress(document)
        return self._job(document, cas).progress()

    def _changed_document(self, uuid: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """The job's document and cas, with its answer's headers; with
        ``Prefer: wait=N`` and an ``If-None-Match`` that matches, read once
        the job changed or N seconds passed (the long poll)."""
        document, cas = self._document(uuid)
        headers = etag_headers(cas)
        wait = read_wait(self.state.settings.max_wait)
        if wait is None or not not_modified(headers):
            return document, cas, headers
        changed, cas = self.state.watch().wait(uuid, cas, wait)
        if changed is None or changed.get("jobType") != document["jobType"]:
            raise NotFound(f"no job {uuid}")  # deleted (and made anew) meanwhile
        return changed, cas, {**etag_headers(cas), **preference_applied(wait)}

    def progress(self, uuid: str) -> Response:
        document, cas, headers = self._changed_document(uuid)
        if not_modified(headers):
            return not_modified_response(headers)
        return json_response(self.progress_of(document, cas), headers=headers)

    def info(self, uuid: str) -> Response:
        document, cas, headers = self._changed_document(uuid)
        if not_modified(headers):
            return not_modified_response(headers)
        if self._fast_progress[document["jobType"]]:
            answer = _progress(document)
            answer.update((name, document.get(name, [])) for name in LOG_FIELDS)
            return json_response(answer, headers=headers)
        return json_response(self._job(document, cas).info(), headers=headers)

    def data(self, uuid: str) -> Response:
        document, cas = self._document(uuid)
        headers = etag_headers(cas)
        if not_modified(headers):
            return not_modified_response(headers)
        return json_response(self._job(document, cas).get_data(), headers=headers)

    def dump(self, uuid: str) -> Response:
        show_logs = request.args.get("showLogs", "false").lower()
        if show_logs not in ("true", "false"):
            raise BadRequest("showLogs must be true or false")
        document, cas = self._document(uuid)
        headers = etag_headers(cas)
        if not_modified(headers):
            return not_modified_response(headers)
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
        answer = cancel_job(self._job(document, cas), self.state.recorder(current_app))
        if answer is CancelAnswer.FINISHED:
            raise Conflict(f"job {uuid} already has its result; nothing to cancel")
        status = 200 if answer is CancelAnswer.CANCELLED else 202
        return json_response({"uuid": uuid, "status": answer.value}, status)

    def retry(self, uuid: str) -> Response:
        """200 queued again; 409 unless failed or cancelled (:mod:`.actions`)."""
        document, cas = self._document(uuid)
        return self._retry(self._job(document, cas), document)


def _progress(document: dict[str, Any]) -> dict[str, Any]:
    """``RuntimeJob.progress()`` of a stored document, without loading it."""
    return {
        "completeness": float(document.get("completeness", 0)),
        "result": document.get("resultCode", NO_RESULT),
    }


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
        bp.register_error_handler(code, http_error)
    bp.register_error_handler(HTTPException, http_error)
    bp.register_error_handler(ParamsInvalid, params_invalid)
    bp.register_error_handler(SpacewalkError, spacewalk_error)
    bp.register_error_handler(Exception, unexpected_error)
    settings = state.settings
    if settings.cors_origins:
        bp.before_request(preflight_answer(settings.cors_origins, all_methods))
        bp.after_request(cors_headers(settings.cors_origins))

    @bp.before_request
    def refuse_cross_site() -> None:
        # Before the decorators and before routing matters: a cross-site
        # POST is 403 at every path, so it learns nothing about which exist.
        check_request(settings.cors_origins, settings.max_content_length)

    return bp


def _branch(route: Route) -> Branch:
    if not isinstance(route.node, Branch):
        raise TypeError(f"a {route.kind.value} route needs a branch, not {route.node!r}")
    return route.node


def _leaf(route: Route) -> Leaf:
    if not isinstance(route.node, Leaf):
        raise TypeError(f"a {route.kind.value} route needs a leaf, not {route.node!r}")
    return route.node


def _branch_item(branch: Branch) -> dict[str, str]:
    return {"path": branch.path, "name": branch.name, "description": branch.description}


def _leaf_item(leaf: Leaf) -> dict[str, str]:
    return {
        "path": leaf.path,
        "jobType": leaf.job_type,
        "name": leaf.name,
        "description": leaf.description,
    }

