"""Idempotency key records (runtime/keyrecords.py) in every datastore: our
backends' own (SQLite and PostgreSQL tables, Redis keys with an expiry), and
the fallback a ZeroG datastore gets (runtime/adapters.py) on each of them."""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES
from test_adapters import DATASTORE_METHODS, ZeroGOnly

from flask_spacewalk import make_datastore
from flask_spacewalk.backends import sqlite as sqlite_backend
from flask_spacewalk.runtime import keyrecords
from flask_spacewalk.runtime.adapters import ZeroGDatastore, as_datastore
from flask_spacewalk.runtime.keyrecords import (
    SWEEP_BATCH,
    KeyClaim,
    KeyRecord,
    fingerprint,
    record_key,
)

KEY = record_key("/examples", "order-1")
FP = fingerprint("/examples/fizz_buzz", {"n": 3})


@pytest.fixture(params=[(name, zerog) for name in DATASTORES for zerog in (False, True)],
                ids=lambda p: f"{p[0]}-zerog" if p[1] else p[0])  # fmt: skip
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each datastore, as it is and seen through ZeroG's methods only."""
    name, zerog = request.param
    with DATASTORES[name](tmp_path) as url:
        native = make_datastore(url)
        try:
            if zerog:
                yield ZeroGDatastore(ZeroGOnly(native, DATASTORE_METHODS))
            else:
                assert as_datastore(native) is native  # every ability of its own
                yield native
        finally:
            native.close()


def record(token: str = "t1", ttl: float = 60.0, uuid: str | None = None,
           fp: str = FP) -> KeyRecord:  # fmt: skip
    now = time.time()
    return KeyRecord(token, fp, now, now + ttl, uuid)


def test_a_claim_holds_the_key_until_released(store: Any) -> None:
    mine = record("t1")
    assert store.claim_key(KEY, mine) is None
    found = store.claim_key(KEY, record("t2"))
    assert found == mine and found.pending
    assert store.release_key(KEY, "t2") is False  # another claim's token
    assert store.claim_key(KEY, record("t3")) == mine
    assert store.release_key(KEY, "t1") is True
    assert store.release_key(KEY, "t1") is False
    assert store.claim_key(KEY, record("t4")) is None
    assert store.claim_key(KEY, record("t5")).token == "t4"


def test_a_completed_record_names_its_job(store: Any) -> None:
    mine = record("t1")
    store.claim_key(KEY, mine)
    done = KeyRecord("t1", FP, mine.claimed_at, mine.expires_at, "the-uuid")
    assert store.replace_key(KEY, "t2", KeyRecord("t2", FP, 0, 1, "other")) is False
    assert store.replace_key(KEY, "t1", done) is True
    found = store.claim_key(KEY, record("t3"))
    assert found == done and not found.pending and found.uuid == "the-uuid"
    assert store.replace_key(record_key("/examples", "never"), "t1", done) is False


def test_keys_are_scoped_by_root(store: Any) -> None:
    assert record_key("/a/examples", "k") != record_key("/b/examples", "k")
    assert store.claim_key(record_key("/a/examples", "k"), record("a")) is None
    assert store.claim_key(record_key("/b/examples", "k"), record("b")) is None
    assert len(record_key("/" + "x" * 1000, "y" * 255)) < 250  # Couchbase's longest key


def test_an_expired_record_counts_as_absent(store: Any) -> None:
    if type(store).__name__ == "RedisDatastore":  # Redis expires it by itself
        assert store.claim_key(KEY, record("t1", ttl=0.3)) is None
        assert store.claim_key(KEY, record("t2")).token == "t1"
        time.sleep(0.35)
        assert store.claim_key(KEY, record("t3")) is None
    else:  # the claim's own time says what has expired: no waiting
        now = time.time()
        assert store.claim_key(KEY, KeyRecord("t1", FP, now, now + 10)) is None
        assert store.claim_key(KEY, KeyRecord("t2", FP, now + 9.9, now + 20)).token == "t1"
        assert store.claim_key(KEY, KeyRecord("t3", FP, now + 10, now + 20)) is None
    assert store.claim_key(KEY, record("t4")).token == "t3"


