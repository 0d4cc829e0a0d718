"""HTTP helpers of the web layer, one place for each concern.

JSON answers and the one error shape ``{code, status, message[, errors]}``
(:func:`error_response`), the JSON error handlers both the trees'
blueprints and the docs blueprint install, POST bodies
(:func:`read_json_body`), the ``ETag``/304 answers of a job's GETs, and
CORS. Nothing here knows the job tree.
"""
from __future__ import annotations

import json
import logging
import math
import re
from http import HTTPStatus
from typing import Any, Callable

from flask import Response, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)

from ..errors import (
    DatastoreUnavailable,
    InvalidJobDocument,
    JobUpdateConflict,
    ParamsInvalid,
    QueueUnavailable,
    SpacewalkError,
)
from ..runtime.encoding import MAX_DEPTH

__all__ = [
    "JSON_WHITESPACE",
    "MAX_DEPTH",
    "is_json_type",
    "cors_headers",
    "encode",
    "error_response",
    "etag_headers",
    "http_error",
    "json_bytes_response",
    "json_response",
    "not_modified",
    "not_modified_response",
    "params_invalid",
    "preflight_answer",
    "read_json_body",
    "spacewalk_error",
    "unexpected_error",
]

log = logging.getLogger(__name__)

#: JSON's white space: a body of only these means ``{}``.
JSON_WHITESPACE = b" \t\r\n"

# Built once: json.dumps and json.loads build a new encoder or decoder at
# every call given any option (a few microseconds of each answer and body).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(allow_nan=False)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as a JSON response, keys in the order given."""
    return json_bytes_response(encode(data), status, headers)


def json_bytes_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``body``, JSON already encoded, as a response."""
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
        return (_ENCODER.encode(data) + "\n").encode()
    except UnicodeEncodeError:
        return (_ASCII_ENCODER.encode(data) + "\n").encode()
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


def etag_headers(cas: int) -> dict[str, str]:
    """The ``ETag`` of a job's answers: its document's cas, which every write
    changes, read with the document (no hashing); ``no-cache`` so that no
    cache serves a stored copy without asking."""
    return {"ETag": f'"{cas}"', "Cache-Control": "no-cache"}


def not_modified(headers: dict[str, str]) -> bool:
    """Whether the request's ``If-None-Match`` matches the ETag in
    ``headers`` (weak comparison, ``*`` and lists included, RFC 9110 13.1.2)."""
    # the environ, not request.headers: a header that is missing (the usual
    # poll) costs a KeyError there
    if "HTTP_IF_NONE_MATCH" not in request.environ:
        return False
    return request.if_none_match.contains_weak(headers["ETag"][1:-1])


def not_modified_response(headers: dict[str, str]) -> Response:
    """304 with ``headers`` and no body."""
    response = Response(status=304, headers=headers)
    del response.headers["Content-Type"]  # no body, so no type
    return response


def is_json_type(mimetype: str) -> bool:
    """Whether ``mimetype`` is JSON: ``application/json`` or
    ``application/*+json`` (parameters are not part of it)."""
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def read_json_body(limit: int) -> dict[str, Any]:
    """The POST body as a JSON object, checked in SPEC order.

    Size (413), content type (415), JSON syntax and type (400); an empty
    body means ``{}``.
    """
    # read once: werkzeug parses the header again at each access
    length = request.content_length
    if length is not None and length > limit:
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
    if length is not None and len(raw) < length:
        # gunicorn marks its input terminated, so werkzeug does not check
        # the length: a client that stops sending early must not have a
        # prefix of its body taken for the whole of it.
        raise BadRequest(
            f"the body ended after {len(raw)} of the {length} bytes"
            " its Content-Length announced"
        )
    if not raw.strip(JSON_WHITESPACE):
        return {}
    mimetype = request.mimetype
    if not is_json_type(mimetype):
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: application/json), not {mimetype or 'untyped'}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        body = _BODY_DECODER.decode(text)
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


# MAX_DEPTH (runtime/encoding.py): the deepest nesting of arrays and objects
# a POST body may have, the body itself being level 1, as deep as a stored
# document may be; deeper would make the checks and the stores' encoders
# recurse past Python's limit.
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


#: POST bodies' decoder (see _ENCODER): big integers and NaN as above.
_BODY_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int)


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


def http_error(exc: HTTPException) -> Response:
    """The JSON answer of an HTTP error, routing's 404 and 405 included."""
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


def params_invalid(exc: ParamsInvalid) -> Response:
    """422, with the messages of each field."""
    return error_response(422, "the job parameters are not valid", exc.errors)


def spacewalk_error(exc: SpacewalkError) -> Response:
    """503 for what a retry may get through, 500 for an unreadable job."""
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
    return unexpected_error(exc)


def unexpected_error(exc: Exception) -> Response:
    """500, logged with its traceback, which the answer never shows."""
    if isinstance(exc, HTTPException):  # pragma: no cover - handled above
        return http_error(exc)
    log.exception("unhandled error in a Spacewalk view", exc_info=exc)
    return error_response(500, "internal server error")


def _allowed_origin(origins: tuple[str, ...]) -> str | None:
    """The request's ``Origin`` when CORS allows it, else None."""
    origin = request.headers.get("Origin")
    if not origin or not ("*" in origins or origin in origins):
        return None
    return origin


def preflight_answer(origins: tuple[str, ...], methods: str) -> Callable[[], Response | None]:
    """A ``before_request`` function answering the CORS preflights of
    ``origins`` with ``methods``."""

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


def cors_headers(origins: tuple[str, ...]) -> Callable[[Response], Response]:
    """An ``after_request`` function adding the CORS headers for ``origins``."""
    allow_any = "*" in origins

    def add_headers(response: Response) -> Response:
        origin = _allowed_origin(origins)
        if origin is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
        if not allow_any:
            response.vary.add("Origin")
        response.headers["Access-Control-Expose-Headers"] = (
            "Location, Link, ETag, Retry-After, Idempotent-Replayed, Preference-Applied"
        )
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

