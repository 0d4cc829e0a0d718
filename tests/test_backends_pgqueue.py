"""What the PostgreSQL queue does beyond the conformance suite: one
transaction for a new job's document and entry, the claim that reads the
job's documents, LISTEN/NOTIFY, its own schema version, and outages.

Each test gets a fresh schema in database ``test`` (tests/backend_postgres.py);
the tests skip without the server and fail when ``CI=true``.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_postgres import admin, postgres_url

from flask_spacewalk import errors
from flask_spacewalk.backends import make_datastore, make_queue, pgqueue
from flask_spacewalk.backends.pgqueue import PostgresQueue
from flask_spacewalk.backends.postgres import PostgresDatastore
from flask_spacewalk.runtime.cancel import cancel_key
from flask_spacewalk.runtime.protocols import DocumentEntry
from flask_spacewalk.runtime.status import JOB_KEY_PREFIX


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with postgres_url(tmp_path) as url:
        yield url


@pytest.fixture
def pair(url: str) -> Iterator[tuple[PostgresDatastore, PostgresQueue]]:
    datastore, queue = make_datastore(url), make_queue(url, "jobs")
    assert isinstance(datastore, PostgresDatastore) and isinstance(queue, PostgresQueue)
    yield datastore, queue
    queue.close()
    datastore.close()


def job_document(uuid: str) -> Any:
    def document(entry_id: int) -> dict[str, Any]:
        return {"uuid": uuid, "jobType": "t", "createdAt": "2026-01-01T00:00:00",
                "resultCode": -1, "queueJobId": entry_id}
    return document


def test_a_new_document_and_its_entry_are_one_transaction(
    pair: tuple[PostgresDatastore, PostgresQueue],
) -> None:
    datastore, queue = pair
    written = queue.put_with_document(datastore, JOB_KEY_PREFIX + "u1", job_document("u1"), "u1")
    assert written is not None
    entry_id, cas = written
    value, stored_cas = datastore.read_with_cas(JOB_KEY_PREFIX + "u1")
    assert isinstance(value, dict) and value["queueJobId"] == entry_id and stored_cas == cas
    assert queue.has_entry(entry_id, "u1")

    def unstorable(entry_id: int) -> dict[str, Any]:
        return {"uuid": "u2", "score": float("nan")}

    # the document is refused after the entry's insert: neither stays
    with pytest.raises(errors.UnstorableValue):
        queue.put_with_document(datastore, JOB_KEY_PREFIX + "u2", unstorable, "u2")
    assert datastore.read(JOB_KEY_PREFIX + "u2") is None
    assert queue.stats_tube()["current-jobs-ready"] == 1


def test_a_claim_s_write_the_server_refuses_claims_nothing(
    pair: tuple[PostgresDatastore, PostgresQueue], url: str,
) -> None:
    # the write of a document the claim locked travels with the COMMIT:
    # refused there (a full disk, here a trigger saying so), the whole claim
    # is rolled back
    datastore, queue = pair
    queue.put_with_document(datastore, JOB_KEY_PREFIX + "u", job_document("u"), "u")
    cas = datastore.read_with_cas(JOB_KEY_PREFIX + "u")[1]
    schema = url.rpartition("schema=")[2]
    with admin() as conn:
        conn.execute(f"""CREATE FUNCTION "{schema}".disk_full() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'no space left' USING ERRCODE = 'disk_full'; END $$""")
        conn.execute(f'CREATE TRIGGER disk_full BEFORE UPDATE ON "{schema}".spacewalk_documents'
                     f' FOR EACH ROW EXECUTE FUNCTION "{schema}".disk_full()')

    def then(tx: Any, entries: list[Any]) -> int:
        return int(tx.write(JOB_KEY_PREFIX + "u", {"uuid": "u", "running": True}, cas))

    with pytest.raises(errors.QueueUnavailable, match="no space left"):
        queue.reserve_in(1, 0, then)
    with admin() as conn:
        conn.execute(f'DROP TRIGGER disk_full ON "{schema}".spacewalk_documents')
    assert datastore.read_with_cas(JOB_KEY_PREFIX + "u")[1] == cas
    assert queue.stats_tube()["current-jobs-ready"] == 1
    # the next claim goes through, on a connection of the pool
    assert queue.reserve_in(1, 0, then) > cas
    assert datastore.read(JOB_KEY_PREFIX + "u") == {"uuid": "u", "running": True}


def test_another_database_or_schema_is_written_apart(
    pair: tuple[PostgresDatastore, PostgresQueue], tmp_path: Path,
) -> None:
    datastore, queue = pair
    with postgres_url(tmp_path) as other_url:
        other = make_datastore(other_url)
        try:
            assert queue.put_with_document(other, "k", job_document("u"), "u") is None
        finally:
            other.close()
    sqlite = make_datastore(f"sqlite:///{tmp_path / 'x.db'}")
    assert queue.put_with_document(sqlite, "k", job_document("u"), "u") is None
    assert queue.stats_tube()["current-jobs-ready"] == 0


def test_the_claim_reads_the_jobs_document_and_cancel_request(
    pair: tuple[PostgresDatastore, PostgresQueue], tmp_path: Path,
) -> None:
    datastore, queue = pair
    queue.put_with_document(datastore, JOB_KEY_PREFIX + "u1", job_document("u1"), "u1")
    datastore.set(cancel_key("u1"), {"requestedAt": "now"})
    entry = queue.reserve(timeout=0)
    assert isinstance(entry, DocumentEntry)
    keys = [JOB_KEY_PREFIX + "u1", cancel_key("u1")]
    read = entry.documents(datastore, keys)
    assert read == datastore.read_many(keys)
    # only for those keys, in that datastore
    assert entry.documents(datastore, list(reversed(keys))) is None
    sqlite = make_datastore(f"sqlite:///{tmp_path / 'x.db'}")
    assert entry.documents(sqlite, keys) is None


def test_a_job_without_a_document_is_left_to_the_caller_to_read(
    pair: tuple[PostgresDatastore, PostgresQueue],
) -> None:
    datastore, queue = pair
    datastore.set("unrelated", "x")  # the documents' table exists
    queue.put("gone")
    queue.put({"not": "a uuid"})
    first = queue.reserve(timeout=0)
    assert isinstance(first, DocumentEntry)
    assert first.documents(datastore, [JOB_KEY_PREFIX + "gone", cancel_key("gone")]) is None
    second = queue.reserve(timeout=0)
    assert second is not None and json.loads(second.body) == {"not": "a uuid"}
    assert second.documents(datastore, ["a", "b"]) is None  # type: ignore[attr-defined]


def test_a_notification_wakes_a_waiter(
    pair: tuple[PostgresDatastore, PostgresQueue], url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no re-check before the reserve's own timeout: only NOTIFY can wake it
    monkeypatch.setattr(pgqueue, "WAKE_FALLBACK", 60.0)
    _, queue = pair
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(queue.reserve(timeout=30)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.2)
    other = make_queue(url, "jobs")
    try:
        other.put("wake")
    finally:
        other.close()
    waiter.join(timeout=40)
    assert got and got[0] is not None and json.loads(got[0].body) == "wake"
    assert time.monotonic() - started < 20


def test_a_lost_connection_is_made_again(
    pair: tuple[PostgresDatastore, PostgresQueue], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server restart, as each client sees it: every connection closed."""
    monkeypatch.setattr(pgqueue, "WAKE_FALLBACK", 0.2)
    _, queue = pair
    queue.put("before")
    entry = queue.reserve(timeout=1)  # the pool and the listener are open
    assert entry is not None
    with admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid = %s", (queue._listener._conn.info.backend_pid,)  # type: ignore[union-attr]
        )
        pool_pids = [c.info.backend_pid for c in queue._connections._pool._pool]  # type: ignore[union-attr]
        for pid in pool_pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # A statement sent before the server's goodbye arrived fails, as
    # unavailable; the next call connects again.
    try:
        entry.delete()
    except errors.QueueUnavailable as exc:
        assert "terminating connection" in str(exc)
        entry.delete()
    queue.put("after")
    again = queue.reserve(timeout=5)
    assert again is not None and json.loads(again.body) == "after"
    again.delete()


