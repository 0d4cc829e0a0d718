"""The SQLite backend beyond the protocols, and URL parsing."""
from __future__ import annotations

import functools
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from backend_support import SPAWN, _close, _reporting, _run_processes

from flask_spacewalk import errors
from flask_spacewalk.backends import (
    check_url,
    make_datastore,
    make_queue,
    resolve_sqlite_path,
    wakeup,
)
from flask_spacewalk.backends import sqlite as sqlite_backend

# -- SQLite ------------------------------------------------------------------


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    store = sqlite_backend.SqliteDatastore(path)
    queue = sqlite_backend.SqliteQueue(path, "jobs")
    try:
        with pytest.raises(errors.DatastoreUnavailable, match="junk.db"):
            store.read("k")
        with pytest.raises(errors.QueueUnavailable, match="junk.db"):
            queue.put("x")
        with pytest.raises(errors.QueueUnavailable, match="junk.db"):
            queue.reserve(timeout=0)
        # the next call connects again
        path.unlink()
        store.set("k", "v")
        assert store.read("k") == "v"
        queue.put("x")
        assert queue.reserve(timeout=0) is not None
    finally:
        store.close()
        queue.close()


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'db.sqlite'}"
    store = make_datastore(url)  # connects lazily
    queue = make_queue(url, "jobs")
    try:
        with pytest.raises(errors.DatastoreUnavailable, match="db.sqlite"):
            store.set("k", "v")
        with pytest.raises(errors.QueueUnavailable, match="db.sqlite"):
            queue.reserve(timeout=0)
    finally:
        _close(store)
        _close(queue)


def test_locked_too_long_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    store.set("k", "v")
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(errors.DatastoreUnavailable, match="locked"):
            store.set("k", "w")
        locker.execute("ROLLBACK")
        store.set("k", "w")
        assert store.read("k") == "w"
    finally:
        locker.close()
        store.close()


def test_stats_tube(tmp_path: Path) -> None:
    queue = sqlite_backend.SqliteQueue(tmp_path / "db.sqlite", "jobs")
    try:
        queue.put("urgent", priority=0)
        queue.put("ready")
        queue.put("delayed", delay=60)
        queue.put("also urgent", priority=1)
        queue.reserve(timeout=0)  # takes "urgent"
        assert queue.stats_tube() == {
            "name": "jobs",
            "current-jobs-urgent": 1,
            "current-jobs-ready": 2,
            "current-jobs-reserved": 1,
            "current-jobs-delayed": 1,
        }
    finally:
        queue.close()


def test_resolve_relative_path(tmp_path: Path) -> None:
    path = resolve_sqlite_path("sqlite:///data/spacewalk.db", str(tmp_path))
    assert path == str(tmp_path / "data" / "spacewalk.db")
    assert (tmp_path / "data").is_dir()


def test_resolve_relative_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_sqlite_path("sqlite:///x.db") == str(tmp_path / "x.db")


def test_resolve_absolute_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/abs/x.db"
    assert url.startswith("sqlite:////")
    assert resolve_sqlite_path(url, "/elsewhere") == str(tmp_path / "abs" / "x.db")
    assert (tmp_path / "abs").is_dir()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite:///dir/", "sqlite://host/x.db",
     "sqlite:///x.db?mode=ro", "sqlite:///:memory:"],
)  # fmt: skip
def test_bad_sqlite_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError):
        check_url(url, "datastore")
    with pytest.raises(errors.ConfigurationError):
        make_datastore(url, instance_path=str(tmp_path))
    with pytest.raises(errors.ConfigurationError):
        make_queue(url, "jobs", instance_path=str(tmp_path))


@pytest.mark.parametrize("url", ["mongodb://localhost/x", "x.db", "", "/abs/x.db"])
def test_unsupported_scheme_lists_the_supported(url: str) -> None:
    for kind in ("datastore", "queue"):
        with pytest.raises(errors.ConfigurationError, match="sqlite://"):
            check_url(url, kind)
    with pytest.raises(errors.ConfigurationError, match="sqlite://"):
        make_datastore(url)
    with pytest.raises(errors.ConfigurationError, match="sqlite://"):
        make_queue(url, "jobs")


def test_password_is_not_in_messages() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        check_url("mongodb://user:s3cret@host/db", "queue")
    assert "s3cret" not in str(info.value)


def test_check_url_does_not_create_anything(tmp_path: Path) -> None:
    check_url(f"sqlite:///{tmp_path}/new/x.db", "datastore")
    check_url("sqlite:///relative.db", "queue")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError):
        check_url("sqlite:///x.db", "cache")


