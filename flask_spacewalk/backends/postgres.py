"""Documents in PostgreSQL, with psycopg 3 and a connection pool.

The URL is libpq's, with three parameters of our own that are removed
before connecting::

    postgresql://[user[:password]@][host][:port]/dbname[?param=value&...]

``postgres://`` works too. The database name is required. Other query
parameters go to libpq as they are (``sslmode``, ``connect_timeout`` (5 s
unless given), ``application_name``, ``options=-c%20statement_timeout%3D5s``
...). Ours:

``schema``
    The schema of the table, created when missing. Without it the table is
    found through the ``search_path`` (``options=-csearch_path%3Dname``
    works too).
``pool_min_size``, ``pool_max_size``
    The connections each process keeps open (1) and may open (4); a
    threaded web server wants its thread count here.

Everything lives in one table, ``spacewalk_documents``, created with its
indexes on first use::

    key          text COLLATE "C" PRIMARY KEY  -- zerog_job_<uuid>
    value        jsonb NOT NULL                -- the dict, or the str
    cas          bigint NOT NULL               -- the compare-and-swap version
    updated_at   timestamptz NOT NULL
    job_created  text COLLATE "C"              -- the job listing's columns,
    job_type     text                          -- written from the JobIndex
    job_status   text                          -- of each write; NULL: no job

Idempotency key records (:mod:`~flask_spacewalk.runtime.keyrecords`) live
in a second table, ``spacewalk_idempotency_keys`` (``key``, ``token``,
``fingerprint``, ``claimed_at``, ``expires_at``, ``uuid``; times in seconds
since the epoch), with an index on ``expires_at``: each claim deletes a few
expired records in the same statement.
A third, ``spacewalk_workers``, ``spacewalk_workers`` holds the record of each live job worker
(``id text PRIMARY KEY, record jsonb NOT NULL``; runtime/heartbeat.py).

The indexes serve these queries at any number of jobs::

    SELECT key FROM spacewalk_documents
    WHERE job_created IS NOT NULL AND job_type = %s
    ORDER BY job_created DESC, key DESC LIMIT 50;
    SELECT key FROM spacewalk_documents ORDER BY updated_at DESC LIMIT 50;

Beside it, ``spacewalk_job_counts`` holds the number of jobs by
``(job_type, status)``, kept by triggers on the listing's columns (the
metrics read it, never counting the table). Each connection adds to a row of
its own of :data:`COUNT_SHARDS` (``pg_backend_pid() % 16``), so that writers
of one jobType do not queue on one row's lock; a read sums them.

The table's comment holds its schema version (:data:`SCHEMA_VERSION`).
When a process first connects, a table of an older version is migrated:
missing columns and indexes are added (``CREATE INDEX`` blocks writes to
the table while it runs) and the listing's columns of the rows that may be
wrong are recomputed in batches of :data:`MIGRATION_BATCH`, each its own
transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import astuple
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from .. import errors
from ..runtime.keyrecords import SWEEP_BATCH, KeyRecord
from ..runtime.protocols import JobDeletion, Value
from ..runtime.query import JobQuery, newest_first
from ..runtime.status import JOB_KEY_PREFIX, JobIndex, index_columns, job_index
from ..runtime.webhooks import Delivery, retried
from ._fork import abandon, track
from .base import CasDatastore, delivery_filter, encode_value
from .write_listener import WriteListener

__all__ = ["PostgresDatastore", "check_url"]

log = logging.getLogger(__name__)

TABLE = "spacewalk_documents"
#: The table of idempotency key records.
KEYS_TABLE = "spacewalk_idempotency_keys"
#: The worker records' table, in the same schema.
WORKERS_TABLE = "spacewalk_workers"
#: The webhook deliveries' table (runtime/webhooks.py), likewise.
DELIVERIES_TABLE = "spacewalk_webhook_deliveries"
#: 1: the table as first made (no comment); the listing read indexes over
#: the JSON. 2: plain listing columns written with each document, and
#: result 410 listed as ``cancelled``. 3: the table of idempotency key records.
#: 4: the ``spacewalk_workers`` table.
#: 5: the job counts table and its triggers, filled once from the rows.
#: 6: the ``spacewalk_webhook_deliveries`` table (:data:`_DELIVERIES_SCHEMA`).
SCHEMA_VERSION = 6
#: The job counts' table, and the rows of one (jobType, status) in it.
COUNTS_TABLE = "spacewalk_job_counts"
COUNT_SHARDS = 16
#: Rows recomputed per transaction by a migration.
MIGRATION_BATCH = 500
_VERSION_COMMENT = "flask_spacewalk schema "
#: libpq's ``connect_timeout`` (seconds) when the URL gives none.
CONNECT_TIMEOUT = 5
#: Seconds a call waits for a connection of the pool.
POOL_TIMEOUT = 10.0
T = TypeVar("T")
_OWN_PARAMS = ("schema", "pool_min_size", "pool_max_size")
# one lock for every spacewalk table of a database: setup is rare
_SETUP_LOCK = int.from_bytes(
    hashlib.sha1(b"flask_spacewalk.backends.postgres").digest()[:8], "big", signed=True
)

# Nanoseconds of the server's clock: one clock for every client, so the cas
# of a key keeps growing across a delete and re-create whoever writes.
_NOW_NS = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000"
_NEXT_CAS = f"greatest({_NOW_NS}, d.cas + 1)"
# The listing's columns, given as parameters (the JobIndex of the write).
_COLUMNS = "job_created, job_type, job_status"
_SET_COLUMNS = "job_created = %s, job_type = %s, job_status = %s"
_SQL = {
    "read": "SELECT value, cas FROM {t} WHERE key = %s",
    "read_many": "SELECT key, value, cas FROM {t} WHERE key = ANY(%s)",
    "create": (
        f"INSERT INTO {{t}} (key, value, cas, updated_at, {_COLUMNS})"
        f" VALUES (%s, %s::jsonb, {_NOW_NS}, now(), %s, %s, %s)"
        " ON CONFLICT (key) DO NOTHING RETURNING cas"
    ),
    "update": (
        f"UPDATE {{t}} AS d SET value = %s::jsonb, cas = {_NEXT_CAS},"
        f" updated_at = now(), {_SET_COLUMNS} WHERE key = %s RETURNING cas"
    ),
    # the compare-and-swap: the row lock and the check are one statement
    "update_cas": (
        f"UPDATE {{t}} AS d SET value = %s::jsonb, cas = {_NEXT_CAS},"
        f" updated_at = now(), {_SET_COLUMNS} WHERE key = %s AND d.cas = %s RETURNING cas"
    ),
    "set": (
        f"INSERT INTO {{t}} AS d (key, value, cas, updated_at, {_COLUMNS})"
        f" VALUES (%s, %s::jsonb, {_NOW_NS}, now(), %s, %s, %s)"
        f" ON CONFLICT (key) DO UPDATE SET value = excluded.value, cas = {_NEXT_CAS},"
        " updated_at = excluded.updated_at, job_created = excluded.job_created,"
        " job_type = excluded.job_type, job_status = excluded.job_status RETURNING cas"
    ),
    "delete": "DELETE FROM {t} WHERE key = %s",
    # One statement: a few expired records of other keys deleted (rows no
    # one else is deleting), then this key's record inserted, or an expired
    # one replaced, or a live one kept; the row returned says which.
    "claim_key": (
        "WITH swept AS (DELETE FROM {k} WHERE key IN (SELECT key FROM {k}"
        " WHERE expires_at <= %s AND key <> %s ORDER BY expires_at LIMIT %s"
        " FOR UPDATE SKIP LOCKED))"
        " INSERT INTO {k} AS r (key, token, fingerprint, claimed_at, expires_at, uuid)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
        + ", ".join(
            f"{c} = CASE WHEN r.expires_at <= excluded.claimed_at THEN excluded.{c} ELSE r.{c} END"
            for c in ("token", "fingerprint", "claimed_at", "expires_at", "uuid")
        )
        + " RETURNING token, fingerprint, claimed_at, expires_at, uuid"
    ),
    "replace_key": (
        "UPDATE {k} SET token = %s, fingerprint = %s, claimed_at = %s, expires_at = %s,"
        " uuid = %s WHERE key = %s AND token = %s"
    ),
    "release_key": "DELETE FROM {k} WHERE key = %s AND token = %s",
    # keys and cas values as two arrays: one statement for a batch
    "delete_jobs": (
        "DELETE FROM {t} AS d USING unnest(%s::text[], %s::bigint[]) AS j(key, cas)"
        " WHERE d.key = j.key AND d.cas = j.cas RETURNING d.key"
    ),
    "delete_many": "DELETE FROM {t} WHERE key = ANY(%s)",
}
# The writes of a job's document, telling of themselves: the channel and the
# job's uuid come last.
_SQL.update({
    f"{name}_notify": f"WITH w AS ({_SQL[name]}) SELECT cas, pg_notify(%s, %s) FROM w"
    for name in ("update", "update_cas", "set")
})
# The job listing's columns; job_created is "C": createdAt strings compare
# byte by byte, as in SQLite, Redis and Python, and their string order is
# time order.
IS_JOB = "job_created IS NOT NULL"
CREATED = "job_created"
JOB_TYPE = "job_type"
STATUS = "job_status"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {t} (
        key text COLLATE "C" PRIMARY KEY,
        value jsonb NOT NULL,
        cas bigint NOT NULL,
        updated_at timestamptz NOT NULL,
        job_created text COLLATE "C",
        job_type text,
        job_status text
    )""",
    # a table of version 1 gains them here
    """ALTER TABLE {t} ADD COLUMN IF NOT EXISTS job_created text COLLATE "C",
        ADD COLUMN IF NOT EXISTS job_type text, ADD COLUMN IF NOT EXISTS job_status text""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_updated_at ON {{t}} (updated_at)",
    # the job listing: one index per way of reading it, only jobs; the key
    # orders equal createdAt values as the uuid does
    f"""CREATE INDEX IF NOT EXISTS {TABLE}_jobs_created
        ON {{t}} ({CREATED}, key) WHERE {IS_JOB}""",
    f"""CREATE INDEX IF NOT EXISTS {TABLE}_jobs_type_created
        ON {{t}} ({JOB_TYPE}, {CREATED}, key) WHERE {JOB_TYPE} IS NOT NULL""",
    f"""CREATE INDEX IF NOT EXISTS {TABLE}_jobs_status_created
        ON {{t}} ({STATUS}, {CREATED}, key) WHERE {STATUS} IS NOT NULL""",
    # earlier versions made (jobType, createdAt), without the key and in the database's
    # collation; jobs_type_created serves its queries
    f"DROP INDEX IF EXISTS {{s}}{TABLE}_job_type_created_at",
    """CREATE TABLE IF NOT EXISTS {k} (
        key text COLLATE "C" PRIMARY KEY,
        token text NOT NULL,
        fingerprint text NOT NULL,
        claimed_at double precision NOT NULL,
        expires_at double precision NOT NULL,
        uuid text
    )""",
    f"CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_expiry ON {{k}} (expires_at)",
    f"CREATE TABLE IF NOT EXISTS {{s}}{WORKERS_TABLE} (id text PRIMARY KEY, record jsonb NOT NULL)",
)
# Webhook deliveries (version 6): the record, with the columns a sender's
# claim and the delivery log select on; {d} the table, {s} its schema.
_DELIVERIES_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {d} (
        id text PRIMARY KEY,
        uuid text NOT NULL,
        status text NOT NULL,
        due_at double precision NOT NULL,
        created_at double precision NOT NULL,
        claim text,
        record jsonb NOT NULL
    )""",
    f"""CREATE INDEX IF NOT EXISTS {DELIVERIES_TABLE}_due
        ON {{d}} (due_at) WHERE status = 'pending'""",
    f"CREATE INDEX IF NOT EXISTS {DELIVERIES_TABLE}_created ON {{d}} (created_at)",
    f"CREATE INDEX IF NOT EXISTS {DELIVERIES_TABLE}_uuid ON {{d}} (uuid)",
)
# The job counts: {t} the documents, {c} the counts and {f} the trigger
# function, each schema-qualified (a trigger runs with the writer's
# search_path). A row that falls to 0 stays, so a status's gauge does not
# vanish.
_COUNTS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {c} (
        job_type text NOT NULL,  -- '' for a job without a jobType string
        status text NOT NULL,
        shard smallint NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (job_type, status, shard)
    )""",
    f"""CREATE OR REPLACE FUNCTION {{f}}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        s smallint := pg_backend_pid() % {COUNT_SHARDS};
    BEGIN
        IF TG_OP <> 'INSERT' AND OLD.{CREATED} IS NOT NULL THEN
            INSERT INTO {{c}}
            VALUES (coalesce(OLD.{JOB_TYPE}, ''), coalesce(OLD.{STATUS}, ''), s, -1)
            ON CONFLICT (job_type, status, shard) DO UPDATE SET n = {{c}}.n - 1;
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.{CREATED} IS NOT NULL THEN
            INSERT INTO {{c}}
            VALUES (coalesce(NEW.{JOB_TYPE}, ''), coalesce(NEW.{STATUS}, ''), s, 1)
            ON CONFLICT (job_type, status, shard) DO UPDATE SET n = {{c}}.n + 1;
        END IF;
        RETURN NULL;
    END $$""",
    f"DROP TRIGGER IF EXISTS {COUNTS_TABLE}_insert ON {{t}}",
    f"""CREATE TRIGGER {COUNTS_TABLE}_insert AFTER INSERT ON {{t}} FOR EACH ROW
        WHEN (NEW.{CREATED} IS NOT NULL) EXECUTE FUNCTION {{f}}()""",
    f"DROP TRIGGER IF EXISTS {COUNTS_TABLE}_update ON {{t}}",
    f"""CREATE TRIGGER {COUNTS_TABLE}_update AFTER UPDATE ON {{t}} FOR EACH ROW
        WHEN ((OLD.{CREATED} IS NULL) <> (NEW.{CREATED} IS NULL)
            OR OLD.{JOB_TYPE} IS DISTINCT FROM NEW.{JOB_TYPE}
            OR OLD.{STATUS} IS DISTINCT FROM NEW.{STATUS})
        EXECUTE FUNCTION {{f}}()""",
    f"DROP TRIGGER IF EXISTS {COUNTS_TABLE}_delete ON {{t}}",
    f"""CREATE TRIGGER {COUNTS_TABLE}_delete AFTER DELETE ON {{t}} FOR EACH ROW
        WHEN (OLD.{CREATED} IS NOT NULL) EXECUTE FUNCTION {{f}}()""",
)
#: Version 1's listing indexes, over the JSON: their names are taken again
#: by the indexes on the columns.
_OLD_INDEXES = ("jobs_created", "jobs_type_created", "jobs_status_created")
#: The indexes :meth:`PostgresDatastore._setup` makes sure of.
_INDEXES = ("updated_at", "jobs_created", "jobs_type_created", "jobs_status_created")
# What a lost or unusable connection raises (PoolTimeout and PoolClosed are
# OperationalErrors), and every refusal that is the server's state, not the
# statement's: resources (SQLSTATE class 53: disk full, out of memory, too
# many connections), a program limit (54), a lock timeout (55P03), operator
# intervention (57: statement_timeout, shutdown), system errors (58),
# rollbacks (40, after one retry).
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
# The other SQLSTATEs the operator, not our code, must fix: a read-only
# server (a primary that failed over, default_transaction_read_only), the
# URL's schema or the table dropped under running processes, revoked
# privileges, the server's internal errors and corruption (class XX). Any
# other error (a syntax error, an undefined column or function, a broken
# constraint, an aborted transaction) is a bug of ours and stays loud.
_REFUSED_STATES = ("25006", "25P03", "3F000", "42P01", "42501", "XX")
# Serialization failures and deadlocks (class 40) roll back the statement
# alone (every statement is its own transaction), and a read-only refusal
# wrote nothing, so these are run once more: on a fresh connection after a
# read-only one, which may have been opened before the server became
# writable again.
_RETRIED_STATES = ("40", "25006")


class _Settings(NamedTuple):
    conninfo: str
    #: ``host:port/dbname``, for messages (never the password)
    where: str
    schema: str | None
    min_size: int
    max_size: int


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _reason(exc: BaseException) -> str:
    """The server's message and its SQLSTATE, without the statement."""
    message = None
    if isinstance(exc, psycopg.Error):
        message = exc.diag.message_primary
    text = " ".join((message or str(exc)).split()) or type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {state})" if state else text


