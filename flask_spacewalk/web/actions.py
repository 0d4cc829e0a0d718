"""The actions on stored jobs that SPEC section 7 adds: ``POST
R/retry/<uuid>`` and the bulk ``POST R/jobs/retry`` and ``POST R/jobs/cancel``.

A retry's checks run in this order: the job (404), its status (409, before
any look at the body), then as ``POST L/job``'s: the body's size, content
type and JSON (413, 415, 400), the starting options of the query string
(400), and the stored Params merged with the body, validated as a whole by
the leaf's validator (422).

A bulk action takes the listing's filters (``jobType``, ``status``,
``since``, read by :mod:`.listing`), narrowed to the statuses the action
applies to, and acts on ``limit`` jobs from the cursor on, newest first
(:func:`~flask_spacewalk.runtime.bulk.act_on_jobs`).

Every write is the lifecycle's (:meth:`Lifecycle.retry
<flask_spacewalk.runtime.lifecycle.Lifecycle.retry>`, ``Lifecycle.cancel``);
each action logs a line saying what it did.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Callable

from flask import Response, current_app, request
from marshmallow import Schema
from werkzeug import exceptions
from werkzeug.exceptions import BadRequest, Conflict

from ..errors import InvalidJobDocument, JobUpdateConflict, NotSupported
from ..runtime.bulk import Action, BulkResult, act_on_jobs
from ..runtime.cancel import CancelAnswer
from ..runtime.lifecycle import Lifecycle
from ..runtime.retry import RETRYABLE, RetryAnswer, job_status
from ..runtime.status import JobStatus
from .http import json_response, read_json_body
from .listing import encode_cursor, read_limit, read_query, single_arg
from .options import read_start_options

if TYPE_CHECKING:
    from ..runtime.job import RuntimeJob
    from ..tree import Leaf
    from .state import SpacewalkState

log = logging.getLogger(__name__)

#: Jobs read by one request when it gives no ``limit`` ...
DEFAULT_BULK_LIMIT = 1_000
#: ... and at most, whatever it gives.
MAX_BULK_LIMIT = 10_000
#: The query parameters the bulk actions take.
BULK_PARAMETERS = ("jobType", "status", "since", "dryRun", "limit", "cursor")
#: The statuses each action applies to.
APPLIES_TO = {
    "retry": RETRYABLE,
    "cancel": frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
}


def retry_answer(state: SpacewalkState) -> Callable[[RuntimeJob, dict[str, Any]], Response]:
    """The answer of ``POST R/retry/<uuid>`` in ``state``'s tree, given the
    job and its stored document."""
    leaves: dict[str, Leaf] = {leaf.job_type: leaf for leaf in state.tree.leaves()}

    def answer(job: RuntimeJob, document: dict[str, Any]) -> Response:
        status, result = job_status(job), job.resultCode
        if status not in RETRYABLE:
            raise Conflict(
                f"job {job.uuid} is {status.value}; only a failed or cancelled job is retried"
            )
        body = read_json_body(state.settings.max_content_length)
        options = read_start_options()
        validator = state.schemas[leaves[job.jobType].path].validator
        params = validator.validate({**stored_params(validator.schema, document), **body})
        datastore, queue = state.connections()
        inline = state.run_inline(current_app) and not options.get("delay")
        lifecycle = Lifecycle(datastore, queue, state.registry,
                          webhooks=state.recorder(current_app))
        done = lifecycle.retry(job, params, inline=inline, **options)
        if done is RetryAnswer.NOT_RETRYABLE:
            raise Conflict(f"job {job.uuid} changed meanwhile (another retry?); it is no"
                           " longer failed or cancelled")
        if done is RetryAnswer.ENTRY_HELD:
            raise Conflict(f"a worker still holds the last queue entry of job {job.uuid}"
                           " and drops it in a moment; try again")
        now = job_status(job)
        log.info("job %s %s retried (was %s with %d): %s", job.jobType, job.uuid,
                 status.value, result, now.value)
        return json_response({"uuid": job.uuid, "status": now.value})

    return answer


def stored_params(schema: Schema, document: dict[str, Any]) -> dict[str, Any]:
    """The values of the Params fields ``schema`` loads, as ``document``
    stores them (by data key): what a retry's body is merged into."""
    keys = (field.data_key or name for name, field in schema.load_fields.items())
    return {key: document[key] for key in keys if key in document}


def bulk_view(state: SpacewalkState, action: str) -> Callable[[], Response]:
    """The view of ``POST R/jobs/<action>`` (``retry`` or ``cancel``) for
    ``state``'s tree."""
    tree_types = frozenset(cls.JOB_TYPE for cls in state.registry.get_registered_classes())
    applies_to = frozenset(status.value for status in APPLIES_TO[action])

    def view() -> Response:
        unknown = sorted(name for name in request.args if name not in BULK_PARAMETERS)
        if unknown:
            named = ", ".join(repr(name[:40]) for name in unknown[:5])
            raise BadRequest(f"unknown query parameter {named}: this action takes only"
                             f" {', '.join(BULK_PARAMETERS)}")
        if read_json_body(state.settings.max_content_length):
            raise BadRequest("this action takes no body: give its filters as query parameters")
        dry_run = _dry_run(single_arg("dryRun"))
        limit = read_limit(single_arg("limit"), DEFAULT_BULK_LIMIT, MAX_BULK_LIMIT)
        query = read_query(tree_types, limit)
        statuses = (query.statuses or applies_to) & applies_to
        result = BulkResult()
        if statuses:
            query = dataclasses.replace(query, statuses=statuses)
            datastore, _ = state.connections()
            act = None if dry_run else _action(state, action)
            try:
                result = act_on_jobs(datastore, query, act)
            except NotSupported as exc:
                raise exceptions.NotImplemented(str(exc)) from exc
        log.info("bulk %s%s of %s jobs: %d matched, %d done", action,
                 " (dry run)" if dry_run else "", state.root_path, result.matched, result.done)
        cursor = None if result.next is None else encode_cursor(*result.next)
        return json_response({"matched": result.matched, "done": result.done,
                              "dryRun": dry_run, "next": cursor})

    return view


def _dry_run(text: str | None) -> bool:
    if text is None:
        return False
    if text.lower() not in ("true", "false"):
        raise BadRequest(f"dryRun must be true or false, not {text[:40]!r}")
    return text.lower() == "true"


def _action(state: SpacewalkState, action: str) -> Action:
    """What is done to each job: retried or cancelled, through the lifecycle."""
    datastore, queue = state.connections()
    lifecycle = Lifecycle(datastore, queue, state.registry,
                          webhooks=state.recorder(current_app))
    inline = state.run_inline(current_app)

    def act(document: dict[str, Any], cas: int) -> bool:
        document["cas"] = cas
        try:
            job = state.registry.make_job(document, datastore, queue)
            if action == "retry":
                return lifecycle.retry(job, inline=inline) is RetryAnswer.RETRIED
            return lifecycle.cancel(job) is not CancelAnswer.FINISHED
        except (InvalidJobDocument, JobUpdateConflict) as exc:
            # one job that cannot be read, or keeps changing, is not the batch's end
            log.warning("bulk %s: job %s skipped: %s", action, document.get("uuid"), exc)
            return False

    return act
