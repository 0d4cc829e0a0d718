"""Wake-up sockets: how a blocked reserve of the SQLite queue wakes at once.

A blocked :meth:`~flask_spacewalk.backends.sqlite.SqliteQueue.reserve` waits
on an ``AF_UNIX`` datagram socket; a put and a release send a byte to the
sockets of the queue's waiters, so a waiter in another process wakes within a
millisecond. The SQLite datastore tells of its job writes the same way,
each datagram carrying the job's uuid (:meth:`Waker.receive`). The socket
directory is ``<db>-wake/`` next to the database (every process that can
write the database can write there, and it is not hidden by a private
``/tmp``), or ``spacewalk-<hash>/`` in the temporary directory when that
path is too long for a socket. A notification is only a
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

#: Seconds a directory must have gone unchanged for its listing to be kept.
SETTLED = 0.05


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
        #: each directory's modification time and waiters, when last listed
        self._seen: dict[str, tuple[int, list[str]]] = {}
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

    def notify(self, message: bytes = b"\0") -> None:
        """Send ``message`` (a byte unless told) to every waiter of this
        queue name."""
        with self._lock:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
                # closed with the Waker, even if nobody calls close()
                weakref.finalize(self, self._sender.close)
            for directory in self._dirs:
                for path in self._waiters_in(directory):
                    try:
                        self._sender.sendto(message, path)
                    except (ConnectionRefusedError, FileNotFoundError):
                        _unlink(path)  # its owner died without cleaning up
                        self._seen.pop(directory, None)
                    except OSError:
                        pass  # a full buffer already holds a wake-up

    def _waiters_in(self, directory: str) -> list[str]:
        """The sockets of this queue name's waiters in ``directory``.

        Listed again only when the directory changed: a write that nobody
        waits for costs a ``stat``, not a listing. A listing is kept only
        when the directory had not changed for :data:`SETTLED` seconds, as a
        file system's clock may be too coarse to tell two changes apart.
        """
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            return []
        seen = self._seen.get(directory)
        if seen is not None and seen[0] == mtime:
            return seen[1]
        try:
            names = os.listdir(directory)
        except OSError:
            return []
        paths = [os.path.join(directory, n) for n in names if n.startswith(self._prefix)]
        if time.time_ns() - mtime > SETTLED * 1e9:
            self._seen[directory] = (mtime, paths)
        return paths

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

    def receive(self, timeout: float) -> list[bytes]:
        """The messages that came within ``timeout`` seconds: waits for the
        first, then takes those already there.

        :raise OSError: no directory allows a socket.
        """
        sock = self.listen()
        if sock is None:
            raise OSError(f"no directory of {self._dirs} takes a wake-up socket")
        sock.settimeout(max(timeout, 0.0))
        try:
            messages = [sock.recv(256)]
        except (socket.timeout, BlockingIOError):
            return []
        sock.setblocking(False)
        try:
            while True:
                messages.append(sock.recv(256))
        except OSError:
            pass
        return messages

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
