"""Webhooks (SPEC section 9): SPACEWALK_WEBHOOKS checked at start-up, one
signed delivery per job end and endpoint, recorded after the job's result,
retried with backoff, surviving a killed worker, on every datastore."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
from backend_support import DATASTORES, sqlite_url
from flask import Flask
from reliability_support import children_of, log_tail, stop_process, wait_until
from runtime_jobs import jobs as runtime_jobs
from runtime_jobs.jobs import FailJob, NoopJob, SleepJob
from standardwebhooks import Webhook as Verifier

from flask_spacewalk import NO_RESULT, Spacewalk, make_datastore, make_queue
from flask_spacewalk.errors import ConfigurationError, NotSupported
from flask_spacewalk.runtime import delivery as delivery_module
from flask_spacewalk.runtime.adapters import as_datastore
from flask_spacewalk.runtime.delivery import DeliverySender
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.runtime.webhooks import (
    Delivery,
    DeliveryStatus,
    WebhookRecorder,
    delivery_id,
    parse_webhooks,
)
from flask_spacewalk.runtime.worker_loop import Worker
from flask_spacewalk.settings import Settings

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
RUNTIME_JOBS = TESTS / "runtime_jobs"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ALL_EVENTS = ["job.finished", "job.failed", "job.cancelled"]


class Receiver:
    """An HTTP receiver on a free loopback port, in a thread: it verifies
    each request's signature and answers from ``answers`` (a status code,
    or ``"hang"``: no answer until the test ends), then 200."""

    def __init__(self, answers: list[Any] | None = None,
                 on_call: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.answers = list(answers or [])
        self.on_call = on_call
        self.calls: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                call: dict[str, Any] = {"headers": headers, "body": body}
                try:
                    call["verified"] = Verifier(SECRET).verify(body, headers)
                except Exception as exc:  # recorded, asserted by the test
                    call["verified"] = exc
                if receiver.on_call is not None:
                    call["seen"] = receiver.on_call(call)
                receiver.calls.append(call)
                answer = receiver.answers.pop(0) if receiver.answers else 200
                if answer == "hang":
                    receiver.release.wait(60)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hooks(self, events: list[str] = ALL_EVENTS) -> list[dict[str, Any]]:
        return [{"url": self.url, "secret": SECRET, "events": events}]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*args: Any, **kwargs: Any) -> Receiver:
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries, leases and timeouts short enough for a test."""
    monkeypatch.setattr(delivery_module, "BACKOFF", (0.05, 0.05, 0.05))
    monkeypatch.setattr(delivery_module, "JITTER", 0.0)
    monkeypatch.setattr(delivery_module, "POLL", 0.05)
    monkeypatch.setattr(delivery_module, "LEASE", 2.0)


def _app(tmp_path: Path, hooks: list[dict[str, Any]], **config: Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.testing = True
    app.config.update(SPACEWALK_DATASTORE_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
                      SPACEWALK_WEBHOOKS=hooks, **config)  # fmt: skip
    Spacewalk(app, RUNTIME_JOBS, runtime_jobs.TestRoot)
    return app


def _close(app: Flask) -> None:
    for state in app.extensions["spacewalk"].values():
        state.close()


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    ("not json", "not JSON"),
    ({"url": "http://x"}, "expected a list"),
    (["http://x"], "entry 0: expected an object"),
    ([{"url": "ftp://x/", "secret": SECRET, "events": ["job.failed"]}], "not an http or https"),
    ([{"url": "http:///nohost", "secret": SECRET, "events": ["job.failed"]}], "not an http"),
    ([{"url": "http://x", "secret": "MfKQ9r8GKYqrTwjU", "events": ["job.failed"]}], "whsec_"),
    ([{"url": "http://x", "secret": "whsec_!!notbase64!!", "events": ["job.failed"]}],
     "not base64"),
    ([{"url": "http://x", "secret": "whsec_c2hvcnQ=", "events": ["job.failed"]}], "16 bytes"),
    ([{"url": "http://x", "secret": SECRET, "events": []}], "non-empty list"),
    ([{"url": "http://x", "secret": SECRET, "events": "job.failed"}], "non-empty list"),
    ([{"url": "http://x", "secret": SECRET, "events": ["job.started"]}], "'job.started'"),
    ([{"url": "http://x", "secret": SECRET, "events": ["job.failed"], "x": 1}], "unknown field"),
])  # fmt: skip
def test_bad_webhooks_are_configuration_errors_without_the_secret(tmp_path, value, message):
    for make in (
        lambda: _app(tmp_path, value),
        lambda: Settings.from_environ({"SPACEWALK_WEBHOOKS": value if isinstance(value, str)
                                       else json.dumps(value)}),
    ):
        with pytest.raises(ConfigurationError) as caught:
            make()
        text = str(caught.value)
        assert "SPACEWALK_WEBHOOKS" in text and message in text
        assert SECRET not in text and "MfKQ9r8G" not in text


