"""The OpenAPI 3.1 document of the trees mounted at one URL prefix.

Built with apispec from :func:`~flask_spacewalk.web.routes.routes`, the same list
the blueprints serve, so the document cannot drift from the routes. Each
leaf's request body is its published post-schema's ``Params`` definition,
moved under ``components`` (see :func:`params_components`). Nothing here
needs a request: the docs blueprint and ``flask spacewalk openapi`` both call
:func:`openapi_document`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Callable

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields, validate

from ..backends.base import MAX_PRIORITY
from ..runtime.fleet import WorkerAction
from ..runtime.heartbeat import ID_PATTERN, WorkerState
from ..runtime.status import STATUSES
from ..runtime.webhooks import EVENTS
from ..tree import Branch, Leaf
from .actions import DEFAULT_BULK_LIMIT, MAX_BULK_LIMIT
from .idempotency import HEADER, MAX_LENGTH, REPLAYED_HEADER
from .listing import DEFAULT_LIMIT, MAX_LIMIT
from .options import DEFAULT_PRIORITY, MAX_START_DELAY
from .routes import UUID_PATTERN, Route, RouteKind, routes, worker_action

if TYPE_CHECKING:
    from .state import SpacewalkState

__all__ = ["OPENAPI_VERSION", "openapi_document", "params_components"]

OPENAPI_VERSION = "3.1.0"
_REF_PREFIX = "#/definitions/"
_COMPONENT_NAME = re.compile(r"[^A-Za-z0-9_-]")
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
#: Keywords whose value is one subschema, a map of them, or a list of them
#: (draft 7); everything else (default, enum, examples...) is data.
_SUBSCHEMA = ("additionalProperties", "propertyNames", "not", "additionalItems", "contains")
_SUBSCHEMA_MAPS = ("properties", "patternProperties")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
#: Routes left out of the document: a branch's post-schema and job answer
#: only 400 "is a branch, not a job", which SPEC requires and no client calls.
_NOT_OPERATIONS = frozenset({RouteKind.BRANCH_POST_SCHEMA, RouteKind.BRANCH_JOB})
#: What draft 7 reads beside ``$ref`` (annotations; the rest it ignores).
_REF_ANNOTATIONS = ("title", "description", "default", "examples", "$comment")


# -- response bodies ------------------------------------------------------------


class ErrorBodySchema(Schema):
    """The one error body of every answer (a job's error records are
    :class:`ErrorRecordSchema`)."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = fields.String(required=True, metadata={"description": "Its reason phrase."})
    message = fields.String(required=True, metadata={"description": "What was wrong."})
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages by field (422 only); a deeper path leads each."},
    )


class ValidationErrorBodySchema(ErrorBodySchema):
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        required=True,
        metadata={"description": "Messages by field; a deeper path leads each message."},
    )


class BranchItemSchema(Schema):
    path = fields.String(required=True, metadata={"description": "URL path, prefix included."})
    name = fields.String(required=True)
    description = fields.String(required=True)


class LeafItemSchema(BranchItemSchema):
    jobType = fields.String(required=True)


class PostSchemaSchema(Schema):
    postSchema = fields.Dict(
        required=True,
        metadata={"description": "The draft-07 JSON Schema of the leaf's job parameters."},
    )


class CreatedSchema(Schema):
    uuid = fields.UUID(required=True)


class ProgressSchema(Schema):
    completeness = fields.Float(required=True, validate=validate.Range(min=0, max=1))
    result = fields.Integer(
        required=True, metadata={"description": "The result code; -1 while unfinished."}
    )


class JobResultSchema(ProgressSchema):
    uuid = fields.UUID(required=True)
    data = fields.Raw(
        required=True,
        metadata={"description": "What GET R/data/<uuid> answers: the job's get_data()."},
    )


class LogRecordSchema(Schema):
    msg = fields.String(required=True)
    timeStamp = fields.String(
        required=True, metadata={"description": "Naive UTC ISO-8601 date-time."}
    )


class ErrorRecordSchema(LogRecordSchema):
    errorCode = fields.Integer(required=True)


class StreamLogSchema(LogRecordSchema):
    kind = fields.String(required=True, validate=validate.OneOf(["event", "warning", "error"]))
    errorCode = fields.Integer(metadata={"description": "Errors only."})


class InfoSchema(ProgressSchema):
    events = fields.List(fields.Nested(LogRecordSchema), required=True)
    errors = fields.List(fields.Nested(ErrorRecordSchema), required=True)
    warnings = fields.List(fields.Nested(LogRecordSchema), required=True)


