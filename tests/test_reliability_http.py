"""The web tier under load, restarts and bad clients (issue 6, items 2-3).

gunicorn with 4 sync workers serves ``examples.app`` on SQLite beside two
job worker processes. 16 client threads POST 4,000 jobs in all and poll
progress; every uuid answered 201 must be unique, stored and finish. Then
the same while gunicorn's workers are replaced (SIGHUP to the arbiter,
SIGTERM to single workers). Bad clients speak raw HTTP and get the answers
of SPEC section 3, while the web workers' memory stays bounded.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from reliability_support import (
    JOB_BODY,
    JSON,
    Restarter,
    WebService,
    check_finished,
    chunked,
    get_head,
    http_load,
    post_head,
    raw_exchange,
    request,
    rss_kib,
    web_service,
)

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

POSTS = 4000
RESTART_POSTS = 2000
CLIENTS = 16
JOB = "/examples/fizz_buzz/job"
#: How much a web worker's resident set may grow over a round of every bad
#: client (3 times) and 2,000 404s, after a warm-up round. The largest body
#: the app holds is the 1 MiB limit (+1 byte); keeping anything per request
#: (a body, a traceback, a cached 404) over these 2,000+ requests, or one 10
#: MB body, would pass it; allocator noise and gunicorn's own buffers do not
#: come near it.
RSS_GROWTH_KIB = 8 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebService]:
    with web_service(tmp_path_factory.mktemp("reliability-http")) as running:
        yield running


def test_4000_posts_from_16_clients_lose_nothing(
    service: WebService, record_property: pytest.RecordProperty
) -> None:
    report = http_load(service, posts=POSTS, clients=CLIENTS)
    print(report.summary("HTTP load"))
    record_property("posts_per_second", round(POSTS / report.elapsed))
    record_property("elapsed", round(report.elapsed, 1))
    assert report.problems == []
    assert dict(report.statuses) == {201: POSTS}, "no 5xx, no failed request"
    assert not report.failures
    assert len(set(report.created)) == POSTS
    assert sum(report.poll_statuses.values()) >= POSTS // 4 - CLIENTS


def test_no_201_job_is_lost_while_web_workers_restart(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    with web_service(tmp_path) as restarting:
        restarter = Restarter(restarting)
        # Half the POSTs: each SIGHUP boots four new workers, seconds of CPU
        # on a busy CI machine, and the point is the restarts, not the volume.
        report = http_load(restarting, posts=RESTART_POSTS, clients=CLIENTS, disrupt=restarter,
                           disrupt_every=400)
        print(report.summary("HTTP load with restarts"), dict(restarter.counts))
        record_property("restarts", dict(restarter.counts))
        record_property("failed_requests", dict(report.failures))
        assert report.problems == []
        assert restarter.counts["SIGHUP arbiter"] >= 1 and restarter.counts["SIGTERM worker"] >= 1
        # A request may fail cleanly (a refused or reset connection, a JSON
        # 503), never with another 5xx nor with a 201 whose job is lost.
        assert set(report.statuses) <= {201, 503}
        assert set(report.failures) <= {
            "ConnectionResetError", "ConnectionRefusedError", "RemoteDisconnected",
            "BrokenPipeError",
        }
        assert sum(report.statuses.values()) + sum(report.failures.values()) == RESTART_POSTS
        web_code, workers_code = restarting.stop()
    assert (web_code, workers_code) == (0, 0)


# -- bad clients --------------------------------------------------------------

Answer = tuple[Any, bytes]


def _bad_clients(port: int) -> dict[str, tuple[Callable[[], Answer], Any]]:
    """name -> (send it, the expected status; None: no answer to hear)."""
    ten_mb = 10 * 2**20
    deep_array = b"[" * 100_000
    deep_object = b'{"n": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001
    bad_utf8 = b'{"n": "\xff"}'
    dots = "/examples/progress/..%2F..%2Fetc%2Fpasswd"

    def raw(head: bytes, body: bytes = b"", **kwargs: Any) -> Callable[[], Answer]:
        return lambda: raw_exchange(port, head, body, **kwargs)

    return {
        # 8 bytes, one every 50 ms: a slow client is served, not dropped.
        "slow body": (raw(post_head(JOB, 8), b'{"n": 3}', chunk=1, pause=0.05), 201),
        "cut-off body, then close": (
            raw(post_head(JOB, 100), b'{"n": 3', close_after_send=True), None),
        "Content-Length too big (half-closed)": (
            raw(post_head(JOB, 100), b'{"n": 3}', shut_write=True), 400),
        "Content-Length too small": (raw(post_head(JOB, 5), b'{"n": 30}'), 400),
        "Content-Length too small, valid prefix": (
            raw(post_head(JOB, 8), b'{"n": 3}garbage'), 201),
        "10 MB body": (raw(post_head(JOB, ten_mb), b" " * ten_mb), 413),
        "10 MB chunked body": (raw(post_head(JOB, None), chunked(b" " * ten_mb)), 413),
        "deeply nested array": (raw(post_head(JOB, len(deep_array)), deep_array), 400),
        "deeply nested object": (raw(post_head(JOB, len(deep_object)), deep_object), 400),
        "invalid UTF-8": (raw(post_head(JOB, len(bad_utf8)), bad_utf8), 400),
        "unknown method": (raw(get_head("/examples/leaves", "BREW")), 405),
        "'..' in the path": (raw(get_head("/examples/../examples/leaves")), 404),
        "'..' and %2F in a uuid": (raw(get_head(dots)), 404),
        # WSGI servers decode %2F in PATH_INFO: the same resource as /.
        "%2F for the slash": (raw(get_head("/examples%2Fleaves")), 200),
        "4,000-character uuid": (raw(get_head("/examples/progress/" + "a" * 4000)), 404),
        # Past gunicorn's request-line limit (4094): it answers, not the app.
        "10,000-character uuid": (raw(get_head("/examples/progress/" + "a" * 10_000)), 414),
    }


def _check(name: str, answer: Answer, expected: Any) -> None:
    status, payload = answer
    assert status == expected, (name, status, payload[:300])
    if status is not None and status != 414:
        body = json.loads(payload)
        if status >= 400:
            assert body["code"] == status, (name, body)


def _flood_404(port: int, count: int, threads: int = 8) -> list[int]:
    statuses: list[int] = []

    def client(n: int) -> None:
        for _ in range(n):
            path = f"/examples/progress/{uuid_module.uuid4()}"
            statuses.append(request(port, "GET", path)[0])

    workers = [threading.Thread(target=client, args=(count // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def _stored_jobs(service: WebService) -> int:
    # Read-only: the store is made by the first process to use it (a job
    # worker may still be starting), never by this count.
    if not service.db_path.exists():
        return 0
    with contextlib.closing(
        sqlite3.connect(f"file:{service.db_path}?mode=ro", uri=True)
    ) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'documents'").fetchone():
            return 0
        # jobs only: the store also holds records of its own (the run
        # durations the job workers flush on a timer, say)
        return int(db.execute(
            "SELECT count(*) FROM documents WHERE key LIKE 'zerog\\_job\\_%' ESCAPE '\\'"
        ).fetchone()[0])


def test_bad_clients_get_the_right_answers_in_bounded_memory(
    service: WebService, record_property: pytest.RecordProperty
) -> None:
    cases = _bad_clients(service.port)
    stored = _stored_jobs(service)
    created = 0
    for name, (send, expected) in cases.items():  # warm-up: imports, caches
        _check(name, send(), expected)
        created += expected == 201
    assert set(_flood_404(service.port, 200)) == {404}
    pids = sorted(service.web_pids())
    before = {pid: rss_kib(pid) for pid in pids}

    for _ in range(3):
        for name, (send, expected) in cases.items():
            _check(name, send(), expected)
            created += expected == 201
    assert set(_flood_404(service.port, 2000)) == {404}

    assert sorted(service.web_pids()) == pids, "a web worker died"
    after = {pid: rss_kib(pid) for pid in pids}
    growth = {pid: after[pid] - before[pid] for pid in pids}
    print(f"bad clients: web worker RSS KiB before {before}, after {after}, growth {growth}")
    record_property("rss_growth_kib", growth)
    assert max(growth.values()) <= RSS_GROWTH_KIB, growth
    # Only the complete, valid requests made jobs; the service still works.
    assert _stored_jobs(service) == stored + created
    status, _, body = request(service.port, "POST", JOB, JOB_BODY, JSON)
    assert status == 201
    assert check_finished(service.datastore_url, [body["uuid"]], deadline=60) == []