def test_webhooks_parse_from_config_and_environment():
    hooks = [{"url": "https://example.test/h", "secret": SECRET, "events": ["job.failed"]}]
    parsed = parse_webhooks(hooks)
    assert parsed == parse_webhooks(json.dumps(hooks))
    assert parsed[0].events == {"job.failed"} and SECRET not in repr(parsed)
    assert parse_webhooks(None) == parse_webhooks("") == ()
    settings = Settings.from_environ({"SPACEWALK_WEBHOOKS": json.dumps(hooks)})
    assert settings.webhooks == parsed


def test_delivery_ids_are_one_per_job_end_and_endpoint():
    one = delivery_id("u", 5, "http://a")
    assert one == delivery_id("u", 5, "http://a") and one.startswith("msg_")
    assert len({one, delivery_id("u", 6, "http://a"), delivery_id("u", 5, "http://b")}) == 3


# -- inline runs: the app sends ----------------------------------------------------


def test_inline_job_end_is_delivered_signed_after_its_result(tmp_path, receiver):
    datastore_url = f"sqlite:///{tmp_path / 'jobs.db'}"

    def stored_result(call: dict[str, Any]) -> Any:
        uuid = json.loads(call["body"])["data"]["uuid"]
        store = make_datastore(datastore_url)
        try:
            return store.read(f"zerog_job_{uuid}")["resultCode"]  # type: ignore[index]
        finally:
            store.close()

    everything = receiver(on_call=stored_result)
    failures_only = receiver()
    app = _app(tmp_path, everything.hooks() + failures_only.hooks(["job.failed"]))
    try:
        answer = app.test_client().post("/rt/noop/job", json={})
        assert answer.status_code == 201
        uuid = answer.json["uuid"]
        assert wait_until(lambda: everything.calls, 20)
        call = everything.calls[0]
        body = call["verified"]
        assert isinstance(body, dict), body
        assert body["type"] == "job.finished"
        assert body["data"] == {"uuid": uuid, "jobType": NoopJob.JOB_TYPE, "status": "finished",
                                "result": 200, "completeness": 1.0,
                                "progress": f"/rt/progress/{uuid}"}  # fmt: skip
        assert call["seen"] == 200  # the result was stored when the receiver was called
        assert call["headers"]["webhook-id"] == delivery_id(uuid, _cas(app, uuid),
                                                            everything.url)
        time.sleep(0.3)
        assert len(everything.calls) == 1 and failures_only.calls == []
        datastore = app.extensions["spacewalk"]["/rt"].connections()[0]
        [delivery] = datastore.list_deliveries(uuid=uuid)
        assert wait_until(lambda: datastore.list_deliveries(uuid=uuid)[0].status
                          == DeliveryStatus.DELIVERED, 10)  # fmt: skip
        delivery = datastore.list_deliveries(uuid=uuid)[0]
        assert [a["status"] for a in delivery.attempts] == [200]
    finally:
        _close(app)