def _unavailable(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is the server's state or the operator's doing,
    rather than a bug of ours."""
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    return (exc.sqlstate or "").startswith(_REFUSED_STATES)


def _parse(url: str) -> _Settings:
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None

    def fail(problem: str) -> errors.ConfigurationError:
        if password:
            problem = problem.replace(password, "***")
        return errors.ConfigurationError(f"bad PostgreSQL URL: {problem}")

    if url.partition("://")[0].lower() not in ("postgresql", "postgres"):
        raise fail("the scheme must be postgresql:// or postgres://")
    base, _, query = url.partition("?")
    if "#" in url:
        raise fail("a fragment (#) has no meaning here")
    own: dict[str, str] = {}
    kept = []
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if unquote(name) in _OWN_PARAMS:
            own[unquote(name)] = unquote(value)
        else:
            kept.append(pair)
    try:
        params = conninfo_to_dict("?".join([base, "&".join(kept)]) if kept else base)
    except psycopg.Error as exc:
        raise fail(_reason(exc)) from None
    if not params.get("dbname"):
        raise fail("it names no database; use postgresql://host:5432/dbname")
    for port in str(params.get("port") or "5432").split(","):
        if not port.isdigit():
            raise fail(f"port {port!r} is not a number")
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    try:
        int(str(params["connect_timeout"]))
        min_size = int(own.get("pool_min_size", 1))
        max_size = int(own.get("pool_max_size", max(4, min_size)))
    except ValueError:
        raise fail("connect_timeout, pool_min_size and pool_max_size are integers") from None
    if not 0 <= min_size <= max_size or max_size < 1:
        raise fail("0 <= pool_min_size <= pool_max_size and pool_max_size >= 1 must hold")
    schema = own.get("schema")
    if schema is not None and not schema:
        raise fail("schema is empty")
    host = str(params.get("host") or params.get("hostaddr") or "local socket")
    where = f"{host}:{params.get('port') or 5432}/{params['dbname']}"
    return _Settings(make_conninfo("", **params), where, schema, min_size, max_size)


def check_url(url: str) -> None:
    """Check a ``postgresql://`` URL without connecting.

    :raise ConfigurationError: it is malformed, has a parameter libpq does
        not know, or names no database.
    """
    _parse(url)


def _looks_alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection is still open, without a round trip.

    An idle connection has nothing to read: input means that the server
    said goodbye (a restart, ``pg_terminate_backend``) or closed it.
    """
    if conn.closed:
        return False
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return False
    if hasattr(select, "poll"):  # select() cannot watch fds above 1023
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return not poller.poll(0)
    return not select.select([fd], [], [], 0)[0]


class _ProcessPool(ConnectionPool[psycopg.Connection[Any]]):
    """A pool that only its own process finalizes: a forked child must not
    stop its parent's threads or touch its connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._owner = os.getpid()
        super().__init__(*args, **kwargs)

    def __del__(self) -> None:
        if getattr(self, "_owner", None) == os.getpid():
            super().__del__()


class _Connections:
    """This process's pool of connections to one database.

    The pool is made on first use, after one direct connection succeeded:
    that connection reports a refused or timed-out server at once (a pool
    only retries in the background) and runs ``setup`` the first time. A
    connection found broken drops the whole pool, as the server restarted
    or went away; the next call starts over.
    """

    def __init__(
        self,
        settings: _Settings,
        setup: Callable[[psycopg.Connection[Any]], None],
        error: type[errors.DatastoreUnavailable | errors.QueueUnavailable] = (
            errors.DatastoreUnavailable
        ),
    ) -> None:
        self.settings = settings
        self._setup = setup
        # what an outage raises: the queue (backends/pgqueue.py) shares this
        self._error = error
        self._ready = False
        self._pool: _ProcessPool | None = None
        self._lock = threading.Lock()
        # the last failed connection, shared with the threads that waited
        # for it instead of each waiting for its own connect_timeout
        self._failed_at = float("-inf")
        self._failure = ""
        track(self)

    def unavailable(self, reason: str) -> errors.DatastoreUnavailable | errors.QueueUnavailable:
        return self._error(
            f"PostgreSQL at {self.settings.where} is unavailable: {reason}"
        )

    def _after_fork(self) -> None:
        abandon(self._pool)  # the parent's: never used, never closed here
        self._pool = None
        self._lock = threading.Lock()  # another thread may have held it

    def _current(self) -> _ProcessPool:
        pool = self._pool
        if pool is not None:
            return pool
        asked = time.monotonic()
        with self._lock:
            if self._pool is not None:
                return self._pool
            if self._failed_at >= asked:
                raise self.unavailable(self._failure)
            try:
                with psycopg.connect(self.settings.conninfo, autocommit=True) as conn:
                    if not self._ready:
                        self._setup(conn)
                        self._ready = True
            except psycopg.Error as exc:
                self._failed_at = time.monotonic()
                self._failure = _reason(exc)
                raise self.unavailable(self._failure) from exc
            self._pool = _ProcessPool(
                self.settings.conninfo,
                kwargs={"autocommit": True},
                min_size=self.settings.min_size,
                max_size=self.settings.max_size,
                open=True,
                name=f"spacewalk {self.settings.where}",
                timeout=POOL_TIMEOUT,
                num_workers=1,
            )
            return self._pool

    def _discard(self, pool: _ProcessPool) -> None:
        with self._lock:
            if self._pool is not pool:
                return  # another thread did it
            self._pool = None
        pool.close(timeout=1.0)  # connections in use close when put back

    def _get(self) -> tuple[_ProcessPool, psycopg.Connection[Any]]:
        pool = self._current()
        for _ in range(3):
            try:
                conn = pool.getconn()
            except PoolClosed:  # another thread discarded it
                pool = self._current()
                continue
            except PoolTimeout as exc:
                # most likely the server went away since the pool was made:
                # the next call's direct connection says so at once
                self._discard(pool)
                raise self.unavailable(_reason(exc)) from exc
            if _looks_alive(conn):
                return pool, conn
            # its siblings are most likely as dead: start over
            conn.close()
            pool.putconn(conn)
            self._discard(pool)
            pool = self._current()
        raise self.unavailable("connections keep closing")

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool, in autocommit mode."""
        pool, conn = self._get()
        try:
            yield conn
        except psycopg.Error as exc:
            if not _unavailable(exc):
                raise
            # a read-only connection stays read-only; after a failover the
            # pool's new connections reach the new primary
            if conn.broken or isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                self._discard(pool)
            raise self.unavailable(_reason(exc)) from exc
        finally:
            # psycopg_pool rolls back a connection put back inside a failed
            # transaction, and drops a broken one
            pool.putconn(conn)

    def run(self, statement: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``statement(connection)``, run once more after a serialization
        failure, a deadlock or a read-only refusal; then unavailable, naming
        it."""
        try:
            with self.connection() as conn:
                return statement(conn)
        except self._error as exc:
            cause = exc.__cause__
            if not isinstance(cause, psycopg.Error) or not (
                cause.sqlstate or ""
            ).startswith(_RETRIED_STATES):
                raise
        with self.connection() as conn:
            return statement(conn)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


class PostgresDatastore(CasDatastore):
    """The datastore protocol on PostgreSQL.

    A value is stored as ``jsonb``: a ``str`` comes back as a ``str``, a dict
    as an equal dict (``jsonb`` orders keys its own way, and a float written
    with an exponent but no fraction, ``1e+16``, comes back as an int).
    PostgreSQL cannot store ``"\\u0000"`` in JSON nor NaN: writing them raises
    :exc:`ValueError`.

    Every operation is one statement on an autocommit connection
    (:meth:`delete_jobs`: two, in one transaction). A write's
    ``cas`` is ``greatest(<server clock in ns>, cas + 1)``, computed by the
    server; a write with a ``cas`` is one ``UPDATE ... WHERE key = %s AND
    cas = %s``. Nothing locks a document, so :attr:`lockedException` is
    never raised.

    Each process opens its own pool on first use (after a fork too). A
    refused, timed-out or lost connection raises
    :exc:`~flask_spacewalk.errors.DatastoreUnavailable`, and the next call
    connects again.

    :param url: ``postgresql://host:port/dbname?schema=...`` (see the module).
    """

    def __init__(self, url: str) -> None:
        settings = _parse(url)
        self._schema = settings.schema
        #: The table, schema-qualified when the URL names a schema, for
        #: queries of your own.
        self.table = _quote(TABLE)
        #: The table of idempotency key records, likewise.
        self.keys_table = _quote(KEYS_TABLE)
        if settings.schema is not None:
            self.table = f"{_quote(settings.schema)}.{self.table}"
            self.keys_table = f"{_quote(settings.schema)}.{self.keys_table}"
        self._sql = {
            name: sql.format(t=self.table, k=self.keys_table) for name, sql in _SQL.items()
        }
        qualified = "" if settings.schema is None else f"{_quote(settings.schema)}."
        self.workers_table = qualified + WORKERS_TABLE
        self.deliveries_table = qualified + DELIVERIES_TABLE
        self.counts_table = qualified + _quote(COUNTS_TABLE)
        self._connections = _Connections(settings, self._setup)
        #: The ``NOTIFY`` channel of this table's job writes.
        self.channel = write_channel(self.table)
        self._listener = WriteListener(f"postgresql {settings.where}", self._receiver)

    def __repr__(self) -> str:
        return f"<PostgresDatastore {self._connections.settings.where} {self.table}>"

    def close(self) -> None:
        """Close this process's pool and listener; the next call opens new ones."""
        self._listener.close()
        self._connections.close()

    def job_writes(self, uuid: str) -> AbstractContextManager[threading.Event]:
        """An event set after each write of job ``uuid`` (see
        :class:`~flask_spacewalk.runtime.protocols.JobWriteNotifier`): each
        write of a job calls ``pg_notify`` in its own statement, and this
        process's one ``LISTEN`` connection hears it after the commit."""
        return self._listener.job_writes(uuid)

    def _receiver(self) -> _NotifyReceiver:
        return _NotifyReceiver(self._connections.settings.conninfo, self.channel)

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema, table and indexes, or migrate an older table,
        unless the table is of :data:`SCHEMA_VERSION` with every index."""
        qualified = "" if self._schema is None else _quote(self._schema) + "."
        names = [self.table, self.keys_table, qualified + _quote(f"{KEYS_TABLE}_expiry")]
        names += [self.workers_table, self.deliveries_table]
        names += [self.counts_table]
        names += [qualified + _quote(f"{TABLE}_{i}") for i in _INDEXES]
        row = conn.execute(
            "SELECT bool_and(to_regclass(n) IS NOT NULL),"
            " obj_description(to_regclass(%s), 'pg_class')"
            " FROM unnest(%s::text[]) AS n",
            (self.table, names),
        ).fetchone()
        if row is not None and row[0] and row[1] == f"{_VERSION_COMMENT}{SCHEMA_VERSION}":
            return  # no DDL, so no CREATE privilege needed
        # A session lock, not a transaction's: the backfill commits a batch
        # at a time while other processes wait here.
        conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        try:
            version = self._version(conn)
            with conn.transaction():
                schema = self._schema
                if schema is not None and not conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
                ).fetchone():
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema)}")
                if version == 1:
                    for name in _OLD_INDEXES:
                        conn.execute(f"DROP INDEX IF EXISTS {qualified}{_quote(f'{TABLE}_{name}')}")
                for statement in _SCHEMA:
                    conn.execute(statement.format(t=self.table, s=qualified, k=self.keys_table))
                self._add_job_counts(conn)
                for statement in _DELIVERIES_SCHEMA:
                    conn.execute(statement.format(d=self.deliveries_table))
            if version == 1:
                # no row has its columns yet (version 2's change; 3 to 5
                # only added tables)
                self._reindex(conn, None)
            if version != SCHEMA_VERSION:
                conn.execute(
                    f"COMMENT ON TABLE {self.table} IS"
                    f" '{_VERSION_COMMENT}{SCHEMA_VERSION}'"
                )
            if version == 0:  # under the lock: of racing processes, one saw no table
                table = self.table
                if self._schema is None:
                    row = conn.execute("SELECT current_schema()").fetchone()
                    table = f"{_quote(str(row[0] if row else None))}.{self.table}"
                log.warning(
                    "created a new, empty job store: table %s in PostgreSQL database %s",
                    table, self._connections.settings.where,
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))

    def _add_job_counts(self, conn: psycopg.Connection[Any]) -> None:
        """Make the counts table, its function and triggers, and fill it
        from the rows when it is new, in the setup's transaction: the table
        is locked against writes from the count to the triggers' creation."""
        row = conn.execute("SELECT to_regclass(%s) IS NULL", (self.counts_table,)).fetchone()
        new = bool(row and row[0])
        schema = self._schema
        if schema is None:  # the one the table was found in
            row = conn.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.oid = to_regclass(%s)",
                (self.table,),
            ).fetchone()
            schema = str(row[0]) if row else "public"
        names = {"t": self.table, "c": f"{_quote(schema)}.{_quote(COUNTS_TABLE)}",
                 "f": f"{_quote(schema)}.{_quote(COUNTS_TABLE + '_keep')}"}  # fmt: skip
        conn.execute(f"LOCK TABLE {self.table} IN SHARE ROW EXCLUSIVE MODE")
        for statement in _COUNTS_SCHEMA:
            conn.execute(statement.format(**names))
        if new:
            conn.execute(
                f"INSERT INTO {names['c']} SELECT coalesce({JOB_TYPE}, ''),"
                f" coalesce({STATUS}, ''), 0, count(*) FROM {self.table} WHERE {IS_JOB}"
                " GROUP BY 1, 2"
            )

    def count_jobs(self) -> dict[tuple[str, str], int]:
        """The stored jobs by ``(jobType, status)``, as the triggers keep
        them (a few rows, whatever the number of jobs)."""
        rows = self._connections.run(
            lambda conn: conn.execute(
                f"SELECT job_type, status, sum(n) FROM {self.counts_table} GROUP BY 1, 2"
            ).fetchall()
        )
        return {(job_type, status): int(n) for job_type, status, n in rows}

    def ping(self) -> None:
        """One round trip to the server: raise
        :exc:`~flask_spacewalk.errors.DatastoreUnavailable` when it fails."""
        self._connections.run(lambda conn: conn.execute("SELECT 1").fetchall())

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        """The table's schema version: 0 when there is no table, 1 for a
        table without a version comment."""
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, obj_description(to_regclass(%s), 'pg_class')",
            (self.table, self.table),
        ).fetchone()
        if row is None or not row[0]:
            return 0
        comment = row[1] or ""
        if comment.startswith(_VERSION_COMMENT) and comment[len(_VERSION_COMMENT):].isdigit():
            return int(comment[len(_VERSION_COMMENT):])
        return 1

    def _reindex(self, conn: psycopg.Connection[Any], status: str | None) -> None:
        """Recompute the listing's columns of the job rows (only those
        indexed with ``status`` unless None) with :func:`job_index`, in key
        order, one transaction per batch; a row whose cas moved meanwhile
        was written with its columns and is left alone."""
        where = "" if status is None else " AND job_status = %s"
        end = JOB_KEY_PREFIX[:-1] + chr(ord(JOB_KEY_PREFIX[-1]) + 1)
        after = JOB_KEY_PREFIX
        while True:
            rows = conn.execute(
                f"SELECT key, value, cas FROM {self.table} WHERE key > %s AND key < %s{where}"
                " ORDER BY key LIMIT %s",
                (after, end, *([] if status is None else [status]), MIGRATION_BATCH),
            ).fetchall()
            if not rows:
                return
            with conn.transaction():
                for key, value, cas in rows:
                    conn.execute(
                        f"UPDATE {self.table} SET {_SET_COLUMNS} WHERE key = %s AND cas = %s",
                        (*index_columns(job_index(key, value)), key, cas),
                    )
            after = rows[-1][0]

    def _execute(self, name: str, args: tuple[Any, ...]) -> tuple[Any, int]:
        """Run statement ``name``; return its first row (or None) and its
        row count."""

        def statement(conn: psycopg.Connection[Any]) -> tuple[Any, int]:
            with storable():
                cursor = conn.execute(self._sql[name], args)
            row = cursor.fetchone() if cursor.description is not None else None
            return row, cursor.rowcount

        return self._connections.run(statement)

    def read(self, key: str) -> Value | None:
        return self.read_with_cas(key)[0]

    def read_with_cas(self, key: str) -> tuple[Value | None, int]:
        row, _ = self._execute("read", (key,))
        if row is None:
            return None, 0
        return row[0], int(row[1])

    def read_many(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas, in the order given, in one statement."""
        rows = self._connections.run(
            lambda conn: conn.execute(self._sql["read_many"], (list(keys),)).fetchall()
        )
        found = {key: (value, int(cas)) for key, value, cas in rows}
        return [found.get(key, (None, 0)) for key in keys]

    def _create(self, key: str, value: Value, index: JobIndex | None) -> None:
        row, _ = self._execute("create", (key, encode_value(value), *index_columns(index)))
        if row is None:
            raise self.existsException(f"document {key!r} already exists")

    def delete(self, key: str) -> bool:
        return self._execute("delete", (key,))[1] > 0

    def claim_key(self, key: str, record: KeyRecord) -> KeyRecord | None:
        """Store ``record`` unless a record that has not expired is there
        (None when stored, else that record), deleting up to
        :data:`~flask_spacewalk.runtime.keyrecords.SWEEP_BATCH` expired
        records of other keys in the same statement."""
        row, _ = self._execute(
            "claim_key", (record.claimed_at, key, SWEEP_BATCH, key, *astuple(record))
        )
        return None if row[0] == record.token else KeyRecord(*row)

    def replace_key(self, key: str, token: str, record: KeyRecord) -> bool:
        """Replace the record under ``key`` whose token is ``token``."""
        return self._execute("replace_key", (*astuple(record), key, token))[1] > 0

    def release_key(self, key: str, token: str) -> bool:
        """Delete the record under ``key`` whose token is ``token``."""
        return self._execute("release_key", (key, token))[1] > 0

    def delete_jobs(self, jobs: Sequence[JobDeletion]) -> list[str]:
        """Delete each job whose cas is still the one given, with its side
        keys: two statements in one transaction; the keys deleted, in the
        order given. A row written meanwhile is compared as committed, so
        a concurrent write wins."""
        if not jobs:
            return []

        def statements(conn: psycopg.Connection[Any]) -> set[str]:
            with conn.transaction():
                rows = conn.execute(
                    self._sql["delete_jobs"],
                    ([job.key for job in jobs], [job.cas for job in jobs]),
                ).fetchall()
                gone = {row[0] for row in rows}
                sides = [key for job in jobs if job.key in gone for key in job.side_keys]
                if sides:
                    conn.execute(self._sql["delete_many"], (sides,))
            return gone

        gone = self._connections.run(statements)
        return [job.key for job in jobs if job.key in gone]

    def list_jobs(self, query: JobQuery) -> list[dict[str, Any]]:
        """The jobs ``query`` selects, newest first (see
        :class:`~flask_spacewalk.runtime.query.JobQuery`).

        Each range of :meth:`JobQuery.plan` is one indexed statement
        reading at most ``limit`` entries that pass the residual conditions,
        all on one connection.
        """
        sql, ranges = listing_sql(query, self.table)

        def statements(conn: psycopg.Connection[Any]) -> list[list[Any]]:
            return [conn.execute(sql, args).fetchall() for args in ranges]

        found = [
            [(c, key[len(JOB_KEY_PREFIX):], doc) for c, key, doc in rows]
            for rows in self._connections.run(statements)
        ]
        return newest_first(found, query.limit)

    def save_worker(self, id: str, record: dict[str, Any]) -> None:
        """Create or replace the record of worker ``id`` (table ``spacewalk_workers``)."""
        text = encode_value(record)
        self._connections.run(lambda conn: conn.execute(
            f"INSERT INTO {self.workers_table} (id, record) VALUES (%s, %s::jsonb)"
            " ON CONFLICT (id) DO UPDATE SET record = excluded.record", (id, text)))

    def list_workers(self) -> list[dict[str, Any]]:
        """Every stored worker record."""
        rows = self._connections.run(
            lambda conn: conn.execute(f"SELECT record FROM {self.workers_table}").fetchall()
        )
        return [row[0] for row in rows]

    def delete_worker(self, id: str) -> bool:
        """Remove worker ``id``'s record; ``False`` when there was none."""
        count = self._connections.run(lambda conn: conn.execute(
            f"DELETE FROM {self.workers_table} WHERE id = %s", (id,)).rowcount)
        return bool(count > 0)

    # -- webhook deliveries (runtime/protocols.py DeliveryStore) -----------

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Insert each delivery whose id is new, in one transaction."""
        if not deliveries:
            return 0

        def statements(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                return insert_deliveries(conn.execute, self.deliveries_table, deliveries)

        return int(self._connections.run(statements))

    def claim_deliveries(self, now: float, lease: float, limit: int, token: str) -> list[Delivery]:
        """Take the due pending deliveries; rows another sender is claiming
        are skipped, not waited for."""

        def statements(conn: psycopg.Connection[Any]) -> list[Delivery]:
            with conn.transaction():
                rows = conn.execute(
                    f"SELECT record FROM {self.deliveries_table} WHERE status = 'pending'"
                    " AND due_at <= %s ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (now, limit),
                ).fetchall()
                taken = [Delivery.from_record(row[0]) for row in rows]
                for d in taken:
                    d.claim, d.due_at = token, now + lease
                    conn.execute(
                        f"UPDATE {self.deliveries_table} SET claim = %s, due_at = %s,"
                        " record = %s::jsonb WHERE id = %s", (token, d.due_at, d.to_text(), d.id),
                    )
            return taken

        return list(self._connections.run(statements))

    def save_delivery(self, delivery: Delivery, token: str) -> bool:
        """Store ``delivery`` if still claimed with ``token``."""
        d = delivery
        count = self._connections.run(lambda conn: conn.execute(
            f"UPDATE {self.deliveries_table} SET status = %s, due_at = %s, claim = %s,"
            " record = %s::jsonb WHERE id = %s AND claim = %s",
            (d.status, d.due_at, d.claim, d.to_text(), d.id, token)).rowcount)
        return bool(count > 0)

    def list_deliveries(
        self, status: str | None = None, uuid: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        """The newest deliveries first."""
        where, args = delivery_filter(status, uuid, "%s")
        rows = self._connections.run(lambda conn: conn.execute(
            f"SELECT record FROM {self.deliveries_table}{where}"
            " ORDER BY created_at DESC, id LIMIT %s", (*args, limit)).fetchall())
        return [Delivery.from_record(row[0]) for row in rows]

    def retry_delivery(self, id: str, now: float) -> bool:
        """Make a failed or pending delivery due now."""

        def statements(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction():
                row = conn.execute(
                    f"SELECT record FROM {self.deliveries_table}"
                    " WHERE id = %s AND status <> 'delivered' FOR UPDATE", (id,),
                ).fetchone()
                if row is None:
                    return False
                d = retried(Delivery.from_record(row[0]), now)
                conn.execute(
                    f"UPDATE {self.deliveries_table} SET status = %s, due_at = %s, claim = NULL,"
                    " record = %s::jsonb WHERE id = %s", (d.status, d.due_at, d.to_text(), id),
                )
            return True

        return bool(self._connections.run(statements))

    def purge_deliveries(self, before: float, limit: int) -> int:
        """Delete old delivered or failed deliveries, ``limit`` at most."""
        count = self._connections.run(lambda conn: conn.execute(
            f"DELETE FROM {self.deliveries_table} WHERE id IN (SELECT id FROM"
            f" {self.deliveries_table} WHERE created_at < %s AND status <> 'pending'"
            " ORDER BY created_at LIMIT %s)", (before, limit)).rowcount)
        return int(count)

    def _write(
        self, key: str, value: Value, cas: int | None, create: bool, index: JobIndex | None
    ) -> int:
        """Write ``value``; return the new cas, or 0 when ``key`` is missing
        and ``create`` is false."""
        text = encode_value(value)
        columns = index_columns(index)
        # a job's write tells of itself in the same statement, so in the
        # same transaction: listeners hear it once it is committed
        notify: tuple[str, ...] = ()
        suffix = ""
        if key.startswith(JOB_KEY_PREFIX):
            notify, suffix = (self.channel, key[len(JOB_KEY_PREFIX):]), "_notify"
        if cas:
            row, _ = self._execute("update_cas" + suffix, (text, *columns, key, cas, *notify))
            if row is None:
                raise self.casException(
                    f"document {key!r} changed or was deleted since cas {cas}"
                )
        elif create:
            row, _ = self._execute("set" + suffix, (key, text, *columns, *notify))
        else:
            row, _ = self._execute("update" + suffix, (text, *columns, key, *notify))
            if row is None:
                return 0
        return int(row[0])



def write_channel(table: str) -> str:
    """The ``NOTIFY`` channel of the job writes to ``table`` (a channel is an
    identifier of 63 bytes at most: the table's name hashed)."""
    return "spacewalk_writes_" + hashlib.sha1(table.encode()).hexdigest()[:16]


@contextmanager
def storable() -> Iterator[None]:
    """Raise :exc:`ValueError` for a value the server refuses to store
    (``"\\u0000"`` in a str, say), as every write of a document does."""
    try:
        yield
    except psycopg.DataError as exc:
        detail = exc.diag.message_detail
        raise ValueError(
            f"PostgreSQL cannot store this value: {exc.diag.message_primary}"
            + (f" ({detail})" if detail else "")
        ) from None


def insert_deliveries(
    execute: Callable[[str, tuple[Any, ...]], psycopg.Cursor[Any]], table: str,
    deliveries: Sequence[Delivery],
) -> int:
    """Insert each delivery whose id is new into ``table`` with ``execute``
    (a connection's, in the caller's transaction); how many were new."""
    added = 0
    for d in deliveries:
        added += execute(
            f"INSERT INTO {table} (id, uuid, status, due_at, created_at, claim, record)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (id) DO NOTHING",
            (d.id, d.uuid, d.status, d.due_at, d.created_at, d.claim, d.to_text()),
        ).rowcount
    return added


class _NotifyReceiver:
    """A connection of its own, hearing the job writes of one channel."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conn = psycopg.connect(conninfo, autocommit=True)
        try:
            self._conn.execute(f'LISTEN "{channel}"')
        except BaseException:
            self._conn.close()
            raise

    def receive(self, timeout: float) -> Iterator[str]:
        for notification in self._conn.notifies(timeout=timeout):
            yield notification.payload

    def close(self) -> None:
        self._conn.close()


_SUMMARY = ("jobType", "createdAt", "updatedAt", "completeness", "resultCode", "running")


def listing_sql(query: JobQuery, table: str) -> tuple[str, list[list[Any]]]:
    """One range's statement for ``query`` on ``table``, and each range's
    arguments (for the tests' ``EXPLAIN`` too)."""
    index, values = query.plan()
    head: list[Any] = [query.since or ""]
    if index == "all":
        where = [IS_JOB, f"{CREATED} >= %s"]
    else:
        # Only the index of the plan may serve it: no condition here implies
        # jobs_created's predicate (job_created IS NOT NULL), as a plain
        # "job_created >= %s" would; the planner then took jobs_created and
        # filtered it, which scans far when the wanted jobs are old. The row
        # comparison means job_created >= since.
        column = STATUS if index == "status" else JOB_TYPE
        where = [f"{column} = %s", f"({CREATED}, key) >= (%s, '')"]
    if query.after is not None:
        where.append(f"({CREATED}, key) < (%s, %s)")
        head += [query.after[0], JOB_KEY_PREFIX + query.after[1]]
    tail: list[Any] = []
    for column, wanted, own in ((JOB_TYPE, query.job_types, "type"),
                                (STATUS, query.statuses, "status")):
        if wanted is not None and index != own:  # a residual condition
            where.append(f"{column} = ANY(%s)")
            tail.append(sorted(wanted))
    fields = ", ".join(f"'{name}', value->'{name}'" for name in _SUMMARY)
    sql = (
        f"SELECT {CREATED}, key, jsonb_build_object({fields}) FROM {table}"
        f" WHERE {' AND '.join(where)} ORDER BY {CREATED} DESC, key DESC LIMIT %s"
    )
    tail.append(query.limit)
    ranges = [([value] if index != "all" else []) + head + tail for value in values]
    return sql, ranges

