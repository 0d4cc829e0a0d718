"""Wake-up sockets: how a blocked reserve of the SQLite queue wakes at once.

A blocked :meth:`~flask_spacewalk.backends.sqlite.SqliteQueue.reserve` waits
on an ``AF_UNIX`` datagram socket; a put and a release send a byte to the
sockets of the queue's waiters, so a waiter in another process wakes within a
millisecond. The socket directory is ``<db>-wake/`` next to the database
(every process that can write the database can write there, and it is not
hidden by a private ``/tmp``), or ``spacewalk-<hash>/`` in the temporary
directory when that path is too long for a socket. A notification is only a
hint: the queue never depends on one arriving.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import tempfile
import threading
import time
import weakref
from typing import Any

from ._fork import track

__all__ = ["Waker", "wake_dirs"]


def wake_dirs(db_path: str) -> list[str]:
    """The directories where the waiters of ``db_path`` bind their sockets,
    in order of preference. A putter notifies all of them."""
    digest = hashlib.sha1(db_path.encode()).hexdigest()[:16]
    candidates = [
        db_path + "-wake",
        os.path.join(tempfile.gettempdir(), f"spacewalk-{digest}"),
        f"/tmp/spacewalk-{digest}",
    ]
    # a socket path holds at most 104 bytes on BSDs, 108 on Linux; leave
    # room for the file name (see Waker.listen)
    dirs = [d for d in candidates if len(os.fsencode(d)) <= 75]
    return list(dict.fromkeys(dirs))


class Waker:
    """Notifies and waits for the waiters of one queue name."""

    def __init__(self, db_path: str, tube: str) -> None:
        self._dirs = wake_dirs(db_path)
        self._prefix = hashlib.sha1(tube.encode()).hexdigest()[:8] + "."
        self._lock = threading.Lock()
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        track(self)

    def _after_fork(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()  # the parent's socket file stays bound
        # Closing the child's copies leaves the parent's sockets open.
        for sock in (self._listener, self._sender):
            if sock is not None:
                sock.close()
        self._listener = self._sender = self._finalizer = None
        self._lock = threading.Lock()

    def notify(self) -> None:
        """Send one byte to every waiter of this queue name."""
        with self._lock:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
                # closed with the Waker, even if nobody calls close()
                weakref.finalize(self, self._sender.close)
            for directory in self._dirs:
                try:
                    names = os.listdir(directory)
                except OSError:
                    continue
                for name in names:
                    if not name.startswith(self._prefix):
                        continue
                    path = os.path.join(directory, name)
                    try:
                        self._sender.sendto(b"\0", path)
                    except (ConnectionRefusedError, FileNotFoundError):
                        _unlink(path)  # its owner died without cleaning up
                    except OSError:
                        pass  # a full buffer already holds a wake-up

    def listen(self) -> socket.socket | None:
        """Bind this process's socket, once; None if no directory allows it.

        A waiter binds before it first looks at the table, so a put that
        commits in between is not missed.
        """
        with self._lock:
            if self._listener is not None:
                return self._listener
            name = f"{self._prefix}{os.getpid()}.{secrets.token_hex(4)}"
            # twice per directory: a closing waiter may remove it in between
            for directory in [d for d in self._dirs for _ in range(2)]:
                path = os.path.join(directory, name)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    os.makedirs(directory, exist_ok=True)
                    sock.bind(path)
                except OSError:
                    sock.close()
                    continue
                self._listener = sock
                self._finalizer = weakref.finalize(self, _close_listener, sock, path)
                return sock
            return None

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notification, then drain."""
        sock = self.listen()
        if sock is None:
            time.sleep(min(timeout, 0.05))  # no socket: poll, a little
            return
        sock.settimeout(max(timeout, 0.0))
        try:
            sock.recv(64)
        except (socket.timeout, BlockingIOError):
            return
        sock.setblocking(False)
        try:
            while True:
                sock.recv(64)
        except OSError:
            pass

    def close(self) -> None:
        """Close the sockets and remove this process's socket file."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            if self._sender is not None:
                self._sender.close()
            self._listener = self._sender = self._finalizer = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _close_listener(sock: socket.socket, path: str) -> None:
    sock.close()
    _unlink(path)
    try:
        os.rmdir(os.path.dirname(path))  # the last waiter tidies up
    except OSError:
        pass
