"""The queue in PostgreSQL, with psycopg 3: one database for documents and
queue alike.

The URL is the datastore's (see :mod:`.postgres`: ``schema``,
``pool_min_size``, ``pool_max_size`` and libpq's parameters), and the
entries live in the table ``spacewalk_queue`` of the same schema::

    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY  -- never reused
    tube         text COLLATE "C" NOT NULL   -- the queue name
    body         text NOT NULL               -- json.dumps(data)
    pri          bigint NOT NULL             -- 0 is the most urgent
    ttr, delay   double precision NOT NULL   -- seconds
    created_at, ready_at, lease_until        -- seconds since the epoch, the
                 double precision            -- server's clock; lease_until
                                             -- is NULL unless reserved
    reserves, timeouts, releases  integer NOT NULL

A reserve is one call of the function ``spacewalk_queue_reserve``: it makes
the entries whose lease ran out ready again, then claims the next ready ones
(by priority, then the time each became ready, then id) with ``FOR UPDATE
SKIP LOCKED``, so that concurrent workers never wait on each other's rows.
Where the job documents are in the same schema, the same statement reads
each job's document and its cancel request (:meth:`PostgresQueueEntry.documents`).

Beside its datastore (:meth:`PostgresQueue.shares_database`), the queue
runs the lifecycle's shared transactions (runtime/protocols.py
``SharedTransactions``, docs/runtime.rst "Claims"): :meth:`~PostgresQueue.reserve_in`
claims up to N entries, reads and locks their jobs' documents in the same
call, and lets the lifecycle mark the first running in that transaction;
:meth:`~PostgresQueue.transact` records a result and deletes its entry in
another. Their writes of job documents ``pg_notify`` the datastore's channel,
as its own writes do. Whether each commit waits for the disk
(``synchronous_commit``):

- a claim (with its mark of the job running), and an entry's expiry, delete,
  release or touch: no. A server crash that loses one leaves the entry (and
  the job's document, in the same transaction) as before, so the job runs
  again: at least once, as always;
- a put (with its document) and a result's transaction: yes. A client that
  was told 201, or read the result, never sees it vanish.

A put and a release ``NOTIFY`` the queue's channel in their transaction; a
blocked reserve ``LISTEN``\\ s on a connection of its own and wakes when a
notification comes, when a delay or lease runs out, and after
:data:`WAKE_FALLBACK` seconds in case one was lost: correctness never
depends on a notification.

The table's comment holds its schema version (:data:`SCHEMA_VERSION`), apart
from the documents' table and its version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from .. import defaults, errors
from ..runtime.cancel import cancel_key
from ..runtime.protocols import QueueDepth, QueueEntry, StoreTransaction, Value
from ..runtime.status import JOB_KEY_PREFIX, index_columns, job_index
from ..runtime.webhooks import Delivery
from ._fork import abandon, track
from .base import (
    BaseQueue,
    HeldEntry,
    check_count,
    check_priority,
    encode_value,
    entry_stats,
    lease_seconds,
    same_body,
    wait_for_entries,
)
from .postgres import (
    _NOW_NS,
    _SET_COLUMNS,
    DELIVERIES_TABLE,
    PostgresDatastore,
    _Connections,
    _parse,
    _quote,
    _reason,
    insert_deliveries,
    storable,
    write_channel,
)
from .postgres import _SQL as _DOCUMENT_SQL
from .postgres import TABLE as DOCUMENTS_TABLE
from .postgres import check_url as check_url

__all__ = ["PostgresQueue", "PostgresQueueEntry", "check_url"]

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUE_TABLE = "spacewalk_queue"
#: 1: the table as first made. 2: the reserve function claims up to a count
#: of entries and may lock their jobs' documents (:meth:`PostgresQueue.reserve_in`).
SCHEMA_VERSION = 2
# The reserve function's arguments, by version: version 1's stays for the
# processes of an older release that may still run against the table.
_FUNCTION_ARGS = "text, integer, boolean, boolean, text, text"
_VERSION_COMMENT = "flask_spacewalk queue schema "
#: Longest sleep of a blocked ``reserve`` between two looks at the table,
#: should a notification be lost (a listening connection lost and made again).
WAKE_FALLBACK = 2.0
#: Seconds between two looks for the documents' table while it is missing.
DOCUMENTS_RECHECK = 10.0
_SETUP_LOCK = int.from_bytes(
    hashlib.sha1(b"flask_spacewalk.backends.pgqueue").digest()[:8], "big", signed=True
)
# the server's clock: one clock for every client, as for the cas
_NOW = "extract(epoch FROM clock_timestamp())::double precision"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {q} (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tube text COLLATE "C" NOT NULL,
        body text NOT NULL,
        pri bigint NOT NULL,
        ttr double precision NOT NULL,
        delay double precision NOT NULL,
        created_at double precision NOT NULL,
        ready_at double precision NOT NULL,
        lease_until double precision,
        reserves integer NOT NULL DEFAULT 0,
        timeouts integer NOT NULL DEFAULT 0,
        releases integer NOT NULL DEFAULT 0
    )""",
    # reserve's order, ready entries only; then delays and leases by end
    f"""CREATE INDEX IF NOT EXISTS {QUEUE_TABLE}_next
        ON {{q}} (tube, pri, ready_at, id) WHERE lease_until IS NULL""",
    f"""CREATE INDEX IF NOT EXISTS {QUEUE_TABLE}_delayed
        ON {{q}} (tube, ready_at) WHERE lease_until IS NULL""",
    f"""CREATE INDEX IF NOT EXISTS {QUEUE_TABLE}_leases
        ON {{q}} (tube, lease_until) WHERE lease_until IS NOT NULL""",
    # One round trip per claim of up to p_count entries: expired leases made
    # ready (rows another reserve is expiring are skipped, not waited for),
    # then the claim, then (p_documents) the jobs' documents (locked with
    # p_lock, for the caller's transaction to write) and cancel requests,
    # read by a statement of their own: its snapshot, newer than the claim's,
    # holds the document written with each entry. When none is ready: when
    # the next delay or lease runs out. The claim and the expiry need no
    # durable commit (see _ASYNC_COMMIT).
    f"""CREATE OR REPLACE FUNCTION {{f}}(p_tube text, p_count integer, p_documents boolean,
        p_lock boolean, p_job_prefix text, p_cancel_prefix text)
    RETURNS TABLE (id bigint, body text, reserves integer, releases integer,
                   next_event double precision, job jsonb, job_cas bigint,
                   job_next_cas bigint, cancel jsonb, cancel_cas bigint)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        t double precision := {_NOW};
        c_ids bigint[];
        c_bodies text[];
        c_reserves integer[];
        c_releases integer[];
        c_uuids text[];
    BEGIN
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE {{q}} AS e SET lease_until = NULL, ready_at = e.lease_until,
            timeouts = e.timeouts + 1
        WHERE e.id IN (SELECT x.id FROM {{q}} AS x
            WHERE x.tube = p_tube AND x.lease_until <= t FOR UPDATE SKIP LOCKED);
        WITH claimed AS (
            UPDATE {{q}} AS e SET lease_until = t + e.ttr, reserves = e.reserves + 1
            WHERE e.id IN (SELECT x.id FROM {{q}} AS x
                WHERE x.tube = p_tube AND x.lease_until IS NULL AND x.ready_at <= t
                ORDER BY x.pri, x.ready_at, x.id LIMIT p_count FOR UPDATE SKIP LOCKED)
            RETURNING e.id, e.body, e.reserves, e.releases, e.pri, e.ready_at)
        SELECT array_agg(c.id ORDER BY c.pri, c.ready_at, c.id),
            array_agg(c.body ORDER BY c.pri, c.ready_at, c.id),
            array_agg(c.reserves ORDER BY c.pri, c.ready_at, c.id),
            array_agg(c.releases ORDER BY c.pri, c.ready_at, c.id),
            array_agg(CASE WHEN p_documents AND left(c.body, 1) = '"'
                      THEN c.body::jsonb #>> '{{{{}}}}' END ORDER BY c.pri, c.ready_at, c.id)
        INTO c_ids, c_bodies, c_reserves, c_releases, c_uuids FROM claimed AS c;
        IF c_ids IS NULL THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::integer, NULL::integer,
                least((SELECT min(x.ready_at) FROM {{q}} AS x
                       WHERE x.tube = p_tube AND x.lease_until IS NULL),
                      (SELECT min(x.lease_until) FROM {{q}} AS x
                       WHERE x.tube = p_tube AND x.lease_until IS NOT NULL)),
                NULL::jsonb, NULL::bigint, NULL::bigint, NULL::jsonb, NULL::bigint;
            RETURN;
        END IF;
        IF NOT p_documents THEN  -- the documents' table may not exist
            RETURN QUERY SELECT c.i, c.b, c.r, c.l, NULL::double precision,
                NULL::jsonb, NULL::bigint, NULL::bigint, NULL::jsonb, NULL::bigint
            FROM unnest(c_ids, c_bodies, c_reserves, c_releases)
                WITH ORDINALITY AS c(i, b, r, l, n)
            ORDER BY c.n;
            RETURN;
        END IF;
        IF p_lock THEN
            PERFORM 1 FROM {{d}} AS d WHERE d.key IN (SELECT p_job_prefix || u
                FROM unnest(c_uuids) AS u WHERE u IS NOT NULL)
            ORDER BY d.key FOR NO KEY UPDATE;
        END IF;
        -- a write of a locked document takes job_next_cas (see _Transaction)
        RETURN QUERY SELECT c.i, c.b, c.r, c.l, NULL::double precision,
            j.value, j.cas, greatest({_NOW_NS}, j.cas + 1), k.value, k.cas
        FROM unnest(c_ids, c_bodies, c_reserves, c_releases, c_uuids)
            WITH ORDINALITY AS c(i, b, r, l, u, n)
        LEFT JOIN {{d}} AS j ON j.key = p_job_prefix || c.u
        LEFT JOIN {{d}} AS k ON k.key = p_cancel_prefix || c.u
        ORDER BY c.n;
    END $$""",
)

