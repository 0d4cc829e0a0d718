"""The embedded backend: a datastore and a queue in one SQLite file.

The file is in WAL mode and may be shared by the web processes and the
workers of one machine, and by the threads of each process. Connections are
opened on first use and opened again after a fork; a process never uses a
connection it inherited.

A blocked :meth:`SqliteQueue.reserve` waits on a wake-up socket
(:mod:`.wakeup`) that :meth:`SqliteQueue.put` and
:meth:`SqliteQueueEntry.release` notify, so a waiter in another process wakes
within a millisecond. A waiter also wakes when a delay or lease runs out, and
every half second in case a notification was lost, so correctness never
depends on a notification.

Each use of a connection first checks that the file at the path is still
the one it opened (one ``stat``), and each write checks again after its
commit: a file deleted under a running process makes it answer unavailable
rather than write to the unlinked file, and a process never creates a new
file in place of one it lost. When a file is at the path again (the same
file moved back, a restored copy, or a new empty one made by a process
started anew) the process reconnects to it and logs a warning naming it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import astuple
from typing import Any, Callable, TypeVar
from urllib.parse import quote

from .. import defaults, errors
from ..runtime.keyrecords import SWEEP_BATCH, KeyRecord
from ..runtime.protocols import JobDeletion, QueueDepth, QueueEntry, StoreTransaction, Value
from ..runtime.query import JobQuery, newest_first
from ..runtime.status import JOB_KEY_PREFIX, JobIndex, JobStatus, index_columns, job_index
from ..runtime.webhooks import Delivery, retried
from ._fork import abandon, track
from .base import (
    BaseQueue,
    CasDatastore,
    HeldEntry,
    check_count,
    check_priority,
    delivery_filter,
    encode_value,
    entry_stats,
    lease_seconds,
    same_body,
    wait_for_entries,
)
from .wakeup import Waker
from .write_listener import WriteListener

__all__ = ["SqliteDatastore", "SqliteQueue", "SqliteQueueEntry"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a statement waits for another process's write lock.
BUSY_TIMEOUT = 5.0
#: Longest sleep of a blocked ``reserve`` between two looks at the table.
WAKE_FALLBACK = 0.5
#: 2 added the job listing's columns and indexes: opening an older file adds
#: them. 3 dropped the index on ``updated_at``, which nothing read and every
#: write of a document paid for. 4 lists a job of result 410 as ``cancelled``
#: (it was ``failed``), recomputing the status of the rows that may be wrong.
#: 5 added the table of idempotency key records.
#: 6 hands out equal priorities in the order they became ready: the index
#: ``queue_next`` gains ``ready_at`` (see :func:`_migrate`).
#: 7 added the ``workers`` table (worker records, runtime/heartbeat.py).
#: 8 keeps the jobs' counts by jobType and status in ``job_counts``
#: (:data:`_COUNTS_SCHEMA`), filled once from the rows.
#: 9 added the ``webhook_deliveries`` table (:data:`_DELIVERIES_SCHEMA`,
#: runtime/webhooks.py).
SCHEMA_VERSION = 9
#: Rows recomputed per transaction by a migration, so that it never holds
#: the write lock for long.
MIGRATION_BATCH = 500

# The job listing reads three columns that every write of a job document
# sets from the JobIndex it is given: indexes over the JSON itself made each
# write parse the document a dozen times, doubling its cost.
_IS_JOB = "job_created IS NOT NULL"
_CREATED = "job_created"
_TYPE = "job_type"
_STATUS = "job_status"
_LISTING_COLUMNS = (_CREATED, _TYPE, _STATUS)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS documents (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        cas INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        job_created TEXT,  -- createdAt of a job document, else NULL
        job_type TEXT,
        job_status TEXT
    )""",
    "DROP INDEX IF EXISTS documents_updated_at",
    # the job listing: one index per way of reading it, only jobs; the key
    # orders equal createdAt values as the uuid does
    f"""CREATE INDEX IF NOT EXISTS jobs_created
        ON documents ({_CREATED}, key) WHERE {_IS_JOB}""",
    f"""CREATE INDEX IF NOT EXISTS jobs_type_created
        ON documents ({_TYPE}, {_CREATED}, key) WHERE {_IS_JOB}""",
    f"""CREATE INDEX IF NOT EXISTS jobs_status_created
        ON documents ({_STATUS}, {_CREATED}, key) WHERE {_IS_JOB}""",
    # AUTOINCREMENT: an id is never reused, so a stale id or token never
    # matches a newer entry
    """CREATE TABLE IF NOT EXISTS queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tube TEXT NOT NULL,
        body TEXT NOT NULL,
        pri INTEGER NOT NULL,
        ttr REAL NOT NULL,
        delay REAL NOT NULL,
        created_at REAL NOT NULL,
        ready_at REAL NOT NULL,
        lease_until REAL,
        reserves INTEGER NOT NULL DEFAULT 0,
        timeouts INTEGER NOT NULL DEFAULT 0,
        releases INTEGER NOT NULL DEFAULT 0
    )""",
    # reserve's order: by priority, then by the time each entry became
    # ready (put, or its delay or lease ran out), then as put; lease_until
    # is NULL unless the entry is reserved
    """CREATE INDEX IF NOT EXISTS queue_next
        ON queue (tube, pri, ready_at, id) WHERE lease_until IS NULL""",
    """CREATE INDEX IF NOT EXISTS queue_delayed
        ON queue (tube, ready_at) WHERE lease_until IS NULL""",
    """CREATE INDEX IF NOT EXISTS queue_leases
        ON queue (tube, lease_until) WHERE lease_until IS NOT NULL""",
    # idempotency key records (runtime/keyrecords.py): a claim deletes a
    # few expired ones, found by the index on expiry
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        claimed_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        uuid TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS idempotency_keys_expiry
        ON idempotency_keys (expires_at)""",
    # the record of each live worker, apart from the documents
    "CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, record TEXT NOT NULL)",
)

# Webhook deliveries (runtime/webhooks.py): the record as JSON, with the
# columns a sender's claim and the delivery log select on.
_DELIVERIES_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id TEXT PRIMARY KEY,
        uuid TEXT NOT NULL,
        status TEXT NOT NULL,
        due_at REAL NOT NULL,
        created_at REAL NOT NULL,
        claim TEXT,
        record TEXT NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS webhook_deliveries_due
        ON webhook_deliveries (due_at) WHERE status = 'pending'""",
    """CREATE INDEX IF NOT EXISTS webhook_deliveries_created
        ON webhook_deliveries (created_at)""",
    """CREATE INDEX IF NOT EXISTS webhook_deliveries_uuid ON webhook_deliveries (uuid)""",
)