def _cas(app: Flask, uuid: str) -> int:
    datastore = app.extensions["spacewalk"]["/rt"].connections()[0]
    return datastore.read_with_cas(f"zerog_job_{uuid}")[1]


def test_a_failing_receiver_gets_it_on_the_third_try(tmp_path, receiver, quick):
    r = receiver([500, 503])
    app = _app(tmp_path, r.hooks(["job.failed"]))
    try:
        answer = app.test_client().post("/rt/interrupt/job", json={"kind": "error_finish"})
        assert answer.status_code == 201
        uuid = answer.json["uuid"]
        datastore = app.extensions["spacewalk"]["/rt"].connections()[0]
        assert wait_until(lambda: datastore.list_deliveries(uuid=uuid)
                          and datastore.list_deliveries(uuid=uuid)[0].status
                          == DeliveryStatus.DELIVERED, 20)  # fmt: skip
        assert len(r.calls) == 3
        assert len({call["headers"]["webhook-id"] for call in r.calls}) == 1
        assert all(isinstance(call["verified"], dict) for call in r.calls)
        assert json.loads(r.calls[0]["body"])["data"]["status"] == "failed"
        delivery = datastore.list_deliveries(uuid=uuid)[0]
        assert [a["status"] for a in delivery.attempts] == [500, 503, 200]
        assert all(a["duration"] >= 0 and a["at"].endswith("Z") for a in delivery.attempts)
    finally:
        _close(app)


def test_a_receiver_that_never_answers_times_out_then_fails_and_cli_retries(
    tmp_path, receiver, quick, monkeypatch
):
    monkeypatch.setattr(delivery_module, "SEND_TIMEOUT", 0.3)
    monkeypatch.setattr(delivery_module, "BACKOFF", (0.05,))
    r = receiver(["hang", "hang"])
    app = _app(tmp_path, r.hooks())
    try:
        uuid = app.test_client().post("/rt/noop/job", json={}).json["uuid"]
        datastore = app.extensions["spacewalk"]["/rt"].connections()[0]
        assert wait_until(lambda: datastore.list_deliveries(DeliveryStatus.FAILED), 20)
        delivery = datastore.list_deliveries(DeliveryStatus.FAILED)[0]
        assert len(delivery.attempts) == 2
        assert all(a["status"] is None and "timed out" in a["error"] for a in delivery.attempts)
        runner = app.test_cli_runner()
        listed = runner.invoke(args=["spacewalk", "webhooks", "--failed"])
        assert listed.exit_code == 0, listed.output
        assert delivery.id in listed.output and "failed" in listed.output
        assert "timed out" in listed.output
        assert runner.invoke(args=["spacewalk", "webhooks", "--job", "nope"]).output.strip() \
            == "no webhook deliveries"
        again = runner.invoke(args=["spacewalk", "webhooks", "--retry", delivery.id])
        assert again.exit_code == 0 and "pending" in again.output
        # the app's sender sends it: the receiver answers now
        assert wait_until(lambda: datastore.list_deliveries(uuid=uuid)[0].status
                          == DeliveryStatus.DELIVERED, 20)  # fmt: skip
        assert len({c["headers"]["webhook-id"] for c in r.calls}) == 1 and len(r.calls) == 3
        unknown = runner.invoke(args=["spacewalk", "webhooks", "--retry", "msg_nope"])
        assert unknown.exit_code == 1 and "no failed or pending delivery" in unknown.output
        both = runner.invoke(args=["spacewalk", "webhooks", "--failed", "--pending"])
        assert both.exit_code == 2
    finally:
        _close(app)


def test_a_cancelled_queued_job_records_job_cancelled_for_the_workers(tmp_path, receiver):
    r = receiver()
    app = _app(tmp_path, r.hooks(["job.cancelled"]), SPACEWALK_RUN_INLINE=False)
    try:
        client = app.test_client()
        uuid = client.post("/rt/noop/job", json={}).json["uuid"]
        assert client.delete(f"/rt/job/{uuid}").status_code == 200
        datastore = app.extensions["spacewalk"]["/rt"].connections()[0]
        [delivery] = datastore.list_deliveries(uuid=uuid)
        assert delivery.event == "job.cancelled" and delivery.status == DeliveryStatus.PENDING
        assert r.calls == []  # not inline: a worker's thread sends it
    finally:
        _close(app)


