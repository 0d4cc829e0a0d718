"""``flask spacewalk serve``: gunicorn and the job supervisor, side by side.

The serving process forks both and watches them; neither is the other's
parent. gunicorn reaps every child of its own process and its web workers
are forks that unwind through whatever code forked them, so a job supervisor
started inside gunicorn could neither be watched nor be safe from a web
worker's exit. Here a web worker ending (SIGTERM, SIGHUP to gunicorn, a
request past ``--timeout``, ``--max-requests``) touches nothing of the job
side; the job supervisor dying is noticed and it is started again; gunicorn
ending on its own stops the job supervisor and ends the serving process, so
that the operator or the init system notices. A job supervisor that exits 0
(every worker of it was retired) is not started again.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

from .runtime.supervisor import HEALTHY_LIFETIME, MAX_RESTART_DELAY

log = logging.getLogger(__name__)

#: Signals that stop both sides: gunicorn gets the signal itself (SIGTERM
#: graceful, SIGINT and SIGQUIT quick), the job supervisor SIGTERM (graceful).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
#: gunicorn's own controls, passed on to it: reload its web workers, add or
#: remove one, reopen its log files.
WEB_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1)
_WAITED = {signal.SIGCHLD, *STOP_SIGNALS, *WEB_SIGNALS}


class Serve:
    """Runs ``run_web`` and ``run_jobs`` in two child processes.

    :param run_web: serves HTTP (gunicorn's arbiter) until it returns or
        raises :exc:`SystemExit`.
    :param run_jobs: supervises the job workers; returns the exit code.
    """

    def __init__(self, run_web: Callable[[], None], run_jobs: Callable[[], int]):
        self.run_web = run_web
        self.run_jobs = run_jobs
        self.owner = os.getpid()
        self.web: int | None = None
        self.jobs: int | None = None
        self.web_code = 0
        self.stopping = False
        self._jobs_started = 0.0
        self._restart_delay = 0.0
        self._restart_at: float | None = None

    def run(self) -> int:
        """Serve until a stop signal or until gunicorn ends; the exit code."""
        # Signals are taken with sigwaitinfo() rather than handlers: nothing
        # runs between two system calls, and no handler is inherited by a fork.
        signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
        try:
            self.web = self._fork(self._web_child)
            self._start_jobs()
            while self.web is not None or self.jobs is not None:
                self._wait()
        finally:
            # A forked child unwinds through here too (gunicorn's web workers
            # end with SystemExit): only this process may stop what it started.
            if os.getpid() == self.owner:
                for pid in (self.web, self.jobs):
                    if pid is not None:
                        _signal(pid, signal.SIGKILL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _WAITED)
        return self.web_code

    def _wait(self) -> None:
        timeout = None
        if self._restart_at is not None:
            timeout = self._restart_at - time.monotonic()
            if timeout <= 0:
                self._restart_at = None
                self._start_jobs()
                return
        if timeout is None:
            info: Any = signal.sigwaitinfo(_WAITED)
        else:
            info = signal.sigtimedwait(_WAITED, timeout)
        if info is None:
            return
        signum = info.si_signo
        if signum == signal.SIGCHLD:
            self._reap()
        elif signum in STOP_SIGNALS:
            self._stop(signum)
        elif self.web is not None:
            _signal(self.web, signum)

    def _stop(self, signum: int) -> None:
        if not self.stopping:
            log.info("serve %d: stopping gunicorn and the job workers", os.getpid())
        self.stopping = True
        self._restart_at = None
        if self.web is not None:
            _signal(self.web, signum)
        if self.jobs is not None:
            _signal(self.jobs, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = _exit_code(status)
            if pid == self.web:
                self.web = None
                self.web_code = code
                if not self.stopping:
                    log.error(
                        "serve %d: gunicorn %d ended (exit %d); stopping the job workers",
                        os.getpid(), pid, code,
                    )
                    self._stop(signal.SIGTERM)
            elif pid == self.jobs:
                self.jobs = None
                if code == 0 and not self.stopping:
                    # it ends on its own only once every worker was retired
                    log.info("serve %d: every job worker retired; serving the web only",
                             os.getpid())
                elif not self.stopping:
                    self._jobs_died(pid, code)

    def _jobs_died(self, pid: int, code: int) -> None:
        lifetime = time.monotonic() - self._jobs_started
        if lifetime < HEALTHY_LIFETIME:
            # One that dies at once would otherwise be forked in a loop.
            self._restart_delay = min(MAX_RESTART_DELAY, max(0.1, self._restart_delay * 2))
        else:
            self._restart_delay = 0.0
        log.warning(
            "serve %d: job supervisor %d ended (exit %d) after %.1f s; restarting it in %.1f s",
            os.getpid(), pid, code, lifetime, self._restart_delay,
        )
        self._restart_at = time.monotonic() + self._restart_delay

    def _start_jobs(self) -> None:
        self._jobs_started = time.monotonic()
        self.jobs = self._fork(self._jobs_child)

    def _fork(self, child: Callable[[], None]) -> int:
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _WAITED)
            _die_with_parent(self.owner)
            child()
        return pid

    def _web_child(self) -> None:
        # gunicorn's arbiter and each of its web workers end with SystemExit:
        # let it end the process as under plain gunicorn (atexit handlers run).
        self.run_web()
        sys.exit(0)

    def _jobs_child(self) -> None:
        code = 1
        try:
            code = self.run_jobs()
        except BaseException:
            log.exception("job supervisor %d crashed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)


def _exit_code(status: int) -> int:
    """A shell's exit code for a wait status: 128 + N for signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when ``parent`` dies."""
    libc_name = ctypes.util.find_library("c")
    if libc_name and sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(libc_name, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