class JobListItemSchema(Schema):
    uuid = fields.UUID(required=True)
    jobType = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    createdAt = fields.String(required=True, metadata={"description": "ISO-8601, UTC."})
    updatedAt = fields.String(required=True, metadata={"description": "ISO-8601, UTC."})
    completeness = fields.Float(required=True, validate=validate.Range(min=0, max=1))
    result = fields.Integer(required=True)
    progress = fields.String(required=True, metadata={"description": "The progress URL path."})


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobListItemSchema), required=True)
    next = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "The cursor of the next page; null on the last one."},
    )


class CancelAnswerSchema(Schema):
    uuid = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["cancelled", "cancelling"]))


class RetryAnswerSchema(Schema):
    uuid = fields.UUID(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(STATUSES),
        metadata={"description": "queued; where jobs run inline, the status after the run."},
    )


class BulkAnswerSchema(Schema):
    matched = fields.Integer(
        required=True, validate=validate.Range(min=0),
        metadata={"description": "The jobs of this batch the action applies to."},
    )
    done = fields.Integer(
        required=True, validate=validate.Range(min=0),
        metadata={"description": "Those it changed (0 in a dry run)."},
    )
    dryRun = fields.Boolean(required=True)
    next = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "The cursor where the next batch starts; null after the last."},
    )


class WorkerSchema(Schema):
    id = fields.String(required=True, metadata={"description": "URL-safe: host-pid-random."})
    host = fields.String(required=True)
    pid = fields.Integer(required=True)
    service = fields.String(required=True)
    queue = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf([s.value for s in WorkerState]))
    job = fields.String(required=True, allow_none=True,
                        metadata={"description": "The uuid of the job it runs; null if none."})
    jobType = fields.String(required=True, allow_none=True)
    startedAt = fields.String(required=True, metadata={"description": "Naive UTC ISO-8601."})
    lastSeen = fields.String(required=True, metadata={"description": "Naive UTC ISO-8601."})
    jobsDone = fields.Integer(required=True,
                              metadata={"description": "Runs that recorded a result."})
    jobsFailed = fields.Integer(required=True,
                                metadata={"description": "Runs whose result is failed."})
    rss = fields.Integer(required=True, metadata={"description": "Resident memory, bytes."})


class WorkerListSchema(Schema):
    workers = fields.List(fields.Nested(WorkerSchema), required=True)


class WorkerActionAnswerSchema(Schema):
    id = fields.String(required=True)
    state = fields.String(
        required=True,
        validate=validate.OneOf([s.value for s in WorkerState]),
        metadata={"description": "The state the request moves the worker to."},
    )
class QueueItemSchema(Schema):
    name = fields.String(required=True, metadata={"description": "The queue's name."})
    ready = fields.Integer(required=True, validate=validate.Range(min=0),
                           metadata={"description": "Entries a worker may take now."})
    delayed = fields.Integer(required=True, validate=validate.Range(min=0),
                             metadata={"description": "Entries waiting for their delay."})
    reserved = fields.Integer(required=True, validate=validate.Range(min=0),
                              metadata={"description": "Entries a worker holds."})
    paused = fields.Boolean(required=True,
                            metadata={"description": "Whether this project's workers skip it."})
    oldestReadyAge = fields.Float(
        required=True,
        allow_none=True,
        validate=validate.Range(min=0),
        metadata={"description": "Seconds since the oldest ready entry became ready;"
                                 " null when none is ready."},
    )


class QueueListSchema(Schema):
    queues = fields.List(fields.Nested(QueueItemSchema), required=True)


class QueuePauseSchema(Schema):
    name = fields.String(required=True)
    paused = fields.Boolean(required=True)


class WebhookDataSchema(Schema):
    uuid = fields.String(required=True)
    jobType = fields.String(required=True)  # noqa: N815 - the API's name
    status = fields.String(required=True, validate=validate.OneOf(
        ["finished", "failed", "cancelled"]))
    result = fields.Integer(required=True)
    completeness = fields.Float(required=True, validate=validate.Range(min=0, max=1))
    progress = fields.String(required=True, allow_none=True, metadata={
        "description": "The job's progress URL path, as in listing items."})


class WebhookEventSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(list(EVENTS.values())))
    timestamp = fields.String(required=True, metadata={
        "format": "date-time", "description": "When the job ended (UTC)."})
    data = fields.Nested(WebhookDataSchema, required=True)


