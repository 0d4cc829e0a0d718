"""Retention (runtime/retention.py, Lifecycle.purge and the backends'
delete_jobs): old ended jobs deleted with their side records, everything
else kept, on every datastore; the workers' periodic purge."""
from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES
from flask import Flask
from seed import backdate_job

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk import Spacewalk
from flask_spacewalk.errors import DatastoreUnavailable
from flask_spacewalk.runtime.cancel import cancel_key, request_cancel
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.records import utcnow
from flask_spacewalk.runtime.retention import (
    PURGEABLE,
    PeriodicPurge,
    PurgeCount,
    cutoff,
    purge,
)
from flask_spacewalk.runtime.worker_loop import Worker

EXAMPLE_JOBS = Path(__file__).resolve().parent.parent / "examples" / "jobs"
TYPES = frozenset({"examples_fizz_buzz", "examples_waste_time"})
#: Old: last written an hour ago; the purges below take ten minutes.
HOUR = 3600


@pytest.fixture(params=sorted(DATASTORES))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """The example tree on each datastore (a SQLite queue beside it)."""
    with DATASTORES[request.param](tmp_path) as url:
        queue_url = url if url.startswith("sqlite") else f"sqlite:///{tmp_path / 'queue.db'}"
        app = Flask(__name__, instance_path=str(tmp_path))
        app.config.update(SPACEWALK_DATASTORE_URL=url, SPACEWALK_QUEUE_URL=queue_url)
        Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
        yield app
        app.extensions["spacewalk"]["/examples"].close()


def connections(app: Flask) -> tuple[Any, Any]:
    return app.extensions["spacewalk"]["/examples"].connections()  # type: ignore[no-any-return]


def post(app: Flask, inline: bool) -> str:
    """A job: finished (run inline) or queued."""
    app.config["SPACEWALK_RUN_INLINE"] = inline
    response = app.test_client().post("/examples/fizz_buzz/job", json={"n": 3})
    assert response.status_code == 201, response.json
    return str(response.json["uuid"])  # type: ignore[index]


def change(app: Flask, uuid: str, **fields: Any) -> None:
    datastore, _ = connections(app)
    document = datastore.read(make_key(uuid))
    assert datastore.update(make_key(uuid), dict(document, **fields))


def make_jobs(app: Flask) -> dict[str, str]:
    """One job of each kind, by name; those named old_* were last written
    an hour ago."""
    datastore, queue = connections(app)
    jobs = {name: post(app, inline=True) for name in
            ("old_finished", "old_finished_2", "old_failed", "old_with_entry", "new_finished")}
    jobs.update({name: post(app, inline=False) for name in
                 ("old_cancelled", "old_queued", "old_running", "new_queued")})  # fmt: skip
    change(app, jobs["old_failed"], resultCode=500)
    client = app.test_client()
    assert client.post(f"/examples/cancel/{jobs['old_cancelled']}").status_code == 200
    # a request left behind (its worker died before settling it), and an
    # entry a worker died before deleting
    request_cancel(datastore, jobs["old_cancelled"])
    change(app, jobs["old_with_entry"], queueJobId=queue.put(jobs["old_with_entry"]))
    change(app, jobs["old_running"], running=True)
    for name, uuid in jobs.items():
        if name.startswith("old_"):
            backdate_job(datastore, uuid, HOUR)
    return jobs


OLD_ENDED = ("old_finished", "old_finished_2", "old_failed", "old_with_entry", "old_cancelled")


def run_purge(app: Flask, **options: Any) -> PurgeCount:
    datastore, queue = connections(app)
    registry = app.extensions["spacewalk"]["/examples"].registry
    total = PurgeCount()
    for count in purge(Lifecycle(datastore, queue, registry), TYPES, cutoff(600), **options):
        total += count
    return total


def documents(app: Flask, jobs: dict[str, str]) -> dict[str, Any]:
    datastore, _ = connections(app)
    return {name: datastore.read(make_key(uuid)) for name, uuid in jobs.items()}


def listed(app: Flask, query: str = "") -> list[str]:
    response = app.test_client().get(f"/examples/jobs?limit=100{query}")
    assert response.status_code == 200
    return [item["uuid"] for item in response.json["jobs"]]  # type: ignore[index]


