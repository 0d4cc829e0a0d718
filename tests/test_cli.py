"""The ``flask spacewalk`` command group (worker and serve run for real in
test_distributed.py and test_example_service.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from runtime_jobs import jobs as runtime_jobs

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk import Spacewalk

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_JOBS = ROOT / "examples" / "jobs"
RUNTIME_JOBS = Path(__file__).resolve().parent / "runtime_jobs"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path))
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    return app


def test_routes_lists_every_generated_endpoint(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["spacewalk", "routes"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "GET   /examples/leaves" in lines
    assert "GET   /examples/fizz_buzz/post-schema" in lines
    assert "POST  /examples/fizz_buzz/job" in lines
    assert "GET   /examples/progress/<uuid>" in lines
    assert "GET   /examples/jobs" in lines
    assert "POST  /examples/cancel/<uuid>" in lines
    assert "DELETE /examples/job/<uuid>" in lines
    assert "POST  /examples/retry/<uuid>" in lines
    assert "POST  /examples/jobs/retry" in lines
    assert "POST  /examples/jobs/cancel" in lines
    assert "GET   /examples/queues" in lines
    assert "POST  /examples/queues/<path:name>/pause" in lines
    assert "POST  /examples/queues/<path:name>/resume" in lines
    assert "GET   /examples/console" in lines
    assert "GET   /examples/console/<path:filename>" in lines
    assert not any("<path:rest>" in line for line in lines)
    # branches, leaves, and the two 400 routes of the branch; post-schema and
    # job of each leaf; progress, info, data, dump, jobs, cancel and its alias;
    # retry and the two bulk actions; the console's page and files; the
    # workers and their three actions; the queues, pause and resume; the
    # job's event stream
    assert "GET   /examples/events/<uuid>" in lines
    assert len(lines) == 4 + 2 * 2 + 4 + 3 + 3 + 2 + 4 + 3 + 1
    assert "POST  /examples/workers/<id>/drain" in lines


def test_worker_refuses_an_unknown_tree(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["spacewalk", "worker", "--tree", "/nope"])
    assert result.exit_code == 2
    assert "no tree at /nope" in result.output and "/examples" in result.output


def test_worker_needs_a_tree_when_the_trees_use_different_stores(
    app: Flask, tmp_path: Path
) -> None:
    Spacewalk(app, RUNTIME_JOBS, runtime_jobs.TestRoot,
              datastore_url=f"sqlite:///{tmp_path / 'other.sqlite3'}")
    result = app.test_cli_runner().invoke(args=["spacewalk", "worker"])
    assert result.exit_code == 2
    assert "choose one with --tree" in result.output
    assert "/examples" in result.output and "/rt" in result.output


def test_commands_need_a_tree(tmp_path: Path) -> None:
    from flask_spacewalk.cli import spacewalk_cli

    app = Flask(__name__, instance_path=str(tmp_path))
    app.cli.add_command(spacewalk_cli)
    result = app.test_cli_runner().invoke(args=["spacewalk", "routes"])
    assert result.exit_code == 2 and "no Spacewalk tree" in result.output


def post_jobs(app: Flask, count: int) -> list[str]:
    client = app.test_client()
    uuids = []
    for _ in range(count):
        response = client.post("/examples/fizz_buzz/job", json={"n": 3})
        assert response.status_code == 201, response.json
        uuids.append(response.json["uuid"])
    return uuids


def test_requeue_stale_enqueues_only_old_queued_jobs_without_an_entry(app: Flask) -> None:
    from seed import backdate_job

    kept, lost, unenqueued, recent = post_jobs(app, 4)
    state = app.extensions["spacewalk"]["/examples"]
    datastore, queue = state.connections()

    def document(uuid: str) -> dict:
        return datastore.read(f"zerog_job_{uuid}")

    for uuid in (lost, unenqueued, recent):
        assert queue.delete(document(uuid)["queueJobId"])
    # As POST marks a job whose queue refused it.
    key = f"zerog_job_{unenqueued}"
    datastore.update(key, dict(document(unenqueued), queueJobId=-1))
    for uuid in (kept, lost, unenqueued):
        backdate_job(datastore, uuid, 3600)
    before = {uuid: document(uuid) for uuid in (kept, lost, unenqueued, recent)}
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["spacewalk", "requeue", "--stale", "10m", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert sorted(line.split()[2] for line in lines[:-1]) == sorted([lost, unenqueued])
    assert f"would requeue {unenqueued} examples_fizz_buzz" in dry.output
    assert "queueJobId -1" in dry.output and "is gone" in dry.output
    assert lines[-1] == "2 stale queued job(s) found; dry run, nothing requeued"
    assert {uuid: document(uuid) for uuid in before} == before

    done = runner.invoke(args=["spacewalk", "requeue", "--stale", "600"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[-1] == "2 stale queued job(s) found, 2 requeued"
    for uuid in (lost, unenqueued):
        new_id = document(uuid)["queueJobId"]
        assert f"requeued {uuid} examples_fizz_buzz" in done.output
        assert f"as entry {new_id}" in done.output
        assert queue.has_entry(new_id, uuid)
    assert document(kept) == before[kept] and document(recent) == before[recent]
    # Run again: every old job has its entry now, none is queued twice.
    again = runner.invoke(args=["spacewalk", "requeue", "--stale", "10m"])
    assert again.output == "0 stale queued job(s) found, 0 requeued\n"
    assert queue.stats_tube()["current-jobs-ready"] == 3


@pytest.mark.parametrize("age", ["", "10x", "-5m", "nan", "inf", "m"])
def test_requeue_refuses_a_bad_age(app: Flask, age: str) -> None:
    result = app.test_cli_runner().invoke(args=["spacewalk", "requeue", "--stale", age])
    assert result.exit_code == 2
    assert "is not an age such as 90s, 15m, 12h, 7d or 600" in result.output


def test_requeue_needs_an_age(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["spacewalk", "requeue"])
    assert result.exit_code == 2 and "--stale" in result.output


def test_requeue_reports_an_unreachable_queue(tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, queue_url="redis://127.0.0.1:1/0")
    # Stored, then marked queueJobId -1 when the queue refused it.
    assert app.test_client().post("/examples/fizz_buzz/job", json={}).status_code == 503
    result = app.test_cli_runner().invoke(args=["spacewalk", "requeue", "--stale", "0"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "unavailable" in result.output


# -- purge -------------------------------------------------------------------------


def test_purge_deletes_old_ended_jobs_and_prints_the_count(app: Flask) -> None:
    from seed import backdate_job

    app.config["SPACEWALK_RUN_INLINE"] = True
    finished, failed, recent = post_jobs(app, 3)
    app.config["SPACEWALK_RUN_INLINE"] = False
    [queued] = post_jobs(app, 1)
    state = app.extensions["spacewalk"]["/examples"]
    datastore, _ = state.connections()
    key = f"zerog_job_{failed}"
    datastore.update(key, dict(datastore.read(key), resultCode=500))
    for uuid in (finished, failed, queued):
        backdate_job(datastore, uuid, 8 * 86400)
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["spacewalk", "purge", "--older-than", "7d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would delete 2 job(s) last written before ")
    assert dry.output.endswith(" UTC (cancelled, failed, finished); dry run, nothing deleted\n")
    assert all(datastore.read(f"zerog_job_{u}") for u in (finished, failed, recent, queued))

    only = runner.invoke(args=["spacewalk", "purge", "--older-than", "604800",
                               "--status", "failed", "--status", "cancelled"])  # fmt: skip
    assert only.exit_code == 0, only.output
    assert only.output.startswith("deleted 1 job(s) last written before ")
    assert only.output.endswith(" UTC (cancelled, failed); 0 skipped\n")
    assert datastore.read(f"zerog_job_{failed}") is None

    rest = runner.invoke(args=["spacewalk", "purge", "--older-than", "7d",
                               "--status", "finished,Failed, cancelled"])  # fmt: skip
    assert rest.exit_code == 0, rest.output
    assert rest.output.startswith("deleted 1 job(s)")
    assert app.test_client().get(f"/examples/progress/{finished}").status_code == 404
    assert datastore.read(f"zerog_job_{recent}") and datastore.read(f"zerog_job_{queued}")


@pytest.mark.parametrize(("args", "message"), [
    (["--older-than", "soon"], "'soon' is not an age such as 90s, 15m, 12h, 7d or 600"),
    (["--older-than", "-7d"], "is not an age such as"),
    ([], "Missing option '--older-than'"),
    (["--older-than", "7d", "--status", "queued"],
     "queued jobs are never purged: only ended ones (finished, failed, cancelled)"),
    (["--older-than", "7d", "--status", "finished,running"], "running jobs are never purged"),
    (["--older-than", "7d", "--status", "done"],
     "'done' is not a status to purge; choose from finished, failed, cancelled"),
    (["--older-than", "7d", "--status", "finished,"], "'' is not a status to purge"),
])  # fmt: skip
def test_purge_refuses_bad_values(app: Flask, args: list[str], message: str) -> None:
    result = app.test_cli_runner().invoke(args=["spacewalk", "purge", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_purge_reports_an_unreachable_datastore(tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, datastore_url="redis://127.0.0.1:1/0",
              queue_url=f"sqlite:///{tmp_path / 'queue.db'}")  # fmt: skip
    result = app.test_cli_runner().invoke(args=["spacewalk", "purge", "--older-than", "1d"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "unavailable" in result.output
    assert "(deleted 0 job(s) before)" in result.output


def test_the_worker_commands_take_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_spacewalk import cli

    captured: dict = {}
    monkeypatch.setattr(cli, "run_workers", lambda registry, **kw: captured.update(kw) or 0)
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SPACEWALK_RETENTION"] = "12h"
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    result = app.test_cli_runner().invoke(args=["spacewalk", "worker"])
    assert result.exit_code == 0, result.output
    assert captured["retention"] == 43200.0
