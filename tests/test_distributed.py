"""The distributed deployment of docs/deployment.rst, on loopback.

Two gunicorn workers (examples/distributed/gunicorn.conf.py) and two job
worker processes share PostgreSQL and a beanstalkd of the test's own; the
seed README's walkthrough runs through them.
"""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if "postgresql" not in DATASTORES or "beanstalkd" not in QUEUES:
        requires_ci_or_skip("the PostgreSQL and beanstalkd backends are not available")
    tmp = tmp_path_factory.mktemp("distributed")
    with DATASTORES["postgresql"](tmp) as datastore_url, QUEUES["beanstalkd"](tmp) as queue_url:
        port = free_port()
        env = dict(
            os.environ,
            FLASK_SPACEWALK_DATASTORE_URL=datastore_url,
            FLASK_SPACEWALK_QUEUE_URL=queue_url,
            FLASK_SPACEWALK_SERVICE_NAME="distributed",
            SPACEWALK_BIND=f"127.0.0.1:{port}",
        )
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


def test_seed_walkthrough_on_postgresql_and_beanstalkd(topology):
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