_SQL: dict[str, str] = {
    "put": (
        "WITH e AS (INSERT INTO {q} (tube, body, pri, ttr, delay, created_at, ready_at)"
        f" SELECT %(tube)s, %(body)s, %(pri)s, %(ttr)s, %(delay)s, t, t + %(delay)s"
        f" FROM (SELECT {_NOW} AS t) AS now RETURNING id)"
        " SELECT id, pg_notify(%(channel)s, '') FROM e"
    ),
    "reserve": "SELECT * FROM {f}(%s, %s::integer, %s, %s, %s, %s)",
    # a claim's own reads lock the rows, as its reserve did, and compute the
    # cas of their write (see _Transaction)
    "tx_read": (
        f"SELECT key, value, cas, greatest({_NOW_NS}, cas + 1) FROM {{d}}"
        " WHERE key = ANY(%s) FOR NO KEY UPDATE"
    ),
    "tx_write": (
        f"UPDATE {{d}} AS d SET value = %s::jsonb, cas = %s, updated_at = now(), {_SET_COLUMNS}"
        " WHERE key = %s AND d.cas = %s"
    ),
    "tx_delete": "DELETE FROM {q} WHERE id = %s AND reserves = %s",
    "delete": (
        f"DELETE FROM {{q}} WHERE id = %s AND (lease_until IS NULL OR lease_until <= {_NOW})"
    ),
    "has_entry": "SELECT body FROM {q} WHERE id = %s",
    "stats": (
        f"WITH expired AS (UPDATE {{q}} SET lease_until = NULL, ready_at = lease_until,"
        f" timeouts = timeouts + 1 WHERE id = %s AND lease_until <= {_NOW})"
        f" SELECT id, tube, pri, ttr, delay, created_at, ready_at, lease_until, reserves,"
        f" timeouts, releases, {_NOW} FROM {{q}} WHERE id = %s"
    ),
    # an expired lease counts as ready since it ran out, as the next
    # reserve makes it; each count reads a range of one partial index
    "depth": (
        "SELECT"
        " (SELECT count(*) FROM {q} WHERE tube = %(tube)s AND lease_until IS NULL"
        "  AND ready_at <= %(now)s),"
        " (SELECT count(*) FROM {q} WHERE tube = %(tube)s AND lease_until IS NULL"
        "  AND ready_at > %(now)s),"
        " (SELECT min(ready_at) FROM {q} WHERE tube = %(tube)s AND lease_until IS NULL),"
        " (SELECT count(*) FROM {q} WHERE tube = %(tube)s AND lease_until > %(now)s),"
        " (SELECT count(*) FROM {q} WHERE tube = %(tube)s AND lease_until <= %(now)s),"
        " (SELECT min(lease_until) FROM {q} WHERE tube = %(tube)s"
        "  AND lease_until IS NOT NULL)"
    ),
    # the queue names, one index seek each: a loose index scan of each
    # partial index (a plain DISTINCT would read every entry)
    "tubes": (
        "WITH RECURSIVE"
        " waiting(tube) AS ((SELECT tube FROM {q} WHERE lease_until IS NULL"
        "  ORDER BY tube LIMIT 1) UNION ALL"
        " SELECT (SELECT q.tube FROM {q} AS q WHERE q.lease_until IS NULL AND q.tube > w.tube"
        "  ORDER BY q.tube LIMIT 1) FROM waiting AS w WHERE w.tube IS NOT NULL),"
        " held(tube) AS ((SELECT tube FROM {q} WHERE lease_until IS NOT NULL"
        "  ORDER BY tube LIMIT 1) UNION ALL"
        " SELECT (SELECT q.tube FROM {q} AS q WHERE q.lease_until IS NOT NULL"
        "  AND q.tube > h.tube ORDER BY q.tube LIMIT 1) FROM held AS h WHERE h.tube IS NOT NULL)"
        f" SELECT tube, {_NOW} FROM (SELECT tube FROM waiting UNION SELECT tube FROM held) AS t"
        " WHERE tube IS NOT NULL"
    ),
    "stats_tube": (
        "SELECT count(*), count(lease_until) FILTER (WHERE lease_until > n.t),"
        " count(*) FILTER (WHERE lease_until IS NULL AND ready_at > n.t),"
        " count(*) FILTER (WHERE (lease_until IS NULL AND ready_at <= n.t"
        "   OR lease_until <= n.t) AND pri < 1024)"
        f" FROM {{q}}, (SELECT {_NOW} AS t) AS n WHERE tube = %s"
    ),
}

