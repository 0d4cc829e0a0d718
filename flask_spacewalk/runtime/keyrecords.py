"""Idempotency key records: what makes a POST with an ``Idempotency-Key``
create its job once (SPEC section 7).

A POST that carries a key *claims* it with a pending :class:`KeyRecord`
(the fingerprint of its leaf and Params, and a token of its own), creates
its job, then *completes* the record with the job's uuid; a POST that fails
*releases* it. A later POST with the key finds the record: done, it is a
replay of that job; pending, the first POST is still at work. A record
expires ``ttl`` seconds after its claim, and a pending claim older than
:data:`TAKEOVER_AFTER` (its POST died) may be taken over.

The records live outside the job documents, in each datastore's own place
for them (:class:`~flask_spacewalk.runtime.protocols.KeyRecordStore`): a
table with an index on expiry in SQLite and PostgreSQL, keys with a real
expiry in Redis, documents under ``spacewalk_idempotency_<hash>`` in any
other datastore. Nothing here imports Flask: the web layer reads the header
and answers (``web/idempotency.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocols import KeyRecordStore

__all__ = [
    "KEY_PREFIX",
    "SWEEP_BATCH",
    "TAKEOVER_AFTER",
    "KeyClaim",
    "KeyRecord",
    "fingerprint",
    "leaf_path",
    "record_key",
]

#: Seconds after which a pending claim, whose POST never completed nor
#: released it (a killed process), may be taken over by another POST.
TAKEOVER_AFTER = 60.0
#: Expired records a claim deletes at most, in SQLite and PostgreSQL: more
#: than a claim adds, so they never pile up, and never a long transaction.
SWEEP_BATCH = 20
#: The datastore key prefix of records: ``spacewalk_idempotency_<sha256>``.
KEY_PREFIX = "spacewalk_idempotency_"
#: How often a claim tries again when the record changes under it (a
#: takeover lost to another POST).
CLAIM_TRIES = 5


@dataclass(frozen=True)
class KeyRecord:
    """What a datastore keeps for one key: who holds it and for what. The
    fields, in this order, are the columns of the SQL stores' tables.

    :param token: the claim's own random token; only its holder completes
        or releases the record.
    :param fingerprint: ``<leaf path> <sha256 of the Params>``, see
        :func:`fingerprint`.
    :param claimed_at: the claim's time, in seconds since the epoch.
    :param expires_at: when the record expires, likewise.
    :param uuid: the job's uuid once the POST created it; None while pending.
    """

    token: str
    fingerprint: str
    claimed_at: float
    expires_at: float
    uuid: str | None = None

    @property
    def pending(self) -> bool:
        """Whether the POST that claimed the key has not created its job yet."""
        return self.uuid is None

    @property
    def leaf_path(self) -> str:
        """The leaf the key was first used on."""
        return leaf_path(self.fingerprint)

    def to_value(self) -> dict[str, Any]:
        """The record as a datastore value (a JSON object)."""
        return {
            "token": self.token,
            "fingerprint": self.fingerprint,
            "claimedAt": self.claimed_at,
            "expiresAt": self.expires_at,
            "uuid": self.uuid,
        }

    @classmethod
    def from_value(cls, value: Any) -> KeyRecord | None:
        """The record of a datastore value; None for anything else, which
        a claim then replaces."""
        try:
            record = cls(
                token=value["token"],
                fingerprint=value["fingerprint"],
                claimed_at=float(value["claimedAt"]),
                expires_at=float(value["expiresAt"]),
                uuid=value.get("uuid"),
            )
        except (TypeError, KeyError, ValueError, AttributeError):
            return None
        if not (isinstance(record.token, str) and isinstance(record.fingerprint, str)):
            return None
        return record if record.uuid is None or isinstance(record.uuid, str) else None


def record_key(scope: str, key: str) -> str:
    """The datastore key of ``key``'s record under ``scope`` (a tree's root
    path): a hash, so that any key fits any store's key length (Couchbase
    takes 250 bytes) and the same key under another root is another record."""
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    return f"{KEY_PREFIX}{digest}"


def fingerprint(leaf_path: str, params: Any) -> str:
    """What a key's POSTs must share: the leaf and its Params after loading
    (dumped by the Params schema), as ``<leaf path> <sha256>`` of their
    canonical JSON (sorted keys, no spaces, ASCII)."""
    text = json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )
    return f"{leaf_path} {hashlib.sha256(text.encode()).hexdigest()}"


def leaf_path(fingerprint: str) -> str:
    """The leaf path of a :func:`fingerprint`."""
    return fingerprint.rpartition(" ")[0]


class KeyClaim:
    """One POST's hold on an ``Idempotency-Key``: claim, then complete or
    release.

    :param store: where the records live.
    :param scope: the tree's root path: keys of other roots are other keys.
    :param key: the header's value.
    :param fingerprint: this POST's :func:`fingerprint`.
    :param ttl: seconds the record lives after the claim.
    :param takeover_after: seconds after which a pending claim of another
        POST is taken to be dead (default :data:`TAKEOVER_AFTER`).
    """

    def __init__(
        self,
        store: KeyRecordStore,
        scope: str,
        key: str,
        fingerprint: str,
        ttl: float,
        takeover_after: float | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.record_key = record_key(scope, key)
        self.fingerprint = fingerprint
        self.ttl = ttl
        self.takeover_after = TAKEOVER_AFTER if takeover_after is None else takeover_after
        self.token = secrets.token_hex(16)
        #: The dead POST's pending record this claim replaced, if any.
        self.taken_over: KeyRecord | None = None
        self._record: KeyRecord | None = None

    @property
    def leaf_path(self) -> str:
        """The leaf this POST goes to."""
        return leaf_path(self.fingerprint)

    def claim(self) -> KeyRecord | None:
        """Claim the key: None when this POST holds it now (nobody held it,
        its record had expired, or a pending claim older than
        ``takeover_after`` was taken over), else the record that holds it:
        done (a replay) or pending (another POST at work)."""
        found: KeyRecord | None = None
        for _ in range(CLAIM_TRIES):
            now = time.time()
            mine = KeyRecord(self.token, self.fingerprint, now, now + self.ttl)
            found = self.store.claim_key(self.record_key, mine)
            if found is None:
                self._record = mine
                return None
            if not found.pending or now - found.claimed_at < self.takeover_after:
                return found
            # Atomic: of POSTs taking over one dead claim, one succeeds.
            if self.store.replace_key(self.record_key, found.token, mine):
                self._record, self.taken_over = mine, found
                return None
        return found

    def complete(self, uuid: str) -> bool:
        """Record the job this POST created; False when the claim was lost
        (taken over after ``takeover_after`` seconds, or expired)."""
        if self._record is None:
            raise RuntimeError("complete() needs a successful claim()")
        done = dataclasses.replace(self._record, uuid=uuid)
        return self.store.replace_key(self.record_key, self.token, done)

    def release(self) -> bool:
        """Give the key up (the POST failed): the next POST claims it anew."""
        return self.store.release_key(self.record_key, self.token)
