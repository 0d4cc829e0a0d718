"""ZeroG wire compatibility: the document, the queue body, the method names.

See docs/zerog.rst. Each test runs on every datastore and queue pairing the
machine offers (SQLite always; PostgreSQL, Redis, beanstalkd when their
backends and services are there).
"""
from __future__ import annotations

import json
import re
import uuid as uuid_module
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, QUEUES
from marshmallow import fields
from runtime_jobs.jobs import FailJob, ReturnsJob

from flask_spacewalk import BaseJobSchema, make_datastore, make_queue
from flask_spacewalk.runtime.job import RuntimeJob, make_key
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.worker_loop import Worker

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?$")
SERVICE_QUEUE = "zerog_jobs"

#: Pairings to run: every datastore with SQLite's queue, every queue with
#: SQLite's datastore, and each remote datastore with each remote queue.
PAIRS = sorted(
    {(d, "sqlite") for d in DATASTORES}
    | {("sqlite", q) for q in QUEUES}
    | {(d, q) for d in DATASTORES for q in QUEUES if "sqlite" not in (d, q)}
)


@pytest.fixture(params=PAIRS, ids=[f"{d}+{q}" for d, q in PAIRS])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    datastore_name, queue_name = request.param
    with DATASTORES[datastore_name](tmp_path) as datastore_url:
        if queue_name == datastore_name:
            yield datastore_url, datastore_url
            return
        with QUEUES[queue_name](tmp_path) as queue_url:
            yield datastore_url, queue_url


@pytest.fixture
def backends(urls: tuple[str, str]) -> Iterator[tuple[Any, Any]]:
    # As a ZeroG server builds them: makeDatastore() and makeQueue(name).
    make_zerog_datastore = partial(make_datastore, urls[0])
    make_zerog_queue = partial(make_queue, urls[1])
    datastore, queue = make_zerog_datastore(), make_zerog_queue(SERVICE_QUEUE)
    yield datastore, queue
    for obj in (datastore, queue):
        obj.close()


def check_zerog_document(document: dict[str, Any], job_type: str, uuid: str) -> None:
    assert document["documentType"] == "zerog_job"
    assert document["jobType"] == job_type
    assert document["schemaVersion"] == 1.0 and isinstance(document["schemaVersion"], float)
    assert ISO.match(document["createdAt"]) and ISO.match(document["updatedAt"])
    assert isinstance(document["cas"], int)
    assert document["uuid"] == uuid and document["logId"] == f"{job_type}_{uuid}"
    assert document["queueName"] == SERVICE_QUEUE
    assert isinstance(document["queueKwargs"], dict)
    assert isinstance(document["queueJobId"], int) and document["queueJobId"] > 0
    for name in ("events", "warnings", "errors"):
        for record in document[name]:
            assert isinstance(record["msg"], str) and ISO.match(record["timeStamp"])
            expected = {"msg", "timeStamp"} | ({"errorCode"} if name == "errors" else set())
            assert set(record) == expected
    assert all(isinstance(e["errorCode"], int) for e in document["errors"])
    assert isinstance(document["running"], bool)
    assert isinstance(document["errorCount"], int)
    for name in ("completeness", "tickcount", "tickval"):
        assert isinstance(document[name], float), name
    assert isinstance(document["resultCode"], int)


def test_documents_written_here_have_zerog_fields(backends):
    datastore, queue = backends
    job = FailJob(datastore, queue, failures=1)
    job.enqueue()
    worker = Worker(JobRegistry([FailJob]), lambda: datastore, lambda n: queue, SERVICE_QUEUE)
    worker.ERROR_RETRY_DELAY = 0.0
    worker.run(burst=True)
    document = datastore.read(make_key(job.uuid))
    check_zerog_document(document, "rt_fail", job.uuid)
    assert document["resultCode"] == 200 and document["errors"][0]["errorCode"] == 500
    expected = {
        "documentType", "jobType", "schemaVersion", "cas", "createdAt", "updatedAt", "uuid",
        "logId", "queueName", "queueKwargs", "queueJobId", "events", "errors", "warnings",
        "running", "errorCount", "completeness", "tickcount", "tickval", "resultCode",
        "failures", "runs", "pids",
    }
    assert set(document) == expected