# -- workers, on every datastore -------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def datastore_url(request, tmp_path) -> Iterator[str]:
    with DATASTORES[request.param](tmp_path) as url:
        yield url


def _worker(datastore_url: str, queue_url: str, hooks: Any, batch: int = 1) -> Worker:
    registry = JobRegistry([NoopJob, FailJob, SleepJob])
    recorder = WebhookRecorder(parse_webhooks(hooks), lambda job_type: "/rt")
    return Worker(registry, lambda: make_datastore(datastore_url),
                  lambda name: make_queue(queue_url, name), "rt_jobs", webhooks=recorder,
                  batch=batch)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_job_run_through_a_claim_gets_one_delivery(tmp_path, receiver, batch, backend):
    # One database for queue and datastore: the result, its deliveries and
    # the entry's deletion are one transaction (the claim path, with and
    # without --batch)
    r = receiver()
    with DATASTORES[backend](tmp_path) as url:
        worker = _worker(url, url, r.hooks(), batch=batch)
        lifecycle = Lifecycle(worker.datastore, worker.queue, worker.registry)
        jobs = [NoopJob(worker.datastore, worker.queue) for _ in range(5)]
        for job in jobs:
            lifecycle.create(job)
        assert lifecycle.shared is not None
        try:
            worker.run(burst=True)
            assert worker.jobs_done == 5
            for job in jobs:
                doc, cas = worker.datastore.read_with_cas(f"zerog_job_{job.uuid}")
                assert doc["resultCode"] != NO_RESULT  # type: ignore[index]
                [delivery] = worker.datastore.list_deliveries(uuid=job.uuid)
                # the webhook-id of the stored end, as a later record makes it
                assert delivery.id == delivery_id(job.uuid, cas, delivery.url)
            assert worker.queue.stats_tube()["current-jobs-reserved"] == 0
            assert worker.queue.stats_tube()["current-jobs-ready"] == 0
        finally:
            worker.datastore.close()
            worker.queue.close()


def test_a_worker_records_and_sends_on_every_datastore(tmp_path, datastore_url, receiver):
    r = receiver()
    with sqlite_url(tmp_path) as queue_url:
        worker = _worker(datastore_url, queue_url, r.hooks())
        lifecycle = Lifecycle(worker.datastore, worker.queue, worker.registry)
        job = NoopJob(worker.datastore, worker.queue)
        lifecycle.create(job)
        try:
            worker.run(burst=True)
            sender = DeliverySender(worker.datastore, worker.webhooks.webhooks)  # type: ignore[union-attr]
            sender.send_due()
            [delivery] = worker.datastore.list_deliveries(uuid=job.uuid)
            assert delivery.status == DeliveryStatus.DELIVERED, delivery
            assert len(r.calls) == 1 and isinstance(r.calls[0]["verified"], dict)
            assert r.calls[0]["verified"]["data"]["progress"] == f"/rt/progress/{job.uuid}"
        finally:
            worker.datastore.close()
            worker.queue.close()