def test_factories_as_zerog_arguments(tmp_path: Path) -> None:
    url = "sqlite:///instance/db.sqlite"
    make_datastore_ = functools.partial(
        make_datastore, url, instance_path=str(tmp_path)
    )
    make_queue_ = functools.partial(make_queue, url, instance_path=str(tmp_path))
    store, queue = make_datastore_(), make_queue_("svc_jobs")
    try:
        assert queue.queueName == "svc_jobs"
        store.set("k", "v")
        queue.put("u")
        assert (tmp_path / "instance" / "db.sqlite").is_file()
    finally:
        _close(store)
        _close(queue)


def test_wake_socket_is_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    queue = sqlite_backend.SqliteQueue(path, "jobs")

    def sockets() -> list[str]:
        dirs = wakeup.wake_dirs(str(path))
        return [f for d in dirs if os.path.isdir(d) for f in os.listdir(d)]

    assert queue.reserve(timeout=0.01) is None
    assert len(sockets()) == 1
    queue.close()
    assert sockets() == []


def test_a_waker_dropped_without_close_leaks_no_socket(tmp_path: Path) -> None:
    import gc

    db = str(tmp_path / "db.sqlite")
    waker = wakeup.Waker(db, "jobs")
    waker.listen()
    waker.notify()  # opens the sending socket too
    # An unclosed socket warns from its __del__, which pytest reports as an
    # unraisable exception of whichever test happens to run next.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del waker
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert not any(os.path.isdir(d) and os.listdir(d) for d in wakeup.wake_dirs(db))


