"""The datastore and queue protocols, with ZeroG's method names, and the
abilities beyond them.

A backend need not inherit from these classes; they document the contract and
let mypy check callers. Values are JSON-able dicts or strings and come back
as stored. See SPEC section 5 and ``docs/runtime.rst``.

:class:`Datastore` and :class:`Queue` are what ZeroG's objects have. Each
ability beyond them is a protocol of its own (:class:`ManyReader`,
:class:`JobLister`, :class:`JobDeleter`, :class:`Closable`, :class:`KeyRecordStore`,
:class:`WorkerRecords`, :class:`DeliveryStore`, :class:`JobCounter`, :class:`Pingable`,
:class:`DocumentQueue`, :class:`EntryChecker`, :class:`QueueStats`,
:class:`SharedTransactions`), and
:class:`SpacewalkDatastore` and
:class:`SpacewalkQueue` have them all (but :class:`JobWriteNotifier`, which
a datastore may lack without harm): every backend of this package is one,
and :func:`~flask_spacewalk.runtime.adapters.as_datastore` and
:func:`~flask_spacewalk.runtime.adapters.as_queue` make one of any other
object where it enters, so that callers call the abilities directly.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, TypeVar, Union, runtime_checkable

from .keyrecords import KeyRecord
from .query import JobQuery
from .webhooks import Delivery

#: What a datastore holds under a key.
Value = Union[dict[str, Any], str]


class Datastore(Protocol):
    """A key-value store with compare-and-swap writes.

    Every write gives a new non-zero integer ``cas``; a ``cas`` of 0 or
    ``None`` writes unconditionally, a stale one raises ``casException``.
    """

    casException: type[Exception]
    lockedException: type[Exception]
    existsException: type[Exception]

    def read(self, key: str) -> Value | None:
        """The value under ``key``, or ``None`` when there is none."""

    def read_with_cas(self, key: str) -> tuple[Value | None, int]:
        """The value and its ``cas`` (``(None, 0)`` when missing)."""

    def create(self, key: str, value: Value) -> bool:
        """Store a new key; raise ``existsException`` when it exists."""

    def update(self, key: str, value: Value) -> bool:
        """Replace an existing key; ``False`` when it is missing."""

    def update_with_cas(
        self, key: str, value: Value, cas: int | None = None
    ) -> tuple[bool, int]:
        """Replace an existing key if ``cas`` is current."""

    def set(self, key: str, value: Value) -> bool:
        """Create or replace ``key`` unconditionally."""

    def set_with_cas(
        self, key: str, value: Value, cas: int | None = None
    ) -> tuple[bool, int]:
        """Create or replace ``key`` if ``cas`` is current (or 0/None)."""

    def delete(self, key: str) -> bool:
        """Remove ``key``; ``False`` when it was absent."""


@runtime_checkable
class Closable(Protocol):
    """A datastore or queue that holds connections of its own."""

    def close(self) -> None:
        """Close this process's connections; the next call opens new ones."""


