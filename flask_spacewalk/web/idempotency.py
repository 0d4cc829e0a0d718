"""The ``Idempotency-Key`` header of ``POST L/job`` (SPEC section 7, the
IETF draft): the header read and checked, and the answers a key that is
taken gets. The records and the claim are
:mod:`~flask_spacewalk.runtime.keyrecords`'.

Each replay is logged on one INFO line of this module's logger
(``flask_spacewalk.web.idempotency``), naming the key, the tree's root and
the job: the job itself is not written to (a replay changes nothing, not
even ``updatedAt`` or the ETag).
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator

from flask import Response, request
from werkzeug.exceptions import BadRequest

from ..errors import SpacewalkError
from ..runtime.keyrecords import KeyClaim, KeyRecord
from .http import error_response, json_response

__all__ = [
    "HEADER",
    "MAX_LENGTH",
    "REPLAYED_HEADER",
    "RETRY_AFTER",
    "holding",
    "read_idempotency_key",
    "taken_key_answer",
]

log = logging.getLogger(__name__)

#: The request header.
HEADER = "Idempotency-Key"
#: The header of a replay's answer.
REPLAYED_HEADER = "Idempotent-Replayed"
#: ``Retry-After`` of the 409 answered while the key's first POST runs.
RETRY_AFTER = 1
#: The longest key.
MAX_LENGTH = 255

_KEY = re.compile(f"[!-~]{{1,{MAX_LENGTH}}}")


def read_idempotency_key() -> str | None:
    """The request's ``Idempotency-Key``, or None without one.

    :raises BadRequest: the header is empty, longer than 255 characters,
        holds a character outside ``!`` to ``~`` (a space, a non-ASCII
        letter), or is given more than once.
    """
    # get, not getlist: the WSGI environ holds one value per header (a
    # server joins repeated ones), and getlist walks every header to find it
    value = request.headers.get(HEADER)
    if value is None:
        return None
    # A server joins repeated headers into one with a comma: werkzeug's
    # test client with ", " (a space no key holds), gunicorn and
    # werkzeug's server with "," alone, which a key may hold (docs/api.rst).
    if ", " in value:
        raise BadRequest(f"{HEADER} is given more than once; send one key")
    if _KEY.fullmatch(value):
        return value
    if not value:
        problem = "is empty"
    elif len(value) > MAX_LENGTH:
        problem = f"is {len(value)} characters long"
    else:
        bad = next(char for char in value if not "!" <= char <= "~")
        problem = f"holds {bad!r} (character {value.index(bad) + 1})"
    raise BadRequest(
        f"{HEADER} {problem}: a key is 1 to {MAX_LENGTH} characters from ! to ~"
        " (printable ASCII, no space)"
    )


def taken_key_answer(claim: KeyClaim, found: KeyRecord, root_path: str) -> Response:
    """The answer to a POST whose key another POST holds or held.

    200 with the first job's ``{"uuid"}``, ``Location`` and
    ``Idempotent-Replayed: true`` for a replay (same leaf, same Params);
    422 naming the key for another leaf or other Params; 409 with
    ``Retry-After`` while the first POST has not finished.
    """
    key = claim.key
    if found.fingerprint != claim.fingerprint:
        if found.leaf_path != claim.leaf_path:
            how = f"to start a job of another leaf ({found.leaf_path})"
        else:
            how = "with other Params"
        return error_response(
            422,
            f"{HEADER} {key!r} was used {how}; a new job needs a new key",
        )
    if found.uuid is None:
        return error_response(
            409,
            f"a request with {HEADER} {key!r} is still being processed; try again"
            " once it has been answered",
            headers={"Retry-After": str(RETRY_AFTER)},
        )
    log.info(
        "%s %r under %s: replayed the answer for job %s; nothing created",
        HEADER, key, root_path, found.uuid,
    )
    location = f"{request.script_root}{root_path}/progress/{found.uuid}"
    return json_response(
        {"uuid": found.uuid}, 200, {"Location": location, REPLAYED_HEADER: "true"}
    )


@contextlib.contextmanager
def holding(claim: KeyClaim, root_path: str, uuid: str) -> Iterator[None]:
    """Hold ``claim`` while the block creates job ``uuid``: completed with
    the job's uuid when the block succeeds, released when it raises
    (anything: a 503, a bug), so the key's next POST claims it anew.

    A failure to complete or release is logged, not raised: the job is
    created (or the error on its way) either way, and a claim left pending
    is taken over after ``TAKEOVER_AFTER`` seconds.
    """
    try:
        yield
    except BaseException:
        try:
            claim.release()
        except SpacewalkError as exc:
            log.warning("%s %r under %s: cannot release the key after a failed request"
                        " (it stays pending until a request takes it over after %.0f s): %s",
                        HEADER, claim.key, root_path, claim.takeover_after, exc)  # fmt: skip
        raise
    if claim.taken_over is not None:
        log.warning(
            "%s %r under %s: took over the claim of a request that never finished"
            " (pending for %.0f s; it may have created a job too); created job %s",
            HEADER, claim.key, root_path, time.time() - claim.taken_over.claimed_at, uuid,
        )
    try:
        completed = claim.complete(uuid)
    except SpacewalkError as exc:
        log.warning("%s %r under %s: created job %s but cannot record it under the key"
                    " (it stays pending until a request takes it over after %.0f s): %s",
                    HEADER, claim.key, root_path, uuid, claim.takeover_after, exc)  # fmt: skip
        return
    if not completed:
        log.warning(
            "%s %r under %s: created job %s, but the key's claim was taken over or"
            " expired meanwhile: another request may have created a job for this key",
            HEADER, claim.key, root_path, uuid,
        )
