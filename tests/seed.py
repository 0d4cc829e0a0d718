"""What the seed README shows, and helpers to walk through it over HTTP."""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

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
# The seed's schema with "type": "integer" (SPEC section 3) and the
# validators examples/jobs/examples.py adds.
SEED_POST_SCHEMA = {
    "postSchema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {
            "Params": {
                "properties": {
                    "buzzDivisor": {
                        "title": "buzzDivisor",
                        "type": "integer",
                        "minimum": 1,
                        "default": 5,
                    },
                    "fizzDivisor": {
                        "title": "fizzDivisor",
                        "type": "integer",
                        "minimum": 1,
                        "default": 3,
                    },
                    "n": {
                        "title": "n",
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 100000,
                        "default": 50,
                    },
                },
                "type": "object",
                "additionalProperties": False,
            }
        },
        "$ref": "#/definitions/Params",
    }
}
SEED_OUTPUT = [
    "1", "2", "Fizz", "4", "Buzz", "Fizz", "7", "8", "Fizz", "Buzz",
    "11", "Fizz", "13", "14", "FizzBuzz", "16", "17", "Fizz", "19", "Buzz",
]  # fmt: skip

#: Every field of a ZeroG job document (SPEC section 5); queueName only once
#: the job was put on a queue.
ZEROG_FIELDS = {
    "documentType", "jobType", "schemaVersion", "cas", "createdAt", "updatedAt",
    "uuid", "logId", "queueName", "queueKwargs", "queueJobId", "events", "errors",
    "warnings", "running", "errorCount", "completeness", "tickcount", "tickval",
    "resultCode",
}  # fmt: skip
LOG_FIELDS = {"events", "errors", "warnings"}


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


def wait_finished(base: str, uuid: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, _, progress = call(base, f"/examples/progress/{uuid}")
        assert status == 200
        if progress["result"] != -1:
            return progress
        time.sleep(0.05)
    pytest.fail(f"job {uuid} did not finish")


def seed_walkthrough(service: str) -> None:
    """Every request of the seed README, against a running service."""
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




def backdate_job(datastore: Any, uuid: str, seconds: float) -> None:
    """Make a stored job look created and last written ``seconds`` ago."""
    import datetime

    key = f"zerog_job_{uuid}"
    document, cas = datastore.read_with_cas(key)
    then = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    then -= datetime.timedelta(seconds=seconds)
    document.update(createdAt=then.isoformat(), updatedAt=then.isoformat())
    assert datastore.update_with_cas(key, document, cas)[0]
