"""How a run of a job ends, in the words the job API speaks.

The result codes (``NO_RESULT``, ``INTERNAL_ERROR``, ``TIMED_OUT``), the
four interrupts a job raises through its ``raise_*`` methods, the two its
worker raises in it (:class:`JobStopped`), :class:`Outcome` and
:func:`interpret_result`, which reads ``run()``'s return value as ZeroG does.
Both :mod:`~flask_spacewalk.runtime.job` and
:mod:`~flask_spacewalk.runtime.lifecycle` speak them, so they live below both.
"""
from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = [
    "INTERNAL_ERROR",
    "MAX_CODE",
    "MAX_DELAY",
    "MIN_CODE",
    "NO_RESULT",
    "TIMED_OUT",
    "ChangeRefused",
    "ErrorContinue",
    "ErrorFinish",
    "JobStopped",
    "JobTimedOut",
    "Outcome",
    "RunResult",
    "WarningContinue",
    "WarningFinish",
    "interpret_result",
]

#: ``run()`` returns this to be queued again after a delay.
NO_RESULT = -1
#: The result and error code of a job that failed unexpectedly.
INTERNAL_ERROR = 500
#: The error code of a run stopped at its class's ``TIMEOUT`` ("Gateway Timeout").
TIMED_OUT = 504

#: A ``run()`` result: a code, or ``(code, delay)``.
RunResult = Union[int, tuple[int, Optional[float]], None]

#: The result codes a run may return: 32-bit signed ints.
MIN_CODE, MAX_CODE = -(2**31), 2**31 - 1
#: The longest requeue delay a run may ask for, in seconds (68 years: the
#: 32-bit bound that queues count delays within).
MAX_DELAY = float(2**31 - 1)


class ErrorContinue(Exception):
    """Raised by :meth:`RuntimeJob.raise_error_continue`: retry later."""


class ErrorFinish(Exception):
    """Raised by :meth:`RuntimeJob.raise_error_finish`: the job is over."""


class WarningContinue(Exception):
    """Raised by :meth:`RuntimeJob.raise_warning_continue`: retry later."""


class WarningFinish(Exception):
    """Raised by :meth:`RuntimeJob.raise_warning_finish`: the job is over."""


class JobStopped(BaseException):
    """Raised inside a running job that its worker stops: cancelled
    (:class:`~flask_spacewalk.runtime.cancel.JobCancelled`) or past its
    ``TIMEOUT`` (:class:`JobTimedOut`).

    A :class:`BaseException`, so a job's ``except Exception`` does not
    swallow it; clean up with ``try``/``finally``.
    """


class JobTimedOut(JobStopped):
    """Raised inside a run that went on past its class's ``TIMEOUT``.

    :param seconds: the ``TIMEOUT``, as the class gave it.
    """

    def __init__(self, seconds: float):
        super().__init__(f"timed out after {seconds} s")
        self.seconds = seconds


class ChangeRefused(Exception):
    """The guard of :meth:`RuntimeJob.guarded` refused a change; nothing
    was saved.

    :param reason: what the guard answered.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What became of one run of a job.

    ``result`` is the final code, or :data:`NO_RESULT` to run again after
    ``delay`` seconds. ``recorded`` is true when the job recorded its result
    itself (the ``*_finish`` interrupts). ``cancelled`` means the job is to
    be recorded cancelled.
    """

    result: int
    delay: float = 0.0
    recorded: bool = False
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.result != NO_RESULT


def interpret_result(value: Any, default_delay: float) -> Outcome:
    """Read ``run()``'s return value as ZeroG does.

    A code, or a ``(code, delay)`` pair, the code converted with ``int()``
    (``True`` is 1, ``"404"`` is 404); anything that is not a code counts
    as 200, a missing delay or one that is not a number as
    ``default_delay``, a negative one as 0.

    :raise ValueError: what ZeroG's ``int()`` or its queue would fail on: a
        code that is a float NaN or Infinity, or an int outside 32 bits
        (:data:`MIN_CODE` .. :data:`MAX_CODE`); with ``NO_RESULT``, a delay
        that is NaN, Infinity or above :data:`MAX_DELAY`.
    """
    delay: Any = default_delay
    if isinstance(value, (tuple, list)):
        code: Any = value[0] if value else None
        if len(value) > 1 and value[1] is not None:
            delay = value[1]
    else:
        code = value
    try:
        result = int(code)
    except OverflowError:
        raise ValueError(f"the result code {code!r} is not a number") from None
    except (TypeError, ValueError):
        if isinstance(code, float):  # NaN
            raise ValueError(f"the result code {code!r} is not a number") from None
        result = 200
    if not MIN_CODE <= result <= MAX_CODE:
        raise ValueError(f"the result code {reprlib.repr(result)} is outside 32 bits"
                         f" ({MIN_CODE}..{MAX_CODE})")
    try:
        seconds = float(delay)
    except OverflowError:  # an int of more than 308 digits
        seconds = math.inf
    except (TypeError, ValueError):
        seconds = default_delay
    if not (math.isfinite(seconds) and seconds <= MAX_DELAY):
        if result == NO_RESULT:
            raise ValueError(f"the delay {reprlib.repr(delay)} is not a number of seconds"
                             f" up to {MAX_DELAY:.0f}")
        seconds = default_delay  # ignored: the job is over
    return Outcome(result, max(0.0, seconds))
