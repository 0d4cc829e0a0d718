"""The example service under gunicorn, over real HTTP: the seed walkthrough."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

SEED_LEAVES = [
    {
        "path": "/examples/waste_time",
        "jobType": "examples_waste_time",
        "name": "Waste Time Job",
        "description": "Randomly logs while wasting time",
    },
    {
        "path": "/examples/fizz_buzz",
        "jobType": "examples_fizz_buzz",
        "name": "FizzBuzz Job",
        "description": "Solve FizzBuzz with settable n, fizz & buzz divisors",
    },
]
SEED_OUTPUT = [
    "1", "2", "Fizz", "4", "Buzz", "Fizz", "7", "8", "Fizz", "Buzz",
    "11", "Fizz", "13", "14", "FizzBuzz", "16", "17", "Fizz", "19", "Buzz",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(base: str, path: str, body: Any = None, headers: dict | None = None,
         method: str | None = None) -> tuple[int, dict, Any]:
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


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


def wait_finished(base: str, uuid: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, _, progress = call(base, f"/examples/progress/{uuid}")
        assert status == 200
        if progress["result"] != -1:
            return progress
        time.sleep(0.05)
    pytest.fail(f"job {uuid} did not finish")


def test_seed_walkthrough(service):
    assert call(service, "/examples/branches")[2] == []
    assert call(service, "/examples/leaves")[2] == SEED_LEAVES
    schema = call(service, "/examples/fizz_buzz/post-schema")[2]["postSchema"]
    assert schema["$ref"] == "#/definitions/Params"
    properties = schema["definitions"]["Params"]["properties"]
    assert {name: p["default"] for name, p in properties.items()} == {
        "n": 50, "fizzDivisor": 3, "buzzDivisor": 5
    }
    assert all(p["type"] == "integer" for p in properties.values())

    status, headers, body = call(
        service, "/examples/fizz_buzz/job", {"n": 20}, {"Content-Type": "application/json"}
    )
    assert status == 201 and set(body) == {"uuid"}
    uuid = body["uuid"]
    assert headers["Location"] == f"/examples/progress/{uuid}"

    assert wait_finished(service, uuid) == {"completeness": 1.0, "result": 200}
    info = call(service, f"/examples/info/{uuid}")[2]
    assert [e["msg"] for e in info["events"]] == [f"starting examples_fizz_buzz job {uuid}"]
    assert info["errors"] == [] and info["warnings"] == []
    assert call(service, f"/examples/data/{uuid}")[2] == {"output": SEED_OUTPUT}
    dump = call(service, f"/examples/dump/{uuid}?showLogs=true")[2]
    assert dump["uuid"] == uuid and dump["resultCode"] == 200 and dump["events"]
    assert "events" not in call(service, f"/examples/dump/{uuid}")[2]


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
