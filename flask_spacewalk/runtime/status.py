"""A job's status: the one rule, and what the listing indexes of a job.

Every place that names a status (the listing and its filter, the console,
the OpenAPI document, the backends' indexes) takes it from here; the
backends store and index the :class:`JobIndex` they are given with each
write and never decide what a status is or what a job key looks like.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

#: Only keys with this prefix hold jobs: ``zerog_job_<uuid>`` (ZeroG's).
JOB_KEY_PREFIX = "zerog_job_"
#: The error and result code a cancel records ("Gone").
CANCELLED_CODE = 410

# What follows the prefix in a job key: a uuid as issued, or any printable
# word (ZeroG and hand-made stores use other ids); never a space, which
# separates createdAt from the uuid in Redis's index members.
#: The id of a listed job (the part of its key after the prefix): uuids,
#: and the other printable ids ZeroG and hand-made stores use.
JOB_ID_PATTERN = re.compile(r"[!-~]{1,200}")


class JobStatus(str, enum.Enum):
    """A job's status, derived from its stored document by :meth:`of`.

    =========== ===========================================================
    ``queued``  ``resultCode`` -1 and ``running`` not true: waiting for a
                worker (a delayed job too)
    ``running`` ``resultCode`` -1 and ``running`` true
    ``finished`` 0 <= ``resultCode`` < 400
    ``cancelled`` ``resultCode`` 410, as a cancel records it
    ``failed``  any other ``resultCode``, or none that is a number
    =========== ===========================================================

    Transitions: a new job is ``queued``; a worker takes it (``running``)
    and either requeues it (``queued`` again: ``NO_RESULT``, a retried
    error, or a killed worker's job found ``running``) or records its result
    (``finished`` or ``failed``). A cancel moves a ``queued`` job to
    ``cancelled`` at once and a ``running`` one when its worker stops it.
    ``finished`` is final; a retry (``POST R/retry/<uuid>``) takes a
    ``failed`` or ``cancelled`` job back to ``queued``.
    """

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, document: Any) -> JobStatus:
        """The status of a stored job document.

        Any value is taken: one that is not a dict, or whose ``resultCode``
        is not a number (``true``, ``"200"``, missing), is ``failed``.
        """
        code = document.get("resultCode") if isinstance(document, dict) else None
        if not isinstance(code, (int, float)) or isinstance(code, bool):
            return cls.FAILED
        if code == -1:
            return cls.RUNNING if document.get("running") is True else cls.QUEUED
        if 0 <= code < 400:
            return cls.FINISHED
        return cls.CANCELLED if code == CANCELLED_CODE else cls.FAILED


#: The statuses in the order the API lists them.
STATUSES = tuple(status.value for status in JobStatus)
#: The statuses of a job that has ended (left only by a retry).
ENDED = frozenset({JobStatus.FINISHED, JobStatus.CANCELLED, JobStatus.FAILED})


@dataclass(frozen=True)
class JobIndex:
    """What the job listing indexes of one stored job document.

    :param job_type: its ``jobType``, None when that is not a str.
    :param created_at: its ``createdAt`` (the listing's order).
    :param status: its status.
    """

    job_type: str | None
    created_at: str
    status: JobStatus


def job_index(key: str, value: Any) -> JobIndex | None:
    """The listing's entry of the document ``value`` stored under ``key``,
    or None when it is not listed: the key is not ``zerog_job_<uuid>``, the
    value not a dict, or its ``createdAt`` not a str.
    """
    if not key.startswith(JOB_KEY_PREFIX) or not JOB_ID_PATTERN.fullmatch(key, len(JOB_KEY_PREFIX)):
        return None
    if not isinstance(value, dict):
        return None
    created, job_type = value.get("createdAt"), value.get("jobType")
    if not isinstance(created, str):
        return None
    return JobIndex(
        job_type if isinstance(job_type, str) else None, created, JobStatus.of(value)
    )


def index_columns(index: JobIndex | None) -> tuple[str | None, str | None, str | None]:
    """The listing's columns of a write, as the SQL stores keep them:
    ``(createdAt, jobType, status)``, or NULLs for what is not listed."""
    if index is None:
        return None, None, None
    return index.created_at, index.job_type, index.status.value