#: Component name -> marshmallow schema, nested ones first.
RESPONSE_SCHEMAS: dict[str, type[Schema]] = {
    "Error": ErrorBodySchema,
    "ValidationError": ValidationErrorBodySchema,
    "BranchItem": BranchItemSchema,
    "LeafItem": LeafItemSchema,
    "PostSchema": PostSchemaSchema,
    "Created": CreatedSchema,
    "Progress": ProgressSchema,
    "JobResult": JobResultSchema,
    "LogRecord": LogRecordSchema,
    "ErrorRecord": ErrorRecordSchema,
    "Info": InfoSchema,
    "StreamLog": StreamLogSchema,
    "JobListItem": JobListItemSchema,
    "JobList": JobListSchema,
    "CancelAnswer": CancelAnswerSchema,
    "RetryAnswer": RetryAnswerSchema,
    "BulkAnswer": BulkAnswerSchema,
    "Worker": WorkerSchema,
    "WorkerList": WorkerListSchema,
    "WorkerActionAnswer": WorkerActionAnswerSchema,
    "QueueItem": QueueItemSchema,
    "QueueList": QueueListSchema,
    "QueuePause": QueuePauseSchema,
    "WebhookData": WebhookDataSchema,
    "WebhookEvent": WebhookEventSchema,
}
#: Free-form bodies, which no marshmallow schema describes.
FREE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Data": {"description": "Whatever the job's get_data() returns ({} by default)."},
    "Dump": {"type": "object", "description": "The stored job document, cas current."},
}
#: The error answers (``components.responses``): name -> schema, description.
ERRORS: dict[str, tuple[str, str]] = {
    "BadRequest": ("Error", "The request is malformed; the message says how."),
    "NotFound": ("Error", "No such job (unknown or malformed uuid, or another tree's)."),
    "QueueNotFound": ("Error", "No queue of this service by that name."),
    "MethodNotAllowed": ("Error", "A method this path does not take; see Allow."),
    "Conflict": ("Error", "The job already has a result."),
    "RetryConflict": ("Error", "The job is not failed or cancelled, or a worker still holds"
                               " its last queue entry for a moment."),
    "PayloadTooLarge": ("Error", "The body is larger than SPACEWALK_MAX_CONTENT_LENGTH."),
    "UnsupportedMediaType": ("Error", "A non-empty body that is not JSON."),
    "UnprocessableEntity": ("ValidationError", "The job parameters are not valid."),
    "InternalServerError": ("Error", "The stored job document cannot be read."),
    "NotImplemented": ("Error", "The datastore cannot list jobs, or the queue count them."),
    "ServiceUnavailable": ("Error", "The datastore or the queue is unreachable."),
}


# -- request bodies ---------------------------------------------------------------


def params_components(post_schema: dict[str, Any], base: str) -> dict[str, dict[str, Any]]:
    """A post-schema's definitions as OpenAPI 3.1 components.

    ``Params`` becomes ``<base>.Params``, a nested definition ``D``
    ``<base>.D``; ``$ref`` s are rewritten to match. Draft 7 and OpenAPI 3.1's
    dialect (JSON Schema 2020-12) read every keyword the post-schema uses
    alike except two, translated here: an ``items`` array (a tuple) becomes
    ``prefixItems``, and the siblings of ``$ref``, which draft 7 ignores,
    are dropped unless they are annotations.

    :param post_schema: the published post-schema of one leaf.
    :param base: the component name prefix, unique in the document.
    """
    definitions: dict[str, Any] = post_schema["definitions"]
    names = {name: f"{base}.{name}" for name in definitions}
    return {names[name]: _translate(body, names) for name, body in definitions.items()}


def _translate(schema: Any, names: dict[str, str]) -> Any:
    if not isinstance(schema, dict):  # a boolean schema
        return schema
    if isinstance(schema.get("$ref"), str):
        ref: str = schema["$ref"]
        if ref.startswith(_REF_PREFIX):
            ref = f"#/components/schemas/{names[ref[len(_REF_PREFIX):]]}"
        kept = {k: v for k, v in schema.items() if k in _REF_ANNOTATIONS}
        return {**kept, "$ref": ref}
    out = dict(schema)
    for key in _SUBSCHEMA:
        if key in out:
            out[key] = _translate(out[key], names)
    for key in _SUBSCHEMA_MAPS:
        if key in out:
            out[key] = {name: _translate(s, names) for name, s in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if key in out:
            out[key] = [_translate(s, names) for s in out[key]]
    items = out.get("items")
    if isinstance(items, list):
        out["prefixItems"] = [_translate(s, names) for s in items]
        extra = out.pop("additionalItems", None)
        if extra is None:
            del out["items"]
        else:
            out["items"] = extra
    elif items is not None:
        out["items"] = _translate(items, names)
    return out


# -- operations -------------------------------------------------------------------


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    ref = schema if isinstance(schema, dict) else {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _list_of(name: str, description: str) -> dict[str, Any]:
    return _json({"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
                 description)


_UUID_PARAMETER = {
    "in": "path",
    "name": "uuid",
    "required": True,
    "description": "The job's uuid, exactly as issued.",
    "schema": {"type": "string", "pattern": f"^{UUID_PATTERN.pattern}$"},
}
_LOCATION = {
    "description": "The job's progress URL path, prefix included.",
    "required": True,
    "schema": {"type": "string"},
}
_ALLOW = {
    "description": "The methods this path takes.",
    "required": True,
    "schema": {"type": "string"},
}
_ETAG = {
    "description": "The job document's version (its cas, quoted): send it back in"
                   " If-None-Match to be answered 304 while the job has not changed.",
    "required": True,
    "schema": {"type": "string"},
}
_IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "description": "ETags of copies the client holds (RFC 9110: a list, weak tags and *"
                   " too); one that matches is answered 304 without a body.",
    "schema": {"type": "string"},
}
_NOT_MODIFIED = {
    "description": "Not modified: the job is as the If-None-Match ETag says; no body.",
    "headers": {"ETag": _ETAG},
}
#: ``Prefer: wait=N`` (RFC 7240; web/prefer.py), of POST L/job and the long polls.
_PREFER = {
    "in": "header",
    "name": "Prefer",
    "description": "wait=N (whole seconds, at most SPACEWALK_MAX_WAIT): hold the answer"
                   " (RFC 7240). Other preferences, and a wait value that is no whole"
                   " number, are ignored.",
    "schema": {"type": "string", "examples": ["wait=10"]},
}
PREFERENCE_APPLIED = "Preference-Applied"
_PREFERENCE_APPLIED = {
    "description": "wait=N: the request waited up to N seconds (its wait, capped).",
    "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
}
_REPLAYED = {
    "description": "true: the answer of an earlier request with this Idempotency-Key.",
    "required": True,
    "schema": {"type": "string", "enum": ["true"]},
}
_RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_LINK = {
    "description": 'The next page: <path?filters&cursor=...>; rel="next".',
    "schema": {"type": "string"},
}


def _sse_event(event: str, data_schema: str) -> dict[str, Any]:
    """One kind of Server-Sent Event: its ``event`` name and JSON ``data``."""
    return {
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string"},
            "event": {"const": event},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{data_schema}"},
            },
        },
    }


