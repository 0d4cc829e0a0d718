"""What one app keeps for one job tree: ``app.extensions["spacewalk"][root]``.

Built once by :meth:`~flask_spacewalk.Spacewalk.init_app` and read by every
view, the docs and the CLI; it opens this process's datastore and queue on
first use.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backends import make_datastore, make_queue
from ..runtime.protocols import Datastore, Queue
from ..runtime.registry import JobRegistry
from ..settings import Settings
from ..tree import Tree

if TYPE_CHECKING:
    from flask import Flask

    from ..validation import ParamsValidator

__all__ = ["LeafSchemas", "SpacewalkState", "ViewDecorator"]

#: A view decorator, as in Flask's ``View.decorators``.
ViewDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: Connections a forked process inherited (see SpacewalkState.connections).
_INHERITED: list[tuple[Datastore, Queue]] = []


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
    _connections: dict[int, tuple[Datastore, Queue]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root_path(self) -> str:
        """The tree's root URL path, prefix included."""
        return self.tree.root.path

    def connections(self) -> tuple[Datastore, Queue]:
        """This process's datastore and queue, opened on first use.

        Keyed by process id, so an app loaded before gunicorn forks never
        shares a connection with its children.
        """
        pid = os.getpid()
        pair = self._connections.get(pid)
        if pair is None:
            with self._lock:
                pair = self._connections.get(pid)
                if pair is None:
                    # The parent's objects stay referenced, never used: an
                    # SQLite connection must not even be closed in a child.
                    _INHERITED.extend(self._connections.values())
                    self._connections.clear()
                    pair = (self.make_datastore(), self.make_queue())
                    self._connections[pid] = pair
        return pair

    def close(self) -> None:
        """Close this process's connections; the next request opens new ones."""
        with self._lock:
            pair = self._connections.pop(os.getpid(), None)
        if pair is not None:
            for backend in pair:
                close = getattr(backend, "close", None)
                if close is not None:
                    close()

    def make_datastore(self) -> Datastore:
        return make_datastore(self.settings.datastore_url, instance_path=self.instance_path)

    def make_queue(self, name: str | None = None) -> Queue:
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
            value = app.config.get("SPACEWALK_RUN_INLINE")
        return app.testing if value is None else bool(value)