# the job write's notification, as the datastore's own writes send it
_SQL["tx_write_notify"] = (
    f"WITH w AS ({_SQL['tx_write']} RETURNING 1) SELECT pg_notify(%s, %s) FROM w"
)


# A condition that makes the statement's commit asynchronous (no wait for
# the WAL flush: a fraction of a millisecond instead of an fsync). Only for
# the changes of a reserved entry (delete, release, touch) and the claim:
# a server crash that loses one puts the entry back in an earlier durable
# state (ready, or leased until its lease runs out), so its job runs again,
# which it may anyway (at least once; a finished job's entry is dropped).
# A put is always durable: a 201 means that the job is committed.
_ASYNC_COMMIT = " AND set_config('synchronous_commit', 'off', true) = 'off'"


def _channel(table: str, tube: str) -> str:
    """The ``NOTIFY`` channel of one queue name (an identifier of at most
    63 bytes, whatever the name)."""
    return "spacewalk_q_" + hashlib.sha1(f"{table}\0{tube}".encode()).hexdigest()[:24]


class _Listener:
    """This process's ``LISTEN`` connection for one queue name, opened by
    the first blocked reserve; lost, it is opened again by the next."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        track(self)

    def _after_fork(self) -> None:
        abandon(self._conn)
        self._conn = None

    def listen(self) -> bool:
        """Listen (once); False when the server cannot be reached."""
        if self._conn is not None and not self._conn.closed:
            return True
        try:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._conn.execute(f"LISTEN {self._channel}")
        except psycopg.Error as exc:
            log.debug("cannot listen on %s: %s", self._channel, _reason(exc))
            self.close()
            return False
        return True

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notification."""
        if not self.listen():
            time.sleep(min(timeout, 0.5))  # the reserve then reports the outage
            return
        assert self._conn is not None
        try:
            for _ in self._conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                pass
        except psycopg.Error:
            self.close()  # a notification may be lost: the caller looks again

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class PostgresQueue(BaseQueue):
    """The queue protocol on PostgreSQL, with beanstalkd's meanings, as
    :class:`~flask_spacewalk.backends.sqlite.SqliteQueue` has them.

    Entries are taken by priority (lower is more urgent), then in the order
    they became ready (their put, or when their delay or lease ran out), then
    as put. A reserved entry whose lease runs out (``ttr`` seconds after the
    reserve or the last touch) is ready again with one more ``timeouts``.
    Several queue names share the table.

    One thread at a time should block in :meth:`reserve` on one queue
    object; the other methods and the entries' may be called from any
    thread. A refused, timed-out or lost connection raises
    :exc:`~flask_spacewalk.errors.QueueUnavailable`; the next call connects
    again.

    :param url: ``postgresql://host:port/dbname?schema=...`` (see
        :mod:`.postgres`).
    :param name: The queue's name (beanstalkd's tube).
    :param default_ttr: The lease, in seconds, of an entry put without one.
    """

    def __init__(self, url: str, name: str, default_ttr: float = defaults.JOB_TTR) -> None:
        settings = _parse(url)
        self.queueName = name
        self.default_ttr = default_ttr
        qualified = "" if settings.schema is None else f"{_quote(settings.schema)}."
        self._schema = settings.schema
        #: The entries' table, schema-qualified when the URL names a schema.
        self.table = qualified + _quote(QUEUE_TABLE)
        self._documents = qualified + _quote(DOCUMENTS_TABLE)
        self._function = qualified + _quote(QUEUE_TABLE + "_reserve")
        # the datastore's writes, table and channel, for the shared transactions
        self._document_sql = {
            name: _DOCUMENT_SQL[name].format(t=self._documents)
            for name in ("update_cas", "update_cas_notify")
        }
        self._write_channel = write_channel(self._documents)
        self._deliveries = qualified + DELIVERIES_TABLE
        self._sql = {
            name: sql.format(q=self.table, f=self._function, d=self._documents)
            for name, sql in _SQL.items()
        }
        self._channel = _channel(self.table, name)
        self._connections = _Connections(settings, self._setup, errors.QueueUnavailable)
        self._listener = _Listener(settings.conninfo, self._channel)
        # whether the documents' table is beside ours, and when we last looked
        self._with_documents = False
        self._looked_at = float("-inf")
        self._look_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<PostgresQueue {self.queueName!r} {self._connections.settings.where} {self.table}>"

    def close(self) -> None:
        """Close this process's pool and listening connection."""
        self._listener.close()
        self._connections.close()

    def attach(self) -> None:
        """Do nothing: a queue object always uses and watches its name."""

    def detach(self) -> None:
        """Do nothing (see :meth:`attach`)."""

    # -- setup -------------------------------------------------------------

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        """Create the table, its indexes and the reserve function, unless
        they are of :data:`SCHEMA_VERSION` already."""
        row = conn.execute(
            "SELECT obj_description(to_regclass(%s), 'pg_class'),"
            " to_regprocedure(%s) IS NOT NULL",
            (self.table, f"{self._function}({_FUNCTION_ARGS})"),
        ).fetchone()
        if row is not None and row[0] == f"{_VERSION_COMMENT}{SCHEMA_VERSION}" and row[1]:
            return
        conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        try:
            with conn.transaction():
                if self._schema is not None:
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(self._schema)}")
                # a function of the first drafts' signature would be called
                conn.execute(f"DROP FUNCTION IF EXISTS {self._function}(text)")
                for statement in _SCHEMA:
                    conn.execute(
                        statement.format(q=self.table, f=self._function, d=self._documents)
                    )
                conn.execute(
                    f"COMMENT ON TABLE {self.table} IS '{_VERSION_COMMENT}{SCHEMA_VERSION}'"
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))

    def _run(self, sql: str, args: Any) -> list[tuple[Any, ...]]:
        return self._connections.run(lambda conn: conn.execute(sql, args).fetchall())

    # -- putting -----------------------------------------------------------

    def _put_args(
        self, data: Any, ttr: float | None, delay: float, priority: int
    ) -> dict[str, Any]:
        return {
            "tube": self.queueName,
            "body": json.dumps(data),
            "pri": check_priority(priority),
            "ttr": lease_seconds(ttr, self.default_ttr),
            "delay": max(delay, 0),
            "channel": self._channel,
        }

    def put(
        self,
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> int:
        """Enqueue ``json.dumps(data)`` and notify waiters; return the
        entry's id.

        :param ttr: The entry's lease in seconds, ``default_ttr`` if None.
        :param delay: Seconds before the entry can be reserved.
        :param priority: 0 is the most urgent.
        """
        args = self._put_args(data, ttr, delay, priority)
        return int(self._run(self._sql["put"], args)[0][0])

    def _same_database(self, datastore: Any) -> bool:
        """Whether ``datastore`` keeps its documents beside this queue."""
        return (
            isinstance(datastore, PostgresDatastore)
            and datastore.table == self._documents
            and datastore._connections.settings.conninfo
            == self._connections.settings.conninfo
        )

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
        """Put an entry and store ``document(entry_id)`` under ``key`` in one
        transaction, when ``datastore`` is a
        :class:`~flask_spacewalk.backends.postgres.PostgresDatastore` of this
        database and schema; None (nothing done) otherwise.

        :return: the entry's id and the document's cas.
        """
        if not self._same_database(datastore):
            return None
        args = self._put_args(data, ttr, delay, priority)
        set_sql = datastore._sql["set"]
        # its tables made on its first use (no round trip after that)
        datastore._connections._current()

        def statements(conn: psycopg.Connection[Any]) -> tuple[int, int]:
            with conn.transaction():
                row = conn.execute(self._sql["put"], args).fetchone()
                assert row is not None
                id = int(row[0])
                value = document(id)
                text = encode_value(value)  # refused here: rolled back, nothing put
                columns = index_columns(job_index(key, value))
                cas = conn.execute(set_sql, (key, text, *columns)).fetchone()
                assert cas is not None
            return id, int(cas[0])

        # both in the queue's pool: one connection, one commit
        return self._connections.run(statements)

    # -- reserving ---------------------------------------------------------

    def reserve(self, timeout: float | None = None) -> PostgresQueueEntry | None:
        """Take the next ready entry, waiting up to ``timeout`` seconds
        (forever if None, not at all if 0); None if none came."""
        reserved = self._wait_for(1, timeout, None)
        return None if reserved is None else reserved[0][0]

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

        The reserve function reads the entries' job documents (and locks
        them, so that the transaction's compare-and-swap writes of them
        cannot conflict) and cancel requests in the same round trip: the
        transaction's first reads of those cost nothing. It commits
        asynchronously, as every claim (see the module).

        :raises ValueError: ``count`` is not a positive integer.
        """
        reserved = self._wait_for(check_count(count), timeout, then)
        return None if reserved is None else reserved[1]

    def _wait_for(
        self,
        count: int,
        timeout: float | None,
        then: Callable[[StoreTransaction, list[QueueEntry]], T] | None,
    ) -> tuple[list[PostgresQueueEntry], T | None] | None:
        if timeout is not None and timeout <= 0:
            return self._try_reserve(count, then)[0]
        self._listener.listen()  # before the first look, so no put is missed

        def attempt() -> tuple[tuple[list[PostgresQueueEntry], T | None] | None, float | None]:
            reserved, next_event = self._try_reserve(count, then)
            return reserved, None if next_event is None else next_event - time.time()

        return wait_for_entries(attempt, timeout, self._listener.wait, WAKE_FALLBACK)

    def _documents_beside(self) -> bool:
        """Whether the documents' table is in our schema (looked up again
        every :data:`DOCUMENTS_RECHECK` seconds while it is not)."""
        if self._with_documents or time.monotonic() - self._looked_at < DOCUMENTS_RECHECK:
            return self._with_documents
        with self._look_lock:
            self._looked_at = time.monotonic()
            row = self._run("SELECT to_regclass(%s) IS NOT NULL", (self._documents,))
            self._with_documents = bool(row and row[0][0])
        return self._with_documents

    def _try_reserve(
        self, count: int, then: Callable[[StoreTransaction, list[QueueEntry]], T] | None
    ) -> tuple[tuple[list[PostgresQueueEntry], T | None] | None, float | None]:
        """One look: the entries claimed and ``then``'s value, or None and
        when the next delay or lease runs out."""
        documents = self._documents_beside()
        args = (self.queueName, count, documents, then is not None, JOB_KEY_PREFIX,
                cancel_key(""))  # fmt: skip
        if then is None:  # a plain reserve: one statement, its own transaction
            rows = self._run(self._sql["reserve"], args)
            if rows[0][0] is None:
                return None, rows[0][4]
            entries = [self._entry(row) for row in rows]
            for entry, row in zip(entries, rows):
                if row[5] is not None:  # else the caller reads (and reports) it itself
                    entry._documents = [(row[5], int(row[6])), (row[8], int(row[9] or 0))]
            return (entries, None), None

        def claim(
            conn: psycopg.Connection[Any],
        ) -> tuple[tuple[list[PostgresQueueEntry], T | None] | None, float | None]:
            transaction = _Transaction(self, conn)
            try:
                rows = transaction.execute(self._sql["reserve"], args).fetchall()
                if rows[0][0] is None:
                    transaction.commit()  # the expiry of leases it made
                    return None, rows[0][4]
                entries = [self._entry(row) for row in rows]
                if documents:  # what the reserve read, as the transaction's reads
                    transaction.claimed(rows)
                value = then(transaction, list(entries))
                transaction.commit()
            except BaseException:
                transaction.rollback()
                raise
            return (entries, value), None

        return self._connections.run(claim)

    def _entry(self, row: tuple[Any, ...]) -> PostgresQueueEntry:
        id, body, reserves, releases = row[:4]
        return PostgresQueueEntry(self, id, body, reserves, releases)

    def shares_database(self, datastore: Any) -> bool:
        """Whether ``datastore`` is a
        :class:`~flask_spacewalk.backends.postgres.PostgresDatastore` of this
        database and schema."""
        return self._same_database(datastore)

    def transact(self, func: Callable[[StoreTransaction], T]) -> T:
        """``func(transaction)`` in one transaction of this database; its
        value (runtime/protocols.py ``SharedTransactions``). Its commit is
        durable: it records results, which a client may read at once."""

        def statements(conn: psycopg.Connection[Any]) -> T:
            transaction = _Transaction(self, conn)
            try:
                value = func(transaction)
                transaction.commit()
            except BaseException:
                transaction.rollback()
                raise
            return value

        return self._connections.run(statements)

    # -- by id -------------------------------------------------------------

    def delete(self, id: int) -> bool:
        """Delete an entry that is ready, delayed, or reserved by nobody
        whose lease still runs; False when there is no such entry. As in
        beanstalkd, ``id`` may be of any queue name in the table."""
        count = self._connections.run(
            lambda conn: conn.execute(self._sql["delete"], (id,)).rowcount
        )
        return bool(count > 0)

    def has_entry(self, id: int, data: Any) -> bool:
        """Whether entry ``id`` is still in the table (ready, delayed or
        reserved) with the body ``json.dumps(data)``."""
        if not isinstance(id, int) or isinstance(id, bool) or id < 1:
            return False
        rows = self._run(self._sql["has_entry"], (id,))
        return bool(rows) and same_body(rows[0][0], data)

    def ping(self) -> None:
        """One round trip to the server: raise
        :exc:`~flask_spacewalk.errors.QueueUnavailable` when it fails."""
        self._run(f"SELECT 1 FROM {self.table} LIMIT 0", ())

    # -- counting ----------------------------------------------------------

    def stats_tube(self) -> dict[str, Any]:
        """beanstalkd's ``stats-tube`` counts for this queue name."""
        total, reserved, delayed, urgent = self._run(self._sql["stats_tube"], (self.queueName,))[0]
        return {
            "name": self.queueName,
            "current-jobs-urgent": urgent,
            "current-jobs-ready": total - reserved - delayed,
            "current-jobs-reserved": reserved,
            "current-jobs-delayed": delayed,
        }

    def queue_stats(self) -> list[QueueDepth]:
        """This queue's depth, then that of every other queue name in the
        table that holds an entry, by name; read without a write."""

        def statements(conn: psycopg.Connection[Any]) -> list[QueueDepth]:
            found = conn.execute(self._sql["tubes"]).fetchall()
            now = found[0][1] if found else time.time()
            names = [self.queueName] + sorted(n for n, _ in found if n != self.queueName)
            depths = []
            for name in names:
                row = conn.execute(self._sql["depth"], {"tube": name, "now": now}).fetchone()
                assert row is not None
                ready, delayed, first_ready, held, expired, first_lease = row
                since = [t for t in (first_ready, first_lease) if t is not None and t <= now]
                oldest = round(now - min(since), 3) if since else None
                depths.append(QueueDepth(name, ready + expired, delayed, held, oldest))
            return depths

        return self._connections.run(statements)

    # -- entries -----------------------------------------------------------

    def _entry_update(
        self, entry: PostgresQueueEntry, sql: str, args: tuple[Any, ...], held: bool,
        notify: bool = False,
    ) -> None:
        """Run ``sql`` on ``entry`` if nobody reserved it since its holder
        did and, if ``held``, the holder did not release it either."""
        if held:
            sql += " WHERE id = %s AND reserves = %s AND releases = %s" + _ASYNC_COMMIT
            args += (entry.id, entry._reserves, entry._releases)
        else:
            sql += " WHERE id = %s AND reserves = %s" + _ASYNC_COMMIT
            args += (entry.id, entry._reserves)
        if notify:  # in the same transaction: a waiter finds the entry ready
            sql = f"WITH e AS ({sql} RETURNING 1) SELECT pg_notify(%s, '') FROM e"
            args += (self._channel,)
        count = self._connections.run(lambda conn: conn.execute(sql, args).rowcount)
        if count == 0:
            raise errors.EntryNotReserved(
                f"entry {entry.id} of {self.queueName!r} was deleted, released,"
                " or reserved by another worker"
            )

    def _entry_stats(self, id: int) -> dict[str, Any]:
        rows = self._run(self._sql["stats"], (id, id))
        if not rows:
            raise errors.EntryNotReserved(f"entry {id} was deleted")
        (id, tube, pri, ttr, delay, created_at, ready_at, lease_until,
         reserves, timeouts, releases, now) = rows[0]  # fmt: skip
        # the statement's snapshot predates its own expiry of the lease
        if lease_until is not None and lease_until <= now:
            lease_until, ready_at, timeouts = None, lease_until, timeouts + 1
        return entry_stats(id, tube, pri, ttr, delay, created_at, ready_at, lease_until,
                           reserves, timeouts, releases, now=now)  # fmt: skip


