"""The supervisor: keeps N worker processes alive.

Each child runs many jobs. A child that dies (killed, crashed, or recycled
after ``max_jobs``) is replaced; the job it held comes back from the queue
when its lease runs out. A child that exits with :data:`EXIT_RETIRED` (an
operator retired it) is not replaced, and once every child has retired the
supervisor exits. SIGTERM or SIGINT is passed on to the children, which
finish their jobs within the grace period; past it (plus a margin) the
supervisor kills what is left.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable

from .. import defaults

log = logging.getLogger(__name__)

#: Seconds a child must live for its exit not to slow down the restarts.
HEALTHY_LIFETIME = 1.0
#: Longest wait before restarting a child that keeps dying at once.
MAX_RESTART_DELAY = 10.0
#: Extra seconds the supervisor gives children past their grace period.
KILL_MARGIN = 5.0
#: The exit code of a child that retired: it is not restarted.
EXIT_RETIRED = 4
#: The signals the supervisor handles, blocked while it forks.
_HANDLED = (signal.SIGTERM, signal.SIGINT)


class Supervisor:
    """Forks ``processes`` children, each calling ``target()``.

    :param target: the child's work; its return value is the exit code.
    :param processes: how many children to keep running.
    :param grace: seconds a child may take to finish its job on shutdown.
    """

    def __init__(
        self,
        target: Callable[[], int],
        processes: int = 1,
        grace: float = defaults.SHUTDOWN_GRACE,
    ):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.target = target
        self.processes = processes
        self.grace = grace
        self.children: dict[int, float] = {}  # pid -> start time
        self.restarts = 0
        self.stopping = False
        #: The supervising process: its forks hold copies of this object.
        self.pid = os.getpid()
        self._restart_delay = 0.0

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT or until every child retired;
        return the exit code (0)."""
        self.pid = os.getpid()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        for _ in range(self.processes):
            self._spawn()
        while self.children:
            pid, status = os.waitpid(-1, 0)
            started = self.children.pop(pid, None)
            if started is None:
                continue
            if os.waitstatus_to_exitcode(status) == EXIT_RETIRED:
                log.info("worker %d retired; %d left", pid, len(self.children))
                continue
            if not self.stopping:
                self._report(pid, status, time.monotonic() - started)
                self._spawn()
        log.info("supervisor %d: all workers stopped", os.getpid())
        return 0

    def _report(self, pid: int, status: int, lifetime: float) -> None:
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            log.info("worker %d recycled after %.1f s", pid, lifetime)
            self._restart_delay = 0.0
            return
        self.restarts += 1
        log.warning("worker %d died (exit %d) after %.1f s; restarting", pid, code, lifetime)
        if lifetime < HEALTHY_LIFETIME:
            # A child that dies at once would otherwise be forked in a loop.
            self._restart_delay = min(MAX_RESTART_DELAY, max(0.1, self._restart_delay * 2))
            time.sleep(self._restart_delay)
        else:
            self._restart_delay = 0.0

    def _spawn(self) -> None:
        if self.stopping:
            return
        # Blocked across the fork, so that the child never runs the
        # supervisor's handlers (on its copy of the supervisor's children).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pid == 0:  # the child
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                code = self.target()
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                os._exit(code)
        self.children[pid] = time.monotonic()

    def _on_stop(self, signum: int, frame: Any) -> None:
        if self.stopping or os.getpid() != self.pid:
            return
        self.stopping = True
        # A timer, not a poll: the main loop sits in a blocking waitpid().
        signal.signal(signal.SIGALRM, self._on_deadline)
        signal.setitimer(signal.ITIMER_REAL, self.grace + KILL_MARGIN)
        log.info("supervisor %d: stopping %d workers", os.getpid(), len(self.children))
        for child in list(self.children):
            _signal(child, signal.SIGTERM)


    def _on_deadline(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:
            return
        for child in list(self.children):
            log.warning("worker %d did not stop in time; killing it", child)
            _signal(child, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
