"""Retrying a job: which jobs may be retried, what a retry answers, and the
trace it leaves.

The transition itself, one compare-and-swap write guarded on the job's
status, is :meth:`Lifecycle.retry
<flask_spacewalk.runtime.lifecycle.Lifecycle.retry>`; this module holds the
words around it.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .status import JobStatus

if TYPE_CHECKING:
    from .job import RuntimeJob

#: The statuses a retry takes a job from.
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})

#: The fields a retry sets, besides the Params it is given.
RESET_FIELDS = ("resultCode", "completeness", "errorCount", "tickcount", "running",
                "queueKwargs", "queueJobId")


class RetryAnswer(str, enum.Enum):
    """What :meth:`Lifecycle.retry
    <flask_spacewalk.runtime.lifecycle.Lifecycle.retry>` did."""

    #: The job is queued again (or, inline, was run again).
    RETRIED = "retried"
    #: The job is not failed or cancelled (any more): nothing was done.
    NOT_RETRYABLE = "not retryable"
    #: A worker still holds the job's previous queue entry, which it drops
    #: when it sees the job ended: nothing was done; ask again shortly.
    ENTRY_HELD = "entry held"


def job_status(job: RuntimeJob) -> JobStatus:
    """The status of ``job`` as it stands (saved or not)."""
    return JobStatus.of({"resultCode": job.resultCode, "running": job.running})


def retry_event(status: JobStatus, result: int, changed: Iterable[str] = ()) -> str:
    """The event a retry records: ``Retried (was failed with 500)``, and
    the Params it changed, so that a reader of the log can tell why the job
    ran twice and with what."""
    text = f"Retried (was {status.value} with {result})"
    names = ", ".join(changed)
    return f"{text}; changed {names}" if names else text


def undo_event(reason: object) -> str:
    """The event of a retry taken back because the job could not be queued."""
    return f"Retry undone: {reason}"
