"""Fork safety of the backends' connections, in one place.

A process forked after a backend connected (a gunicorn worker of an app
loaded before the fork, a supervisor's job worker) inherits the parent's
connections: SQLite connections, sockets to PostgreSQL, Redis and
beanstalkd, locks another thread may have held. The child must neither use
them (both processes' commands would mix on one socket) nor close them (a
psycopg goodbye or an SQLite close acts for the parent too).

Each object that holds a connection registers with :func:`track`; right
after a fork, in the child only, :func:`os.register_at_fork` calls each
one's ``_after_fork()``, which hands its connections to :func:`abandon` and
makes new locks. The child then connects anew on first use, and the parent
never notices.
"""
from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

__all__ = ["abandon", "track"]


class _Holder(Protocol):
    def _after_fork(self) -> None:
        """Forget this process's connections and locks (in a forked child)."""


_HOLDERS: weakref.WeakSet[_Holder] = weakref.WeakSet()
#: What forked children inherited: referenced for good, so that nothing
#: finalizes (and so closes) it in the child.
_ABANDONED: list[object] = []


def track(holder: _Holder) -> None:
    """Call ``holder._after_fork()`` in each child forked from now on."""
    _HOLDERS.add(holder)


def abandon(*inherited: object) -> None:
    """Keep ``inherited`` objects alive, unused, for the child's lifetime."""
    _ABANDONED.extend(obj for obj in inherited if obj is not None)


def _after_fork_in_child() -> None:
    # Runs before any other code of the child, with one thread alive: no
    # other thread can be using a holder meanwhile.
    for holder in list(_HOLDERS):
        try:
            holder._after_fork()
        except Exception:
            # register_at_fork swallows it: the other holders must still
            # let go of the parent's connections
            logging.getLogger(__name__).exception("%r: after fork", holder)


os.register_at_fork(after_in_child=_after_fork_in_child)
