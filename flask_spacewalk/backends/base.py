"""What every datastore shares.

The protocol's four replacing writes differ only in two switches (create a
missing key or not, check a cas or not); a backend implements them all with
one :meth:`CasDatastore._write`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

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