# The jobs by jobType and status, for the metrics: kept by triggers on the
# listing's columns, so that every write (ours, a migration's, a purge's, an
# older release's) keeps them, and a scrape reads a few rows instead of
# counting the index. A row that falls to 0 stays, so a status's gauge does
# not vanish.
_COUNTS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS job_counts (
        job_type TEXT NOT NULL,  -- '' for a job without a jobType string
        status TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (job_type, status)
    ) WITHOUT ROWID""",
    f"""CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON documents
        WHEN new.{_IS_JOB} BEGIN
        INSERT INTO job_counts VALUES (coalesce(new.{_TYPE}, ''), coalesce(new.{_STATUS}, ''), 1)
            ON CONFLICT (job_type, status) DO UPDATE SET n = n + 1;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS job_counts_update
        AFTER UPDATE OF {_CREATED}, {_TYPE}, {_STATUS} ON documents
        WHEN (old.{_CREATED} IS NULL) != (new.{_CREATED} IS NULL)
            OR old.{_TYPE} IS NOT new.{_TYPE} OR old.{_STATUS} IS NOT new.{_STATUS} BEGIN
        UPDATE job_counts SET n = n - 1 WHERE old.{_IS_JOB}
            AND job_type = coalesce(old.{_TYPE}, '') AND status = coalesce(old.{_STATUS}, '');
        INSERT INTO job_counts SELECT coalesce(new.{_TYPE}, ''), coalesce(new.{_STATUS}, ''), 1
            WHERE new.{_IS_JOB} ON CONFLICT (job_type, status) DO UPDATE SET n = n + 1;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON documents
        WHEN old.{_IS_JOB} BEGIN
        UPDATE job_counts SET n = n - 1
            WHERE job_type = coalesce(old.{_TYPE}, '') AND status = coalesce(old.{_STATUS}, '');
    END""",
)


class _WriterLock:
    """An ``flock`` on ``<db>-lock`` that our writers take around each write.

    SQLite's own busy handler sleeps 1, 2, 5, 10... ms when two processes
    write at once, which capped POST throughput with two web processes; a
    writer here polls the lock file every few dozen microseconds instead.
    SQLite's lock stays the backstop for writers that do not use this file.
    """

    def __init__(self, path: str, error: type[Exception]) -> None:
        self.path = path
        self._error = error
        self._fd: int | None = None
        track(self)

    def _after_fork(self) -> None:
        # A child must not share its parent's open file description: flock
        # would treat both as one owner. Closing the child's copy leaves
        # the parent's lock, if it holds one, in place.
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise self._error(
                    f"SQLite database {self.path[:-5]!r} is unavailable: {exc}"
                ) from exc
        fd = self._fd
        self._acquire(fd)
        try:
            yield
        finally:
            if self._fd == fd:  # else close() released it with the file
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT
        pause = 0.00002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise self._error(
                        f"SQLite database {self.path[:-5]!r} is unavailable: "
                        f"still locked after {BUSY_TIMEOUT} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.001)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None


# Every _Database of this process, by path (see _Database._still_there).
_SIBLINGS: dict[str, weakref.WeakSet[_Database]] = {}


class _Database:
    """One lazily opened, lock-guarded connection per process."""

    def __init__(self, path: str, error: type[Exception]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._error = error
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._writers = _WriterLock(self.path + "-lock", error)
        _SIBLINGS.setdefault(self.path, weakref.WeakSet()).add(self)
        #: (st_dev, st_ino) of the file the connection opened
        self._identity: tuple[int, int] | None = None
        #: why this process lost its file ("deleted"...), until it reconnects
        self._lost: str | None = None
        track(self)

    def _after_fork(self) -> None:
        # SQLite must not touch a connection in a forked child, not even to
        # close it.
        abandon(self._conn)
        self._conn = None
        self._lock = threading.RLock()  # another thread may have held it

    def _unavailable(self, reason: str) -> Exception:
        return self._error(f"SQLite database {self.path!r} is unavailable: {reason}")

    def _file(self) -> tuple[int, int] | None:
        """The identity of the file at the path now; None when there is none."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable(str(exc)) from exc
        return st.st_dev, st.st_ino

    def _still_there(self) -> bool:
        """Whether the open connection's file is still the one at the path.

        When it is not, the connection is closed (SQLite neither checkpoints
        nor deletes the WAL of a moved file on close), and a deleted file is
        remembered, so that the next open does not create an empty one.
        """
        identity = self._file()
        if identity is not None and identity == self._identity:
            return True
        self._lose(identity)
        # SQLite shares one WAL index among a process's connections to one
        # file: none may outlive the others. One in use by another thread
        # right now sees the change itself.
        for other in list(_SIBLINGS.get(self.path, ())):
            if other is not self and other._lock.acquire(blocking=False):
                try:
                    if other._conn is not None:
                        other._lose(identity)
                finally:
                    other._lock.release()
        return False

    def _lose(self, identity: tuple[int, int] | None) -> None:
        """Close the connection to a file no longer at the path (now
        ``identity``, None when there is none)."""
        if self._conn is not None:
            # Move the WAL into the old file, wherever it is now, and empty
            # it: SQLite never deletes the WAL of a moved file, and would
            # read its frames as a new file's (a "mispaired" WAL corrupts
            # it). Busy when another connection still uses it: the last one
            # to notice empties it.
            try:
                self._conn.execute("PRAGMA busy_timeout = 0")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
        self.close()
        self._lost = "was deleted" if identity is None else "was replaced by another file"

    def _open(self) -> sqlite3.Connection:
        if self._lost is None:
            target, uri = self.path, False
        elif self._file() is None:
            raise self._unavailable(
                f"the file {self._lost} under this running process; it answers"
                " unavailable until a file is at that path again (a process"
                " started anew creates an empty one)"
            )
        else:
            # mode=rw: never create the file here, should it vanish again
            target, uri = f"file:{quote(self.path)}?mode=rw", True
        conn = sqlite3.connect(
            target,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
            check_same_thread=False,  # the lock serialises the threads
            uri=uri,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION and _migrate(conn, version):
                # a worker and an app that disagree on the path each make one
                log.warning("created a new, empty job store at %s", self.path)
            self._identity = self._file()
        except BaseException:
            conn.close()
            raise
        if self._lost is not None:
            log.warning(
                "SQLite database %s %s; reconnected to the file now at that path",
                self.path, self._lost,
            )
            self._lost = None
        return conn

    @contextmanager
    def connect(
        self, write: bool = False, lock: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """The connection, in a ``BEGIN IMMEDIATE`` transaction if ``write``.

        ``write`` and ``lock`` (for a single writing statement) hold the
        writer lock. SQLite errors that mean the file cannot be used become the store's
        unavailable error, and the connection is dropped so the next call
        opens a new one.
        """
        with self._lock:
            try:
                if self._conn is not None and not self._still_there():
                    if self._lost == "was deleted":
                        raise self._unavailable(
                            "the file was deleted under this running process; it"
                            " answers unavailable until a file is at that path again"
                        )
                if self._conn is None:
                    # Under the writer lock: two processes creating the file
                    # at once race on switching it to WAL.
                    with self._writers.held():
                        self._conn = self._open()
                conn = self._conn
                if not (write or lock):
                    yield conn
                    return
                with self._writers.held():
                    if write:
                        conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    if write:
                        conn.execute("COMMIT")
                    # The file may have gone during the write: then it went
                    # to the unlinked file, and must not be acknowledged.
                    if not self._still_there():
                        raise self._unavailable(
                            f"the file {self._lost} during a write, which is lost"
                        )
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
                raise
            except sqlite3.DatabaseError as exc:
                self.close()
                raise self._unavailable(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._writers.close()
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.close()
            except sqlite3.Error:
                pass


_READ = "SELECT value, cas FROM documents WHERE key = ?"


class SqliteDatastore(CasDatastore):
    """The datastore protocol on SQLite.

    Each value is stored as its JSON text, so a ``str`` comes back as a
    ``str``. A ``cas`` is ``max(time.time_ns(), previous_cas + 1)``: it
    looks like Couchbase's, grows with every write of a key and, being a
    clock reading, keeps growing across a delete and re-create. Nothing locks
    a document, so :attr:`lockedException` is never raised.

    :param path: The database file; its directory must exist.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = _Database(os.fspath(path), errors.DatastoreUnavailable)
        self.path = self._db.path
        # a job write sends its uuid to the listeners' sockets (wakeup.py)
        self._writes = Waker(self.path, JOB_WRITES)
        self._listener = WriteListener(f"sqlite {self.path}", self._receiver)

    def __repr__(self) -> str:
        return f"<SqliteDatastore {self.path!r}>"

    def close(self) -> None:
        """Close this process's connection; the next call opens it again."""
        self._listener.close()
        self._writes.close()
        self._db.close()

    def job_writes(self, uuid: str) -> AbstractContextManager[threading.Event]:
        """An event set after each write of job ``uuid`` (see
        :class:`~flask_spacewalk.runtime.protocols.JobWriteNotifier`): this
        process's one wake-up socket hears the uuids writers send."""
        return self._listener.job_writes(uuid)

    def _receiver(self) -> _SocketReceiver:
        return _SocketReceiver(self.path)

    def read(self, key: str) -> Value | None:
        return self.read_with_cas(key)[0]

    def read_with_cas(self, key: str) -> tuple[Value | None, int]:
        with self._db.connect() as conn:
            row = conn.execute(_READ, (key,)).fetchone()
        if row is None:
            return None, 0
        return json.loads(row[0]), row[1]

    def read_many(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas, in the order given, with one look at
        the connection and the file for them all."""
        with self._db.connect() as conn:
            rows = [conn.execute(_READ, (key,)).fetchone() for key in keys]
        return [(None, 0) if row is None else (json.loads(row[0]), row[1]) for row in rows]

    def _create(self, key: str, value: Value, index: JobIndex | None) -> None:
        text = encode_value(value)
        try:
            with self._db.connect(lock=True) as conn:
                conn.execute(
                    "INSERT INTO documents (key, value, cas, updated_at,"
                    " job_created, job_type, job_status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, text, time.time_ns(), time.time(), *index_columns(index)),
                )
        except sqlite3.IntegrityError:
            raise self.existsException(f"document {key!r} already exists") from None

    def delete(self, key: str) -> bool:
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute("DELETE FROM documents WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def delete_jobs(self, jobs: Sequence[JobDeletion]) -> list[str]:
        """Delete each job whose cas is still the one given, with its side
        keys, in one transaction (the caller keeps it short: writers wait
        for it); the keys deleted. The listing's columns go with the rows."""
        deleted = []
        with self._db.connect(write=True) as conn:
            for job in jobs:
                cursor = conn.execute(
                    "DELETE FROM documents WHERE key = ? AND cas = ?", (job.key, job.cas)
                )
                if cursor.rowcount:
                    deleted.append(job.key)
                    conn.executemany(
                        "DELETE FROM documents WHERE key = ?", [(key,) for key in job.side_keys]
                    )
        return deleted

    def count_jobs(self) -> dict[tuple[str, str], int]:
        """The stored jobs by ``(jobType, status)``, as triggers keep them
        (a few rows, whatever the number of jobs)."""
        with self._db.connect() as conn:
            rows = conn.execute("SELECT job_type, status, n FROM job_counts").fetchall()
        return {(job_type, status): n for job_type, status, n in rows}

    def ping(self) -> None:
        """Open the file (once) and read from it: raise
        :exc:`~flask_spacewalk.errors.DatastoreUnavailable` when it cannot."""
        with self._db.connect() as conn:
            conn.execute("SELECT 1 FROM documents LIMIT 0").fetchall()

    def list_jobs(self, query: JobQuery) -> list[dict[str, Any]]:
        """The jobs ``query`` selects, newest first (see
        :class:`~flask_spacewalk.runtime.query.JobQuery`).

        Each range of :meth:`JobQuery.plan` is one indexed statement
        reading at most ``limit`` entries that pass the residual conditions.
        """
        sql, ranges = listing_sql(query)
        found = []
        with self._db.connect() as conn:
            for args in ranges:
                rows = conn.execute(sql, args).fetchall()
                found.append([
                    (created, key[len(JOB_KEY_PREFIX):], dict(zip(_SUMMARY, json.loads(fields))))
                    for created, key, fields in rows
                ])  # fmt: skip
        return newest_first(found, query.limit)

    def save_worker(self, id: str, record: dict[str, Any]) -> None:
        """Create or replace the record of worker ``id`` (table ``workers``)."""
        text = encode_value(record)
        with self._db.connect(lock=True) as conn:
            conn.execute("INSERT OR REPLACE INTO workers (id, record) VALUES (?, ?)", (id, text))

    def list_workers(self) -> list[dict[str, Any]]:
        """Every stored worker record."""
        with self._db.connect() as conn:
            rows = conn.execute("SELECT record FROM workers").fetchall()
        return [json.loads(row[0]) for row in rows]

    def delete_worker(self, id: str) -> bool:
        """Remove worker ``id``'s record; ``False`` when there was none."""
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute("DELETE FROM workers WHERE id = ?", (id,))
        return cursor.rowcount > 0

    def _write(
        self, key: str, value: Value, cas: int | None, create: bool, index: JobIndex | None
    ) -> int:
        """Write ``value``; return the new cas, or 0 when ``key`` is missing
        and ``create`` is false."""
        text = encode_value(value)
        listing = index_columns(index)
        if cas:
            # The given cas is the stored one or the write fails, so the new
            # cas is known up front: one statement, no transaction.
            new_cas = max(time.time_ns(), cas + 1)
            with self._db.connect(lock=True) as conn:
                cursor = conn.execute(
                    "UPDATE documents SET value = ?, cas = ?, updated_at = ?,"
                    f" {_SET_LISTING} WHERE key = ? AND cas = ?",
                    (text, new_cas, time.time(), *listing, key, cas),
                )
            if cursor.rowcount == 0:
                raise self.casException(
                    f"document {key!r} changed or was deleted since cas {cas}"
                )
        else:
            with self._db.connect(write=True) as conn:
                new_cas = _write_document(conn, key, text, listing, create)
        if new_cas and key.startswith(JOB_KEY_PREFIX):
            # after the commit: a waiter woken reads the new document
            self._writes.notify(key[len(JOB_KEY_PREFIX):].encode())
        return new_cas

    # -- idempotency key records (runtime/protocols.py KeyRecordStore) -----

    def claim_key(self, key: str, record: KeyRecord) -> KeyRecord | None:
        """Store ``record`` unless a record that has not expired is there
        (None when stored, else that record); first delete up to
        :data:`~flask_spacewalk.runtime.keyrecords.SWEEP_BATCH` expired
        records, all in one transaction."""
        with self._db.connect(write=True) as conn:
            conn.execute(_SWEEP_KEYS, (record.claimed_at, SWEEP_BATCH))
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM idempotency_keys WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[3] > record.claimed_at:
                return KeyRecord(*row)
            conn.execute(
                f"INSERT OR REPLACE INTO idempotency_keys (key, {_KEY_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, *astuple(record)),
            )
        return None

    def replace_key(self, key: str, token: str, record: KeyRecord) -> bool:
        """Replace the record under ``key`` whose token is ``token``."""
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute(
                "UPDATE idempotency_keys SET token = ?, fingerprint = ?, claimed_at = ?,"
                " expires_at = ?, uuid = ? WHERE key = ? AND token = ?",
                (*astuple(record), key, token),
            )
        return cursor.rowcount > 0

    def release_key(self, key: str, token: str) -> bool:
        """Delete the record under ``key`` whose token is ``token``."""
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute(
                "DELETE FROM idempotency_keys WHERE key = ? AND token = ?", (key, token)
            )
        return cursor.rowcount > 0

    # -- webhook deliveries (runtime/protocols.py DeliveryStore) -----------

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Insert each delivery whose id is new, in one transaction."""
        if not deliveries:
            return 0
        with self._db.connect(write=True) as conn:
            return _add_deliveries(conn, deliveries)

    def claim_deliveries(self, now: float, lease: float, limit: int, token: str) -> list[Delivery]:
        """Take the due pending deliveries in one write transaction."""
        with self._db.connect(write=True) as conn:
            rows = conn.execute(
                "SELECT record FROM webhook_deliveries WHERE status = 'pending'"
                " AND due_at <= ? ORDER BY due_at LIMIT ?", (now, limit),
            ).fetchall()
            taken = [Delivery.from_text(row[0]) for row in rows]
            for d in taken:
                d.claim, d.due_at = token, now + lease
                conn.execute(
                    "UPDATE webhook_deliveries SET claim = ?, due_at = ?, record = ? WHERE id = ?",
                    (token, d.due_at, d.to_text(), d.id),
                )
        return taken

    def save_delivery(self, delivery: Delivery, token: str) -> bool:
        """Store ``delivery`` if still claimed with ``token``."""
        d = delivery
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute(
                "UPDATE webhook_deliveries SET status = ?, due_at = ?, claim = ?, record = ?"
                " WHERE id = ? AND claim = ?",
                (d.status, d.due_at, d.claim, d.to_text(), d.id, token),
            )
        return cursor.rowcount > 0

    def list_deliveries(
        self, status: str | None = None, uuid: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        """The newest deliveries first."""
        where, args = delivery_filter(status, uuid, "?")
        with self._db.connect() as conn:
            rows = conn.execute(
                f"SELECT record FROM webhook_deliveries{where}"
                " ORDER BY created_at DESC, id LIMIT ?", (*args, limit),
            ).fetchall()
        return [Delivery.from_text(row[0]) for row in rows]

    def retry_delivery(self, id: str, now: float) -> bool:
        """Make a failed or pending delivery due now."""
        with self._db.connect(write=True) as conn:
            row = conn.execute(
                "SELECT record FROM webhook_deliveries WHERE id = ? AND status != 'delivered'",
                (id,),
            ).fetchone()
            if row is None:
                return False
            d = retried(Delivery.from_text(row[0]), now)
            conn.execute(
                "UPDATE webhook_deliveries SET status = ?, due_at = ?, claim = NULL, record = ?"
                " WHERE id = ?", (d.status, d.due_at, d.to_text(), id),
            )
        return True

    def purge_deliveries(self, before: float, limit: int) -> int:
        """Delete old delivered or failed deliveries, ``limit`` at most."""
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
                " WHERE created_at < ? AND status != 'pending' ORDER BY created_at LIMIT ?)",
                (before, limit),
            )
        return cursor.rowcount


_KEY_COLUMNS = "token, fingerprint, claimed_at, expires_at, uuid"
_SWEEP_KEYS = (
    "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
    " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
)



#: The wake-up sockets' name for job writes (no queue name holds a NUL).
JOB_WRITES = "\0job writes"


def _add_deliveries(conn: sqlite3.Connection, deliveries: Sequence[Delivery]) -> int:
    """Insert each delivery whose id is new; how many were."""
    added = 0
    for d in deliveries:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO webhook_deliveries"
            " (id, uuid, status, due_at, created_at, claim, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (d.id, d.uuid, d.status, d.due_at, d.created_at, d.claim, d.to_text()),
        )
        added += cursor.rowcount
    return added


class _SocketReceiver:
    """A wake-up socket of its own hearing the uuids of job writes."""

    def __init__(self, path: str) -> None:
        self._waker = Waker(path, JOB_WRITES)
        sock = self._waker.listen()
        if sock is None:
            raise OSError("no directory takes a wake-up socket")
        self._path: str = sock.getsockname()

    def receive(self, timeout: float) -> Iterator[str]:
        messages = self._waker.receive(timeout)
        if not messages and not os.path.exists(self._path):
            # removed (a /tmp cleaner): no writer can reach it any more
            raise OSError(f"the wake-up socket {self._path} was removed")
        for message in messages:
            yield message.decode("ascii", "replace")

    def close(self) -> None:
        self._waker.close()


def _write_document(
    conn: sqlite3.Connection,
    key: str,
    text: str,
    listing: tuple[str | None, str | None, str | None],
    create: bool,
) -> int:
    """Replace (or, if ``create``, create) a document whatever its cas, in
    ``conn``'s open write transaction; the new cas, or 0 when ``key`` is
    missing and ``create`` is false."""
    row = conn.execute("SELECT cas FROM documents WHERE key = ?", (key,)).fetchone()
    if row is not None:
        new_cas: int = max(time.time_ns(), row[0] + 1)
        conn.execute(
            f"UPDATE documents SET value = ?, cas = ?, updated_at = ?, {_SET_LISTING}"
            " WHERE key = ?",
            (text, new_cas, time.time(), *listing, key),
        )
        return new_cas
    if not create:
        return 0
    new_cas = time.time_ns()
    conn.execute(
        "INSERT INTO documents (key, value, cas, updated_at,"
        " job_created, job_type, job_status) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key, text, new_cas, time.time(), *listing),
    )
    return new_cas


# -- job listing ---------------------------------------------------------------

_SET_LISTING = ", ".join(f"{column} = ?" for column in _LISTING_COLUMNS)


def _migrate(conn: sqlite3.Connection, version: int) -> bool:
    """Bring a file of schema ``version`` (0 for a new one) to
    :data:`SCHEMA_VERSION`; True when it had no table yet (a new store).

    The schema changes in one transaction; the listing's columns are then
    recomputed with :func:`job_index` in transactions of
    :data:`MIGRATION_BATCH` rows, so writers wait for a batch at most. A
    process killed meanwhile leaves the version as it was, and the next one
    to open the file does it again.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        # under the write lock: of racing processes, one sees no table
        created = not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'documents'"
        ).fetchone()
        conn.execute(_SCHEMA[0])
        columns = {row[1] for row in conn.execute("PRAGMA table_info(documents)")}
        if _CREATED not in columns:  # a file of version 1
            for column in _LISTING_COLUMNS:
                conn.execute(f"ALTER TABLE documents ADD COLUMN {column} TEXT")
        if 0 < version < 6:
            # queue_next was (tube, pri, id); made again with ready_at below.
            # Same name: a process of the previous version still running
            # names it in INDEXED BY, and keeps working until it stops.
            conn.execute("DROP INDEX IF EXISTS queue_next")
        for statement in _SCHEMA[1:]:
            conn.execute(statement)
        _add_job_counts(conn)
        for statement in _DELIVERIES_SCHEMA:  # version 9
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if version == 1:
        _reindex(conn, "1")  # every job row: none has its columns
    elif 0 < version < 4:
        # result 410 was listed as failed: only those rows may be wrong
        _reindex(conn, f"{_STATUS} = ?", JobStatus.FAILED.value)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return created


def _add_job_counts(conn: sqlite3.Connection) -> None:
    """Make ``job_counts`` and its triggers, and fill it from the rows, in
    the migration's transaction: no write falls between the count and the
    triggers. Nothing to do when the table exists."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'job_counts'").fetchone():
        return
    for statement in _COUNTS_SCHEMA:
        conn.execute(statement)
    conn.execute(
        f"INSERT INTO job_counts SELECT coalesce({_TYPE}, ''), coalesce({_STATUS}, ''), count(*)"
        f" FROM documents WHERE {_IS_JOB} GROUP BY 1, 2"
    )


def _reindex(conn: sqlite3.Connection, where: str, *args: Any) -> None:
    """Recompute the listing's columns of the job rows that match ``where``,
    a batch of keys at a time, in key order."""
    after = JOB_KEY_PREFIX
    while True:
        rows = conn.execute(
            f"SELECT key, value FROM documents WHERE key > ? AND substr(key, 1, ?) = ?"
            f" AND {where} ORDER BY key LIMIT ?",
            (after, len(JOB_KEY_PREFIX), JOB_KEY_PREFIX, *args, MIGRATION_BATCH),
        ).fetchall()
        if not rows:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # each row as it is now: a writer may have changed it since
            for key, _ in rows:
                row = conn.execute("SELECT value FROM documents WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    columns = index_columns(job_index(key, json.loads(row[0])))
                    conn.execute(
                        f"UPDATE documents SET {_SET_LISTING} WHERE key = ?", (*columns, key)
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        after = rows[-1][0]


# the document fields a summary needs, read in one json_extract
_SUMMARY = ("jobType", "createdAt", "updatedAt", "completeness", "resultCode", "running")
_SELECT = (
    f"SELECT {_CREATED}, key, json_extract(value, "
    + ", ".join(f"'$.{name}'" for name in _SUMMARY)
    + ")"
)


def listing_sql(query: JobQuery) -> tuple[str, list[list[Any]]]:
    """One range's statement for ``query``, and each range's arguments."""
    index, values = query.plan()
    # createdAt >= '' also leaves out documents without a createdAt string
    where = [_IS_JOB, f"{_CREATED} >= ?"]
    head: list[Any] = [query.since or ""]
    if index != "all":
        where.insert(1, f"{_STATUS if index == 'status' else _TYPE} = ?")
    if query.after is not None:
        # SQLite seeks on the first condition (the row value alone does not
        # bound its range); the second orders equal createdAt values
        where += [f"{_CREATED} <= ?", f"({_CREATED}, key) < (?, ?)"]
        head += [query.after[0], query.after[0], JOB_KEY_PREFIX + query.after[1]]
    tail: list[Any] = []
    for column, wanted, own in ((_TYPE, query.job_types, "type"),
                                (_STATUS, query.statuses, "status")):
        if wanted is not None and index != own:  # a residual condition
            where.append(f"{column} IN ({', '.join('?' * len(wanted))})")
            tail += sorted(wanted)
    sql = (
        f"{_SELECT} FROM documents WHERE {' AND '.join(where)}"
        f" ORDER BY {_CREATED} DESC, key DESC LIMIT ?"
    )
    tail.append(query.limit)
    ranges = [([value] if index != "all" else []) + head + tail for value in values]
    return sql, ranges


# -- queue ---------------------------------------------------------------------

_EXPIRE = (
    "UPDATE queue SET lease_until = NULL, ready_at = lease_until,"
    " timeouts = timeouts + 1 WHERE tube = ? AND lease_until <= ?"
)
# without INDEXED BY the planner may pick queue_delayed and sort the backlog
_NEXT = (
    "SELECT id, body, reserves, releases FROM queue INDEXED BY queue_next"
    " WHERE tube = ? AND lease_until IS NULL"
    " AND ready_at <= ? ORDER BY pri, ready_at, id LIMIT ?"
)
_NEXT_EVENT = (
    "SELECT (SELECT min(ready_at) FROM queue"
    "        WHERE tube = ? AND lease_until IS NULL),"
    "       (SELECT min(lease_until) FROM queue"
    "        WHERE tube = ? AND lease_until IS NOT NULL)"
)
# A queue's depth, read in its indexes without a write: a lease that ran out
# counts as ready since it did, as the next reserve or stats would make it.
# SQLite keeps no counts, so each count reads a range of an index (about a
# millisecond per 8,000 entries); the minimums read one index entry each.
_DEPTH = (
    "SELECT"
    " (SELECT count(*) FROM queue WHERE tube = :tube AND lease_until IS NULL"
    "  AND ready_at <= :now),"
    " (SELECT count(*) FROM queue WHERE tube = :tube AND lease_until IS NULL"
    "  AND ready_at > :now),"
    " (SELECT min(ready_at) FROM queue WHERE tube = :tube AND lease_until IS NULL),"
    " (SELECT count(*) FROM queue WHERE tube = :tube AND lease_until IS NOT NULL"
    "  AND lease_until > :now),"
    " (SELECT count(*) FROM queue WHERE tube = :tube AND lease_until IS NOT NULL"
    "  AND lease_until <= :now),"
    " (SELECT min(lease_until) FROM queue WHERE tube = :tube AND lease_until IS NOT NULL)"
)
# The queue names in the file, one index seek per name (a loose index scan
# of each partial index: a plain DISTINCT would read every entry).
_TUBES = """WITH RECURSIVE
  waiting(tube) AS (
    SELECT min(tube) FROM queue WHERE lease_until IS NULL
    UNION ALL
    SELECT (SELECT min(tube) FROM queue WHERE lease_until IS NULL AND tube > waiting.tube)
    FROM waiting WHERE waiting.tube IS NOT NULL),
  held(tube) AS (
    SELECT min(tube) FROM queue WHERE lease_until IS NOT NULL
    UNION ALL
    SELECT (SELECT min(tube) FROM queue WHERE lease_until IS NOT NULL AND tube > held.tube)
    FROM held WHERE held.tube IS NOT NULL)
SELECT tube FROM waiting WHERE tube IS NOT NULL
UNION SELECT tube FROM held WHERE tube IS NOT NULL"""
_STATS = (
    "SELECT id, tube, pri, ttr, delay, created_at, ready_at, lease_until,"
    " reserves, timeouts, releases FROM queue WHERE id = ?"
)


class SqliteQueue(BaseQueue):
    """The queue protocol on SQLite, with beanstalkd's meanings.

    Entries are taken by priority (lower is more urgent), then in the order
    they became ready: at their put, or when their delay (of the put or a
    release) or lease ran out; then in the order they were put. A reserved
    entry whose lease runs out (``ttr`` seconds after the reserve or the
    last touch) is ready again with one more ``timeouts``; this is noticed
    at the next reserve or stats. Several queue names may share one file.

    One thread at a time should block in :meth:`reserve` on one queue
    object; the other methods and the entries' methods may be called from
    any thread.

    :param path: The database file; its directory must exist.
    :param name: The queue's name (beanstalkd's tube).
    :param default_ttr: The lease, in seconds, of an entry put without one.
    """

    def __init__(
        self, path: str | os.PathLike[str], name: str, default_ttr: float = defaults.JOB_TTR
    ) -> None:
        self._db = _Database(os.fspath(path), errors.QueueUnavailable)
        self.path = self._db.path
        self.queueName = name
        self.default_ttr = default_ttr
        self._waker = Waker(self.path, name)
        # a job document written in one of this queue's transactions (a
        # claim, a result) is announced as SqliteDatastore._write announces it
        self._job_writes = Waker(self.path, JOB_WRITES)

    def __repr__(self) -> str:
        return f"<SqliteQueue {self.queueName!r} in {self.path!r}>"

    def close(self) -> None:
        """Close the connection and remove the wake-up socket."""
        self._waker.close()
        self._job_writes.close()
        self._db.close()

    def _announce(self, keys: Sequence[str]) -> None:
        """Send the uuid of each job document in ``keys`` to the job-write
        listeners (after the commit that wrote them: a waiter woken reads
        the new document)."""
        for key in dict.fromkeys(keys):
            if key.startswith(JOB_KEY_PREFIX):
                self._job_writes.notify(key[len(JOB_KEY_PREFIX):].encode())

    def attach(self) -> None:
        """Do nothing: a queue object always uses and watches its name."""

    def detach(self) -> None:
        """Do nothing (see :meth:`attach`)."""

    def put(
        self,
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> int:
        """Enqueue ``json.dumps(data)``; return the entry's id.

        :param ttr: The entry's lease in seconds, ``default_ttr`` if None.
        :param delay: Seconds before the entry can be reserved.
        :param priority: 0 is the most urgent.
        """
        with self._db.connect(lock=True) as conn:
            id = self._insert(conn, data, ttr, delay, priority)
        self._waker.notify()
        return id

    def put_with_document(
        self,
        datastore: Any,
        key: str,
        document: Callable[[int], dict[str, Any]],
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> tuple[int, int] | None:
        """Put an entry and store the document ``document(entry_id)`` under
        ``key`` in one transaction, when ``datastore`` is a
        :class:`SqliteDatastore` of this file; None (nothing done) otherwise.

        Both are written or neither is, with one commit instead of the three
        of a save, a put and a save of the entry's id.

        :return: the entry's id and the document's cas.
        """
        if not isinstance(datastore, SqliteDatastore) or datastore.path != self.path:
            return None
        with self._db.connect(write=True) as conn:
            id = self._insert(conn, data, ttr, delay, priority)
            value = document(id)
            text = encode_value(value)
            listing = index_columns(job_index(key, value))
            cas = _write_document(conn, key, text, listing, True)
        self._waker.notify()  # after the commit: a waiter must find the entry
        self._announce([key])
        return id, cas

    def _insert(
        self, conn: sqlite3.Connection, data: Any, ttr: float | None, delay: float, priority: int
    ) -> int:
        ttr = lease_seconds(ttr, self.default_ttr)
        check_priority(priority)
        delay = max(delay, 0)
        now = time.time()
        cursor = conn.execute(
            "INSERT INTO queue (tube, body, pri, ttr, delay, created_at,"
            " ready_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.queueName, json.dumps(data), priority, ttr, delay, now, now + delay),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def reserve(self, timeout: float | None = None) -> SqliteQueueEntry | None:
        """Take the next ready entry, waiting up to ``timeout`` seconds
        (forever if None, not at all if 0); None if none came."""
        entries = self._wait_for(1, timeout, None)
        return entries[0][0] if entries is not None else None

    def reserve_in(
        self,
        count: int,
        timeout: float | None,
        then: Callable[[StoreTransaction, list[QueueEntry]], T],
    ) -> T | None:
        """Reserve up to ``count`` ready entries, waiting up to ``timeout``
        seconds for the first, and call ``then(transaction, entries)`` in
        the transaction that reserves them (runtime/protocols.py
        ``SharedTransactions``); its value, or None when none came.

        :raises ValueError: ``count`` is not a positive integer.
        """
        reserved = self._wait_for(check_count(count), timeout, then)
        return None if reserved is None else reserved[1]

    def _wait_for(
        self,
        count: int,
        timeout: float | None,
        then: Callable[[StoreTransaction, list[QueueEntry]], T] | None,
    ) -> tuple[list[SqliteQueueEntry], T | None] | None:
        if timeout is not None and timeout <= 0:
            return self._try_reserve(count, then, False)[0]
        self._waker.listen()  # before the first look, so no put is missed

        def attempt() -> tuple[tuple[list[SqliteQueueEntry], T | None] | None, float | None]:
            reserved, next_event = self._try_reserve(count, then, True)
            return reserved, None if next_event is None else next_event - time.time()

        return wait_for_entries(attempt, timeout, self._waker.wait, WAKE_FALLBACK)

    def _try_reserve(
        self,
        count: int,
        then: Callable[[StoreTransaction, list[QueueEntry]], T] | None,
        want_next_event: bool,
    ) -> tuple[tuple[list[SqliteQueueEntry], T | None] | None, float | None]:
        tube = self.queueName
        transaction = None
        with self._db.connect(write=True) as conn:
            now = time.time()
            conn.execute(_EXPIRE, (tube, now))
            rows = conn.execute(_NEXT, (tube, now, count)).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE queue SET lease_until = ? + ttr,"
                    " reserves = reserves + 1 WHERE id = ?",
                    [(now, row[0]) for row in rows],
                )
                entries = [SqliteQueueEntry(self, id, body, reserves + 1, releases)
                           for id, body, reserves, releases in rows]  # fmt: skip
                value = None
                if then is not None:
                    transaction = _Transaction(conn)
                    value = then(transaction, list(entries))
            elif not want_next_event:
                return None, None
            else:
                events = conn.execute(_NEXT_EVENT, (tube, tube)).fetchone()
        if rows:
            if transaction is not None:
                self._announce(transaction.written)
            return (entries, value), None
        times = [t for t in events if t is not None]
        return None, min(times) if times else None

    def shares_database(self, datastore: Any) -> bool:
        """Whether ``datastore`` is a :class:`SqliteDatastore` of this file."""
        return isinstance(datastore, SqliteDatastore) and datastore.path == self.path

    def transact(self, func: Callable[[StoreTransaction], T]) -> T:
        """``func(transaction)`` in one write transaction of this file; its
        value (runtime/protocols.py ``SharedTransactions``)."""
        with self._db.connect(write=True) as conn:
            transaction = _Transaction(conn)
            value = func(transaction)
        self._announce(transaction.written)
        return value

    def delete(self, id: int) -> bool:
        """Delete an entry that is ready, delayed, or reserved by nobody
        whose lease still runs; False when there is no such entry.

        As in beanstalkd, ``id`` may be of any queue name in the file.
        """
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute(
                "DELETE FROM queue WHERE id = ?"
                " AND (lease_until IS NULL OR lease_until <= ?)",
                (id, time.time()),
            )
        return cursor.rowcount > 0

    def has_entry(self, id: int, data: Any) -> bool:
        """Whether entry ``id`` is still in the queue (ready, delayed or
        reserved) with the body ``json.dumps(data)``.

        The body is compared because an id alone may name another entry:
        a file deleted and created again counts from 1 again.
        As in :meth:`delete`, ``id`` may be of any queue name in the file.
        """
        if not isinstance(id, int) or isinstance(id, bool) or id < 1:
            return False
        with self._db.connect() as conn:
            row = conn.execute("SELECT body FROM queue WHERE id = ?", (id,)).fetchone()
        return row is not None and same_body(row[0], data)

    def ping(self) -> None:
        """Open the file (once) and read from it: raise
        :exc:`~flask_spacewalk.errors.QueueUnavailable` when it cannot."""
        with self._db.connect() as conn:
            conn.execute("SELECT 1 FROM queue LIMIT 0").fetchall()

    def stats_tube(self) -> dict[str, Any]:
        """beanstalkd's ``stats-tube`` counts for this queue name."""
        tube = self.queueName
        with self._db.connect(write=True) as conn:
            now = time.time()
            conn.execute(_EXPIRE, (tube, now))
            row = conn.execute(
                "SELECT count(*),"
                " count(lease_until),"
                " count(CASE WHEN lease_until IS NULL AND ready_at > ? THEN 1 END),"
                " count(CASE WHEN lease_until IS NULL AND ready_at <= ?"
                "       AND pri < 1024 THEN 1 END)"
                " FROM queue WHERE tube = ?",
                (now, now, tube),
            ).fetchone()
        total, reserved, delayed, urgent = row
        return {
            "name": tube,
            "current-jobs-urgent": urgent,
            "current-jobs-ready": total - reserved - delayed,
            "current-jobs-reserved": reserved,
            "current-jobs-delayed": delayed,
        }

    def queue_stats(self) -> list[QueueDepth]:
        """This queue's depth, then that of every other queue name in the
        file that holds an entry, by name; read without a write."""
        with self._db.connect() as conn:
            now = time.time()
            names = [self.queueName]
            names += sorted(
                name for (name,) in conn.execute(_TUBES) if name != self.queueName
            )
            depths = []
            for name in names:
                ready, delayed, first_ready, held, expired, first_lease = conn.execute(
                    _DEPTH, {"tube": name, "now": now}
                ).fetchone()
                since = [t for t in (first_ready, first_lease) if t is not None and t <= now]
                oldest = round(now - min(since), 3) if since else None
                depths.append(QueueDepth(name, ready + expired, delayed, held, oldest))
        return depths

    def _entry_update(
        self, entry: SqliteQueueEntry, sql: str, args: tuple[Any, ...], held: bool
    ) -> None:
        """Run ``sql`` on ``entry`` if nobody reserved it since its holder
        did and, if ``held``, the holder did not release it either."""
        if held:
            sql += " WHERE id = ? AND reserves = ? AND releases = ?"
            args += (entry.id, entry._reserves, entry._releases)
        else:
            sql += " WHERE id = ? AND reserves = ?"
            args += (entry.id, entry._reserves)
        with self._db.connect(lock=True) as conn:
            cursor = conn.execute(sql, args)
        if cursor.rowcount == 0:
            raise errors.EntryNotReserved(
                f"entry {entry.id} of {self.queueName!r} was deleted, released,"
                " or reserved by another worker"
            )

    def _entry_stats(self, id: int) -> dict[str, Any]:
        with self._db.connect(write=True) as conn:
            now = time.time()
            conn.execute(
                "UPDATE queue SET lease_until = NULL, ready_at = lease_until,"
                " timeouts = timeouts + 1 WHERE id = ? AND lease_until <= ?",
                (id, now),
            )
            row = conn.execute(_STATS, (id,)).fetchone()
        if row is None:
            raise errors.EntryNotReserved(f"entry {id} was deleted")
        return entry_stats(*row, now=now)


class _Transaction:
    """A write transaction open on a SQLite file that holds a datastore and
    a queue (runtime/protocols.py ``StoreTransaction``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        #: the keys written, for the job-write notifications after the commit
        self.written: list[str] = []

    def read(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        rows = [self._conn.execute(_READ, (key,)).fetchone() for key in keys]
        return [(None, 0) if row is None else (json.loads(row[0]), row[1]) for row in rows]

    def write(self, key: str, value: dict[str, Any], cas: int) -> int:
        text = encode_value(value)
        new_cas = max(time.time_ns(), cas + 1)
        cursor = self._conn.execute(
            f"UPDATE documents SET value = ?, cas = ?, updated_at = ?, {_SET_LISTING}"
            " WHERE key = ? AND cas = ?",
            (text, new_cas, time.time(), *index_columns(job_index(key, value)), key, cas),
        )
        if cursor.rowcount == 0:
            raise SqliteDatastore.casException(
                f"document {key!r} changed or was deleted since cas {cas}"
            )
        self.written.append(key)
        return new_cas

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        return _add_deliveries(self._conn, deliveries) if deliveries else 0

    def delete_entry(self, entry: QueueEntry) -> bool:
        if not isinstance(entry, SqliteQueueEntry):
            raise TypeError(f"{entry!r} is not an entry of this SQLite file")
        cursor = self._conn.execute(
            "DELETE FROM queue WHERE id = ? AND reserves = ?", (entry.id, entry._reserves)
        )
        return cursor.rowcount > 0


class SqliteQueueEntry(HeldEntry):
    """A reserved entry of a :class:`SqliteQueue` (rules in :class:`HeldEntry`)."""

    def delete(self) -> None:
        """Remove the entry for good."""
        self._queue._entry_update(self, "DELETE FROM queue", (), held=False)

    def release(self, delay: float = 0) -> None:
        """Make the entry ready again, after ``delay`` seconds."""
        delay = max(delay, 0)
        self._queue._entry_update(
            self,
            "UPDATE queue SET lease_until = NULL, ready_at = ?, delay = ?,"
            " releases = releases + 1",
            (time.time() + delay, delay),
            held=True,
        )
        self._queue._waker.notify()

    def touch(self) -> None:
        """Renew the lease for another ``ttr`` seconds."""
        self._queue._entry_update(
            self, "UPDATE queue SET lease_until = ? + ttr", (time.time(),), held=True
        )


