"""The beanstalkd queue for the conformance suite: each test gets a
beanstalkd of its own on a free loopback port."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Seconds to wait for a started beanstalkd to accept connections.
START_TIMEOUT = 10.0


def requires_ci_or_skip(reason: str) -> None:
    """Skip with ``reason`` locally; fail in CI, where everything must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Beanstalkd:
    """A beanstalkd process on ``127.0.0.1``, which a test may kill and
    start again on the same port.

    :param binlog: a directory for beanstalkd's binlog, so that entries
        survive a restart; none by default.
    :param args: more of beanstalkd's options (``-z`` the largest body...).
    """

    def __init__(self, binlog: Path | None = None, args: tuple[str, ...] = ()) -> None:
        executable = shutil.which("beanstalkd")
        if executable is None:
            requires_ci_or_skip("beanstalkd is not installed")
        assert executable is not None
        self.executable = executable
        self.binlog = binlog
        self.args = args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"beanstalkd://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start beanstalkd (on a free port the first time) and wait until
        it accepts connections."""
        for _ in range(5):  # another process may take a free port first
            port = self.port or _free_port()
            args = [self.executable, "-l", "127.0.0.1", "-p", str(port)]
            if self.binlog is not None:
                args += ["-b", str(self.binlog)]
            args += self.args
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if self._wait_until_up(port):
                self.port = port
                return
            self.stop()
        pytest.fail(f"beanstalkd did not start on 127.0.0.1:{port}")

    def _wait_until_up(self, port: int) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.005)
        return False

    def stop(self) -> None:
        """Kill beanstalkd, as a crash would, and wait until it is gone."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


@contextlib.contextmanager
def running_beanstalkd(
    binlog: Path | None = None, args: tuple[str, ...] = ()
) -> Iterator[Beanstalkd]:
    server = Beanstalkd(binlog, args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def beanstalkd_url(tmp_path: Path) -> Iterator[str]:
    with running_beanstalkd() as server:
        yield server.url


QUEUES = {"beanstalkd": beanstalkd_url}
