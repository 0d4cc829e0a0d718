"""What the backends share: datastore writes, held queue entries.

The protocol's four replacing writes differ only in two switches (create a
missing key or not, check a cas or not); a backend implements them all with
one :meth:`CasDatastore._write`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .. import errors
from ..runtime.protocols import Value


class CasDatastore(ABC):
    """A datastore's exceptions and its replacing writes, built on ``_write``."""

    casException: type[Exception] = errors.CasMismatch
    lockedException: type[Exception] = errors.DocumentLocked
    existsException: type[Exception] = errors.DocumentExists

    @abstractmethod
    def _write(self, key: str, value: Value, cas: int | None, create: bool) -> int:
        """Write ``value`` under ``key`` and return the new cas.

        A ``cas`` of 0 or None writes unconditionally; a stale one, or one
        for a key that is gone, raises :attr:`casException`.

        :param create: create ``key`` when missing; otherwise return 0.
        """

    def update(self, key: str, value: Value) -> bool:
        """Replace an existing key; ``False`` when it is missing."""
        return self._write(key, value, None, create=False) != 0

    def update_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        """Replace an existing key if ``cas`` is current."""
        new_cas = self._write(key, value, cas, create=False)
        return new_cas != 0, new_cas

    def set(self, key: str, value: Value) -> bool:
        """Create or replace ``key`` unconditionally."""
        self._write(key, value, None, create=True)
        return True

    def set_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        """Create or replace ``key`` if ``cas`` is current (or 0/None)."""
        return True, self._write(key, value, cas, create=True)


def lease_seconds(ttr: float | None, default_ttr: float) -> float:
    """The lease a ``put`` gives its entry: ``ttr``, or the queue's default.

    :raise ValueError: the lease is not positive.
    """
    ttr = default_ttr if ttr is None else ttr
    if ttr <= 0:
        raise ValueError("ttr must be positive")
    return ttr


class HeldEntry:
    """A reserved queue entry of a backend that tracks holders itself.

    Its holder may delete, release or touch it until another worker
    reserves it, and after that these raise
    :exc:`~flask_spacewalk.errors.EntryNotReserved`. A holder whose lease ran
    out may still act while nobody else has taken the entry: ``touch`` then
    reserves it again. After its own ``release`` a holder may still
    ``delete`` the entry (as beanstalkd lets anyone delete a ready entry),
    but ``touch`` and ``release`` raise.

    Subclasses implement ``delete``, ``release`` and ``touch``; the queue
    provides ``queueName`` and ``_entry_stats(id)``.
    """

    def __init__(self, queue: Any, id: int, body: str, reserves: int, releases: int) -> None:
        self.id = id
        self.body = body
        self._queue = queue
        # The entry's counts when this holder reserved it: another reserve
        # or a release changes them, and so ends this holder's rights.
        self._reserves = reserves
        self._releases = releases

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} of {self._queue.queueName!r}>"

    def stats(self) -> dict[str, Any]:
        """beanstalkd's ``stats-job``: ``state``, ``reserves``, ``age``...

        ``age`` is whole seconds; ``time-left`` is seconds to the end of the
        lease or delay, to the millisecond.
        """
        return self._queue._entry_stats(self.id)  # type: ignore[no-any-return]
