"""Datastores and queues with only ZeroG's methods, given the other abilities
where they enter (runtime/adapters.py)."""
from __future__ import annotations

import datetime
from typing import Any

import pytest
from runtime_jobs.jobs import ReturnsJob

from flask_spacewalk import errors
from flask_spacewalk.backends.base import JobQuery
from flask_spacewalk.runtime.adapters import (
    TOMBSTONE,
    ZeroGDatastore,
    ZeroGQueue,
    as_datastore,
    as_queue,
)
from flask_spacewalk.runtime.cancel import cancel_key, request_cancel
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.protocols import JobDeletion
from flask_spacewalk.runtime.records import utcnow
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.retry import RetryAnswer
from flask_spacewalk.runtime.stale import requeue_stale
from flask_spacewalk.runtime.worker_loop import Worker

DATASTORE_METHODS = ("read", "read_with_cas", "create", "update", "update_with_cas", "set",
                     "set_with_cas", "delete")  # fmt: skip
QUEUE_METHODS = ("put", "reserve", "delete", "attach", "detach")


class ZeroGOnly:
    """One of our backends seen through ZeroG's methods only, as a ZeroG
    datastore or queue object is; ``extra`` names more methods to show."""

    def __init__(self, inner: Any, names: tuple[str, ...], *extra: str) -> None:
        self._inner = inner
        for name in (*names, *extra):
            setattr(self, name, getattr(inner, name))
        for name in ("casException", "lockedException", "existsException", "queueName"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def zerog_extra(self) -> str:
        return "own method"


def test_our_backends_are_used_as_they_are(datastore: Any, queue: Any) -> None:
    assert as_datastore(datastore) is datastore
    assert as_queue(queue) is queue


def test_a_zerog_datastore_gets_the_defaults(datastore: Any) -> None:
    zerog = ZeroGOnly(datastore, DATASTORE_METHODS)
    store = as_datastore(zerog)
    assert isinstance(store, ZeroGDatastore) and store.inner is zerog
    assert as_datastore(store) is store  # wrapped once
    store.set("a", {"x": 1})
    store.set("b", "text")
    assert store.read_many(["b", "missing", "a"]) == [
        datastore.read_with_cas("b"), (None, 0), datastore.read_with_cas("a"),
    ]
    with pytest.raises(errors.NotSupported) as caught:
        store.list_jobs(JobQuery())
    assert str(caught.value) == (
        "this datastore (ZeroGOnly) cannot list jobs: it has no list_jobs method"
    )
    assert isinstance(caught.value, errors.SpacewalkError)
    store.close()  # nothing to close: nothing happens
    assert store.casException is datastore.casException
    assert store.existsException is datastore.existsException
    assert store.zerog_extra() == "own method"  # job code may call its own methods


def test_a_datastore_keeps_the_abilities_it_has(datastore: Any) -> None:
    calls: list[str] = []
    zerog = ZeroGOnly(datastore, DATASTORE_METHODS, "list_jobs")
    zerog.close = lambda: calls.append("close")  # type: ignore[attr-defined]
    store = as_datastore(zerog)
    assert isinstance(store, ZeroGDatastore)
    assert store.list_jobs(JobQuery()) == []
    store.close()
    assert calls == ["close"]


def test_a_zerog_datastore_deletes_jobs_only_as_they_were_read(
    datastore: Any, queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = as_datastore(ZeroGOnly(datastore, DATASTORE_METHODS))
    kept, changed, gone = (ReturnsJob(datastore, queue, value=200) for _ in range(3))
    for job in (kept, changed, gone):
        job.save()
    request_cancel(datastore, gone.uuid)
    read_cas = changed.cas
    changed.update_attrs(value=201)
    claims = []
    update_with_cas = store.inner.update_with_cas
    monkeypatch.setattr(store.inner, "update_with_cas",
                        lambda *a: claims.append(a[1]) or update_with_cas(*a))  # fmt: skip

    deleted = store.delete_jobs([
        JobDeletion(make_key(gone.uuid), gone.cas, (cancel_key(gone.uuid),)),
        JobDeletion(make_key(changed.uuid), read_cas),
        JobDeletion(make_key("missing"), 7),
    ])  # fmt: skip
    assert deleted == [make_key(gone.uuid)]
    assert claims == [TOMBSTONE] * 3  # each claimed by a compare-and-swap write first
    assert datastore.read(make_key(gone.uuid)) is None
    assert datastore.read(cancel_key(gone.uuid)) is None
    assert datastore.read(make_key(changed.uuid))["value"] == 201
    assert {job["uuid"] for job in datastore.list_jobs(JobQuery())} == {kept.uuid, changed.uuid}


def test_a_datastore_keeps_its_own_delete_jobs(datastore: Any) -> None:
    zerog = ZeroGOnly(datastore, DATASTORE_METHODS, "delete_jobs")
    calls: list[Any] = []
    zerog.delete_jobs = lambda jobs: calls.append(jobs) or []  # type: ignore[attr-defined]
    store = as_datastore(zerog)
    assert isinstance(store, ZeroGDatastore)
    assert store.delete_jobs([JobDeletion("zerog_job_x", 1)]) == []
    assert calls == [[JobDeletion("zerog_job_x", 1)]]


def test_a_zerog_queue_gets_the_defaults(datastore: Any, queue: Any) -> None:
    zerog = ZeroGOnly(queue, QUEUE_METHODS)
    wrapped = as_queue(zerog)
    assert isinstance(wrapped, ZeroGQueue) and wrapped.queueName == queue.queueName
    id = wrapped.put("job")
    assert wrapped.put_with_document(datastore, "k", lambda id: {}, "job") is None
    assert datastore.read("k") is None and queue.has_entry(id, "job")
    with pytest.raises(errors.NotSupported, match=r"this queue \(ZeroGOnly\) cannot tell"):
        wrapped.has_entry(id, "job")
    wrapped.close()
    entry = wrapped.reserve(timeout=0)
    assert entry is not None and entry.id == id


def test_a_queue_keeps_the_abilities_it_has(datastore: Any, queue: Any) -> None:
    wrapped = as_queue(ZeroGOnly(queue, QUEUE_METHODS, "has_entry", "put_with_document"))
    assert isinstance(wrapped, ZeroGQueue)
    id = wrapped.put("job")
    assert wrapped.has_entry(id, "job") is True
    written = wrapped.put_with_document(datastore, "k", lambda id: {"id": id}, "other")
    assert written is not None and datastore.read("k") == {"id": written[0]}


def test_zerog_objects_run_jobs_here(datastore: Any, queue: Any) -> None:
    """A job built and enqueued with ZeroG's objects, run by our worker
    from ZeroG's objects: the slow paths, each ability's default."""
    zerog_store = ZeroGOnly(datastore, DATASTORE_METHODS)
    zerog_queue = ZeroGOnly(queue, QUEUE_METHODS)
    job = ReturnsJob(zerog_store, zerog_queue, value=[201, None])
    assert isinstance(job.datastore, ZeroGDatastore) and isinstance(job.queue, ZeroGQueue)
    job.enqueue()
    stored = datastore.read(make_key(job.uuid))
    assert stored["queueJobId"] > 0 and stored["queueName"] == queue.queueName
    worker = Worker(JobRegistry([ReturnsJob]), lambda: zerog_store, lambda n: zerog_queue,
                    queue.queueName)  # fmt: skip
    worker.run(burst=True)
    assert datastore.read(make_key(job.uuid))["resultCode"] == 201


def test_requeue_stale_needs_has_entry(datastore: Any, queue: Any) -> None:
    job = ReturnsJob(datastore, queue, value=[200, None])
    job.enqueue()
    later = utcnow() + datetime.timedelta(hours=1)
    registry = JobRegistry([ReturnsJob])
    stale = requeue_stale(datastore, as_queue(ZeroGOnly(queue, QUEUE_METHODS)), registry, 60,
                          now=later)  # fmt: skip
    with pytest.raises(errors.NotSupported, match="has no has_entry method"):
        next(stale)


def test_a_retry_on_a_zerog_queue_does_without_has_entry(datastore: Any, queue: Any) -> None:
    zerog_queue = ZeroGOnly(queue, QUEUE_METHODS)
    job = ReturnsJob(datastore, zerog_queue, value=[500, None])
    job.enqueue()
    registry = JobRegistry([ReturnsJob])
    Worker(registry, lambda: datastore, lambda n: zerog_queue, queue.queueName).run(burst=True)
    failed = registry.get_job(job.uuid, datastore, zerog_queue)
    assert failed.resultCode == 500
    # the queue cannot tell whether the ended job left an entry: it is retried
    assert Lifecycle(datastore, zerog_queue).retry(failed) is RetryAnswer.RETRIED
    entry = queue.reserve(timeout=0)
    assert entry is not None and entry.body == f'"{job.uuid}"'
    assert queue.reserve(timeout=0) is None


def test_a_zerog_queue_keeps_its_own_put_defaults() -> None:
    """Only what the caller gave reaches a ZeroG queue's put: its own
    defaults (ZeroG's ttr of 30 days) stay its own, and None is never sent."""
    calls: list[dict[str, Any]] = []

    class Queue:
        queueName = "zerog_jobs"

        def put(self, data: Any, ttr: float = 30 * 86400, delay: float = 0,
                priority: int = 2**31) -> int:
            calls.append({"ttr": ttr, "delay": delay, "priority": priority})
            return len(calls)

        def reserve(self, timeout: Any = None) -> None:
            return None

        def delete(self, id: int) -> bool:
            return True

        def attach(self) -> None: ...

        def detach(self) -> None: ...

    wrapped = as_queue(Queue())
    wrapped.put("a")
    wrapped.put("b", ttr=60, delay=5, priority=1)
    assert calls == [
        {"ttr": 30 * 86400, "delay": 0, "priority": 2**31},
        {"ttr": 60, "delay": 5, "priority": 1},
    ]
