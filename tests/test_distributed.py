"""The distributed deployments of docs/deployment.rst, on loopback.

Two gunicorn workers (examples/distributed/gunicorn.conf.py) and two job
worker processes share PostgreSQL alone (documents and queue, as
examples/distributed/spacewalk.env has it), or PostgreSQL and a beanstalkd
of the test's own; the seed README's walkthrough runs through them.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_support import DATASTORES, QUEUES
from conftest import requires_ci_or_skip
from seed import call, free_port, seed_walkthrough, wait_finished

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture(scope="module", params=["postgresql", "beanstalkd"],
                ids=["postgresql", "postgresql+beanstalkd"])
def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    queue = request.param
    if "postgresql" not in DATASTORES or queue not in QUEUES:
        requires_ci_or_skip(f"the PostgreSQL and {queue} backends are not available")
    tmp = tmp_path_factory.mktemp("distributed")
    with contextlib.ExitStack() as stack:
        datastore_url = stack.enter_context(DATASTORES["postgresql"](tmp))
        port = free_port()
        env = dict(
            os.environ,
            FLASK_SPACEWALK_DATASTORE_URL=datastore_url,
            FLASK_SPACEWALK_SERVICE_NAME="distributed",
            SPACEWALK_BIND=f"127.0.0.1:{port}",
        )
        env.pop("FLASK_SPACEWALK_QUEUE_URL", None)  # PostgreSQL's own by default
        if queue != "postgresql":
            env["FLASK_SPACEWALK_QUEUE_URL"] = stack.enter_context(QUEUES[queue](tmp))
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "examples/distributed/gunicorn.conf.py"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        workers = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "examples.app", "spacewalk", "worker",
             "--processes", "2"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/examples/branches", timeout=1).read()
                    break
                except OSError:
                    if web.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("gunicorn did not start:\n" + stop(web))
                    time.sleep(0.1)
            yield base
        finally:
            web_out, workers_out = stop(web), stop(workers)
        assert web.returncode == 0, web_out
        assert workers.returncode == 0, workers_out


def test_seed_walkthrough(topology):
    seed_walkthrough(topology)


def test_many_jobs_through_both_workers(topology):
    uuids = []
    for n in range(1, 21):
        status, _, body = call(topology, "/examples/fizz_buzz/job", {"n": n},
                               {"Content-Type": "application/json"})
        assert status == 201
        uuids.append(body["uuid"])
    for n, uuid in enumerate(uuids, 1):
        assert wait_finished(topology, uuid) == {"completeness": 1.0, "result": 200}
        assert len(call(topology, f"/examples/data/{uuid}")[2]["output"]) == n