def test_a_document_written_by_another_program_runs_here(backends):
    datastore, queue = backends
    uuid = str(uuid_module.uuid4())
    # Plain JSON as ZeroG's Couchbase writer leaves it: int completeness,
    # no fraction of a second, no queueName, a 30-day ttr.
    datastore.set(make_key(uuid), {
        "documentType": "zerog_job", "jobType": "rt_returns", "schemaVersion": 1.0,
        "createdAt": "2021-11-20T02:55:10", "updatedAt": "2021-11-20T02:55:10.967790",
        "cas": 0, "uuid": uuid, "logId": f"rt_returns_{uuid}",
        "queueKwargs": {"ttr": 2592000}, "queueJobId": 0, "events": [], "errors": [],
        "warnings": [], "running": False, "errorCount": 0, "completeness": 0,
        "tickcount": 0.0, "tickval": 0.001, "resultCode": -1, "value": [201, None],
        "runs": 0, "pids": [],
    })
    queue.put(uuid, ttr=2592000)  # what ZeroG's enqueue sends: json.dumps(uuid)
    worker = Worker(JobRegistry([ReturnsJob]), lambda: datastore, lambda n: queue, SERVICE_QUEUE)
    worker.run(burst=True)
    document = datastore.read(make_key(uuid))
    assert (document["resultCode"], document["completeness"], document["runs"]) == (201, 1.0, 1)


class ZeroGStyleSchema(BaseJobSchema):
    greeting = fields.String()


class ZeroGStyleJob(RuntimeJob):
    """A job written as for ZeroG: JOB_TYPE and SCHEMA set by hand."""

    JOB_TYPE = "zerog_hello"
    SCHEMA = ZeroGStyleSchema

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.greeting = kwargs.get("greeting", "")

    def run(self) -> Any:
        self.job_log_info(f"hello {self.greeting}")
        self.set_completeness(0.5)
        return 200, None


def zerog_worker_pass(make_datastore_: Any, make_queue_: Any, classes: list[type]) -> int:
    """One pass of a worker written the way ZeroG's BaseWorker is.

    It uses only what ZeroG's worker calls: queue.reserve(timeout=0), the
    JSON body, entry.stats()/release()/delete(), datastore.read_with_cas,
    the job class's SCHEMA().load, run(), record_result.
    """
    datastore, queue = make_datastore_(), make_queue_(SERVICE_QUEUE)
    registry = {cls.JOB_TYPE: cls for cls in classes}
    done = 0
    try:
        while True:
            entry = queue.reserve(timeout=0)
            if entry is None:
                return done
            uuid = json.loads(entry.body)
            data, cas = datastore.read_with_cas(f"zerog_job_{uuid}")
            job_class = registry.get(data and data.get("jobType"))
            if job_class is None:
                entry.release(delay=30)
                continue
            data["cas"] = cas
            job = job_class(datastore, queue, None, **job_class.SCHEMA().load(data))
            job.update_attrs(running=True)
            value = job.run()
            result = int(value[0]) if isinstance(value, (tuple, list)) else int(value)
            job.update_attrs(running=False)
            entry.delete()
            job.record_result(result)
            done += 1
    finally:
        datastore.close()
        queue.close()


def test_a_zerog_style_worker_runs_jobs_enqueued_here(urls, backends):
    datastore, queue = backends
    jobs = [ZeroGStyleJob(datastore, queue, greeting=f"#{i}") for i in range(3)]
    for job in jobs:
        job.enqueue()
    done = zerog_worker_pass(partial(make_datastore, urls[0]), partial(make_queue, urls[1]),
                             [ZeroGStyleJob])
    assert done == 3
    for job in jobs:
        document = datastore.read(make_key(job.uuid))
        check_zerog_document(document, "zerog_hello", job.uuid)
        assert document["resultCode"] == 200
        assert document["events"][0]["msg"] == f"hello {job.greeting}"


def test_zerog_style_job_code_runs_in_our_worker(backends):
    datastore, queue = backends
    job = ZeroGStyleJob(datastore, queue, greeting="there")
    job.enqueue()
    Worker(JobRegistry([ZeroGStyleJob]), lambda: datastore, lambda n: queue,
           SERVICE_QUEUE).run(burst=True)
    document = datastore.read(make_key(job.uuid))
    assert (document["resultCode"], document["greeting"]) == (200, "there")