@runtime_checkable
class ManyReader(Protocol):
    """A datastore that reads several keys in one round trip."""

    def read_many(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas, as ``read_with_cas`` gives them, in the
        order given."""


@runtime_checkable
class JobLister(Protocol):
    """A datastore that can list its jobs (``GET R/jobs`` needs it).

    Every backend of this package has it; for a datastore of your own
    without it, ``list_jobs`` raises
    :exc:`~flask_spacewalk.errors.NotSupported` and ``GET R/jobs`` answers
    501.
    """

    def list_jobs(self, query: JobQuery) -> list[dict[str, Any]]:
        """The jobs ``query`` selects, newest first: dicts of ``uuid``,
        ``jobType``, ``status``, ``createdAt``, ``updatedAt``,
        ``completeness`` (float) and ``result`` (int)."""


class JobDeletion(NamedTuple):
    """A job to delete unless it changed: see :class:`JobDeleter`."""

    #: The job's key, ``zerog_job_<uuid>``.
    key: str
    #: The cas it was read with.
    cas: int
    #: Keys of its side records (its cancel request), deleted with it.
    side_keys: tuple[str, ...] = ()


@runtime_checkable
class JobDeleter(Protocol):
    """A datastore that deletes jobs only as they were read (retention
    needs it; for a datastore of yours without it, the adapter claims each
    job with a compare-and-swap write first)."""

    def delete_jobs(self, jobs: Sequence[JobDeletion]) -> list[str]:
        """Delete each job whose cas is still the one given, with its side
        keys, in one short transaction, and take it out of the listing.

        A job written since (a new cas) or gone is left as it is.

        :return: the keys of the jobs deleted, in the order given.
        """


@runtime_checkable
class KeyRecordStore(Protocol):
    """A datastore that keeps idempotency key records
    (:mod:`~flask_spacewalk.runtime.keyrecords`) outside its documents.

    Each method is atomic: of concurrent calls for one key, the store
    decides one at a time. A record that has expired counts as absent.
    """

    def claim_key(self, key: str, record: KeyRecord) -> KeyRecord | None:
        """Store ``record`` under ``key`` unless a record is there that has
        not expired at ``record.claimed_at``: None when stored, else that
        record, unchanged."""

    def replace_key(self, key: str, token: str, record: KeyRecord) -> bool:
        """Replace the record under ``key`` whose token is ``token`` with
        ``record``; False, with nothing written, when there is no such
        record."""

    def release_key(self, key: str, token: str) -> bool:
        """Delete the record under ``key`` whose token is ``token``; False
        when there is no such record."""


@runtime_checkable
class WorkerRecords(Protocol):
    """A datastore that keeps the records of job workers, apart from its
    documents (``GET R/workers`` needs it; see
    :mod:`~flask_spacewalk.runtime.heartbeat`).

    Every backend of this package has it, in a table or hash of its own;
    for a datastore of your own without it, ``list_workers`` raises
    :exc:`~flask_spacewalk.errors.NotSupported` and ``GET R/workers``
    answers 501.
    """

    def save_worker(self, id: str, record: dict[str, Any]) -> None:
        """Create or replace the record of worker ``id``."""

    def list_workers(self) -> list[dict[str, Any]]:
        """Every stored worker record, in no particular order."""

    def delete_worker(self, id: str) -> bool:
        """Remove worker ``id``'s record; ``False`` when there was none."""


@runtime_checkable
class DeliveryStore(Protocol):
    """A datastore that keeps webhook deliveries
    (:mod:`~flask_spacewalk.runtime.webhooks`) apart from its documents.

    Every backend of this package has it, in a table or hashes of its own;
    for a datastore of your own without it, each method raises
    :exc:`~flask_spacewalk.errors.NotSupported` and no webhook is sent.
    """

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Store each delivery whose id is not stored yet; how many were new."""

    def claim_deliveries(self, now: float, lease: float, limit: int, token: str) -> list[Delivery]:
        """Take up to ``limit`` pending deliveries due at ``now`` (oldest due
        first): each gets ``claim = token`` and ``due_at = now + lease``, so
        that no other sender takes it before the lease runs out."""

    def save_delivery(self, delivery: Delivery, token: str) -> bool:
        """Store ``delivery`` (its attempts, status, ``due_at``; its claim
        as given) if it is still claimed with ``token``; False otherwise."""

    def list_deliveries(
        self, status: str | None = None, uuid: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        """The newest deliveries first, of one ``status`` or job if given."""

    def retry_delivery(self, id: str, now: float) -> bool:
        """Make a failed or pending delivery due at ``now``, with no claim;
        False when there is no such delivery, or it was delivered."""

    def purge_deliveries(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` delivered or failed deliveries recorded
        before ``before``; how many went."""


@runtime_checkable
class JobCounter(Protocol):
    """A datastore that keeps the number of its jobs by jobType and status
    (``<prefix>/metrics`` needs it; for a datastore without it,
    ``count_jobs`` raises :exc:`~flask_spacewalk.errors.NotSupported` and the
    metrics leave ``spacewalk_jobs`` out)."""

    def count_jobs(self) -> dict[tuple[str, str], int]:
        """The listed jobs by ``(jobType, status)`` (``""`` for a job
        without a jobType), read from counts kept by every write: the cost
        does not grow with the number of jobs."""


@runtime_checkable
class Pingable(Protocol):
    """A datastore or queue that answers a cheap request (``<prefix>/readyz``)."""

    def ping(self) -> None:
        """One cheap round trip; raise the store's unavailable error when
        it fails."""


@runtime_checkable
class EntryChecker(Protocol):
    """A queue that can tell whether an entry is still there (``flask
    spacewalk requeue --stale`` needs it; every queue of this package has
    it; for ZeroG's, ``has_entry`` raises
    :exc:`~flask_spacewalk.errors.NotSupported`)."""

    def has_entry(self, id: int, data: Any) -> bool:
        """Whether entry ``id`` is in the queue (ready, delayed or reserved)
        with the body ``json.dumps(data)``."""


@runtime_checkable
class JobWriteNotifier(Protocol):
    """A datastore that tells of its job writes, so that a waiting request
    (``Prefer: wait``, the long poll, the event stream) wakes at once
    (:mod:`~flask_spacewalk.runtime.changes`).

    Every datastore of this package has it (a wake-up socket, ``LISTEN`` and
    ``NOTIFY``, pub/sub; see ``docs/live.rst``); it is not part of
    :class:`SpacewalkDatastore`: without it, a waiter re-reads the job every
    50 ms. A notification is a hint: one may be lost, so a waiter re-reads
    now and then anyway.
    """

    def job_writes(self, uuid: str) -> AbstractContextManager[threading.Event]:
        """While the context lasts, an event set after each committed write
        of job ``uuid`` (and whenever notifications may have been missed,
        as after a reconnect); the caller clears it."""


class QueueDepth(NamedTuple):
    """How many entries one queue holds, by state (``GET R/queues``)."""

    #: The queue's name (beanstalkd's tube).
    name: str
    #: Entries a worker may reserve now.
    ready: int
    #: Entries waiting for their delay to run out.
    delayed: int
    #: Entries a worker holds.
    reserved: int
    #: Seconds since the oldest ready entry became ready (for a delayed one,
    #: since its delay ran out); None when none is ready.
    oldest_ready_age: float | None


@runtime_checkable
class QueueStats(Protocol):
    """A queue that can count its entries by state (``GET R/queues`` and the
    metrics need it; every queue of this package has it, reading indexes or
    counters, never every entry)."""

    def queue_stats(self) -> list[QueueDepth]:
        """This queue's depth first, then that of every other queue of the
        backend that holds an entry, by name."""


class QueueEntry(Protocol):
    """A reserved queue entry, as a worker holds it."""

    id: int
    body: str

    def delete(self) -> None:
        """Remove the entry for good."""

    def release(self, delay: float = 0) -> None:
        """Give the entry back, ready again after ``delay`` seconds."""

    def touch(self) -> None:
        """Renew the lease for another ``ttr`` seconds."""

    def stats(self) -> dict[str, Any]:
        """beanstalkd's per-job stats: ``state``, ``reserves``, ``timeouts``..."""


@runtime_checkable
class DocumentEntry(Protocol):
    """A reserved entry that was claimed with its job's documents read in
    the same round trip (the PostgreSQL queue beside its datastore)."""

    def documents(
        self, datastore: Datastore, keys: Sequence[str]
    ) -> list[tuple[Value | None, int]] | None:
        """``keys``' values and cas as ``read_many`` gives them, when they
        are what the claim read from ``datastore``; None when the caller
        must read them itself."""


class Queue(Protocol):
    """A work queue with delays, priorities and time-to-run leases."""

    queueName: str

    def put(
        self,
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> int:
        """JSON-encode ``data`` and enqueue it; return the entry's id."""

    def reserve(self, timeout: float | None = None) -> QueueEntry | None:
        """Take the next ready entry, waiting up to ``timeout`` seconds."""

    def delete(self, id: int) -> bool:
        """Remove an entry that no other worker holds."""

    def attach(self) -> None:
        """Start using and watching ``queueName`` (ZeroG's use/watch)."""

    def detach(self) -> None:
        """Stop using and watching ``queueName``."""


@runtime_checkable
class DocumentQueue(Protocol):
    """A queue that may store a new job's document with its entry."""

    def put_with_document(
        self,
        datastore: Datastore,
        key: str,
        document: Callable[[int], dict[str, Any]],
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> tuple[int, int] | None:
        """Put ``data`` and store ``document(entry_id)`` under ``key`` in one
        transaction, where this queue can write ``datastore`` (the SQLite
        file or PostgreSQL schema of both); None, with nothing done, where it cannot.

        :return: the entry's id and the document's cas.
        """


T = TypeVar("T")


class StoreTransaction(Protocol):
    """One open transaction over a queue and the datastore that shares its
    database (:class:`SharedTransactions`): all of it commits, or none."""

    def read(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas, as ``read_with_cas`` gives them."""

    def write(self, key: str, value: dict[str, Any], cas: int) -> int:
        """Replace the document under ``key`` if its cas is still ``cas``;
        the new cas.

        :raises: the datastore's ``casException`` when it is not (the whole
            transaction is then rolled back).
        """

    def delete_entry(self, entry: QueueEntry) -> bool:
        """Delete ``entry`` if its holder still holds it; False (nothing
        deleted) when another worker reserved it since."""

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """:meth:`DeliveryStore.add_deliveries` in this transaction."""


@runtime_checkable
class SharedTransactions(Protocol):
    """A queue whose entries live in the database of a datastore (the
    embedded SQLite file, a PostgreSQL schema, one Redis server), so that one transaction can
    write both: the lifecycle claims an entry and marks its job running in
    one commit, and records a result and deletes its entry in another.

    Optional: a queue without it costs a commit more per step, nothing else.
    The functions given run inside the transaction and must be quick. A
    queue that commits optimistically (Redis: the commit checks that nothing
    read changed) may call them again on fresh reads, so they act only
    through the transaction.
    """

    def shares_database(self, datastore: Datastore) -> bool:
        """Whether this queue and ``datastore`` are one database."""

    def reserve_in(
        self,
        count: int,
        timeout: float | None,
        then: Callable[[StoreTransaction, list[QueueEntry]], T],
    ) -> T | None:
        """Reserve up to ``count`` ready entries (waiting up to ``timeout``
        seconds for the first, as :meth:`Queue.reserve`) and call
        ``then(transaction, entries)`` in the transaction that reserves
        them; its value, or None when no entry came."""

    def transact(self, func: Callable[[StoreTransaction], T]) -> T:
        """``func(transaction)`` in one write transaction; its value."""


@runtime_checkable
class DatastoreAbilities(
    ManyReader, JobLister, JobDeleter, KeyRecordStore, WorkerRecords, DeliveryStore,
    JobCounter, Pingable, Closable, Protocol,
):
    """Every ability a datastore of this package has beyond ZeroG's."""


@runtime_checkable
class QueueAbilities(DocumentQueue, EntryChecker, QueueStats, Pingable, Closable, Protocol):
    """Every ability a queue of this package has beyond ZeroG's."""


class SpacewalkDatastore(Datastore, DatastoreAbilities, Protocol):
    """A datastore with every ability: what the runtime and the web layer use."""


class SpacewalkQueue(Queue, QueueAbilities, Protocol):
    """A queue with every ability: what the runtime and the web layer use."""