def test_a_takeover_replaces_the_dead_claim_once(store: Any) -> None:
    dead = record("dead")
    store.claim_key(KEY, dead)
    # of two POSTs taking over one dead claim, one wins: the token is checked
    assert store.replace_key(KEY, "dead", record("a")) is True
    assert store.replace_key(KEY, "dead", record("b")) is False
    assert store.claim_key(KEY, record("c")).token == "a"


def test_key_claims_take_over_only_stale_pending_claims(store: Any) -> None:
    first = KeyClaim(store, "/examples", "order-1", FP, ttl=60)
    assert first.claim() is None
    waiting = KeyClaim(store, "/examples", "order-1", FP, ttl=60)
    found = waiting.claim()
    assert found is not None and found.token == first.token and found.pending
    time.sleep(0.15)
    late = KeyClaim(store, "/examples", "order-1", FP, ttl=60, takeover_after=0.1)
    assert late.claim() is None
    assert late.taken_over is not None and late.taken_over.token == first.token
    assert first.complete("first-uuid") is False  # its claim is gone
    assert first.release() is False
    assert late.complete("late-uuid") is True
    # a done record is never taken over, however old
    after = KeyClaim(store, "/examples", "order-1", FP, ttl=60, takeover_after=0)
    assert after.claim().uuid == "late-uuid"


def test_a_claim_must_hold_the_key_to_complete_it(store: Any) -> None:
    claim = KeyClaim(store, "/examples", "order-1", FP, ttl=60)
    with pytest.raises(RuntimeError, match="needs a successful claim"):
        claim.complete("u")