class _Operations:
    """The operation of each route kind, for the trees of one document."""

    def __init__(self, state: SpacewalkState, tags: dict[str, str], bodies: dict[str, str]):
        self.state = state
        self.tags = tags
        self.bodies = bodies
        self.parents = {leaf.path: b for b in state.tree.branches() for leaf in b.leaves}
        kind = RouteKind
        #: The operation of each kind of route but those of _NOT_OPERATIONS.
        self.makers: dict[RouteKind, Callable[[Route], dict[str, Any]]] = {
            kind.BRANCHES: self._branches,
            kind.LEAVES: self._leaves,
            kind.POST_SCHEMA: self._post_schema,
            kind.JOB: self._job,
            kind.PROGRESS: self._progress,
            kind.INFO: self._info,
            kind.DATA: self._data,
            kind.DUMP: self._dump,
            kind.EVENTS: self._events,
            kind.JOBS: self._jobs,
            kind.CANCEL: self._cancel,
            kind.RETRY: self._retry,
            kind.BULK_RETRY: lambda route: self._bulk("retry", "failed or cancelled"),
            kind.BULK_CANCEL: lambda route: self._bulk("cancel", "queued or running"),
            kind.WORKERS: self._workers,
            kind.WORKER_ACTION: self._worker_action,
            kind.QUEUES: self._queues,
            kind.QUEUE_PAUSE: self._queue_pause,
            kind.QUEUE_RESUME: self._queue_pause,
        }

    def operation(self, route: Route) -> dict[str, Any]:
        make = self.makers.get(route.kind)
        if make is None:
            raise LookupError(
                f"the OpenAPI document does not know route kind {str(route.kind)!r}"
            )
        operation = make(route)
        node = route.node
        if isinstance(node, Leaf):
            branch = self.parents[node.path]
        else:
            branch = node if isinstance(node, Branch) else self.state.tree.root
        operation["tags"] = [self.tags[branch.path]]
        operation["operationId"] = _operation_id(route.method, route.path, self.state)
        responses = {**operation["responses"], "405": "MethodNotAllowed"}
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _branches(self, route: Route) -> dict[str, Any]:
        node = route.node
        assert isinstance(node, Branch)
        return {
            "summary": f"{node.name}: sub-branches",
            "description": node.description,
            "responses": {"200": _list_of("BranchItem", "The sub-branches ([] if none).")},
        }

    def _leaves(self, route: Route) -> dict[str, Any]:
        node = route.node
        assert isinstance(node, Branch)
        return {
            "summary": f"{node.name}: jobs",
            "description": node.description,
            "responses": {"200": _list_of("LeafItem", "The jobs ([] if none).")},
        }

    def _post_schema(self, route: Route) -> dict[str, Any]:
        node = route.node
        assert isinstance(node, Leaf)
        return {
            "summary": f"{node.name}: parameter schema",
            "description": node.description,
            "responses": {"200": _json("PostSchema", "The post-schema.")},
        }

    def _job(self, route: Route) -> dict[str, Any]:
        node = route.node
        assert isinstance(node, Leaf)
        return {
            "summary": node.name,
            "description": node.description,
            "parameters": [*_START_OPTIONS, _IDEMPOTENCY_KEY, {
                **_PREFER,
                "description": "wait=N: hold the answer up to N seconds (at most"
                               " SPACEWALK_MAX_WAIT) for the job's result, answered 200"
                               " with it (RFC 7240). Other preferences, and a wait value"
                               " that is no whole number, are ignored.",
            }],
            "requestBody": {
                # An empty body means {}.
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{self.bodies[node.path]}"}
                    }
                },
            },
            "responses": {
                "200": {
                    **_json(
                        {"anyOf": [{"$ref": "#/components/schemas/JobResult"},
                                   {"$ref": "#/components/schemas/Created"}]},
                        "With Prefer: wait, the job's result came in time: its uuid,"
                        " completeness, result and data. Or a replay: the"
                        " Idempotency-Key was used before with the same Params; nothing is"
                        " created, the first job's uuid is answered (its result, if it"
                        " has one within the wait).",
                    ),
                    "headers": {
                        "Location": _LOCATION,
                        REPLAYED_HEADER: {**_REPLAYED, "required": False},
                        PREFERENCE_APPLIED: _PREFERENCE_APPLIED,
                    },
                },
                "201": {
                    **_json("Created", "The job is stored and queued (with Prefer: wait,"
                                       " it had no result in time)."),
                    "headers": {"Location": _LOCATION, PREFERENCE_APPLIED: _PREFERENCE_APPLIED},
                },
                "400": "BadRequest",
                "409": {
                    **_json("Error", "The first request with this Idempotency-Key has not"
                                     " been answered yet; try again after Retry-After."),
                    "headers": {"Retry-After": _RETRY_AFTER},
                },
                "413": "PayloadTooLarge",
                "415": "UnsupportedMediaType",
                "422": _json(
                    {"anyOf": [{"$ref": "#/components/schemas/ValidationError"},
                               {"$ref": "#/components/schemas/Error"}]},
                    "The job parameters are not valid (errors by field), or the"
                    " Idempotency-Key was used with another leaf or other Params (no errors).",
                ),  # fmt: skip
                "503": "ServiceUnavailable",
            },
        }

    def _by_uuid(
        self,
        summary: str,
        ok: dict[str, Any],
        query: Sequence[dict[str, Any]] = (),
        errors: dict[str, str] | None = None,
        long_poll: bool = False,
    ) -> dict[str, Any]:
        """A GET about one stored job: an ETag, 304 for If-None-Match, 404 for
        no such job, 500 for an unreadable document; with ``long_poll``,
        ``Prefer: wait`` too."""
        headers: dict[str, Any] = {"ETag": _ETAG}
        parameters = [_UUID_PARAMETER, *query, _IF_NONE_MATCH]
        not_modified: dict[str, Any] = _NOT_MODIFIED
        if long_poll:
            headers[PREFERENCE_APPLIED] = _PREFERENCE_APPLIED
            not_modified = {**_NOT_MODIFIED, "headers": headers}
            parameters.append({
                **_PREFER,
                "description": "wait=N, with an If-None-Match that matches: hold the answer"
                               " up to N seconds (at most SPACEWALK_MAX_WAIT) for the job"
                               " to change (a long poll), then 200 or 304 (RFC 7240)."
                               " Ignored without a matching If-None-Match.",
            })
        responses = {"200": {**ok, "headers": headers}, "304": not_modified,
                     "404": "NotFound", "500": "InternalServerError",
                     "503": "ServiceUnavailable", **(errors or {})}
        return {"summary": summary, "parameters": parameters, "responses": responses}

    def _progress(self, route: Route) -> dict[str, Any]:
        return self._by_uuid(
            "A job's progress", _json("Progress", "Completeness and result."), long_poll=True
        )

    def _info(self, route: Route) -> dict[str, Any]:
        return self._by_uuid(
            "A job's progress and logs", _json("Info", "Progress, events, errors, warnings."),
            long_poll=True,
        )

    def _data(self, route: Route) -> dict[str, Any]:
        return self._by_uuid("A job's output", _json("Data", "What the job returns."))

    def _dump(self, route: Route) -> dict[str, Any]:
        show_logs = {
            "in": "query",
            "name": "showLogs",
            "description": "Include events, errors and warnings (case-insensitive).",
            "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
        }
        return self._by_uuid(
            "A job's stored document",
            _json("Dump", "The stored job document."),
            query=[show_logs],
            errors={"400": "BadRequest"},
        )

    def _events(self, route: Route) -> dict[str, Any]:
        last_event_id = {
            "in": "header",
            "name": "Last-Event-ID",
            "description": "The id of the last event a client got (browsers send it when they"
                           " reconnect): the stream resumes after it. An id the stream"
                           " cannot have given is 400.",
            "schema": {"type": "string"},
        }
        stream = {
            "description": (
                "Server-Sent Events, each with an opaque id: `log` (data: a StreamLog) for"
                " each log record not yet sent, in timeStamp order; `progress` (data: the"
                " progress object) when it changes; `end` (data: the progress object) once"
                " the job has a result, after which the server closes the stream. A comment"
                " line every 15 s of silence; the stream ends after SPACEWALK_STREAM_MAX"
                " seconds, for the client to resume with Last-Event-ID."
            ),
            "headers": {
                "Cache-Control": {"description": "no-cache", "schema": {"type": "string"}},
            },
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    # OpenAPI 3.2's itemSchema, which a 3.1 document may only
                    # carry as an extension
                    "x-itemSchema": {
                        "description": "One event of the stream.",
                        "oneOf": [
                            _sse_event("log", "StreamLog"),
                            _sse_event("progress", "Progress"),
                            _sse_event("end", "Progress"),
                        ],
                    },
                }
            },
        }
        return {
            "summary": "A job's events as they happen",
            "description": "Follow a job: its log records, progress and end as Server-Sent"
                           " Events (text/event-stream).",
            "parameters": [_UUID_PARAMETER, last_event_id],
            "responses": {"200": stream, "400": "BadRequest", "404": "NotFound",
                          "500": "InternalServerError", "503": "ServiceUnavailable"},
        }

    def _filters(self) -> list[dict[str, Any]]:
        """The listing's filters, which the bulk actions take too."""
        job_types = sorted(leaf.job_type for leaf in self.state.tree.leaves())
        many = "; repeat it or separate values with commas."
        return [
            _query("jobType", {"type": "array", "items": {"type": "string"}},
                   f"Only these job types (of this tree: {', '.join(job_types)}){many}"),
            _query("status",
                   {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}},
                   f"Only jobs in these statuses{many}"),
            _query("since", {"type": "string", "format": "date-time"},
                   "Only jobs created at or after this time (UTC when no offset)."),
        ]

    def _jobs(self, route: Route) -> dict[str, Any]:
        return {
            "summary": "The jobs of this tree",
            "description": "Newest first (createdAt, then uuid, descending), a page at a time.",
            "parameters": [
                *self._filters(),
                _query("limit", {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT},
                       f"Jobs per page; above {MAX_LIMIT} means {MAX_LIMIT}."),
                _query("cursor", {"type": "string"}, "The next field of the previous page."),
            ],
            "responses": {
                "200": {**_json("JobList", "A page of jobs."), "headers": {"Link": _LINK}},
                "400": "BadRequest",
                "501": "NotImplemented",
                "503": "ServiceUnavailable",
            },
        }

    def _cancel(self, route: Route) -> dict[str, Any]:
        return {
            "summary": "Cancel a job",
            "description": (
                "A queued job is cancelled at once (200) and never runs; a running one "
                "(202) stops at its next progress report, or by force after "
                "SPACEWALK_CANCEL_GRACE seconds. Either way its result becomes 410."
            ),
            "parameters": [_UUID_PARAMETER],
            "responses": {
                "200": _json("CancelAnswer", "Cancelled before it ran."),
                "202": _json("CancelAnswer", "Cancelling: the job is running."),
                "404": "NotFound",
                "409": "Conflict",
                "500": "InternalServerError",
                "503": "ServiceUnavailable",
            },
        }

    def _retry(self, route: Route) -> dict[str, Any]:
        return {
            "summary": "Retry a failed or cancelled job",
            "description": (
                "Runs the job again under its uuid: result -1, completeness 0, errorCount 0,"
                " its logs kept plus an event saying it was retried, queued with its"
                " original priority (the starting options may say otherwise). The body's"
                " Params fields replace the stored ones; the two together are validated"
                " as POST validates a new job's. 409 (before any look at the body) unless"
                " the job is failed or cancelled."
            ),
            "parameters": [_UUID_PARAMETER, *_START_OPTIONS],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "description": "Params fields of the job's leaf to change; empty: none.",
                }}},
            },
            "responses": {
                "200": _json("RetryAnswer", "The job is queued again."),
                "400": "BadRequest",
                "404": "NotFound",
                "409": "RetryConflict",
                "413": "PayloadTooLarge",
                "415": "UnsupportedMediaType",
                "422": "UnprocessableEntity",
                "500": "InternalServerError",
                "503": "ServiceUnavailable",
            },
        }

    def _workers(self, route: Route) -> dict[str, Any]:
        return {
            "summary": "The live job workers",
            "description": (
                "Every worker of the datastore seen within its last three heartbeats"
                " (SPACEWALK_HEARTBEAT), by host."
            ),
            "responses": {
                "200": _json("WorkerList", "The live workers."),
                "501": _json("Error", "The datastore keeps no worker records."),
                "503": "ServiceUnavailable",
            },
        }

    def _bulk(self, action: str, statuses: str) -> dict[str, Any]:
        limit = {"type": "integer", "minimum": 1, "default": DEFAULT_BULK_LIMIT}
        return {
            "summary": f"{action.capitalize()} the {statuses} jobs a filter selects",
            "description": (
                f"Reads at most limit of the {statuses} jobs the filters select, newest"
                f" first, from the cursor on, and {action}s each; a job that changed"
                " since it was read is counted in matched, not in done."
            ),
            "parameters": [
                *self._filters(),
                _query("dryRun", {"type": "string", "enum": ["true", "false"],
                                  "default": "false"},
                       "Only count the jobs (case-insensitive)."),
                _query("limit", limit,
                       f"Jobs read; above {MAX_BULK_LIMIT} means {MAX_BULK_LIMIT}."),
                _query("cursor", {"type": "string"}, "The next field of the previous answer."),
            ],
            "responses": {
                "200": _json("BulkAnswer", "What the batch came to."),
                "400": "BadRequest",
                "413": "PayloadTooLarge",
                "415": "UnsupportedMediaType",
                "501": "NotImplemented",
                "503": "ServiceUnavailable",
            },
        }

    def _queues(self, route: Route) -> dict[str, Any]:
        return {
            "summary": "The queues",
            "description": (
                "Entries by state and the wait of the oldest ready one: the service's"
                " queue first, then every other queue of its backend that holds an entry."
            ),
            "responses": {
                "200": _json("QueueList", "The queues."),
                "501": "NotImplemented",
                "503": "ServiceUnavailable",
            },
        }

    def _worker_action(self, route: Route) -> dict[str, Any]:
        action = worker_action(route)
        return {
            "summary": f"{action.value.capitalize()} a worker",
            "description": _WORKER_ACTIONS[action],
            "parameters": [_WORKER_ID_PARAMETER],
            "responses": {
                "202": _json("WorkerActionAnswer", "Asked: the worker obeys within a heartbeat."),
                "404": _json("Error", "No live worker has this id."),
                "501": _json("Error", "The datastore keeps no worker records."),
                "503": "ServiceUnavailable",
            },
        }

    def _queue_pause(self, route: Route) -> dict[str, Any]:
        pause = route.kind is RouteKind.QUEUE_PAUSE
        return {
            "summary": "Pause the queue" if pause else "Resume the queue",
            "description": (
                "Within one heartbeat (SPACEWALK_HEARTBEAT) and until resumed, this"
                " project's workers take none of the queue's entries; POSTs are still"
                " accepted and stored. ZeroG's own workers do not know about pauses."
                if pause else
                "This project's workers take the queue's entries again within one heartbeat."
            ),
            "parameters": [{
                "in": "path",
                "name": "name",
                "required": True,
                "description": "The service's queue, <service>_jobs.",
                "schema": {"type": "string", "enum": [self.state.settings.queue_name]},
            }],
            "responses": {
                "202": _json("QueuePause", "Paused." if pause else "Resumed."),
                "404": "QueueNotFound",
                "503": "ServiceUnavailable",
            },
        }  # fmt: skip


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"in": "query", "name": name, "schema": schema, "description": description}


