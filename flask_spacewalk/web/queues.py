"""``GET R/queues`` and ``POST R/queues/<name>/pause|resume`` (SPEC section 8).

The counts come from the queue backend (its indexes, never every entry), the
pauses from the datastore (:mod:`~flask_spacewalk.runtime.queue_control`).
Only the service's own queue can be paused from its tree: another queue of
the backend belongs to another service, which has an API of its own.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response
from werkzeug import exceptions

from ..errors import NotSupported
from ..runtime.queue_control import pause_queue, queue_overview, resume_queue
from .http import json_response

if TYPE_CHECKING:
    from .state import SpacewalkState

__all__ = ["QueueViews"]


class QueueViews:
    """The queue views of one tree."""

    def __init__(self, state: SpacewalkState) -> None:
        self.state = state

    def queues(self) -> Response:
        """200 ``{"queues": [...]}``: the service's queue first, then every
        other queue of the backend that holds an entry."""
        datastore, queue = self.state.connections()
        try:
            items = queue_overview(datastore, queue)
        except NotSupported as exc:
            raise exceptions.NotImplemented(str(exc)) from exc
        return json_response({"queues": items})

    def pause(self, name: str) -> Response:
        """202 ``{"name", "paused": true}``: workers take none of the
        queue's entries from their next heartbeat on."""
        datastore, _ = self.state.connections()
        pause_queue(datastore, self._own(name))
        return json_response({"name": name, "paused": True}, 202)

    def resume(self, name: str) -> Response:
        """202 ``{"name", "paused": false}``, paused or not before."""
        datastore, _ = self.state.connections()
        resume_queue(datastore, self._own(name))
        return json_response({"name": name, "paused": False}, 202)

    def _own(self, name: str) -> str:
        own = self.state.settings.queue_name
        if name != own:
            shown = repr(name) if len(name) <= 60 else f"{name[:60]!r}..."
            raise exceptions.NotFound(f"{shown} is not this service's queue, {own!r}")
        return name
