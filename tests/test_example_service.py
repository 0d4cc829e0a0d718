"""The example service under gunicorn, over real HTTP: the seed walkthrough."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from seed import call, free_port, seed_walkthrough, wait_finished

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service")
    port = free_port()
    env = dict(os.environ, FLASK_SPACEWALK_DATASTORE_URL=f"sqlite:///{tmp / 'jobs.sqlite3'}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "examples.app", "spacewalk", "serve",
         "--bind", f"127.0.0.1:{port}", "--web-workers", "2", "--processes", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/examples/branches", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the service did not start:\n" + proc.communicate()[0])
            time.sleep(0.1)
    yield base
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode == 0, out


def test_seed_walkthrough(service):
    seed_walkthrough(service)


def test_curl_without_content_type_is_415(service):
    status, _, body = call(
        service, "/examples/fizz_buzz/job", b'{"n":20}',
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415 and body["code"] == 415


def test_waste_time_reports_progress(service):
    status, _, body = call(
        service, "/examples/waste_time/job", {"delay": 1}, {"Content-Type": "application/json"}
    )
    assert status == 201
    assert wait_finished(service, body["uuid"]) == {"completeness": 1.0, "result": 200}
    info = call(service, f"/examples/info/{body['uuid']}")[2]
    assert len(info["events"]) > 2


def test_errors_are_json(service):
    assert call(service, "/examples/nope")[0:3:2] == (
        404, {"code": 404, "status": "Not Found", "message": "nothing at /examples/nope"}
    )
    status, headers, body = call(service, "/examples/leaves", method="DELETE")
    assert status == 405 and "GET" in headers["Allow"] and body["code"] == 405