def test_an_unreachable_server_is_queue_unavailable() -> None:
    queue = make_queue("postgresql://127.0.0.1:1/test?connect_timeout=2", "jobs")
    try:
        with pytest.raises(errors.QueueUnavailable, match="PostgreSQL at 127.0.0.1:1/test"):
            queue.put("x")
        with pytest.raises(errors.QueueUnavailable):
            queue.reserve(timeout=0.1)
        with pytest.raises(errors.QueueUnavailable):
            queue.ping()
    finally:
        queue.close()


def test_a_version_1_table_gains_the_claim_function_and_keeps_the_old_one(url: str) -> None:
    schema = url.rpartition("schema=")[2]
    old = make_queue(url, "jobs")
    old.put("before")
    old.close()
    function = f'"{schema}".spacewalk_queue_reserve'
    with admin() as conn:  # as version 1 left it
        conn.execute(f"DROP FUNCTION {function}({pgqueue._FUNCTION_ARGS})")
        conn.execute(f"CREATE FUNCTION {function}(text, boolean, text, text) RETURNS integer"
                     " LANGUAGE sql AS 'SELECT 1'")
        conn.execute(f"COMMENT ON TABLE \"{schema}\".spacewalk_queue"
                     " IS 'flask_spacewalk queue schema 1'")
    queue = make_queue(url, "jobs")
    try:
        entry = queue.reserve(timeout=0)
        assert entry is not None and json.loads(entry.body) == "before"
        with admin() as conn:
            assert conn.execute(
                "SELECT obj_description(%s::regclass, 'pg_class'),"
                " to_regprocedure(%s) IS NOT NULL",
                (f'"{schema}".spacewalk_queue', f"{function}(text, boolean, text, text)"),
            ).fetchone() == (f"flask_spacewalk queue schema {pgqueue.SCHEMA_VERSION}", True)
    finally:
        queue.close()
    # once current, a new process only checks the version
    again = make_queue(url, "jobs")
    statements: list[str] = []
    setup = again._connections._setup

    class Spy:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            statements.append(sql)
            return self.conn.execute(sql, *args)

    again._connections._setup = lambda conn: setup(Spy(conn))  # type: ignore[arg-type]
    try:
        again.ping()
    finally:
        again.close()
    assert len(statements) == 1, statements