def test_old_ended_jobs_go_with_their_side_records_and_the_rest_stays(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = make_jobs(app)
    datastore, queue = connections(app)
    entry = datastore.read(make_key(jobs["old_with_entry"]))["queueJobId"]
    before = documents(app, jobs)
    queries = []
    list_jobs = datastore.list_jobs
    monkeypatch.setattr(datastore, "list_jobs", lambda q: queries.append(q) or list_jobs(q))

    assert run_purge(app, batch=2) == PurgeCount(matched=5, deleted=5, skipped=0)
    # 2 + 2 + 1 old ended jobs: three reads of the status index, never a scan
    assert [(q.limit, q.statuses) for q in queries] == [(2, PURGEABLE)] * 3

    after = documents(app, jobs)
    assert {name for name, document in after.items() if document is None} == set(OLD_ENDED)
    assert {name: after[name] for name in jobs if name not in OLD_ENDED} == {
        name: before[name] for name in jobs if name not in OLD_ENDED
    }
    assert datastore.read(cancel_key(jobs["old_cancelled"])) is None
    assert not queue.has_entry(entry, jobs["old_with_entry"])
    client = app.test_client()
    for name in OLD_ENDED:
        uuid = jobs[name]
        for path in ("progress", "info", "data", "dump"):
            assert client.get(f"/examples/{path}/{uuid}").status_code == 404
        assert client.post(f"/examples/cancel/{uuid}").status_code == 404
        assert client.delete(f"/examples/job/{uuid}").status_code == 404
    kept = {jobs[name] for name in ("old_queued", "old_running", "new_queued", "new_finished")}
    assert set(listed(app)) == kept
    assert listed(app, "&status=finished") == [jobs["new_finished"]]
    assert listed(app, "&status=failed") == listed(app, "&status=cancelled") == []
    assert_indexed(datastore, kept)
    # Nothing is left for a second purge.
    assert run_purge(app) == PurgeCount()


def assert_indexed(datastore: Any, uuids: set[str]) -> None:
    """The listing's indexes name exactly ``uuids`` (read under the API:
    a Redis listing skips a member whose document is gone)."""
    from flask_spacewalk.backends.redis import RedisDatastore

    if not isinstance(datastore, RedisDatastore):
        return  # the SQL listing columns are the rows' own
    with datastore._server.connect() as client:
        sets = client.keys(datastore._jobs + "*")
        # jobs:version and jobs:counts are not listings
        members = {member.rpartition(" ")[2] for key in sets
                   if not key.endswith(("version", "counts"))
                   for member in client.zrange(key, 0, -1)}  # fmt: skip
        assert members == uuids
        failed = client.zrange(datastore._jobs + "status:failed", 0, -1)
    assert failed == []


def test_a_dry_run_deletes_nothing_and_a_status_narrows_the_purge(app: Flask) -> None:
    jobs = make_jobs(app)
    before = documents(app, jobs)
    assert run_purge(app, dry_run=True) == PurgeCount(matched=5)
    assert documents(app, jobs) == before

    assert run_purge(app, statuses=["failed", "cancelled"]) == PurgeCount(matched=2, deleted=2)
    gone = {name for name, document in documents(app, jobs).items() if document is None}
    assert gone == {"old_failed", "old_cancelled"}
    with pytest.raises(ValueError, match="only ended jobs are purged .* not queued"):
        run_purge(app, statuses=["finished", "queued"])


def test_a_job_that_changed_since_it_was_read_is_skipped_and_logged(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    retried, purged_elsewhere, old = (post(app, inline=True) for _ in range(3))
    datastore, _ = connections(app)
    for uuid in (retried, purged_elsewhere, old):
        backdate_job(datastore, uuid, HOUR)
    request_cancel(datastore, retried)
    delete_jobs = datastore.delete_jobs

    def racing(batch: Any) -> list[str]:
        # between the read and the delete: a retry makes one job live
        # again, another purge deletes one
        change(app, retried, resultCode=-1, completeness=0.0)
        datastore.delete(make_key(purged_elsewhere))
        return delete_jobs(batch)  # type: ignore[no-any-return]

    monkeypatch.setattr(datastore, "delete_jobs", racing)
    with caplog.at_level(logging.WARNING, "flask_spacewalk.runtime.retention"):
        assert run_purge(app) == PurgeCount(matched=3, deleted=1, skipped=2)
    assert datastore.read(make_key(old)) is None
    assert datastore.read(make_key(retried))["resultCode"] == -1
    assert datastore.read(cancel_key(retried)) is not None  # only a deleted job's goes
    warnings = sorted(r.getMessage() for r in caplog.records
                      if r.name == "flask_spacewalk.runtime.retention")  # fmt: skip
    assert warnings == sorted([
        f"job examples_fizz_buzz {retried}: not purged: it was written since it was read"
        " (retried or rerun? now queued)",
        f"job examples_fizz_buzz {purged_elsewhere}: not purged: it was deleted since it"
        " was read (by another purge?)",
    ])  # fmt: skip


# -- the workers' periodic purge ---------------------------------------------------


def worker(app: Flask, interval: float = 60.0) -> Worker:
    datastore, queue = connections(app)
    state = app.extensions["spacewalk"]["/examples"]
    made = Worker(state.registry, lambda: datastore, lambda name: queue, queue.queueName,
                  job_context=app.app_context, retention=600)  # fmt: skip
    made.PURGE_INTERVAL = interval
    return made


def old_jobs(app: Flask, count: int) -> list[str]:
    datastore, _ = connections(app)
    uuids = [post(app, inline=True) for _ in range(count)]
    for uuid in uuids:
        backdate_job(datastore, uuid, HOUR)
    return uuids


def stored(app: Flask, uuids: list[str]) -> list[str]:
    datastore, _ = connections(app)
    return [uuid for uuid in uuids if datastore.read(make_key(uuid)) is not None]


def test_one_worker_of_the_fleet_purges_once_an_interval(app: Flask) -> None:
    first = old_jobs(app, 2)
    a, b = worker(app), worker(app)
    a.run(burst=True)
    assert stored(app, first) == []
    datastore, queue = connections(app)
    lease, _ = datastore.read_with_cas(f"spacewalk_retention_{queue.queueName}")
    next_at = datetime.datetime.fromisoformat(lease["nextAt"])
    assert 55 < (next_at - utcnow()).total_seconds() <= 60
    assert lease["holder"].endswith(f":{os.getpid()}")

    second = old_jobs(app, 2)
    b.run(burst=True)  # the lease is a's for a minute
    a.run(burst=True)  # and a's next purge is a minute away
    assert stored(app, second) == second

    # A minute later, whichever worker looks first purges.
    datastore.update(f"spacewalk_retention_{queue.queueName}",
                     dict(lease, nextAt=utcnow().isoformat()))  # fmt: skip
    c = worker(app)
    c.run(burst=True)
    assert stored(app, second) == []


def test_the_holder_renews_its_lease_while_its_purge_runs(app: Flask) -> None:
    jobs = old_jobs(app, 3)
    datastore, queue = connections(app)
    registry = app.extensions["spacewalk"]["/examples"].registry
    lifecycle = Lifecycle(datastore, queue, registry)
    a, b = (PeriodicPurge(lifecycle, TYPES, 600, "q", interval=60, batch=1) for _ in range(2))
    nexts = []
    while a.step():  # one job a step, and b never starts meanwhile
        nexts.append(datastore.read("spacewalk_retention_q")["nextAt"])
        assert not b.step()
    assert len(stored(app, jobs)) == 0 and len(nexts) == 3
    assert nexts == sorted(nexts) and len(set(nexts)) == 3


def test_jobs_run_between_the_batches_of_a_purge(app: Flask) -> None:
    old_jobs(app, 3)
    post(app, inline=False)
    w = worker(app)
    w.PURGE_BATCH = 1
    steps: list[str] = []
    purge_step, run_claim = w._purge_step, w._run_claim
    w._purge_step = lambda: steps.append("purge") or purge_step()  # type: ignore[method-assign]
    w._run_claim = (  # type: ignore[method-assign]
        lambda claim, then_start: steps.append("job") or run_claim(claim, then_start))
    w.run(burst=True)
    # a batch, the queued job, the other batches, the end of the purge
    assert steps == ["purge", "job", "purge", "purge", "purge"]


def test_a_failed_purge_is_logged_and_the_worker_goes_on(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = old_jobs(app, 1)
    uuid = post(app, inline=False)
    datastore, _ = connections(app)

    def down(query: Any) -> Any:
        raise DatastoreUnavailable("the store is down")

    monkeypatch.setattr(datastore, "list_jobs", down)
    with caplog.at_level(logging.WARNING, "flask_spacewalk.runtime.retention"):
        worker(app).run(burst=True)
    assert "retention: purge stopped after deleting 0 job(s): the store is down" in caplog.text
    assert datastore.read(make_key(uuid))["resultCode"] == 200
    assert stored(app, old) == old


@pytest.mark.parametrize("retention", [0, -1.0, float("nan")])
def test_a_worker_refuses_a_retention_that_is_no_duration(retention: float) -> None:
    with pytest.raises(ValueError, match="retention must be > 0 seconds"):
        Worker(None, lambda: None, lambda name: None, "q", retention=retention)  # type: ignore
