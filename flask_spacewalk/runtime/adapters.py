"""ZeroG's datastores and queues, given the abilities of this package's.

A datastore or queue enters the runtime in a few places (a worker's
factories, a job's constructor, the web layer's connections); each passes it
through :func:`as_datastore` or :func:`as_queue`. A backend of this package,
or any object with every ability, comes back as it is; any other object
(ZeroG's, one of your own) comes back wrapped, with its own abilities where
it has them and a default for the others:

- ``read_many``: one ``read_with_cas`` per key;
- ``close``: nothing to do;
- ``list_jobs``, ``count_jobs``, ``has_entry``, the worker records (``save_worker``,
  ``list_workers``, ``delete_worker``), the webhook deliveries
  (``add_deliveries``...): raise
  :exc:`~flask_spacewalk.errors.NotSupported`;
- ``claim_key``, ``replace_key``, ``release_key``: idempotency key records
  as documents, built on ``create``, ``read_with_cas``, ``set_with_cas``
  and ``delete``, the expiry kept in the value;
- ``delete_jobs``: each job claimed with a compare-and-swap write of
  :data:`TOMBSTONE`, then deleted with ``delete`` (two writes a job);
- ``queue_stats``: the counts of the object's own ``stats_tube()`` (beanstalkd's
  ``current-jobs-*``) for its queue alone, with no oldest ready age, or
  :exc:`~flask_spacewalk.errors.NotSupported` when it has none;
- ``ping``: a datastore reads a key; a queue raises
  :exc:`~flask_spacewalk.errors.NotSupported` (ZeroG's protocol has no
  request that is both cheap and harmless);
- ``put_with_document``: None (the job is stored, then queued).

So callers call the abilities directly, and mypy checks each call.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from ..errors import JobUpdateConflict, NotSupported
from .keyrecords import KeyRecord
from .protocols import (
    Closable,
    Datastore,
    DatastoreAbilities,
    DeliveryStore,
    DocumentQueue,
    EntryChecker,
    JobCounter,
    JobDeleter,
    JobDeletion,
    JobLister,
    KeyRecordStore,
    ManyReader,
    Pingable,
    Queue,
    QueueAbilities,
    QueueDepth,
    QueueEntry,
    QueueStats,
    SpacewalkDatastore,
    SpacewalkQueue,
    Value,
    WorkerRecords,
)
from .webhooks import Delivery

__all__ = ["TOMBSTONE", "ZeroGDatastore", "ZeroGQueue", "as_datastore", "as_queue"]

#: What a job is replaced with, for a moment, before ``delete_jobs`` deletes
#: it from a datastore that has no ``delete_jobs`` of its own: no job
#: document, so it is answered 404 and listed nowhere.
TOMBSTONE = "deleted"

#: Compare-and-swap attempts of a key record write that keeps conflicting.
RECORD_TRIES = 10


def as_datastore(datastore: Datastore) -> SpacewalkDatastore:
    """``datastore`` with every ability: itself when its class has them all."""
    # By class: abc caches issubclass, where isinstance on a protocol looks
    # at every member each time (a fifth of a job's construction).
    if issubclass(type(datastore), DatastoreAbilities):
        return cast(SpacewalkDatastore, datastore)
    return ZeroGDatastore(datastore)


def as_queue(queue: Queue) -> SpacewalkQueue:
    """``queue`` with every ability: itself when its class has them all."""
    if issubclass(type(queue), QueueAbilities):
        return cast(SpacewalkQueue, queue)
    return ZeroGQueue(queue)


class _Adapter:
    """Forwards what it does not define to the wrapped object, so that job
    code calling a method of its own datastore keeps working."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: being copied or unpickled
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.inner!r}>"

    def close(self) -> None:
        """Close the wrapped object if it can be closed."""
        if isinstance(self.inner, Closable):
            self.inner.close()