def test_one_of_many_concurrent_claims_wins(store: Any) -> None:
    start = threading.Barrier(16)
    results: list[KeyRecord | None] = []

    def claim(token: str) -> None:
        start.wait(timeout=10)
        results.append(store.claim_key(KEY, record(token)))

    threads = [threading.Thread(target=claim, args=(f"t{n}",)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [r for r in results if r is None]
    assert len(results) == 16 and len(winners) == 1
    (holder,) = {r.token for r in results if r is not None}
    assert store.claim_key(KEY, record("late")).token == holder


def test_a_value_that_is_no_record_is_claimed_over(tmp_path: Path) -> None:
    store = ZeroGDatastore(ZeroGOnly(make_datastore(f"sqlite:///{tmp_path / 'db'}"),
                                     DATASTORE_METHODS))  # fmt: skip
    store.set(KEY, "not a record")
    assert store.claim_key(KEY, record("t1")) is None
    assert store.claim_key(KEY, record("t2")).token == "t1"
    assert store.read(KEY)["token"] == "t1"  # a document of its own, expiry inside
    assert KeyRecord.from_value({"token": 1, "fingerprint": "f", "claimedAt": 0,
                                 "expiresAt": 1}) is None  # fmt: skip
    assert KeyRecord.from_value({"token": "t", "fingerprint": "f", "claimedAt": 0,
                                 "expiresAt": 1, "uuid": 5}) is None  # fmt: skip


def test_fingerprints_are_of_the_leaf_and_the_canonical_params() -> None:
    assert fingerprint("/r/a", {"x": 1, "y": [1, 2]}) == fingerprint("/r/a", {"y": [1, 2], "x": 1})
    assert fingerprint("/r/a", {"x": 1}) != fingerprint("/r/b", {"x": 1})
    assert fingerprint("/r/a", {"x": 1}) != fingerprint("/r/a", {"x": 1.5})
    assert fingerprint("/r/a", {"x": "\ud800"}).startswith("/r/a ")  # any text hashes
    assert KeyRecord("t", fingerprint("/r/a b", {}), 0, 1).leaf_path == "/r/a b"


# -- each backend's own storage ---------------------------------------------------


def count_records(store: Any) -> int:
    if isinstance(store, sqlite_backend.SqliteDatastore):
        with store._db.connect() as conn:
            return int(conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0])
    return int(store._connections.run(
        lambda conn: conn.execute(f"SELECT count(*) FROM {store.keys_table}").fetchone()[0]
    ))  # fmt: skip


@pytest.mark.parametrize("name", [name for name in DATASTORES if name != "redis"])
def test_expired_records_are_swept_a_batch_per_claim(name: str, tmp_path: Path) -> None:
    with DATASTORES[name](tmp_path) as url:
        store = make_datastore(url)
        try:
            past = time.time() - 10
            for n in range(SWEEP_BATCH + 10):
                key = record_key("/r", f"old-{n}")
                assert store.claim_key(key, KeyRecord("t", FP, past, past + 1)) is None
            assert count_records(store) == SWEEP_BATCH + 10
            # each claim deletes a batch, not more: never a long transaction
            store.claim_key(record_key("/r", "new-1"), record())
            assert count_records(store) == 10 + 1
            store.claim_key(record_key("/r", "new-2"), record())
            assert count_records(store) == 2
        finally:
            store.close()


def test_redis_records_expire_by_themselves(tmp_path: Path) -> None:
    if "redis" not in DATASTORES:
        pytest.skip("no Redis backend in this run")
    with DATASTORES["redis"](tmp_path) as url:
        store = make_datastore(url)
        try:
            store.claim_key(KEY, record(ttl=30))
            with store._server.connect() as client:
                assert 29_000 < client.pttl(store._keys + KEY) <= 30_000
                client.set(store._keys + KEY, "not json")
            assert store.claim_key(KEY, record("t2")) is None  # taken as expired
            assert store.replace_key(KEY, "t2", record("t3", ttl=0.05)) is True
            time.sleep(0.1)
            with store._server.connect() as client:
                assert client.exists(store._keys + KEY) == 0
                client.set(store._keys + KEY, "[1]")
            assert store.release_key(KEY, "t3") is False  # no record, no error
        finally:
            store.close()


def test_sqlite_files_of_version_4_gain_the_table(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = sqlite_backend.SqliteDatastore(path)
    store.set("k", "v")  # opens the file
    store.close()
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TABLE idempotency_keys")
        conn.execute("PRAGMA user_version = 4")
        conn.commit()
        store = sqlite_backend.SqliteDatastore(path)
        assert store.claim_key(KEY, record()) is None
        store.close()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_backend.SCHEMA_VERSION
        indexes = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'idempotency_keys'")}  # fmt: skip
        assert "idempotency_keys_expiry" in indexes
    finally:
        conn.close()


def test_postgresql_tables_of_version_2_gain_the_table(tmp_path: Path) -> None:
    if "postgresql" not in DATASTORES:
        pytest.skip("no PostgreSQL backend in this run")
    from flask_spacewalk.backends import postgres

    with DATASTORES["postgresql"](tmp_path) as url:
        store = make_datastore(url)
        store.set("k", "v")  # creates the tables
        schema = url.rpartition("schema=")[2]

        def downgrade(conn: Any) -> None:
            conn.execute(f'DROP TABLE "{schema}".{postgres.KEYS_TABLE}')
            conn.execute(f"COMMENT ON TABLE \"{schema}\".{postgres.TABLE}"
                         " IS 'flask_spacewalk schema 2'")  # fmt: skip

        store._connections.run(downgrade)
        store.close()
        store = make_datastore(url)
        try:
            assert store.claim_key(KEY, record()) is None
            assert store.read("k") == "v"
            comment = store._connections.run(lambda conn: conn.execute(
                "SELECT obj_description(to_regclass(%s), 'pg_class')", (store.table,)
            ).fetchone()[0])  # fmt: skip
            assert comment == f"flask_spacewalk schema {postgres.SCHEMA_VERSION}"
        finally:
            store.close()


def test_the_takeover_bound_is_read_when_a_claim_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = make_datastore(f"sqlite:///{tmp_path / 'db'}")
    monkeypatch.setattr(keyrecords, "TAKEOVER_AFTER", 0.5)
    assert KeyClaim(store, "/r", "k", FP, ttl=1).takeover_after == 0.5
    store.close()