def test_the_table_keeps_its_own_schema_version(url: str) -> None:
    schema = url.rpartition("schema=")[2]
    queue = make_queue(url, "jobs")
    try:
        queue.ping()
        with admin() as conn:
            row = conn.execute(
                "SELECT obj_description(%s::regclass, 'pg_class')",
                (f'"{schema}".spacewalk_queue',),
            ).fetchone()
        assert row == (f"flask_spacewalk queue schema {pgqueue.SCHEMA_VERSION}",)
        # the documents' table is made by the datastore alone, with its own
        with admin() as conn:
            assert conn.execute(
                "SELECT to_regclass(%s)", (f'"{schema}".spacewalk_documents',)
            ).fetchone() == (None,)
    finally:
        queue.close()


def test_a_document_committed_with_its_entry_is_read_with_the_claim(
    pair: tuple[PostgresDatastore, PostgresQueue], url: str,
) -> None:
    """The claim and the read of the document are two statements of the
    reserve: one taken just as the POST commits still finds the document
    (a single statement's snapshot, older than the claim's, did not)."""
    datastore, queue = pair
    datastore.set("unrelated", "x")
    worker_queue = make_queue(url, "jobs")
    found: list[Any] = []
    stop = threading.Event()

    def reserve() -> None:
        while not stop.is_set():
            entry = worker_queue.reserve(timeout=0.5)
            if entry is not None:
                uuid = json.loads(entry.body)
                found.append(entry.documents(datastore, [JOB_KEY_PREFIX + uuid, cancel_key(uuid)]))
                entry.delete()

    thread = threading.Thread(target=reserve)
    thread.start()
    try:
        for n in range(50):
            queue.put_with_document(datastore, f"{JOB_KEY_PREFIX}u{n}", job_document(f"u{n}"),
                                    f"u{n}")
        deadline = time.monotonic() + 30
        while len(found) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
        worker_queue.close()
    assert len(found) == 50
    assert all(read is not None and read[0][0] is not None for read in found)


def test_bad_arguments_are_refused_before_writing(
    pair: tuple[PostgresDatastore, PostgresQueue],
) -> None:
    _, queue = pair
    with pytest.raises(ValueError, match="priority"):
        queue.put("x", priority=-1)
    with pytest.raises(ValueError, match="ttr"):
        queue.put("x", ttr=0)
    assert queue.stats_tube()["current-jobs-ready"] == 0


def test_a_bad_queue_url_is_a_configuration_error() -> None:
    from flask_spacewalk.backends import check_url

    check_url("postgresql://db.example/jobs?schema=s", "queue")
    for url, problem in [
        ("postgresql://db.example/", "names no database"),
        ("postgresql://db.example/jobs?pool_max_size=x", "integers"),
        ("postgresql://db.example/jobs?schema=", "schema is empty"),
    ]:
        with pytest.raises(errors.ConfigurationError, match=problem):
            check_url(url, "queue")
        with pytest.raises(errors.ConfigurationError, match=problem):
            make_queue(url, "jobs")