def test_delivery_store_on_every_datastore(datastore_url):
    store = as_datastore(make_datastore(datastore_url))
    try:
        def delivery(id: str, uuid: str, created: float) -> Delivery:
            return Delivery(id, "http://x", "job.finished", uuid, "{}", created, created, created)

        assert store.add_deliveries([delivery("a", "u1", 1.0), delivery("b", "u2", 2.0)]) == 2
        assert store.add_deliveries([delivery("a", "u1", 1.0)]) == 0  # once per webhook-id
        claimed = store.claim_deliveries(10.0, 5.0, 1, "t1")
        assert [d.id for d in claimed] == ["a"] and claimed[0].claim == "t1"
        assert [d.id for d in store.claim_deliveries(10.0, 5.0, 5, "t2")] == ["b"]
        assert store.claim_deliveries(14.0, 5.0, 5, "t3") == []  # both leased
        # the lease ran out: another sender takes it, and the first loses it
        [again] = store.claim_deliveries(15.5, 5.0, 1, "t3")
        assert again.id == "a" and again.attempts == []
        claimed[0].status, claimed[0].claim = DeliveryStatus.DELIVERED, None
        assert not store.save_delivery(claimed[0], "t1")
        again.status, again.claim = DeliveryStatus.FAILED, None
        again.attempts.append({"at": "x", "status": 500, "error": "HTTP 500", "duration": 0.1})
        assert store.save_delivery(again, "t3")
        assert store.claim_deliveries(100.0, 5.0, 5, "t4")[0].id == "b"  # failed: never due
        assert [d.id for d in store.list_deliveries()] == ["b", "a"]
        assert [d.id for d in store.list_deliveries(DeliveryStatus.FAILED)] == ["a"]
        assert [d.id for d in store.list_deliveries(uuid="u2")] == ["b"]
        assert store.list_deliveries(DeliveryStatus.FAILED, "u2") == []
        assert store.list_deliveries(limit=1)[0].id == "b"
        assert store.list_deliveries(uuid="a")[0:] == []
        assert store.retry_delivery("a", 200.0) and not store.retry_delivery("nope", 200.0)
        due = {d.id: d for d in store.claim_deliveries(200.0, 5.0, 5, "t5")}
        assert set(due) == {"a", "b"}  # b's lease ran out at 105
        assert due["a"].attempts[0]["status"] == 500 and due["a"].status == "pending"
        due["b"].status, due["b"].claim = DeliveryStatus.DELIVERED, None
        assert store.save_delivery(due["b"], "t5")
        assert store.purge_deliveries(1.5, 10) == 0  # b was recorded at 2.0
        assert store.purge_deliveries(1000.0, 10) == 1  # a is pending: kept
        assert [d.id for d in store.list_deliveries()] == ["a"]
        assert store.list_deliveries(uuid="u2") == []
    finally:
        store.close()


def test_a_datastore_without_deliveries_is_not_supported():
    class Plain:
        casException = lockedException = existsException = Exception

    store = as_datastore(Plain())
    with pytest.raises(NotSupported, match="webhook deliveries"):
        store.list_deliveries()


def test_an_ended_job_whose_entry_is_left_gets_its_deliveries(tmp_path, receiver):
    """The crash window: the result saved, the worker dead before it
    recorded the deliveries; the next worker that meets the entry records
    them."""
    r = receiver()
    with sqlite_url(tmp_path) as url:
        worker = _worker(url, url, r.hooks())
        job = NoopJob(worker.datastore, worker.queue)
        Lifecycle(worker.datastore, worker.queue, worker.registry).create(job)
        entry = worker.queue.reserve(timeout=1)
        assert entry is not None
        plain = Lifecycle(worker.datastore, worker.queue, worker.registry)
        outcome = plain.run(job)
        plain._record_outcome(job, outcome, None, False)  # the result, then the "crash"
        entry.release()
        assert worker.datastore.list_deliveries() == []
        worker.run(burst=True)
        [delivery] = worker.datastore.list_deliveries(uuid=job.uuid)
        assert delivery.id == delivery_id(job.uuid, job.cas, r.url)
        worker.datastore.close()
        worker.queue.close()


# -- a killed worker -----------------------------------------------------------------


