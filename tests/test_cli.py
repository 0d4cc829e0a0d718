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
    assert "GET   /examples/console" in lines
    assert "GET   /examples/console/<path:filename>" in lines
    assert not any("<path:rest>" in line for line in lines)
    # branches, leaves, and the two 400 routes of the branch; post-schema and
    # job of each leaf; progress, info, data, dump, jobs, cancel and its alias;
    # the console's page and files
    assert len(lines) == 4 + 2 * 2 + 4 + 3 + 2


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