def test_schema_is_versioned(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "db.sqlite"
    for _ in range(2):  # creating the schema twice is harmless
        store = sqlite_backend.SqliteDatastore(path)
        store.set("k", "v")
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_backend.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM documents").fetchone()[0] == '"v"'
        # a file of version 2 loses the index on updated_at that nothing read
        conn.execute("CREATE INDEX documents_updated_at ON documents (updated_at)")
        conn.execute("DROP TABLE workers")
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
        sqlite_backend.SqliteDatastore(path).close()
        store = sqlite_backend.SqliteDatastore(path)
        assert store.read("k") == "v"
        store.close()
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        indexes = {name for (name,) in rows}
        assert "documents_updated_at" not in indexes and "jobs_created" in indexes
        # version 7 added the worker records' table
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'workers'").fetchone()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_backend.SCHEMA_VERSION
    finally:
        conn.close()


def test_a_file_of_version_4_hands_out_its_entries_in_ready_order(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "db.sqlite"
    queue = sqlite_backend.SqliteQueue(path, "jobs")
    queue.put("delayed", delay=60)
    queue.put("plain")
    queue.close()
    conn = sqlite3.connect(path)
    try:
        # version 4's index ordered one priority by id alone
        conn.execute("DROP INDEX queue_next")
        conn.execute("CREATE INDEX queue_next ON queue (tube, pri, id) WHERE lease_until IS NULL")
        conn.execute("PRAGMA user_version = 4")
        # the delay of the entry put first ran out just after the second's put
        conn.execute("UPDATE queue SET ready_at = (SELECT ready_at + 0.001 FROM queue"
                     " WHERE id = 2) WHERE id = 1")
        conn.commit()
        time.sleep(0.01)
        queue = sqlite_backend.SqliteQueue(path, "jobs")
        try:
            assert json.loads(take(queue).body) == "plain"
            # a process of version 4 still running names the index in its
            # reserve, and still finds the entries (in its own order)
            old_next = sqlite_backend._NEXT.replace("pri, ready_at, id", "pri, id")
            assert old_next != sqlite_backend._NEXT
            assert conn.execute(old_next, ("jobs", time.time(), 1)).fetchone()[0] == 1
            assert json.loads(take(queue).body) == "delayed"
        finally:
            queue.close()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_backend.SCHEMA_VERSION
        columns = [row[2] for row in conn.execute("PRAGMA index_info(queue_next)")]
        assert columns == ["tube", "pri", "ready_at", "id"]
    finally:
        conn.close()


def take(queue: sqlite_backend.SqliteQueue) -> sqlite_backend.SqliteQueueEntry:
    entry = queue.reserve(timeout=0)
    assert entry is not None
    return entry


@_reporting
def _create_and_write(paths: list[str], start: Any) -> list[int]:
    start.wait(timeout=30)
    ids = []
    for path in paths:
        store = sqlite_backend.SqliteDatastore(path)
        queue = sqlite_backend.SqliteQueue(path, "race_jobs")
        try:
            store.set(f"k{os.getpid()}", "v")
            ids.append(queue.put("x"))
        finally:
            store.close()
            queue.close()
    return ids


@pytest.mark.slow
def test_processes_creating_one_file_at_once(tmp_path: Path) -> None:
    """gunicorn workers and job workers all opening a new database at start."""
    processes, files = 6, 8
    paths = [str(tmp_path / f"fresh{i}.sqlite") for i in range(files)]
    start = SPAWN.Barrier(processes)
    ids = _run_processes(_create_and_write, [(paths, start)] * processes)
    for i in range(files):
        assert sorted(found[i] for found in ids) == list(range(1, processes + 1))


def test_writer_lock_held_too_long_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    store.set("k", "v")
    with open(f"{path}-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(errors.DatastoreUnavailable, match="still locked"):
            store.set("k", "w")
        fcntl.flock(lock, fcntl.LOCK_UN)
    store.set("k", "w")
    assert store.read("k") == "w"
    store.close()


# -- the file deleted or replaced under running processes (issue 12) -----------


def test_a_deleted_file_is_unavailable_until_one_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    queue = sqlite_backend.SqliteQueue(path, "jobs")
    try:
        store.set("k", "v")
        queue.put("x")
        path.unlink()
        # reads, single-statement writes, transactions: all refused, rather
        # than going to the unlinked file
        with pytest.raises(errors.DatastoreUnavailable, match="db.sqlite.*deleted"):
            store.set("k", "w")
        with pytest.raises(errors.DatastoreUnavailable, match="deleted"):
            store.read("k")
        with pytest.raises(errors.DatastoreUnavailable, match="deleted"):
            store.update_with_cas("k", "w", 1)
        with pytest.raises(errors.QueueUnavailable, match="deleted"):
            queue.put("y")
        with pytest.raises(errors.QueueUnavailable, match="deleted"):
            queue.reserve(timeout=0)
        # a running process never makes an empty store of its own
        assert not path.exists()

        # a process started anew creates a new, empty file: the others
        # reconnect to it, and say so
        fresh = sqlite_backend.SqliteDatastore(path)
        fresh.set("new", 1)
        fresh.close()
        with caplog.at_level("WARNING", logger="flask_spacewalk.backends.sqlite"):
            assert store.read("k") is None
            assert store.read("new") == 1
        assert any(str(path) in r.getMessage() for r in caplog.records)
        store.set("k", "w")
        assert store.read("k") == "w"
        queue.put("z")
        entry = queue.reserve(timeout=0)
        assert entry is not None and json.loads(entry.body) == "z"
    finally:
        store.close()
        queue.close()


def test_a_file_moved_away_and_back_is_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    try:
        store.set("k", "v")
        os.rename(path, tmp_path / "aside.sqlite")
        with pytest.raises(errors.DatastoreUnavailable, match="deleted"):
            store.set("k", "w")
        os.rename(tmp_path / "aside.sqlite", path)
        assert store.read("k") == "v"
        store.set("k", "w")
        assert store.read("k") == "w"
    finally:
        store.close()


def test_a_replaced_file_is_reconnected_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    try:
        store.set("k", "old")
        backup = sqlite_backend.SqliteDatastore(tmp_path / "backup.sqlite")
        backup.set("k", "restored")
        backup.close()  # checkpoints its WAL: the file alone holds it all
        os.replace(tmp_path / "backup.sqlite", path)
        with caplog.at_level("WARNING", logger="flask_spacewalk.backends.sqlite"):
            assert store.read("k") == "restored"
        assert any("replaced" in r.getMessage() and str(path) in r.getMessage()
                   for r in caplog.records)
        store.set("k", "new")
        assert store.read("k") == "new"
    finally:
        store.close()


def test_a_write_whose_file_vanished_meanwhile_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.sqlite"
    store = sqlite_backend.SqliteDatastore(path)
    queue = sqlite_backend.SqliteQueue(path, "jobs")
    try:
        store.set("k", "v")
        queue.put("x")
        real_insert = sqlite_backend._write_document

        def delete_midway(*args: Any) -> int:
            cas = real_insert(*args)
            path.unlink()  # after the check at the start, before the commit
            return cas

        monkeypatch.setattr(sqlite_backend, "_write_document", delete_midway)
        with pytest.raises(errors.DatastoreUnavailable, match="deleted"):
            store.set("k", "w")
        with pytest.raises(errors.QueueUnavailable, match="deleted"):
            queue.put_with_document(store, "k2", lambda id: {"id": id}, "y")
    finally:
        store.close()
        queue.close()
