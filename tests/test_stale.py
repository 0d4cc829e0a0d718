"""Requeueing queued jobs whose queue entry was lost (runtime/stale.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from backend_beanstalkd import running_beanstalkd
from seed import backdate_job

from flask_spacewalk import make_queue
from flask_spacewalk.runtime.stale import requeue_stale
from flask_spacewalk.runtime.worker_loop import Worker


def post(app: Any, count: int) -> list[str]:
    client = app.test_client()
    responses = [client.post("/examples/fizz_buzz/job", json={"n": 3}) for _ in range(count)]
    assert all(r.status_code == 201 for r in responses)
    return [r.json["uuid"] for r in responses]


def test_jobs_are_read_from_the_listing_index_in_batches(make_app, monkeypatch) -> None:
    app = make_app()
    uuids = post(app, 7)
    state = app.extensions["spacewalk"]["/examples"]
    datastore, queue = state.connections()
    for uuid in uuids:
        queue.delete(datastore.read(f"zerog_job_{uuid}")["queueJobId"])
        backdate_job(datastore, uuid, 3600)
    queries = []
    list_jobs = datastore.list_jobs
    monkeypatch.setattr(datastore, "list_jobs", lambda q: queries.append(q) or list_jobs(q))
    found = list(requeue_stale(datastore, queue, state.registry, 60, batch=3))
    assert sorted(job.uuid for job in found) == sorted(uuids)
    assert all(job.new_id is not None for job in found)
    # 3 + 3 + 1 jobs: three reads of at most 3 queued jobs, never a scan.
    assert [(q.limit, q.statuses) for q in queries] == [(3, frozenset({"queued"}))] * 3


def test_a_delay_keeps_what_is_left_of_it(make_app) -> None:
    app = make_app()
    [uuid] = post(app, 1)
    state = app.extensions["spacewalk"]["/examples"]
    datastore, queue = state.connections()
    key = f"zerog_job_{uuid}"
    document = datastore.read(key)
    queue.delete(document["queueJobId"])
    datastore.update(key, dict(document, queueKwargs={"delay": 7200, "priority": 5}))
    backdate_job(datastore, uuid, 3600)  # queued an hour ago to run in two
    [job] = requeue_stale(datastore, queue, state.registry, 60)
    stats = make_queue(state.settings.queue_url, queue.queueName,
                       instance_path=state.instance_path)
    entry_stats = stats.stats_tube()
    stats.close()
    assert entry_stats["current-jobs-delayed"] == 1
    kwargs = datastore.read(key)["queueKwargs"]
    assert kwargs["priority"] == 5 and 3500 < kwargs["delay"] <= 3600


def test_beanstalkd_restarted_without_a_binlog(make_app, tmp_path: Path) -> None:
    with running_beanstalkd() as server:
        app = make_app(SPACEWALK_QUEUE_URL=server.url)
        state = app.extensions["spacewalk"]["/examples"]
        lost = post(app, 3)
        server.stop()
        server.start()  # same port, no -b: every entry is gone, ids start at 1
        other = make_queue(server.url, "spacewalk_jobs")
        reused = other.put("not one of ours")
        other.close()
        datastore, queue = state.connections()
        queue.close()  # as in the fresh process an operator runs the command in
        assert reused == datastore.read(f"zerog_job_{lost[0]}")["queueJobId"]
        for uuid in lost:
            backdate_job(datastore, uuid, 3600)

        result = app.test_cli_runner().invoke(args=["spacewalk", "requeue", "--stale", "15m"])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == "3 stale queued job(s) found, 3 requeued"
        again = app.test_cli_runner().invoke(args=["spacewalk", "requeue", "--stale", "15m"])
        assert again.output == "0 stale queued job(s) found, 0 requeued\n"

        worker = Worker(state.registry, lambda: datastore, lambda name: queue,
                        "spacewalk_jobs", job_context=app.app_context)
        worker.run(burst=True)
        for uuid in lost:
            assert datastore.read(f"zerog_job_{uuid}")["resultCode"] == 200
