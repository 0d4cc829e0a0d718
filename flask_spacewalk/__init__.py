"""flask-spacewalk: background jobs behind a discoverable REST API."""
from __future__ import annotations

from .backends import make_datastore, make_queue
from .base_job import BaseJob, BaseJobSchema
from .extension import Spacewalk
from .runtime.job import (
    INTERNAL_ERROR,
    NO_RESULT,
    ErrorContinue,
    ErrorFinish,
    WarningContinue,
    WarningFinish,
)

__all__ = [
    "BaseJob",
    "BaseJobSchema",
    "ErrorContinue",
    "ErrorFinish",
    "INTERNAL_ERROR",
    "NO_RESULT",
    "Spacewalk",
    "WarningContinue",
    "WarningFinish",
    "make_datastore",
    "make_queue",
]
