"""What one app keeps for one job tree: ``app.extensions["spacewalk"][root]``.

Built once by :meth:`~flask_spacewalk.Spacewalk.init_app` and read by every
view, the docs and the CLI; it opens this process's datastore and queue on
first use.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backends import make_datastore, make_queue
from ..runtime.adapters import as_datastore, as_queue
from ..runtime.changes import JobWatch
from ..runtime.delivery import DeliverySender
from ..runtime.protocols import SpacewalkDatastore, SpacewalkQueue
from ..runtime.registry import JobRegistry
from ..runtime.webhooks import WebhookRecorder
from ..settings import Settings, run_inline_from
from ..tree import Tree

if TYPE_CHECKING:
    from flask import Flask

    from ..validation import ParamsValidator

__all__ = ["LeafSchemas", "SpacewalkState", "ViewDecorator"]

#: A view decorator, as in Flask's ``View.decorators``.
ViewDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]

@dataclass
class LeafSchemas:
    """What a leaf's POST needs, built once at start-up."""

    post_schema: dict[str, Any]
    validator: ParamsValidator


@dataclass
class SpacewalkState:
    """One job tree served by one app: ``app.extensions["spacewalk"][path]``."""

    tree: Tree
    settings: Settings
    registry: JobRegistry
    instance_path: str
    schemas: dict[str, LeafSchemas] = field(default_factory=dict)
    decorators: tuple[ViewDecorator, ...] = ()
    _connections: tuple[SpacewalkDatastore, SpacewalkQueue] | None = None
    _watch: JobWatch | None = None
    _sender: DeliverySender | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root_path(self) -> str:
        """The tree's root URL path, prefix included."""
        return self.tree.root.path

    def connections(self) -> tuple[SpacewalkDatastore, SpacewalkQueue]:
        """The datastore and queue, made on first use; each connects on
        first use, in each process (an app loaded before gunicorn forks
        shares no connection with its children: the backends see to it).
        """
        pair = self._connections
        if pair is None:
            with self._lock:
                pair = self._connections
                if pair is None:
                    pair = (as_datastore(self.make_datastore()), as_queue(self.make_queue()))
                    self._connections = pair
        return pair

    def watch(self) -> JobWatch:
        """What waits for this tree's jobs to change (one per process)."""
        watch = self._watch
        if watch is None:
            datastore, _ = self.connections()
            with self._lock:
                if self._watch is None:
                    self._watch = JobWatch(datastore)
                watch = self._watch
        return watch

    def recorder(self, app: Flask) -> WebhookRecorder | None:
        """What records the webhook deliveries of the jobs this process
        ends (an API cancel, an inline run); None without webhooks.

        Workers send the deliveries; when jobs run inline (tests, no
        worker) this process sends them, from a thread it starts when it
        records the first.
        """
        if not self.settings.webhooks:
            return None
        root = self.root_path
        on_record = self._send_here if self.run_inline(app) else None
        return WebhookRecorder(self.settings.webhooks, lambda job_type: root, on_record)

    def _send_here(self) -> None:
        with self._lock:
            if self._sender is None or not self._sender.running:
                self._sender = DeliverySender(self.connections()[0], self.settings.webhooks)
                self._sender.start()
            sender = self._sender
        sender.wake()

    def close(self) -> None:
        """Close this process's connections; the next request opens new ones."""
        with self._lock:
            pair, self._connections = self._connections, None
            self._watch = None
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.stop()
        if pair is not None:
            for backend in pair:
                backend.close()

    def make_datastore(self) -> SpacewalkDatastore:
        return make_datastore(self.settings.datastore_url, instance_path=self.instance_path)

    def make_queue(self, name: str | None = None) -> SpacewalkQueue:
        return make_queue(
            self.settings.queue_url,
            name or self.settings.queue_name,
            instance_path=self.instance_path,
            default_ttr=self.settings.job_ttr,
        )

    def run_inline(self, app: Flask) -> bool:
        """Whether a POSTed job runs inside the request (read per request)."""
        value = self.settings.run_inline
        if value is None:
            value = run_inline_from(app.config)
        return app.testing if value is None else value


def states_at(app: Flask, prefix: str, serves: Callable[[Settings], bool]) -> list[SpacewalkState]:
    """The trees of ``app`` mounted at ``prefix`` whose settings ``serves``
    (the per-prefix routes: the document and docs, the metrics and probes)."""
    states: dict[str, SpacewalkState] = app.extensions.get("spacewalk", {})
    return [
        state
        for state in states.values()
        if state.tree.url_prefix == prefix and serves(state.settings)
    ]