class ZeroGDatastore(_Adapter):
    """A datastore with only ZeroG's methods, given the other abilities."""

    def __init__(self, inner: Datastore) -> None:
        super().__init__(inner)
        self._read_many = inner.read_many if isinstance(inner, ManyReader) else None
        self._list_jobs = inner.list_jobs if isinstance(inner, JobLister) else None
        self._key_records = inner if isinstance(inner, KeyRecordStore) else None
        self._delete_jobs = inner.delete_jobs if isinstance(inner, JobDeleter) else None
        self._workers = inner if isinstance(inner, WorkerRecords) else None
        self._deliveries = inner if isinstance(inner, DeliveryStore) else None
        self._count_jobs = inner.count_jobs if isinstance(inner, JobCounter) else None
        self._ping = inner.ping if isinstance(inner, Pingable) else None

    @property
    def casException(self) -> type[Exception]:  # noqa: N802 - ZeroG's name
        return self.inner.casException  # type: ignore[no-any-return]

    @casException.setter
    def casException(self, value: type[Exception]) -> None:  # noqa: N802
        self.inner.casException = value

    @property
    def lockedException(self) -> type[Exception]:  # noqa: N802
        return self.inner.lockedException  # type: ignore[no-any-return]

    @lockedException.setter
    def lockedException(self, value: type[Exception]) -> None:  # noqa: N802
        self.inner.lockedException = value

    @property
    def existsException(self) -> type[Exception]:  # noqa: N802
        return self.inner.existsException  # type: ignore[no-any-return]

    @existsException.setter
    def existsException(self, value: type[Exception]) -> None:  # noqa: N802
        self.inner.existsException = value

    def read(self, key: str) -> Value | None:
        return self.inner.read(key)  # type: ignore[no-any-return]

    def read_with_cas(self, key: str) -> tuple[Value | None, int]:
        return self.inner.read_with_cas(key)  # type: ignore[no-any-return]

    def create(self, key: str, value: Value) -> bool:
        return self.inner.create(key, value)  # type: ignore[no-any-return]

    def update(self, key: str, value: Value) -> bool:
        return self.inner.update(key, value)  # type: ignore[no-any-return]

    def update_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        return self.inner.update_with_cas(key, value, cas)  # type: ignore[no-any-return]

    def set(self, key: str, value: Value) -> bool:
        return self.inner.set(key, value)  # type: ignore[no-any-return]

    def set_with_cas(self, key: str, value: Value, cas: int | None = None) -> tuple[bool, int]:
        return self.inner.set_with_cas(key, value, cas)  # type: ignore[no-any-return]

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)  # type: ignore[no-any-return]

    def read_many(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """The wrapped object's ``read_many``, or one ``read_with_cas`` per key."""
        if self._read_many is not None:
            return self._read_many(keys)
        return [self.inner.read_with_cas(key) for key in keys]

    def list_jobs(self, query: Any) -> list[dict[str, Any]]:
        """The wrapped object's ``list_jobs``.

        :raises NotSupported: it has none.
        """
        if self._list_jobs is None:
            raise NotSupported(
                f"this datastore ({type(self.inner).__name__}) cannot list jobs:"
                " it has no list_jobs method"
            )
        return self._list_jobs(query)

    # Key records as documents: the claim creates its record, or replaces an
    # expired one with compare-and-swap; nothing sweeps expired records here
    # (a claim of the same key replaces its own).

    def claim_key(self, key: str, record: KeyRecord) -> KeyRecord | None:
        """The wrapped object's ``claim_key``, or ``create``, then
        ``read_with_cas`` and ``set_with_cas`` over an expired record.

        :raises JobUpdateConflict: the record kept changing under the claim.
        """
        if self._key_records is not None:
            return self._key_records.claim_key(key, record)
        inner = self.inner
        for _ in range(RECORD_TRIES):
            try:
                inner.create(key, record.to_value())
                return None
            except inner.existsException:
                pass
            value, cas = inner.read_with_cas(key)
            if value is None:
                continue  # released since: create it again
            found = KeyRecord.from_value(value)
            if found is not None and found.expires_at > record.claimed_at:
                return found
            if self._swap(key, record, cas):
                return None
        raise JobUpdateConflict(f"the idempotency key record {key} kept changing")

    def replace_key(self, key: str, token: str, record: KeyRecord) -> bool:
        """The wrapped object's ``replace_key``, or ``read_with_cas`` and
        ``set_with_cas`` while the token is ``token``.

        :raises JobUpdateConflict: the record kept changing.
        """
        if self._key_records is not None:
            return self._key_records.replace_key(key, token, record)
        for _ in range(RECORD_TRIES):
            value, cas = self.inner.read_with_cas(key)
            found = KeyRecord.from_value(value)
            if found is None or found.token != token:
                return False
            if self._swap(key, record, cas):
                return True
        raise JobUpdateConflict(f"the idempotency key record {key} kept changing")

    def release_key(self, key: str, token: str) -> bool:
        """The wrapped object's ``release_key``, or ``read`` and ``delete``
        when the token is ``token`` (ZeroG has no conditional delete: a
        record replaced in between, which only a claim past its
        ``TAKEOVER_AFTER`` or its expiry allows, is deleted too)."""
        if self._key_records is not None:
            return self._key_records.release_key(key, token)
        found = KeyRecord.from_value(self.inner.read(key))
        if found is None or found.token != token:
            return False
        return bool(self.inner.delete(key))

    def _swap(self, key: str, record: KeyRecord, cas: int) -> bool:
        """Write ``record`` if the value is still at ``cas``."""
        try:
            ok, _ = self.inner.set_with_cas(key, record.to_value(), cas)
        except self.inner.casException:
            return False
        return bool(ok)

    def delete_jobs(self, jobs: Sequence[JobDeletion]) -> list[str]:
        """The wrapped object's ``delete_jobs``, or each job claimed by a
        compare-and-swap write of :data:`TOMBSTONE`, then deleted with its
        side keys: a writer holding the cas that was read fails from the
        claim on, as it would after a delete. A process dying between the
        two writes leaves the tombstone, which nothing reads as a job."""
        if self._delete_jobs is not None:
            return self._delete_jobs(jobs)
        deleted = []
        for job in jobs:
            try:
                claimed = self.inner.update_with_cas(job.key, TOMBSTONE, job.cas)[0]
            except self.inner.casException:
                continue
            if claimed:
                self.inner.delete(job.key)
                for key in job.side_keys:
                    self.inner.delete(key)
                deleted.append(job.key)
        return deleted

    def _delivery_store(self) -> DeliveryStore:
        if self._deliveries is None:
            raise NotSupported(
                f"this datastore ({type(self.inner).__name__}) keeps no webhook deliveries:"
                " it has no add_deliveries, claim_deliveries, save_delivery,"
                " list_deliveries and retry_delivery methods"
            )
        return self._deliveries

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """The wrapped object's ``add_deliveries``.

        :raises NotSupported: it has none (so for the other four).
        """
        return self._delivery_store().add_deliveries(deliveries)

    def claim_deliveries(self, now: float, lease: float, limit: int, token: str) -> list[Delivery]:
        return self._delivery_store().claim_deliveries(now, lease, limit, token)

    def save_delivery(self, delivery: Delivery, token: str) -> bool:
        return self._delivery_store().save_delivery(delivery, token)

    def list_deliveries(
        self, status: str | None = None, uuid: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        return self._delivery_store().list_deliveries(status, uuid, limit)

    def retry_delivery(self, id: str, now: float) -> bool:
        return self._delivery_store().retry_delivery(id, now)

    def purge_deliveries(self, before: float, limit: int) -> int:
        return self._delivery_store().purge_deliveries(before, limit)

    def _worker_records(self) -> WorkerRecords:
        if self._workers is None:
            raise NotSupported(
                f"this datastore ({type(self.inner).__name__}) keeps no worker records:"
                " it has no save_worker, list_workers and delete_worker methods"
            )
        return self._workers

    def save_worker(self, id: str, record: dict[str, Any]) -> None:
        """The wrapped object's ``save_worker``.

        :raises NotSupported: it has none.
        """
        self._worker_records().save_worker(id, record)

    def list_workers(self) -> list[dict[str, Any]]:
        """The wrapped object's ``list_workers``.

        :raises NotSupported: it has none.
        """
        return self._worker_records().list_workers()

    def delete_worker(self, id: str) -> bool:
        """The wrapped object's ``delete_worker``.

        :raises NotSupported: it has none.
        """
        return self._worker_records().delete_worker(id)

    def count_jobs(self) -> dict[tuple[str, str], int]:
        """The wrapped object's ``count_jobs``.

        :raises NotSupported: it has none.
        """
        if self._count_jobs is None:
            raise NotSupported(
                f"this datastore ({type(self.inner).__name__}) keeps no job counts:"
                " it has no count_jobs method"
            )
        return self._count_jobs()

    def ping(self) -> None:
        """The wrapped object's ``ping``, or a read of a key nobody writes."""
        if self._ping is not None:
            self._ping()
        else:
            self.inner.read("spacewalk_ping")


class ZeroGQueue(_Adapter):
    """A queue with only ZeroG's methods, given the other abilities."""

    def __init__(self, inner: Queue) -> None:
        super().__init__(inner)
        self._has_entry = inner.has_entry if isinstance(inner, EntryChecker) else None
        self._ping = inner.ping if isinstance(inner, Pingable) else None
        self._put_with_document = (
            inner.put_with_document if isinstance(inner, DocumentQueue) else None
        )
        self._queue_stats = inner.queue_stats if isinstance(inner, QueueStats) else None

    @property
    def queueName(self) -> str:  # noqa: N802 - ZeroG's name
        return self.inner.queueName  # type: ignore[no-any-return]

    @queueName.setter
    def queueName(self, value: str) -> None:  # noqa: N802
        self.inner.queueName = value

    def put(
        self, data: Any, ttr: float | None = None, delay: float = 0, priority: int = 2**31
    ) -> int:
        # Only what differs from the protocol's defaults: the queue's own
        # defaults stay its own (ZeroG's ttr is 30 days, and None is no ttr).
        kwargs: dict[str, Any] = {}
        if ttr is not None:
            kwargs["ttr"] = ttr
        if delay:
            kwargs["delay"] = delay
        if priority != 2**31:
            kwargs["priority"] = priority
        return self.inner.put(data, **kwargs)  # type: ignore[no-any-return]

    def reserve(self, timeout: float | None = None) -> QueueEntry | None:
        return self.inner.reserve(timeout=timeout)  # type: ignore[no-any-return]

    def delete(self, id: int) -> bool:
        return self.inner.delete(id)  # type: ignore[no-any-return]

    def attach(self) -> None:
        self.inner.attach()

    def detach(self) -> None:
        self.inner.detach()

    def has_entry(self, id: int, data: Any) -> bool:
        """The wrapped object's ``has_entry``.

        :raises NotSupported: it has none.
        """
        if self._has_entry is None:
            raise NotSupported(
                f"this queue ({type(self.inner).__name__}) cannot tell whether an entry"
                " is still there: it has no has_entry method"
            )
        return self._has_entry(id, data)

    def ping(self) -> None:
        """The wrapped object's ``ping``.

        :raises NotSupported: it has none.
        """
        if self._ping is None:
            raise NotSupported(
                f"this queue ({type(self.inner).__name__}) cannot be pinged: it has no"
                " ping method"
            )
        self._ping()

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
        """The wrapped object's ``put_with_document``, or None: the job is
        then stored and queued as ZeroG does."""
        if self._put_with_document is None:
            return None
        return self._put_with_document(datastore, key, document, data, ttr, delay, priority)

    def queue_stats(self) -> list[QueueDepth]:
        """The wrapped object's ``queue_stats``, or its own queue's counts
        from its ``stats_tube()``, with no oldest ready age.

        :raises NotSupported: it has neither.
        """
        if self._queue_stats is not None:
            return self._queue_stats()
        stats_tube = getattr(self.inner, "stats_tube", None)
        if stats_tube is None:
            raise NotSupported(
                f"this queue ({type(self.inner).__name__}) cannot count its entries:"
                " it has no queue_stats or stats_tube method"
            )
        counts = stats_tube()
        return [
            QueueDepth(
                self.queueName,
                int(counts["current-jobs-ready"]),
                int(counts["current-jobs-delayed"]),
                int(counts["current-jobs-reserved"]),
                None,
            )
        ]
