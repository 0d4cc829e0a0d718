"""``GET R/workers`` and ``POST R/workers/<id>/drain|undrain|retire``: the
worker records of :mod:`~flask_spacewalk.runtime.fleet` over HTTP.

The listing is every live worker of the tree's datastore, whatever its
service (each record names its ``service`` and ``queue``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from flask import Response
from werkzeug import exceptions

from ..errors import NotSupported
from ..runtime.fleet import WorkerAction, find_worker, live_workers, request_action
from .http import json_response

if TYPE_CHECKING:
    from .state import SpacewalkState

__all__ = ["action_view", "workers_view"]


def workers_view(state: SpacewalkState) -> Callable[[], Response]:
    """The view of ``GET R/workers``: 200 ``{"workers": [...]}``."""

    def view() -> Response:
        datastore, _ = state.connections()
        return json_response({"workers": _supported(live_workers, datastore)})

    return view


def action_view(state: SpacewalkState, action: WorkerAction) -> Callable[..., Response]:
    """The view of ``POST R/workers/<id>/<action>``: 202 ``{"id", "state"}``
    with the state the worker moves to; 404 when no live worker has that id."""

    def view(id: str) -> Response:
        datastore, _ = state.connections()
        record = _supported(find_worker, datastore, id)
        if record is None:
            raise exceptions.NotFound(f"no live worker {id}")
        moved_to = request_action(datastore, record, action)
        return json_response({"id": id, "state": moved_to.value}, 202)

    return view


def _supported(read: Callable[..., Any], *args: Any) -> Any:
    """``read(*args)``; 501 when the datastore keeps no worker records."""
    try:
        return read(*args)
    except NotSupported as exc:
        raise exceptions.NotImplemented(str(exc)) from exc
