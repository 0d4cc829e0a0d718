"""Whether the backends answer: the checks behind ``<prefix>/readyz``.

Each check is one cheap request (``ping``) run in a thread of its own and
given :data:`CHECK_TIMEOUT` seconds; the checks run side by side, so a probe
answers within about that time even when a backend hangs. A check still
waiting from an earlier probe is not started again: a hung backend holds
one thread, not one per probe.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from ..errors import NotSupported

__all__ = ["CHECK_TIMEOUT", "Readiness"]

#: Seconds each backend has to answer.
CHECK_TIMEOUT = 1.0


class Readiness:
    """Runs named checks with a timeout each, one thread per check in flight.

    :param timeout: seconds each check has to answer.
    """

    def __init__(self, timeout: float = CHECK_TIMEOUT) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}

    def failures(self, checks: Mapping[str, Callable[[], None]]) -> dict[str, str]:
        """Run ``checks`` (name -> a call that raises when the backend does
        not answer) side by side; the reason of each that failed, by name.

        A check that raises :exc:`~flask_spacewalk.errors.NotSupported` (a
        queue of ZeroG's, which has no harmless request) passes.
        """
        failed: dict[str, str] = {}
        started: dict[str, tuple[threading.Thread, list[BaseException]]] = {}
        for name, check in checks.items():
            with self._lock:
                earlier = self._running.get(name)
                if earlier is not None and earlier.is_alive():
                    failed[name] = f"an earlier check has not answered after {self.timeout} s"
                    continue
                errors: list[BaseException] = []
                thread = threading.Thread(
                    target=_run, args=(check, errors), name=f"spacewalk-readyz-{name}",
                    daemon=True,
                )  # fmt: skip
                self._running[name] = thread
            thread.start()
            started[name] = (thread, errors)
        deadline = time.monotonic() + self.timeout
        for name, (thread, errors) in started.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                failed[name] = f"no answer within {self.timeout} s"
            elif errors and not isinstance(errors[0], NotSupported):
                exc = errors[0]
                failed[name] = str(exc) or type(exc).__name__
        return failed


def _run(check: Callable[[], None], errors: list[BaseException]) -> None:
    try:
        check()
    except Exception as exc:  # any failure is the answer
        errors.append(exc)