class _Transaction:
    """A transaction open on the database of a queue and its datastore
    (runtime/protocols.py ``StoreTransaction``), on the queue's connection.

    Its reads lock the rows they find (``FOR NO KEY UPDATE``), as the claim
    locks its jobs' documents: a compare-and-swap write of a document read
    in the transaction cannot then conflict, as in SQLite's write
    transaction. Each write of a job's document calls ``pg_notify`` on the
    datastore's channel, heard after the commit.

    Round trips: ``BEGIN`` travels with the first statement, and the write
    of a document this transaction locked (its new cas computed by the read,
    from the server's clock) waits to travel with the next statement or the
    ``COMMIT``: a claim is two round trips, its reserve and its commit, and
    a result three (the read of the cancel request and the document, the
    write with the entry's delete, the commit). Statements that travel
    together go in one pipeline (psycopg's pipeline mode), not in one string
    of statements: a string is sent by the simple protocol, which plans each
    statement anew (an ``UPDATE`` and a ``DELETE`` in one string took
    0.41 ms, apart 0.33 ms; in a pipeline each keeps its prepared plan).
    """

    def __init__(self, queue: PostgresQueue, conn: psycopg.Connection[Any]) -> None:
        self._queue = queue
        self._conn = conn
        self._begun = False
        # writes whose answer is known, sent with the next statement
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        # the documents read and locked: value, cas and the cas a write gives
        self._locked: dict[str, tuple[Value | None, int, int]] = {}
        # the cancel requests the claim read (read alone, never written)
        self._seen: dict[str, tuple[Value | None, int]] = {}

    def execute(self, sql: str, args: tuple[Any, ...]) -> psycopg.Cursor[Any]:
        """Run ``sql`` (after ``BEGIN`` and the pending writes, in the same
        round trip); its cursor."""
        if self._begun and not self._pending:
            return self._conn.execute(sql, args)
        statements = [] if self._begun else [("BEGIN", ())]
        statements += self._pending + [(sql, args)]
        self._begun, self._pending = True, []
        return self._send(statements)

    def _send(self, statements: list[tuple[str, tuple[Any, ...]]]) -> psycopg.Cursor[Any]:
        with storable(), self._conn.pipeline():
            cursors = [self._conn.execute(sql, args) for sql, args in statements]
        return cursors[-1]

    def claimed(self, rows: list[tuple[Any, ...]]) -> None:
        """Keep what the reserve read (and locked), as this transaction's reads."""
        for row in rows:
            uuid = json.loads(row[1])
            if isinstance(uuid, str):
                self._locked[JOB_KEY_PREFIX + uuid] = (row[5], int(row[6] or 0), int(row[7]))
                self._seen[cancel_key(uuid)] = (row[8], int(row[9] or 0))

    def commit(self) -> None:
        if self._pending:
            self._send(self._pending + [("COMMIT", ())])
        elif self._begun:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._begun and not self._conn.broken:
            # else the pool rolls back (or drops) a connection given back
            # inside a transaction
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("ROLLBACK")

    def read(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        known = {**self._seen, **{key: row[:2] for key, row in self._locked.items()}}
        if all(key in known for key in keys):
            return [known[key] for key in keys]
        # A transaction that reads a job's cancel request writes the job's
        # document next (the result's save): it comes, locked, in the same
        # round trip, so that its write travels with the next statement.
        wanted = list(keys)
        requests = cancel_key("")
        for key in keys:
            if key.startswith(requests):
                job = JOB_KEY_PREFIX + key[len(requests):]
                if job not in self._locked and job not in wanted:
                    wanted.append(job)
        rows = self.execute(self._queue._sql["tx_read"], (wanted,)).fetchall()
        for key, value, cas, next_cas in rows:
            self._locked[key] = (value, int(cas), int(next_cas))
        found = {key: (value, int(cas)) for key, value, cas, _ in rows}
        return [found.get(key, (None, 0)) for key in keys]

    def write(self, key: str, value: dict[str, Any], cas: int) -> int:
        text = encode_value(value)
        args: tuple[Any, ...] = (text, *index_columns(job_index(key, value)), key, cas)
        notify: tuple[Any, ...] = ()
        if key.startswith(JOB_KEY_PREFIX):  # in the transaction: heard once committed
            notify = (self._queue._write_channel, key[len(JOB_KEY_PREFIX):])
        locked = self._locked.pop(key, None)
        if locked is not None and locked[0] is not None:
            if locked[1] != cas:
                raise PostgresDatastore.casException(
                    f"document {key!r} changed or was deleted since cas {cas}"
                )
            # Locked since its read, it is there with this cas until the
            # commit: the write cannot miss, and waits for the next trip.
            sql = self._queue._sql["tx_write_notify" if notify else "tx_write"]
            self._pending.append((sql, (text, locked[2], *args[1:], *notify)))
            return locked[2]
        statement = "update_cas_notify" if notify else "update_cas"
        row = self.execute(self._queue._document_sql[statement], args + notify).fetchone()
        if row is None:
            raise PostgresDatastore.casException(
                f"document {key!r} changed or was deleted since cas {cas}"
            )
        return int(row[0])

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        return insert_deliveries(self.execute, self._queue._deliveries, deliveries)

    def delete_entry(self, entry: QueueEntry) -> bool:
        if not isinstance(entry, PostgresQueueEntry) or entry._queue.table != self._queue.table:
            raise TypeError(f"{entry!r} is not an entry of {self._queue.table}")
        cursor = self.execute(self._queue._sql["tx_delete"], (entry.id, entry._reserves))
        return cursor.rowcount > 0


class PostgresQueueEntry(HeldEntry):
    """A reserved entry of a :class:`PostgresQueue` (rules in
    :class:`~flask_spacewalk.backends.base.HeldEntry`)."""

    _queue: PostgresQueue
    #: the job's document and cancel request, read with the claim
    _documents: list[tuple[Value | None, int]] | None = None

    def documents(
        self, datastore: Any, keys: Sequence[str]
    ) -> list[tuple[Value | None, int]] | None:
        """The values and cas of ``keys`` as read with the claim, when they
        are the job's document and cancel request in ``datastore``; None
        when the caller must read them itself."""
        if self._documents is None or not self._queue._same_database(datastore):
            return None
        try:
            uuid = json.loads(self.body)
        except ValueError:
            return None
        if not isinstance(uuid, str) or list(keys) != [JOB_KEY_PREFIX + uuid, cancel_key(uuid)]:
            return None
        return list(self._documents)

    def delete(self) -> None:
        """Remove the entry for good."""
        self._queue._entry_update(self, f"DELETE FROM {self._queue.table}", (), held=False)

    def release(self, delay: float = 0) -> None:
        """Make the entry ready again after ``delay`` seconds, and notify."""
        delay = max(delay, 0)
        self._queue._entry_update(
            self,
            f"UPDATE {self._queue.table} SET lease_until = NULL, ready_at = {_NOW} + %s,"
            " delay = %s, releases = releases + 1",
            (delay, delay),
            held=True,
            notify=True,
        )

    def touch(self) -> None:
        """Renew the lease for another ``ttr`` seconds."""
        self._queue._entry_update(
            self, f"UPDATE {self._queue.table} SET lease_until = {_NOW} + ttr", (), held=True
        )


