"""``<prefix>/metrics``, ``<prefix>/healthz`` and ``<prefix>/readyz``.

One small blueprint per (app, prefix), as for ``openapi.json``
(:mod:`.docs`), covering the trees at that prefix that serve them
(``SPACEWALK_EXPOSE_METRICS``), with the decorators of the first such tree.
``metrics`` is the Prometheus exposition written by ``prometheus_client``
from :class:`~flask_spacewalk.runtime.metrics.SpacewalkCollector`;
``healthz`` touches no backend; ``readyz`` pings each distinct datastore and
queue of those trees (:class:`~flask_spacewalk.runtime.readiness.Readiness`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from werkzeug.exceptions import HTTPException

from ..errors import SpacewalkError
from ..runtime.metrics import MetricsSource, SpacewalkCollector
from ..runtime.readiness import Readiness
from .http import error_response, http_error, json_response, spacewalk_error, unexpected_error
from .state import states_at

if TYPE_CHECKING:
    from ..runtime.protocols import SpacewalkDatastore, SpacewalkQueue
    from .state import SpacewalkState, ViewDecorator

__all__ = ["metrics_states", "register_probes"]


def metrics_states(app: Flask, prefix: str) -> list[SpacewalkState]:
    """The trees at ``prefix`` that serve the metrics and health checks."""
    return states_at(app, prefix, lambda settings: settings.expose_metrics)


def register_probes(app: Flask, prefix: str, decorators: Sequence[ViewDecorator] = ()) -> None:
    """Serve the metrics and health checks of the trees at ``prefix``, once
    per app; ``decorators`` wrap the routes as they wrap a tree's."""
    served: dict[str, str] = app.extensions.setdefault("spacewalk_probes", {})
    if prefix not in served:
        served[prefix] = f"spacewalk-probes-{len(served)}"
        app.register_blueprint(_make_blueprint(served[prefix], prefix, decorators))


def _backends(
    states: Sequence[SpacewalkState],
) -> tuple[dict[str, SpacewalkDatastore], dict[str, SpacewalkQueue]]:
    """The distinct datastores and queues of ``states``, by the name a
    readiness failure gives them: ``datastore`` and ``queue``, followed by
    the tree's root path for any after the first."""
    datastores: dict[str, SpacewalkDatastore] = {}
    queues: dict[str, SpacewalkQueue] = {}
    seen: set[tuple[str, ...]] = set()

    def name(role: str, found: dict[str, Any], state: SpacewalkState) -> str:
        return f"{role} of {state.root_path}" if found else role

    for state in states:
        s = state.settings
        datastore, queue = state.connections()
        if ("datastore", state.instance_path, s.datastore_url) not in seen:
            seen.add(("datastore", state.instance_path, s.datastore_url))
            datastores[name("datastore", datastores, state)] = datastore
        if ("queue", state.instance_path, s.queue_url, s.queue_name) not in seen:
            seen.add(("queue", state.instance_path, s.queue_url, s.queue_name))
            queues[name("queue", queues, state)] = queue
    return datastores, queues


def _make_blueprint(name: str, prefix: str, decorators: Sequence[ViewDecorator]) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=prefix or None)

    def get(rule: str) -> Callable[[Callable[[], Response]], Callable[[], Response]]:
        def register(view: Callable[[], Response]) -> Callable[[], Response]:
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

    def source() -> MetricsSource:
        states = metrics_states(current_app, prefix)
        datastores, queues = _backends(states)
        job_types = {leaf.job_type for state in states for leaf in state.tree.leaves()}
        return MetricsSource(list(datastores.values()), list(queues.values()), sorted(job_types))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpacewalkCollector(source))
    readiness = Readiness()

    @get("/metrics")
    def metrics() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = Response(encoder(registry), content_type=content_type)
        response.headers["Cache-Control"] = "no-store"
        return response

    @get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})

    @get("/readyz")
    def readyz() -> Response:
        datastores, queues = _backends(metrics_states(current_app, prefix))
        checks = {name: backend.ping for name, backend in {**datastores, **queues}.items()}
        failed = readiness.failures(checks)
        headers = {"Cache-Control": "no-store"}
        if failed:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
            return error_response(503, f"not ready: {reasons}", headers=headers)
        return json_response({"status": "ok", "checked": sorted(checks)}, headers=headers)

    bp.register_error_handler(HTTPException, http_error)
    bp.register_error_handler(SpacewalkError, spacewalk_error)
    bp.register_error_handler(Exception, unexpected_error)
    return bp


def _with_options(view: Callable[[], Response]) -> Callable[[], Response]:
    """``view``, answering OPTIONS itself (inside the decorators)."""

    @functools.wraps(view)
    def answer(*args: Any, **kwargs: Any) -> Response:
        if request.method == "OPTIONS":
            return Response(status=200, headers={"Allow": "GET, HEAD, OPTIONS"})
        return view(*args, **kwargs)

    return answer