def test_a_worker_killed_while_delivering_is_followed_by_the_same_webhook_id(tmp_path,
                                                                               receiver):
    r = receiver(["hang"])
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    script = textwrap.dedent(f"""
        import sys
        from flask_spacewalk.runtime import delivery
        delivery.LEASE, delivery.SEND_TIMEOUT, delivery.POLL = 1.0, 30.0, 0.05
        from flask_spacewalk.worker import main
        sys.exit(main(["--jobs", {str(RUNTIME_JOBS)!r}, "--datastore", {url!r},
                       "--service", "rt", "--log-level", "INFO"]))
    """)
    env = dict(os.environ, SPACEWALK_WEBHOOKS=json.dumps(r.hooks()))
    app = _app(tmp_path, r.hooks(), SPACEWALK_RUN_INLINE=False, SPACEWALK_SERVICE_NAME="rt")
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        uuid = app.test_client().post("/rt/noop/job", json={}).json["uuid"]
        assert wait_until(lambda: r.calls, 30), log_tail(log_path)
        [child] = children_of(proc.pid)
        os.kill(child, signal.SIGKILL)
        assert wait_until(lambda: len(r.calls) >= 2, 30), log_tail(log_path)
        first, second = r.calls[:2]
        assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
        assert first["body"] == second["body"]
        datastore = app.extensions["spacewalk"]["/rt"].connections()[0]
        assert wait_until(lambda: datastore.list_deliveries(uuid=uuid)[0].status
                          == DeliveryStatus.DELIVERED, 20), log_tail(log_path)  # fmt: skip
    finally:
        stop_process(proc)
        _close(app)


def test_openapi_lists_the_three_webhooks(tmp_path):
    from openapi_spec_validator import OpenAPIV31SpecValidator

    app = _app(tmp_path, [])
    try:
        doc = app.test_client().get("/openapi.json").json
        OpenAPIV31SpecValidator(doc).validate()
        assert set(doc["webhooks"]) == {"job.finished", "job.failed", "job.cancelled"}
        post = doc["webhooks"]["job.failed"]["post"]
        assert [p["name"] for p in post["parameters"]] == [
            "webhook-id", "webhook-timestamp", "webhook-signature"]
        assert all(p["in"] == "header" and p["required"] for p in post["parameters"])
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(body["required"]) == {"type", "timestamp", "data"}
        data = doc["components"]["schemas"]["WebhookData"]
        assert set(data["required"]) == {"uuid", "jobType", "status", "result",
                                         "completeness", "progress"}
    finally:
        _close(app)


def test_webhooks_from_the_environment_are_written_back_and_read_again(tmp_path, monkeypatch):
    hooks = [{"url": "http://127.0.0.1:9/h", "secret": SECRET, "events": ["job.failed"]}]
    monkeypatch.setenv("SPACEWALK_WEBHOOKS", json.dumps(hooks))
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SPACEWALK_DATASTORE_URL"] = f"sqlite:///{tmp_path / 'jobs.db'}"
    Spacewalk(app, RUNTIME_JOBS, runtime_jobs.TestRoot)
    assert app.config["SPACEWALK_WEBHOOKS"] == parse_webhooks(hooks)
    # a second tree reads the value written back
    from fleet_jobs.jobs import FleetRoot

    Spacewalk(app, TESTS / "fleet_jobs", FleetRoot)
    assert {s.settings.webhooks for s in app.extensions["spacewalk"].values()} == {
        parse_webhooks(hooks)}
    _close(app)


def test_the_standalone_worker_knows_each_job_types_progress_path():
    from flask_spacewalk.runtime.job import RuntimeJob
    from flask_spacewalk.worker import progress_roots

    class Plain(RuntimeJob):  # a ZeroG job, of no tree
        JOB_TYPE = "plain"

    roots = progress_roots(JobRegistry([NoopJob, FailJob, Plain]), "/api")
    assert roots(NoopJob.JOB_TYPE) == "/api/rt" and roots("plain") is None


