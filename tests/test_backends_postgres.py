"""The PostgreSQL datastore beyond the protocol: URLs, table, pool, outages."""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from backend_postgres import DATABASE_URL, admin, dropped_afterwards, new_schema_name
from backend_support import SPAWN, _increment, _reporting, _run_processes

from flask_spacewalk import errors
from flask_spacewalk.backends import check_url, make_datastore

postgres = pytest.importorskip("flask_spacewalk.backends.postgres")
PostgresDatastore = postgres.PostgresDatastore
psycopg = postgres.psycopg


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema name that does not exist yet; dropped afterwards."""
    admin().close()  # skip now when there is no server
    name = new_schema_name()
    with dropped_afterwards(name):
        yield name


@pytest.fixture
def url(schema: str) -> str:
    # application_name tells this test's connections apart
    return f"{DATABASE_URL}?schema={schema}&application_name={schema}"


@pytest.fixture
def store(url: str) -> Iterator[Any]:
    store = PostgresDatastore(url)
    yield store
    store.close()


def backend_pids(application_name: str) -> set[int]:
    with admin() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return {row[0] for row in rows}


def settled_pids(application_name: str) -> set[int]:
    """:func:`backend_pids` once two reads 0.1 s apart agree: a new pool
    opens its connections in the background, and a closed connection's
    server process leaves ``pg_stat_activity`` a moment later."""
    pids = backend_pids(application_name)
    for _ in range(50):
        time.sleep(0.1)
        again = backend_pids(application_name)
        if again == pids:
            return pids
        pids = again
    return pids


def terminate(application_name: str) -> None:
    """End the server processes of those connections, and wait until
    they are gone."""
    pids = backend_pids(application_name)
    assert pids
    with admin() as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    for _ in range(200):
        if not pids & backend_pids(application_name):
            return
        time.sleep(0.02)
    raise AssertionError(f"backends {pids} still running")


def in_threads(count: int, target: Any, *args: Any) -> list[object]:
    """Run ``target(*args)`` in ``count`` threads; return what each returned
    or raised."""
    results: list[object] = []

    def run() -> None:
        try:
            results.append(target(*args))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://127.0.0.1:5432/test",
        "postgres://user:pw@db.example/jobs?sslmode=require&schema=sw&pool_max_size=8",
        "postgresql:///jobs?pool_min_size=0",
        "postgresql://h1:5432,h2:5433/jobs?target_session_attrs=read-write",
        "postgresql://db/test?options=-csearch_path%3Dsw_abc&connect_timeout=2",
    ],
)
def test_good_urls(url: str) -> None:
    check_url(url, "datastore")
    postgres.check_url(url)
    PostgresDatastore(url).close()  # connects lazily: nothing to reach


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql://127.0.0.1:5432", "no database"),
        ("postgresql://127.0.0.1:5432/", "no database"),
        ("postgresql://h/db?nonsense=1", "nonsense"),
        ("postgresql://h:port/db", "port"),
        ("postgresql://h/db?schema=", "schema"),
        ("postgresql://h/db?pool_max_size=0", "pool_max_size"),
        ("postgresql://h/db?pool_min_size=5&pool_max_size=2", "pool_min_size"),
        ("postgresql://h/db?pool_max_size=many", "integers"),
        ("postgresql://h/db?connect_timeout=soon", "integers"),
        ("postgresql://h/db#top", "fragment"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=match):
        check_url(url, "datastore")
    with pytest.raises(errors.ConfigurationError, match=match):
        make_datastore(url)


def test_password_is_not_in_messages() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        check_url("postgresql://me:s3cret@h/db?nonsense=1", "datastore")
    assert "s3cret" not in str(info.value)
    port = free_port()
    store = PostgresDatastore(f"postgresql://me:s3cret@127.0.0.1:{port}/test")
    with pytest.raises(errors.DatastoreUnavailable) as unavailable:
        store.read("k")
    assert f"127.0.0.1:{port}/test" in str(unavailable.value)
    assert "s3cret" not in str(unavailable.value)
    assert "s3cret" not in repr(store)


# -- the table -----------------------------------------------------------------


def test_table_and_indexes(store: Any, schema: str) -> None:
    store.create("zerog_job_1", {"jobType": "a", "createdAt": "2021-11-20T02:55:10.967790"})
    store.create("text", "a str")
    with admin() as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, collation_name"
            " FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'spacewalk_documents'"
            " ORDER BY ordinal_position",
            (schema,),
        ).fetchall()
        assert columns == [
            ("key", "text", "NO", "C"),  # bytewise: faster, and LIKE 'prefix%' uses it
            ("value", "jsonb", "NO", None),
            ("cas", "bigint", "NO", None),
            ("updated_at", "timestamp with time zone", "NO", None),
            # the job listing's, written from the JobIndex of each write
            ("job_created", "text", "YES", "C"),
            ("job_type", "text", "YES", None),
            ("job_status", "text", "YES", None),
        ]
        types = conn.execute(
            f"SELECT key, jsonb_typeof(value) FROM {store.table} ORDER BY key"
        ).fetchall()
        assert types == [("text", "string"), ("zerog_job_1", "object")]
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
            ).fetchall()
        )
        assert indexes.pop("spacewalk_documents_pkey") == (
            "CREATE UNIQUE INDEX spacewalk_documents_pkey"
            f" ON {schema}.spacewalk_documents USING btree (key)"
        )
        assert indexes.pop("spacewalk_documents_updated_at") == (
            "CREATE INDEX spacewalk_documents_updated_at"
            f" ON {schema}.spacewalk_documents USING btree (updated_at)"
        )
        # the job listing's (tests/test_listing.py checks their use)
        for name, columns, predicate in [
            ("jobs_created", "job_created, key", "job_created IS NOT NULL"),
            ("jobs_type_created", "job_type, job_created, key", "job_type IS NOT NULL"),
            ("jobs_status_created", "job_status, job_created, key", "job_status IS NOT NULL"),
        ]:
            assert indexes.pop(f"spacewalk_documents_{name}") == (
                f"CREATE INDEX spacewalk_documents_{name} ON {schema}.spacewalk_documents"
                f" USING btree ({columns}) WHERE ({predicate})"
            )
        # the job counts' table (tests/test_job_counts.py)
        assert indexes.pop("spacewalk_job_counts_pkey") == (
            "CREATE UNIQUE INDEX spacewalk_job_counts_pkey ON"
            f" {schema}.spacewalk_job_counts USING btree (job_type, status, shard)"
        )
        row = conn.execute(
            "SELECT job_created, job_type, job_status FROM " + store.table + " WHERE key = %s",
            ("zerog_job_1",),
        ).fetchone()
        assert row == ("2021-11-20T02:55:10.967790", "a", "failed")
        # the idempotency key records' table (tests/test_keyrecords.py)
        assert indexes.pop("spacewalk_idempotency_keys_pkey") == (
            "CREATE UNIQUE INDEX spacewalk_idempotency_keys_pkey"
            f" ON {schema}.spacewalk_idempotency_keys USING btree (key)"
        )
        assert indexes.pop("spacewalk_idempotency_keys_expiry") == (
            "CREATE INDEX spacewalk_idempotency_keys_expiry"
            f" ON {schema}.spacewalk_idempotency_keys USING btree (expires_at)"
        )
        # the worker records' table, beside it (runtime/heartbeat.py)
        assert indexes.pop("spacewalk_workers_pkey") == (
            "CREATE UNIQUE INDEX spacewalk_workers_pkey"
            f" ON {schema}.spacewalk_workers USING btree (id)"
        )
        # the webhook deliveries' table (runtime/webhooks.py, version 6)
        deliveries = f"{schema}.spacewalk_webhook_deliveries"
        assert indexes.pop("spacewalk_webhook_deliveries_pkey") == (
            f"CREATE UNIQUE INDEX spacewalk_webhook_deliveries_pkey ON {deliveries}"
            " USING btree (id)"
        )
        assert indexes.pop("spacewalk_webhook_deliveries_due") == (
            f"CREATE INDEX spacewalk_webhook_deliveries_due ON {deliveries}"
            " USING btree (due_at) WHERE (status = 'pending'::text)"
        )
        for column in ("created", "uuid"):
            assert indexes.pop(f"spacewalk_webhook_deliveries_{column}") == (
                f"CREATE INDEX spacewalk_webhook_deliveries_{column} ON {deliveries}"
                f" USING btree ({'created_at' if column == 'created' else column})"
            )
        assert indexes == {}


def test_a_table_of_version_3_gains_the_worker_records(store: Any, url: str, schema: str) -> None:
    store.set("zerog_job_1", {"jobType": "a", "createdAt": "2021-11-20T02:55:10.967790"})
    with admin() as conn:
        conn.execute(f'DROP TABLE "{schema}".spacewalk_workers')
        conn.execute(f"COMMENT ON TABLE {store.table} IS 'flask_spacewalk schema 3'")
    upgraded = PostgresDatastore(url)
    try:
        upgraded.save_worker("w", {"id": "w"})
        assert upgraded.list_workers() == [{"id": "w"}]
        assert upgraded.read("zerog_job_1") == store.read("zerog_job_1")
    finally:
        upgraded.close()
    with admin() as conn:
        row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')",
                           (store.table,)).fetchone()  # fmt: skip
    assert row == (f"flask_spacewalk schema {postgres.SCHEMA_VERSION}",)


def test_listings_use_the_indexes(store: Any) -> None:
    store.create("k", "v")  # creates the table
    with admin() as conn:
        conn.execute(
            f"INSERT INTO {store.table} (key, value, cas, updated_at, job_type, job_created)"
            " SELECT 'zerog_job_' || i, jsonb_build_object('jobType', 'type' || i % 20,"
            " 'createdAt', to_char(t, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')), i, t,"
            " 'type' || i % 20, to_char(t, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            " FROM generate_series(1, 20000) AS i,"
            " LATERAL (SELECT now() - i * interval '1 second' AS t) AS times"
        )
        conn.execute(f"ANALYZE {store.table}")
        for query in [
            f"SELECT key, value FROM {store.table} WHERE job_type = 'type7'"
            " ORDER BY job_created DESC, key DESC LIMIT 50",
            f"SELECT key FROM {store.table} ORDER BY updated_at DESC LIMIT 50",
            f"SELECT value FROM {store.table} WHERE key = 'zerog_job_7'",
        ]:
            plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {query}"))
            # an index gives the rows in order: no scan of the table, no sort
            assert "Index Scan" in plan, plan
            assert "Seq Scan" not in plan and "Sort" not in plan, plan


def test_schema_is_created_when_missing(store: Any, schema: str) -> None:
    store.set("k", "v")
    with admin() as conn:
        found = conn.execute(
            "SELECT to_regclass(%s)", (f'"{schema}".spacewalk_documents',)
        ).fetchone()
    assert found is not None and found[0] is not None


def test_search_path_in_options(schema: str) -> None:
    with admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    store = PostgresDatastore(f"{DATABASE_URL}?options=-csearch_path%3D{schema}")
    try:
        store.set("k", "v")
        with admin() as conn:
            row = conn.execute(f'SELECT value FROM "{schema}".spacewalk_documents').fetchone()
        assert row == ("v",)
    finally:
        store.close()


@_reporting
def _set_once(url: str, start: Any) -> bool:
    store = make_datastore(url)
    try:
        start.wait(timeout=30)
        store.set(f"k{os.getpid()}", "v")
        return True
    finally:
        store.close()


@pytest.mark.slow
def test_processes_creating_the_table_at_once(url: str, store: Any) -> None:
    """gunicorn and worker processes all starting on an empty database."""
    processes = 4
    start = SPAWN.Barrier(processes)
    assert _run_processes(_set_once, [(url, start)] * processes) == [True] * processes
    with admin() as conn:
        row = conn.execute(f"SELECT count(*) FROM {store.table}").fetchone()
    assert row == (processes,)


def test_values_postgres_cannot_store(store: Any) -> None:
    # refused before they reach PostgreSQL, as on every backend
    with pytest.raises(errors.UnstorableValue, match="NUL character"):
        store.set("k", "nul \x00 inside")
    with pytest.raises(errors.UnstorableValue, match="lone surrogate"):
        store.set("k", "\udc80")
    with pytest.raises(ValueError):
        store.set("k", {"x": float("nan")})
    store.set("k", "fine")  # the connection is still good
    assert store.read("k") == "fine"


# -- compare-and-swap ----------------------------------------------------------


def test_cas_write_is_one_conditional_update(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cas = store.set_with_cas("k", {"n": 1})
    statements: list[str] = []
    real = store._connections.connection

    class Spy:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def execute(self, query: str, args: Any = None) -> Any:
            statements.append(query)
            return self.conn.execute(query, args)

    @contextlib.contextmanager
    def spying() -> Iterator[Spy]:
        with real() as conn:
            yield Spy(conn)

    monkeypatch.setattr(store._connections, "connection", spying)
    _, cas = store.update_with_cas("k", {"n": 2}, cas)
    _, cas = store.set_with_cas("k", {"n": 3}, cas)
    with pytest.raises(store.casException):
        store.update_with_cas("k", {"n": 4}, cas - 1)
    assert len(statements) == 3
    for statement in statements:
        assert statement.startswith("UPDATE ")
        assert "WHERE key = %s AND d.cas = %s RETURNING cas" in statement


def test_cas_conflict_while_waiting_for_the_row(store: Any, schema: str) -> None:
    """Another writer holds the row: the compare happens after it commits,
    so its write is never lost."""
    _, cas = store.set_with_cas("k", {"n": 1})
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(store.update_with_cas("k", {"n": "lost"}, cas))
        except Exception as exc:
            outcome.append(exc)

    with admin() as other:
        with other.transaction():
            other.execute(
                f"UPDATE {store.table} SET value = '{{\"n\": 2}}', cas = cas + 1 WHERE key = 'k'"
            )
            thread = threading.Thread(target=write)
            thread.start()
            for _ in range(500):  # until our UPDATE waits for the row lock
                row = other.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = %s AND wait_event_type = 'Lock'",
                    (schema,),
                ).fetchone()
                if row == (1,):
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("the write never waited for the row")
        thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], store.casException)
    assert store.read_with_cas("k") == ({"n": 2}, cas + 1)


def test_cas_comes_from_the_server_clock(store: Any) -> None:
    _, cas = store.set_with_cas("k", "v")
    with admin() as conn:
        row = conn.execute(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000"
        ).fetchone()
        assert row is not None
        assert 0 <= row[0] - cas < 60 * 10**9
        # a cas ahead of the clock (another server's, say) still grows by one
        conn.execute(f"UPDATE {store.table} SET cas = %s WHERE key = 'k'", (2**62,))
    assert store.set_with_cas("k", "w") == (True, 2**62 + 1)
    assert store.update_with_cas("k", "x", 2**62 + 1) == (True, 2**62 + 2)
    assert store.update("k", "y") is True
    assert store.read_with_cas("k") == ("y", 2**62 + 3)


# -- the pool ------------------------------------------------------------------


def test_pool_opens_on_first_use(store: Any, schema: str) -> None:
    assert store._connections._pool is None
    assert backend_pids(schema) == set()
    assert store.read("k") is None
    pool = store._connections._pool
    assert pool is not None and (pool.min_size, pool.max_size) == (1, 4)
    assert 1 <= len(backend_pids(schema)) <= 4
    store.close()
    assert store._connections._pool is None
    assert store.read("k") is None  # opens again


def test_pool_size_from_the_url(url: str) -> None:
    store = PostgresDatastore(f"{url}&pool_min_size=0&pool_max_size=1")
    try:
        store.create("counter", {"count": 0})
        conflicts = in_threads(3, _increment, store, "counter", 20)
        assert all(isinstance(n, int) for n in conflicts), conflicts
        assert store.read("counter") == {"count": 60}
        assert store._connections._pool.max_size == 1
    finally:
        store.close()


# -- outages -------------------------------------------------------------------


def test_terminated_connections_are_replaced(store: Any, schema: str) -> None:
    """A server restart, say: every pooled connection is gone."""
    store.create("counter", {"count": 0})
    in_threads(4, _increment, store, "counter", 20)  # opens a few connections
    terminate(schema)
    # the server's goodbye is noticed before a connection is used
    assert in_threads(4, store.read, "counter") == [{"count": 80}] * 4
    assert store.update("counter", {"count": 0}) is True


def test_connection_lost_mid_call_then_reconnects(
    store: Any, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.set("k", "v")
    monkeypatch.setattr(postgres, "_looks_alive", lambda conn: True)
    terminate(schema)
    with pytest.raises(errors.DatastoreUnavailable, match="127.0.0.1:5432/test"):
        store.read("k")
    assert store.read("k") == "v"  # the next call connects again
    assert store.set_with_cas("k", "w")[0] is True


class Forwarder:
    """Forwards a loopback port to the PostgreSQL server: an outage that a
    test can start and end without touching the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def start(self, answer: bool = True) -> None:
        """Listen; with ``answer`` false, accept and never answer."""
        self._stop.clear()
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.02)
        self._spawn(self._accept, listener, answer)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, answer: bool) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except OSError:  # the timeout
                    continue
                self._sockets.append(client)
                if answer:
                    server = socket.create_connection(("127.0.0.1", 5432), timeout=5)
                    server.settimeout(None)
                    self._sockets.append(server)
                    self._spawn(self._pump, client, server)
                    self._spawn(self._pump, server, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Close the port and every connection through it."""
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._threads.clear()


def test_outage_and_recovery(schema: str) -> None:
    port = free_port()
    forwarder = Forwarder(port)
    store = PostgresDatastore(
        f"postgresql://127.0.0.1:{port}/test?schema={schema}&connect_timeout=2"
    )
    where = f"127.0.0.1:{port}/test"
    try:
        with pytest.raises(errors.DatastoreUnavailable, match=f"{where}.*refused"):
            store.read("k")
        forwarder.start()
        store.set("k", "v")  # the next call connects
        forwarder.stop()  # the connections drop and the port closes
        with pytest.raises(errors.DatastoreUnavailable, match=f"{where}.*refused"):
            store.read("k")
        with pytest.raises(errors.DatastoreUnavailable, match=f"{where}.*refused"):
            store.set("k", "w")
        forwarder.start()
        assert store.read("k") == "v"
        forwarder.stop()
        forwarder.start(answer=False)  # a server that does not answer
        with pytest.raises(errors.DatastoreUnavailable, match=f"{where}.*timeout"):
            store.read("k")
        forwarder.stop()
        forwarder.start()
        assert store.set_with_cas("k", "w")[0] is True
        assert store.read("k") == "w"
    finally:
        store.close()
        forwarder.stop()


def test_waiting_threads_share_one_failed_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads that waited for a failing connect do not each try again."""
    attempts: list[float] = []
    real_connect = postgres.psycopg.connect

    def slow_refused(*args: Any, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        time.sleep(0.2)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(postgres.psycopg, "connect", slow_refused)
    store = PostgresDatastore(f"postgresql://127.0.0.1:{free_port()}/test")
    failures = in_threads(4, store.read, "k")
    assert all(isinstance(exc, errors.DatastoreUnavailable) for exc in failures)
    assert len(attempts) < 4


# -- errors that are not connection failures (issue 12) ------------------------


@pytest.fixture
def role(schema: str) -> Iterator[str]:
    """A login role of the test's own (named as its schema), which may use
    the schema; dropped afterwards. Roles are the server's, not the
    database's: a setting on this one changes nothing else."""
    with admin() as conn:
        conn.execute(f'CREATE ROLE "{schema}" LOGIN')
        conn.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{schema}"')
    try:
        yield schema
    finally:
        with admin() as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'DROP OWNED BY "{schema}"')
            conn.execute(f'DROP ROLE "{schema}"')


def role_url(role: str, options: str = "") -> str:
    return (f"postgresql://{role}@127.0.0.1:5432/test?schema={role}"
            f"&application_name={role}{options}")


def test_a_read_only_server_is_unavailable_then_writable_again(role: str) -> None:
    store = PostgresDatastore(role_url(role))
    try:
        store.set("k", "v")
        # new connections are read-only from now on, as on a standby
        with admin() as conn:
            conn.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        terminate(role)
        with pytest.raises(errors.DatastoreUnavailable, match=r"read-only transaction.*25006"):
            store.set("k", "w")
        assert store.read("k") == "v"  # reads still served
        with admin() as conn:
            conn.execute(f'ALTER ROLE "{role}" RESET default_transaction_read_only')
        # the read-only pool was dropped: the next write reconnects and works
        assert store.set_with_cas("k", "w")[0] is True
        assert store.read("k") == "w"
    finally:
        store.close()


def test_revoked_privileges_are_unavailable_then_granted_again(role: str) -> None:
    store = PostgresDatastore(role_url(role))
    try:
        store.set("k", "v")
        with admin() as conn:
            conn.execute(f'ALTER TABLE "{role}".{postgres.TABLE} OWNER TO CURRENT_USER')
        with pytest.raises(errors.DatastoreUnavailable, match=r"permission denied.*42501"):
            store.read("k")
        with admin() as conn:
            conn.execute(f'GRANT ALL ON "{role}".{postgres.TABLE} TO "{role}"')
        assert store.read("k") == "v"
    finally:
        store.close()


def test_a_dropped_table_is_unavailable_and_never_made_anew_by_this_process(
    store: Any, schema: str
) -> None:
    store.set("k", "v")
    with admin() as conn:
        conn.execute(f'DROP TABLE "{schema}".{postgres.TABLE}')
    for call in (lambda: store.read("k"), lambda: store.set("k", "w"),
                 lambda: store.read_many(["k"])):
        with pytest.raises(errors.DatastoreUnavailable, match=r"does not exist.*42P01"):
            call()
    with admin() as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{postgres.TABLE}',))
        assert found.fetchone() == (None,), "no running process makes an empty store"
    # a process started anew makes it, as at first start; this one takes it up
    fresh = PostgresDatastore(f"{DATABASE_URL}?schema={schema}")
    fresh.set("first", "write")
    fresh.close()
    assert store.read("k") is None
    assert store.read("first") == "write"


def test_a_dropped_schema_is_unavailable(store: Any, schema: str) -> None:
    store.set("k", "v")
    with admin() as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    with pytest.raises(errors.DatastoreUnavailable, match="does not exist"):
        store.read("k")


@pytest.mark.parametrize(
    "option, reason",
    [("statement_timeout", r"statement timeout.*57014"), ("lock_timeout", r"lock timeout.*55P03")],
)
def test_timeouts_are_unavailable_and_keep_the_connection(
    url: str, schema: str, option: str, reason: str
) -> None:
    store = PostgresDatastore(f"{url}&options=-c%20{option}%3D200ms")
    try:
        store.set("k", "v")
        pids = settled_pids(schema)
        with admin() as conn, conn.transaction():
            conn.execute(f'LOCK TABLE "{schema}".{postgres.TABLE} IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(errors.DatastoreUnavailable, match=reason):
                store.read("k")
            with pytest.raises(errors.DatastoreUnavailable, match=reason):
                store.set("k", "w")
        assert store.read("k") == "v"
        # every connection is still there (a pool that waited may have
        # grown by one meanwhile; a discarded pool would have closed them)
        assert pids <= backend_pids(schema), "the pool kept its connections"
    finally:
        store.close()


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.DiskFull('could not extend file "base/1/2": No space left on device'),
        psycopg.errors.OutOfMemory("out of memory"),
        psycopg.errors.TooManyConnections("sorry, too many clients already"),
        psycopg.errors.IoError('could not read block 0 in file "base/1/2"'),
        psycopg.errors.InternalError_("could not open relation with OID 16384"),
        psycopg.errors.DataCorrupted("invalid page in block 0 of relation base/1/2"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_server_refusals_are_unavailable_naming_them(
    store: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    store.set("k", "v")
    real_execute = psycopg.Connection.execute

    def refused(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if "spacewalk_documents" in str(query):
            raise error
        return real_execute(self, query, params, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.Connection, "execute", refused)
        for call in (lambda: store.read("k"), lambda: store.set("k", "w"),
                     lambda: store.read_many(["k"])):
            with pytest.raises(errors.DatastoreUnavailable) as info:
                call()
            assert str(error) in str(info.value)
            assert error.sqlstate in str(info.value)
    assert store.read("k") == "v"


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UndefinedColumn('column "vlaue" does not exist'),
        psycopg.errors.SyntaxError('syntax error at or near "SELET"'),
        psycopg.errors.UndefinedFunction("function jsonb_bild_object() does not exist"),
        psycopg.errors.InFailedSqlTransaction("current transaction is aborted"),
        psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_our_own_bugs_stay_loud(
    store: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    store.set("k", "v")

    def buggy(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(psycopg.Connection, "execute", buggy)
    with pytest.raises(type(error)):
        store.read("k")


def test_a_serialization_failure_is_retried_once(url: str, schema: str) -> None:
    """Under repeatable read, an update that waited for a row another
    transaction changed fails (40001); the statement alone was rolled
    back, so running it again is safe, and sees the new row."""
    store = PostgresDatastore(
        f"{url}&options=-c%20default_transaction_isolation%3Drepeatable%5C%20read"
    )
    try:
        store.set("k", {"n": 0})
        with admin() as conn:
            conn.execute("BEGIN")
            conn.execute(f'UPDATE "{schema}".{postgres.TABLE} SET updated_at = now()'
                         " WHERE key = 'k'")
            writer = threading.Thread(target=store.set, args=("k", {"n": 1}))
            writer.start()
            for _ in range(200):  # until the store's update waits for the row
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                    " AND wait_event_type = 'Lock'", (schema,)).fetchone()
                if waiting == (1,):
                    break
                time.sleep(0.02)
            conn.execute("COMMIT")
            writer.join(10)
        assert store.read("k") == {"n": 1}
    finally:
        store.close()


@pytest.mark.parametrize("error", [psycopg.errors.SerializationFailure,
                                   psycopg.errors.DeadlockDetected])
def test_a_rollback_again_is_unavailable_naming_it(
    store: Any, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    store.set("k", "v")
    attempts = []

    def rolled_back(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        attempts.append(query)
        raise error("could not serialize access due to concurrent update")

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.Connection, "execute", rolled_back)
        with pytest.raises(errors.DatastoreUnavailable, match=error.sqlstate or "?"):
            store.set("k", "w")
    assert len(attempts) == 2
    assert store.read("k") == "v"
