"""The table of a tree's API: every route, what it does, and its names.

:func:`routes` is the one list the blueprint serves (:mod:`.views`) and the
OpenAPI document describes (:mod:`.openapi`); each :class:`Route` says what
it does with a :class:`RouteKind`, which each of them dispatches on through
a table of its own.
"""
from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, NamedTuple

from ..runtime.fleet import WorkerAction
from ..tree import Branch, Leaf

if TYPE_CHECKING:
    from .state import SpacewalkState

__all__ = ["UUID_PATTERN", "Route", "RouteKind", "blueprint_name", "routes", "worker_action"]

#: A uuid exactly as issued: lower-case hex in the canonical groups.
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class RouteKind(str, enum.Enum):
    """What a route does; its value names the endpoint of a route under the root."""

    #: ``GET <branch>/branches``: the sub-branches.
    BRANCHES = "branches"
    #: ``GET <branch>/leaves``: the jobs of a branch.
    LEAVES = "leaves"
    #: ``GET <branch>/post-schema``: 400, a branch is not a job.
    BRANCH_POST_SCHEMA = "branch_post_schema"
    #: ``POST <branch>/job``: 400, a branch is not a job.
    BRANCH_JOB = "branch_job"
    #: ``GET <leaf>/post-schema``: the leaf's post-schema.
    POST_SCHEMA = "post_schema"
    #: ``POST <leaf>/job``: start a job.
    JOB = "job"
    #: ``GET R/progress/<uuid>``.
    PROGRESS = "progress"
    #: ``GET R/info/<uuid>``.
    INFO = "info"
    #: ``GET R/data/<uuid>``.
    DATA = "data"
    #: ``GET R/dump/<uuid>`` (``SPACEWALK_EXPOSE_DUMP``).
    DUMP = "dump"
    #: ``GET R/events/<uuid>``: the job as Server-Sent Events.
    EVENTS = "events"
    #: ``GET R/jobs``: the listing.
    JOBS = "jobs"
    #: ``POST R/cancel/<uuid>`` and ``DELETE R/job/<uuid>``.
    CANCEL = "cancel"
    #: ``POST R/retry/<uuid>``: run a failed or cancelled job again.
    RETRY = "retry"
    #: ``POST R/jobs/retry``: retry the jobs a filter selects.
    BULK_RETRY = "bulk_retry"
    #: ``POST R/jobs/cancel``: cancel the jobs a filter selects.
    BULK_CANCEL = "bulk_cancel"
    #: ``GET R/workers``: the live job workers.
    WORKERS = "workers"
    #: ``POST R/workers/<id>/drain``, ``/undrain`` and ``/retire``.
    WORKER_ACTION = "worker_action"
    #: ``GET R/queues``: the queues' depth and pauses.
    QUEUES = "queues"
    #: ``POST R/queues/<name>/pause``.
    QUEUE_PAUSE = "queue_pause"
    #: ``POST R/queues/<name>/resume``.
    QUEUE_RESUME = "queue_resume"


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
    #: What the route does.
    kind: RouteKind
    #: The branch or leaf of a discovery or POST route; None under the root.
    node: Branch | Leaf | None = None


def routes(state: SpacewalkState) -> list[Route]:
    """Every route of ``state``'s tree: the one list both
    :func:`~flask_spacewalk.web.views.make_blueprint` and
    :mod:`~flask_spacewalk.web.openapi` read."""
    kind = RouteKind
    table = []
    for index, branch in enumerate(state.tree.branches()):
        table += [
            Route(f"{branch.path}/branches", "GET", f"branches_{index}", kind.BRANCHES, branch),
            Route(f"{branch.path}/leaves", "GET", f"leaves_{index}", kind.LEAVES, branch),
            Route(f"{branch.path}/post-schema", "GET", f"branch_post_schema_{index}",
                  kind.BRANCH_POST_SCHEMA, branch),
            Route(f"{branch.path}/job", "POST", f"branch_job_{index}", kind.BRANCH_JOB, branch),
        ]
    for index, leaf in enumerate(state.tree.leaves()):
        table += [
            Route(f"{leaf.path}/post-schema", "GET", f"post_schema_{index}", kind.POST_SCHEMA,
                  leaf),
            Route(f"{leaf.path}/job", "POST", f"job_{index}", kind.JOB, leaf),
        ]
    root = state.root_path
    for by_uuid in (kind.PROGRESS, kind.INFO, kind.DATA, kind.DUMP, kind.EVENTS):
        if by_uuid is not kind.DUMP or state.settings.expose_dump:
            name = by_uuid.value
            table.append(Route(f"{root}/{name}/<uuid>", "GET", name, by_uuid))
    table += [
        Route(f"{root}/jobs", "GET", "jobs", kind.JOBS),
        Route(f"{root}/cancel/<uuid>", "POST", "cancel", kind.CANCEL),
        Route(f"{root}/job/<uuid>", "DELETE", "cancel_job", kind.CANCEL),
        Route(f"{root}/retry/<uuid>", "POST", "retry", kind.RETRY),
        Route(f"{root}/jobs/retry", "POST", "bulk_retry", kind.BULK_RETRY),
        Route(f"{root}/jobs/cancel", "POST", "bulk_cancel", kind.BULK_CANCEL),
        Route(f"{root}/workers", "GET", "workers", kind.WORKERS),
    ]
    table += [Route(f"{root}/workers/<id>/{action}", "POST", f"worker_{action}",
                    kind.WORKER_ACTION) for action in WorkerAction]  # fmt: skip
    table += [
        Route(f"{root}/queues", "GET", "queues", kind.QUEUES),
        Route(f"{root}/queues/<path:name>/pause", "POST", "queue_pause", kind.QUEUE_PAUSE),
        Route(f"{root}/queues/<path:name>/resume", "POST", "queue_resume", kind.QUEUE_RESUME),
    ]
    return table


def worker_action(route: Route) -> WorkerAction:
    """The action of a ``WORKER_ACTION`` route: its path's last part."""
    return WorkerAction(route.path.rsplit("/", 1)[1])