_WORKER_ID_PARAMETER = {
    "in": "path",
    "name": "id",
    "required": True,
    "description": "The worker's id, as GET workers lists it.",
    "schema": {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"},
}
_WORKER_ACTIONS = {
    WorkerAction.DRAIN: "The worker finishes its current job, then takes no other"
                        " until undrained (state draining).",
    WorkerAction.UNDRAIN: "The worker takes jobs again (idle or running); a retiring"
                          " worker stays retiring.",
    WorkerAction.RETIRE: "The worker finishes its current job, then exits, and its"
                         " supervisor starts no other in its place (state retiring).",
}


#: The starting options of ``POST L/job`` (web/options.py).
_START_OPTIONS = [
    {
        "in": "query",
        "name": "delay",
        "description": (
            "Seconds before any worker may start the job (its status stays queued);"
            " not with runAt. beanstalkd counts whole seconds and rounds a fraction up."
        ),
        # no default: Swagger UI would send it with every "Try it out"
        "schema": {"type": "number", "minimum": 0, "maximum": MAX_START_DELAY},
    },
    {
        "in": "query",
        "name": "runAt",
        "description": (
            "When the job may start, with a time zone offset, at most 30 days ahead;"
            " a past time means now. Not with delay."
        ),
        "schema": {"type": "string", "format": "date-time"},
    },
    {
        "in": "query",
        "name": "priority",
        "description": (
            "Lower runs first; of ready jobs with equal priorities, the one queued"
            " first."
        ),
        "schema": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_PRIORITY,
            "default": DEFAULT_PRIORITY,
        },
    },
]


