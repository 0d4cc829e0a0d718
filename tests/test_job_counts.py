"""The jobs' counts by jobType and status that every datastore keeps with
its writes (``count_jobs``, read by ``<prefix>/metrics``), and the migration
that fills them once in a store written before they were kept."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, _close

from flask_spacewalk import make_datastore
from flask_spacewalk.backends import postgres, redis, sqlite
from flask_spacewalk.errors import NotSupported
from flask_spacewalk.runtime.adapters import ZeroGDatastore


def doc(job_type: Any, result: int = -1, running: bool = False, **extra: Any) -> dict[str, Any]:
    return {"documentType": "zerog_job", "jobType": job_type, "resultCode": result,
            "running": running, "createdAt": "2024-05-01T10:00:00.000001", **extra}  # fmt: skip


def nonzero(store: Any) -> dict[tuple[str, str], int]:
    return {key: n for key, n in store.count_jobs().items() if n}


@pytest.fixture(params=sorted(DATASTORES))
def datastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with DATASTORES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
def store(datastore_url: str) -> Iterator[Any]:
    opened = make_datastore(datastore_url)
    yield opened
    _close(opened)


def write_jobs(store: Any) -> None:
    """Jobs of every status, through every kind of write."""
    store.create("zerog_job_1", doc("a"))
    store.set("zerog_job_2", doc("a"))
    store.set_with_cas("zerog_job_3", doc("b"))
    _, cas = store.read_with_cas("zerog_job_1")
    store.update_with_cas("zerog_job_1", doc("a", running=True), cas)  # running
    store.update("zerog_job_2", doc("a", 200))  # finished
    store.update("zerog_job_2", doc("a", 200, completeness=1))  # same status again
    store.set("zerog_job_3", doc("b", 410))  # cancelled
    store.create("zerog_job_4", doc("b", 500))  # failed
    store.create("zerog_job_5", doc(None))  # no jobType string: ""
    store.create("elsewhere", doc("a"))  # not a job key
    store.create("zerog_job_6", "a str")  # not a job document
    store.create("zerog_job_7", {"jobType": "a"})  # no createdAt: not listed


WRITTEN = {("a", "running"): 1, ("a", "finished"): 1, ("b", "cancelled"): 1,
           ("b", "failed"): 1, ("", "queued"): 1}  # fmt: skip


def test_every_write_keeps_the_counts(store: Any) -> None:
    assert store.count_jobs() == {}
    write_jobs(store)
    assert nonzero(store) == WRITTEN
    # a status left keeps its row at 0, so its gauge stays
    assert store.count_jobs()[("a", "queued")] == 0


def test_deletes_and_rewrites_keep_the_counts(store: Any) -> None:
    write_jobs(store)
    assert store.delete("zerog_job_2")
    assert not store.delete("zerog_job_2")  # absent: nothing to take off
    store.delete("zerog_job_6")
    store.delete("elsewhere")
    store.set("zerog_job_4", {"jobType": "b"})  # no longer listed
    store.set("zerog_job_5", doc("c", 200))  # another jobType
    store.set("zerog_job_2", doc("a"))  # created again
    assert nonzero(store) == {("a", "running"): 1, ("b", "cancelled"): 1,
                              ("c", "finished"): 1, ("a", "queued"): 1}  # fmt: skip
    for key in ("zerog_job_1", "zerog_job_2", "zerog_job_3", "zerog_job_4", "zerog_job_5"):
        store.delete(key)
    assert nonzero(store) == {}


def test_a_failed_write_changes_no_count(store: Any) -> None:
    write_jobs(store)
    with pytest.raises(store.existsException):
        store.create("zerog_job_1", doc("a", 200))
    with pytest.raises(store.casException):
        store.update_with_cas("zerog_job_1", doc("a", 200), 12345)
    assert store.update("zerog_job_99", doc("a")) is False
    assert nonzero(store) == WRITTEN


def test_a_foreign_datastore_without_counts_says_so(store: Any) -> None:
    class Bare:
        def read(self, key: str) -> Any:
            return None

    with pytest.raises(NotSupported, match="keeps no job counts"):
        ZeroGDatastore(Bare()).count_jobs()  # type: ignore[arg-type]
    assert ZeroGDatastore(store).count_jobs() == store.count_jobs()


# -- the migration of a store written before the counts ------------------------


def test_sqlite_fills_the_counts_of_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = sqlite.SqliteDatastore(path)
    write_jobs(store)
    store.close()
    conn = sqlite3.connect(path)
    for name in ("insert", "update", "delete"):
        conn.execute(f"DROP TRIGGER job_counts_{name}")
    conn.execute("DROP TABLE job_counts")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    store = sqlite.SqliteDatastore(path)
    try:
        assert nonzero(store) == WRITTEN
        store.update("zerog_job_1", doc("a", 200))  # and kept from then on
        assert nonzero(store)[("a", "finished")] == 2
    finally:
        store.close()


def test_postgres_fills_the_counts_of_an_older_table(tmp_path: Path) -> None:
    with DATASTORES["postgresql"](tmp_path) as url:
        store = postgres.PostgresDatastore(url)
        write_jobs(store)
        schema = url.rpartition("schema=")[2]
        with store._connections.connection() as conn:
            conn.execute(f'DROP TABLE "{schema}".spacewalk_job_counts')
            conn.execute(f'DROP FUNCTION "{schema}".spacewalk_job_counts_keep CASCADE')
            conn.execute(f"COMMENT ON TABLE {store.table} IS 'flask_spacewalk schema 2'")
        store.close()
        store = postgres.PostgresDatastore(url)
        try:
            assert nonzero(store) == WRITTEN
            store.update("zerog_job_1", doc("a", 200))
            assert nonzero(store)[("a", "finished")] == 2
        finally:
            store.close()


def test_redis_counts_each_older_document_once(tmp_path: Path) -> None:
    with DATASTORES["redis"](tmp_path) as url:
        store = redis.RedisDatastore(url)
        write_jobs(store)
        with store._server.connect() as client:
            client.delete(store._jobs + "counts")
            for key in client.scan_iter(match=store.prefix + "*"):
                client.hdel(key, "ix_counted")
            client.set(store._jobs + "version", 2)
        # a process of this release that migrated already writes meanwhile:
        # a document it moves is counted then, and not again below
        store.update("zerog_job_1", doc("a", 200))
        assert nonzero(store) == {("a", "finished"): 1}
        store.close()
        migrated = redis.RedisDatastore(url)
        try:
            assert nonzero(migrated) == {("a", "finished"): 2, ("b", "cancelled"): 1,
                                         ("b", "failed"): 1, ("", "queued"): 1}  # fmt: skip
            with migrated._server.connect() as client:
                assert client.get(migrated._jobs + "version") == str(redis.INDEX_VERSION)
        finally:
            migrated.close()
