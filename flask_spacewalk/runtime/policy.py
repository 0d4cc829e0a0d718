"""The run policy of a job class: how long its retries wait, how long a run
may take (SPEC section 7, "Per-class run policy").

Class attributes of the job, each with ZeroG's behaviour as its default:

``MAX_ERRORS`` (3)
    Errors after which ``continue_running()`` ends the job with 500.
``RETRY_DELAY`` (None: the worker's ``ERROR_RETRY_DELAY``, 30 s)
    Seconds before the first retry of a failed run.
``RETRY_BACKOFF`` (1.0)
    Each further retry waits this many times longer, plus up to 10 %
    random jitter when above 1 (so retries of jobs that failed together
    spread out).
``RETRY_MAX_DELAY`` (3,600)
    The longest a retry waits.
``TIMEOUT`` (None)
    Seconds one run may take on a worker; past it the worker stops the run
    and records error 504 (:class:`~flask_spacewalk.runtime.outcome.JobTimedOut`).

:func:`policy_problems` checks them when a class is registered, so a bad
value stops start-up rather than a run; :func:`retry_delay` and
:func:`run_timeout` are what the lifecycle asks.
"""
from __future__ import annotations

import math
import random
import sys
from typing import Any

from .outcome import MAX_DELAY

__all__ = ["JITTER", "backoff_delay", "policy_problems", "retry_delay", "run_timeout"]

#: The largest random share added to a growing retry delay.
JITTER = 0.1


def backoff_delay(
    errors: int,
    base: float,
    backoff: float = 1.0,
    cap: float = 3600.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds before a retry: ``base * backoff**(errors - 1)``, plus up to
    :data:`JITTER` of it at random when ``backoff > 1``, at most ``cap``.

    :param errors: the job's ``errorCount`` after the failed run (counted
        as 1 when lower: a warning interrupt counts no error).
    :param rng: the source of the jitter (``random`` by default).
    """
    if base <= 0 or cap <= 0:
        return max(0.0, min(base, cap))
    steps = max(1, errors) - 1
    if backoff <= 1:
        return float(min(base, cap))
    # The cap first: a power past it is never computed (2.0 ** 1100
    # overflows), and an int compares exactly with a float of any size.
    if steps >= (math.log(cap) - math.log(base)) / math.log(backoff):
        return float(cap)
    try:
        delay = base * backoff**steps
    except OverflowError:  # a base so small that the ratio above overflows
        return float(cap)
    delay += delay * JITTER * (rng or random).random()
    return float(min(delay, cap))


def retry_delay(
    job_class: type, errors: int, default: float, rng: random.Random | None = None
) -> float:
    """Seconds before a job of ``job_class`` runs again after a failed run.

    :param errors: the job's ``errorCount`` after that run.
    :param default: the worker's ``ERROR_RETRY_DELAY``, for a class whose
        ``RETRY_DELAY`` is None.
    """
    base = getattr(job_class, "RETRY_DELAY", None)
    return backoff_delay(
        errors,
        default if base is None else base,
        getattr(job_class, "RETRY_BACKOFF", 1.0),
        getattr(job_class, "RETRY_MAX_DELAY", MAX_DELAY),
        rng,
    )


def run_timeout(job_class: type) -> float | None:
    """Seconds one run of a job of ``job_class`` may take on a worker."""
    timeout: float | None = getattr(job_class, "TIMEOUT", None)
    return timeout


def _number_in(value: Any, low: float, high: float) -> bool:
    """Whether ``value`` is an int or float (no bool) from ``low`` to ``high``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def policy_problems(job_class: type) -> list[str]:
    """What is wrong with the run policy of ``job_class``, one line each
    (none: it is fine)."""
    seconds = f"a number of seconds from 0 to {MAX_DELAY:.0f}"
    rules = [
        # name, may be None, low, high, what it must be
        ("MAX_ERRORS", False, 0, math.inf, "a number >= 0"),
        ("RETRY_DELAY", True, 0, MAX_DELAY, f"None or {seconds}"),
        ("RETRY_BACKOFF", False, 1, sys.float_info.max,
         "a finite number >= 1 (1: every retry waits RETRY_DELAY)"),
        ("RETRY_MAX_DELAY", False, 0, MAX_DELAY, seconds),
        ("TIMEOUT", True, 0, MAX_DELAY, f"None or {seconds}, above 0"),
    ]
    problems = []
    for name, nullable, low, high, rule in rules:
        value = getattr(job_class, name, None)
        if nullable and value is None:
            continue
        if not _number_in(value, low, high) or (name == "TIMEOUT" and value == 0):
            problems.append(f"{name} must be {rule}, not {value!r}")
    delay = getattr(job_class, "RETRY_DELAY", None)
    cap = getattr(job_class, "RETRY_MAX_DELAY", None)
    if not problems and delay is not None and delay > cap:
        problems.append(f"RETRY_DELAY {delay!r} is above RETRY_MAX_DELAY {cap!r},"
                        " which caps every retry: raise RETRY_MAX_DELAY")
    return problems