#: The ``Idempotency-Key`` header of ``POST L/job`` (web/idempotency.py).
_IDEMPOTENCY_KEY = {
    "in": "header",
    "name": HEADER,
    "description": (
        "Creates the job once: the same key again under this root within"
        " SPACEWALK_IDEMPOTENCY_TTL seconds, with the same leaf and Params (the starting"
        " options aside), answers 200 with the first job; with another leaf or other"
        " Params 422; while the first request runs 409."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH, "pattern": "^[!-~]+$"},
}


def _operation_id(method: str, path: str, state: SpacewalkState) -> str:
    local = _RULE_ARGUMENT.sub("", path[len(state.tree.url_prefix):])
    return f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', local).strip('_')}"


def _openapi_path(rule: str) -> str:
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    taken.add(candidate)
    return candidate


def openapi_document(
    states: Sequence[SpacewalkState],
    server_url: str = "/",
    table: Callable[[SpacewalkState], Iterable[Route]] = routes,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``states``, the trees at one prefix.

    :param states: the trees, in the order their paths are listed.
    :param server_url: the ``servers`` URL: the app's script root, or ``/``.
    :param table: the routes of one tree (:func:`~flask_spacewalk.web.routes.routes`).
    """
    # Several trees at one prefix: each one's title and version once.
    titles = dict.fromkeys(state.settings.api_title for state in states)
    versions = dict.fromkeys(state.settings.api_version for state in states)
    spec = APISpec(
        title=", ".join(titles) or "spacewalk",
        version=", ".join(versions) or "1",
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": "Jobs served by flask-spacewalk: "
                             + (", ".join(s.tree.root.name for s in states) or "none") + "."},
        servers=[{"url": server_url}],
    )
    for name, schema in RESPONSE_SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for name, body in FREE_SCHEMAS.items():
        spec.components.schema(name, body)
    for name, (schema_name, description) in ERRORS.items():
        response = _json(schema_name, description)
        if name == "MethodNotAllowed":
            response["headers"] = {"Allow": _ALLOW}
        spec.components.response(name, response)

    taken = set(RESPONSE_SCHEMAS) | set(FREE_SCHEMAS)
    tag_names: set[str] = set()
    paths: dict[str, dict[str, Any]] = {}
    for state in states:
        prefix = state.tree.url_prefix
        tags = {}
        for branch in state.tree.branches():
            tags[branch.path] = _unique(branch.path[len(prefix):].strip("/"), tag_names)
            spec.tag({"name": tags[branch.path], "description": branch.description or branch.name})
        bodies = {}
        for leaf in state.tree.leaves():
            base = _unique(_COMPONENT_NAME.sub("_", leaf.job_type), taken)
            components = params_components(state.schemas[leaf.path].post_schema, base)
            for name, body in components.items():
                spec.components.schema(name, body)
            bodies[leaf.path] = f"{base}.Params"
        operations = _Operations(state, tags, bodies)
        for route in table(state):
            if route.kind in _NOT_OPERATIONS:
                continue
            path_item = paths.setdefault(_openapi_path(route.path), {})
            path_item[route.method.lower()] = operations.operation(route)
    for path, operations_ in paths.items():
        spec.path(path=path, operations=operations_)
    document = spec.to_dict()
    document["webhooks"] = _webhooks()
    return {"openapi": document.pop("openapi"), **document}


#: The Standard Webhooks headers of every webhook POST.
_WEBHOOK_HEADERS = (
    ("webhook-id", "The delivery's id: the same on every attempt of one job end at one"
                   " endpoint; a receiver drops one it has processed."),
    ("webhook-timestamp", "The attempt's time, in seconds since the epoch; a receiver"
                          " refuses one far from its clock (standardwebhooks: 5 minutes)."),
    ("webhook-signature", "v1,<base64 HMAC-SHA256> of id.timestamp.body under the"
                          " endpoint's secret."),
)


def _webhooks() -> dict[str, Any]:
    """The POSTs of ``SPACEWALK_WEBHOOKS`` endpoints, by event (docs/live.rst)."""
    parameters = [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"},
         "description": description}
        for name, description in _WEBHOOK_HEADERS
    ]  # fmt: skip
    return {
        event: {"post": {
            "summary": f"A job ended {status.value}",
            "description": f"Sent to each endpoint of SPACEWALK_WEBHOOKS whose events include"
                           f" {event}, signed as Standard Webhooks 1.0 specifies; retried with"
                           " backoff for about an hour until a 2xx answer.",
            "operationId": f"webhook_{event.replace('.', '_')}",
            "parameters": parameters,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/WebhookEvent"}}}},
            "responses": {"2XX": {"description": "Received; any other answer, or none"
                                                 " within 10 s, is tried again later."}},
        }}
        for status, event in EVENTS.items()
    }  # fmt: skip