def test_deliveries_that_cannot_be_written_keep_the_entry(tmp_path, receiver, monkeypatch,
                                                         caplog):
    from flask_spacewalk.errors import DatastoreUnavailable

    r = receiver()
    with sqlite_url(tmp_path) as url:
        worker = _worker(url, url, r.hooks())
        # a queue in another database: the deliveries are a write of their own
        monkeypatch.setattr(Lifecycle, "shared", property(lambda self: None))
        job = NoopJob(worker.datastore, worker.queue)
        Lifecycle(worker.datastore, worker.queue, worker.registry).create(job)

        def down(deliveries: Any) -> int:
            raise DatastoreUnavailable("disk full")

        monkeypatch.setattr(worker.datastore, "add_deliveries", down)
        entry = worker.queue.reserve(timeout=1)
        assert entry is not None
        worker.process_entry(entry)
        stored = worker.datastore.read(f"zerog_job_{job.uuid}")
        assert stored["resultCode"] == 200  # type: ignore[index]
        assert worker.queue.has_entry(entry.id, job.uuid)  # its next holder records them
        assert "cannot record outcome: disk full" in caplog.text
        worker.datastore.close()
        worker.queue.close()



@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_deliveries_that_cannot_be_written_keep_the_result_unstored(
    tmp_path, receiver, monkeypatch, caplog, backend
):
    # One database for queue and datastore: the deliveries are written in the
    # transaction that stores the result and deletes the entry; when they
    # fail, none of it is written
    import sqlite3

    import psycopg

    from flask_spacewalk.backends import pgqueue
    from flask_spacewalk.backends import sqlite as sqlite_backend

    def full(*args: Any) -> int:
        if backend == "sqlite":
            raise sqlite3.OperationalError("database or disk is full")
        raise psycopg.errors.DiskFull("could not extend file: No space left on device")

    r = receiver()
    with DATASTORES[backend](tmp_path) as url:
        worker = _worker(url, url, r.hooks())
        job = NoopJob(worker.datastore, worker.queue)
        Lifecycle(worker.datastore, worker.queue, worker.registry).create(job)
        monkeypatch.setattr(sqlite_backend, "_add_deliveries", full)
        monkeypatch.setattr(pgqueue, "insert_deliveries", full)
        entry = worker.queue.reserve(timeout=1)
        assert entry is not None
        worker.process_entry(entry)
        stored = worker.datastore.read(f"zerog_job_{job.uuid}")
        assert stored["resultCode"] == NO_RESULT  # type: ignore[index]
        assert worker.queue.has_entry(entry.id, job.uuid)  # the job comes back
        assert "cannot record outcome" in caplog.text
        assert "disk is full" in caplog.text or "No space left" in caplog.text
        worker.datastore.close()
        worker.queue.close()

def test_a_datastore_without_deliveries_only_logs(caplog):
    class Plain:
        casException = lockedException = existsException = Exception

    job = NoopJob(as_datastore(Plain()), None)
    job.resultCode, job.completeness = 200, 1.0
    recorder = WebhookRecorder(parse_webhooks([{"url": "http://x", "secret": SECRET,
                                                "events": ALL_EVENTS}]))
    recorder.job_ended(as_datastore(Plain()), job)
    assert "no webhook delivery recorded" in caplog.text and SECRET not in caplog.text


def test_a_redirect_is_retried_and_an_endpoint_no_longer_configured_fails(tmp_path, receiver,
                                                                          quick):
    r = receiver([302])
    with sqlite_url(tmp_path) as url:
        store = as_datastore(make_datastore(url))
        now = time.time()
        kept = Delivery("msg_kept", r.url, "job.finished", "u1", "{}", now, now, now)
        gone = Delivery("msg_gone", "http://127.0.0.1:9/old", "job.failed", "u2", "{}",
                        now, now, now)  # fmt: skip
        store.add_deliveries([kept, gone])
        sender = DeliverySender(store, parse_webhooks(r.hooks()))
        assert wait_until(lambda: sender.send_due() == 0 and len(r.calls) == 2, 10)
        by_id = {d.id: d for d in store.list_deliveries()}
        assert [a["status"] for a in by_id["msg_kept"].attempts] == [302, 200]
        assert by_id["msg_kept"].status == DeliveryStatus.DELIVERED
        assert by_id["msg_gone"].status == DeliveryStatus.FAILED
        assert "no longer in SPACEWALK_WEBHOOKS" in by_id["msg_gone"].attempts[0]["error"]
        store.close()
