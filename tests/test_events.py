"""``GET R/events/<uuid>``: a job followed as Server-Sent Events (SPEC section 9)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES  # noqa: I001
from conftest import EXAMPLE_JOBS
from flask import Flask
from flask.testing import FlaskClient
from jobtrees.api_tree import ApiRoot
from jobtrees.api_tree.special import Staged
from seed import free_port
from werkzeug.exceptions import Unauthorized

from examples.jobs.examples import BaseExampleJob
from flask_spacewalk import Spacewalk
from flask_spacewalk.errors import DatastoreUnavailable
from flask_spacewalk.runtime.job import RuntimeJob, make_key
from flask_spacewalk.web import events
from flask_spacewalk.web.events import JobStream, StreamPosition, event_stream, progress_tag

ROOT = Path(__file__).resolve().parent.parent
API_JOBS = Path(__file__).resolve().parent / "jobtrees" / "api_tree"
FIZZ = "/examples/fizz_buzz/job"
UNKNOWN = "0123abcd-0123-4abc-8def-0123456789ab"

pytestmark = pytest.mark.timeout(120)


# -- reading a stream --------------------------------------------------------


def parse(text: str) -> list[dict[str, Any]]:
    """The events (and comments, as ``{"comment": ...}``) of a stream's text."""
    found = []
    for block in text.split("\n\n"):
        if not block:
            continue
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                event["comment"] = value
            elif name == "data":
                event["data"] = json.loads(value)
            else:
                event[name] = value
        found.append(event)
    return found


class Reader:
    """The events of a streamed test-client answer, as they come."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.buffer = ""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for chunk in self.chunks:
            self.buffer += chunk.decode()
            while "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                yield from parse(block + "\n\n")


def open_stream(client: FlaskClient, path: str, **headers: str) -> Any:
    response = client.get(path, headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    return response


def all_events(client: FlaskClient, path: str, **headers: str) -> list[dict[str, Any]]:
    response = open_stream(client, path, **headers)
    try:
        return parse(b"".join(response.response).decode())
    finally:
        response.close()


def logs(found: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["msg"] for e in found if e.get("event") == "log"]


# -- an app and a job the test moves itself ------------------------------------


def new_app(make_app: Any, **config: Any) -> Flask:
    # not testing: a POSTed job stays queued, and the test plays its worker
    return make_app(**config)  # type: ignore[no-any-return]


def start(client: FlaskClient) -> str:
    response = client.post(FIZZ, json={"n": 3})
    assert response.status_code == 201
    return str(response.get_json()["uuid"])


def stored_job(app: Flask, uuid: str) -> RuntimeJob:
    state = next(iter(app.extensions["spacewalk"].values()))
    datastore, queue = state.connections()
    return state.registry.get_job(uuid, datastore, queue)


def play(job: RuntimeJob, records: int = 50, moves: int = 10, pause: float = 0.0) -> None:
    """Log ``records`` records of the three kinds, moving completeness
    ``moves`` times, then finish with 200."""
    for index in range(records):
        if index % 7 == 3:
            job.job_log_warning(f"record {index}")
        elif index % 11 == 5:
            job.job_log_error(418, f"record {index}")
        else:
            job.job_log_info(f"record {index}")
        if (index + 1) % (records // moves) == 0:
            job.set_completeness((index + 1) / records * 0.9)
        if pause:
            time.sleep(pause)
    job.record_result(200)


EXPECTED = [f"record {index}" for index in range(50)]


def check_complete(found: list[dict[str, Any]]) -> None:
    assert found[0] == {"retry": str(events.RETRY_MS)}
    assert logs(found) == EXPECTED
    kinds = {e["data"]["msg"]: e["data"] for e in found if e.get("event") == "log"}
    assert kinds["record 3"]["kind"] == "warning" and "errorCode" not in kinds["record 3"]
    assert kinds["record 5"] == {**kinds["record 5"], "kind": "error", "errorCode": 418}
    assert kinds["record 0"]["kind"] == "event" and kinds["record 0"]["timeStamp"]
    progress = [e["data"]["completeness"] for e in found if e.get("event") == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert found[-1]["event"] == "end"
    assert found[-1]["data"] == {"completeness": 1.0, "result": 200}
    ids = [e["id"] for e in found if "id" in e]
    assert len(ids) == len(set(ids)) + 1  # only end repeats the last id


# -- the stream ----------------------------------------------------------------


def test_a_running_job_streams_every_record_in_order_and_ends(make_app: Any) -> None:
    app = new_app(make_app)
    client = app.test_client()
    uuid = start(client)
    writer = threading.Thread(target=play, args=(stored_job(app, uuid),), kwargs={"pause": 0.01})
    response = open_stream(client, f"/examples/events/{uuid}")
    writer.start()
    try:
        found = parse(b"".join(response.response).decode())
    finally:
        response.close()
        writer.join(30)
    check_complete(found)
    assert len([e for e in found if e.get("event") == "progress"]) >= 2
    # a fresh stream of the ended job: every record, its progress, end
    again = all_events(client, f"/examples/events/{uuid}")
    assert logs(again) == EXPECTED
    assert [e["event"] for e in again[-2:]] == ["progress", "end"]


def test_a_dropped_stream_resumes_with_exactly_the_rest(make_app: Any) -> None:
    app = new_app(make_app)
    client = app.test_client()
    uuid = start(client)
    writer = threading.Thread(target=play, args=(stored_job(app, uuid),), kwargs={"pause": 0.01})
    response = open_stream(client, f"/examples/events/{uuid}")
    writer.start()
    first: list[dict[str, Any]] = []
    try:
        for event in Reader(response.response):
            first.append(event)
            if len(logs(first)) == 20:
                break
    finally:
        response.close()  # the client goes away mid-way
        writer.join(30)
    last_id = [e["id"] for e in first if "id" in e][-1]
    rest = all_events(client, f"/examples/events/{uuid}", **{"Last-Event-ID": last_id})
    assert logs(first) + logs(rest) == EXPECTED
    assert [e["event"] for e in rest[-2:]] == ["progress", "end"]
    # resuming from end: nothing new, no progress (unchanged), end again
    end_id = rest[-1]["id"]
    again = all_events(client, f"/examples/events/{uuid}", **{"Last-Event-ID": end_id})
    assert [e.get("event") for e in again] == [None, "end"]


def test_resuming_gives_progress_only_when_it_changed(make_app: Any) -> None:
    app = new_app(make_app, SPACEWALK_STREAM_MAX=0.3)
    client = app.test_client()
    uuid = start(client)
    job = stored_job(app, uuid)
    job.job_log_info("one")
    found = all_events(client, f"/examples/events/{uuid}")
    assert [e.get("event") for e in found] == [None, "log", "progress"]
    same = all_events(client, f"/examples/events/{uuid}", **{"Last-Event-ID": found[-1]["id"]})
    assert [e.get("event") for e in same] == [None]
    job.set_completeness(0.5)
    moved = all_events(client, f"/examples/events/{uuid}", **{"Last-Event-ID": found[-1]["id"]})
    assert [e.get("event") for e in moved] == [None, "progress"]
    assert moved[1]["data"] == {"completeness": 0.5, "result": -1}
    # an id of a log event (before any progress was sent) gives progress too
    log_id = found[1]["id"]
    after_log = all_events(client, f"/examples/events/{uuid}", **{"Last-Event-ID": log_id})
    assert [e.get("event") for e in after_log] == [None, "progress"]


def test_keep_alive_comments_on_an_idle_stream(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_INTERVAL", 0.1)
    app = new_app(make_app, SPACEWALK_STREAM_MAX=30)
    client = app.test_client()
    uuid = start(client)
    response = open_stream(client, f"/examples/events/{uuid}")
    seen: list[dict[str, Any]] = []
    try:
        for event in Reader(response.response):
            seen.append(event)
            if len([e for e in seen if "comment" in e]) == 2:
                break
    finally:
        response.close()
    assert [e.get("event") for e in seen[:2]] == [None, "progress"]
    assert seen[2:] == [{"comment": "keep-alive"}, {"comment": "keep-alive"}]


def test_the_server_ends_a_stream_after_stream_max(make_app: Any) -> None:
    app = new_app(make_app, SPACEWALK_STREAM_MAX=0.5)
    client = app.test_client()
    uuid = start(client)
    began = time.monotonic()
    found = all_events(client, f"/examples/events/{uuid}")
    assert 0.4 < time.monotonic() - began < 30
    # the retry hint, the state so far, and no end: the client resumes
    assert [e.get("event") for e in found] == [None, "progress"]
    assert found[0] == {"retry": str(events.RETRY_MS)}


def test_a_purged_job_ends_its_stream(make_app: Any) -> None:
    app = new_app(make_app, SPACEWALK_STREAM_MAX=30)
    client = app.test_client()
    uuid = start(client)
    job = stored_job(app, uuid)
    timer = threading.Timer(0.3, lambda: job.datastore.delete(make_key(uuid)))
    timer.start()
    try:
        found = all_events(client, f"/examples/events/{uuid}")
    finally:
        timer.join()
    assert [e.get("event") for e in found] == [None, "progress"]
    assert client.get(f"/examples/events/{uuid}").status_code == 404


def test_a_custom_progress_is_streamed_as_progress_answers_it(make_app: Any) -> None:
    app = make_app((ApiRoot, API_JOBS, {}))
    client = app.test_client()
    response = client.post("/svc/special/staged/job", json={})
    assert response.status_code == 201
    uuid = response.get_json()["uuid"]
    stored_job(app, uuid).record_result(200)
    found = all_events(client, f"/svc/events/{uuid}")
    expected = client.get(f"/svc/progress/{uuid}").get_json()
    assert expected["stage"] == "done"
    assert found[-2:] == [
        {"id": found[-1]["id"], "event": "progress", "data": expected},
        {"id": found[-1]["id"], "event": "end", "data": expected},
    ]


def test_a_progress_that_fails_at_the_start_is_500_json(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any) -> dict[str, Any]:
        raise ValueError("secret detail of a failing progress")

    monkeypatch.setattr(Staged, "progress", broken)
    app = make_app((ApiRoot, API_JOBS, {}))
    client = app.test_client()
    uuid = client.post("/svc/special/staged/job", json={}).get_json()["uuid"]
    response = client.get(f"/svc/events/{uuid}")
    assert response.status_code == 500 and response.get_json()["code"] == 500
    assert "secret" not in response.get_data(as_text=True)


# -- bad requests ----------------------------------------------------------------


@pytest.mark.parametrize("uuid", [UNKNOWN, "not-a-uuid", UNKNOWN.upper()])
def test_unknown_or_malformed_uuid_is_404_json(make_app: Any, uuid: str) -> None:
    client = new_app(make_app).test_client()
    response = client.get(f"/examples/events/{uuid}")
    assert response.status_code == 404
    assert response.get_json() == {
        "code": 404, "status": "Not Found", "message": f"no job {uuid}"
    }


@pytest.mark.parametrize(
    "last_id",
    ["garbage", "1.2.3", "1.2.3.xyz", "-1.0.0.", "0.0.0.abc", "\u0661.0.0.", "0" * 10 + ".0.0."],
)
def test_a_malformed_last_event_id_is_400_json(make_app: Any, last_id: str) -> None:
    client = new_app(make_app).test_client()
    uuid = start(client)
    response = client.get(f"/examples/events/{uuid}", headers={"Last-Event-ID": last_id})
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400 and "is not an event id of this stream" in body["message"]


def test_an_id_ahead_of_the_jobs_log_is_400_json(make_app: Any) -> None:
    client = new_app(make_app).test_client()
    uuid = start(client)
    response = client.get(f"/examples/events/{uuid}", headers={"Last-Event-ID": "5.0.0."})
    assert response.status_code == 400
    assert "ahead of the job's log" in response.get_json()["message"]


def test_an_empty_last_event_id_starts_afresh(make_app: Any) -> None:
    app = new_app(make_app, SPACEWALK_STREAM_MAX=0.2)
    client = app.test_client()
    uuid = start(client)
    stored_job(app, uuid).job_log_info("hello")
    found = all_events(client, f"/examples/events/{uuid}", **{"Last-Event-ID": " "})
    assert logs(found) == ["hello"]


def test_decorators_and_cors_apply_to_the_stream(tmp_path: Path) -> None:
    def require_token(view: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            from flask import request

            if request.headers.get("Authorization") != "Bearer t":
                raise Unauthorized("a valid bearer token is required")
            return view(*args, **kwargs)

        return wrapped

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SPACEWALK_DATASTORE_URL=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        SPACEWALK_CORS_ORIGINS=["https://app.example"],
        SPACEWALK_STREAM_MAX=0.2,
    )
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, decorators=[require_token])
    client = app.test_client()
    auth = {"Authorization": "Bearer t", "Origin": "https://app.example"}
    uuid = client.post(FIZZ, json={"n": 3}, headers=auth).get_json()["uuid"]
    refused = client.get(f"/examples/events/{uuid}")
    assert refused.status_code == 401 and refused.get_json()["code"] == 401
    response = client.get(f"/examples/events/{uuid}", headers=auth)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert [e.get("event") for e in parse(response.get_data(as_text=True))] == [None, "progress"]
    for state in app.extensions["spacewalk"].values():
        state.close()


# -- the core, without HTTP ------------------------------------------------------------


def test_ids_resume_exactly_when_records_share_a_timestamp() -> None:
    stamp = "2026-01-02T03:04:05.000001"
    document = {
        "resultCode": -1,
        "completeness": 0.0,
        "events": [{"msg": "e0", "timeStamp": stamp}, {"msg": "e1", "timeStamp": stamp}],
        "warnings": [{"msg": "w0", "timeStamp": stamp}],
        "errors": [{"msg": "r0", "timeStamp": "2026-01-02T03:04:05", "errorCode": 500}],
    }
    progress = {"completeness": 0.0, "result": -1}
    whole = parse("".join(JobStream(StreamPosition(), lambda d, c: progress).advance(document, 1)))
    # timeStamp order (a stamp without a fraction is earlier), ties in list order
    assert logs(whole) == ["r0", "e0", "e1", "w0"]
    for cut in range(len(whole)):
        position = StreamPosition.parse(whole[cut]["id"])
        rest = parse("".join(JobStream(position, lambda d, c: progress).advance(document, 1)))
        assert logs(whole[: cut + 1]) + logs(rest) == logs(whole)
    assert whole[-1]["id"] == f"2.1.1.{progress_tag(progress)}"


def test_each_list_keeps_its_order_when_its_stamps_go_back() -> None:
    # two workers with skewed clocks: the counts in the ids stay exact
    document = {
        "resultCode": -1,
        "events": [{"msg": "e0", "timeStamp": "2026-01-02T03:00:09"},
                   {"msg": "e1", "timeStamp": "2026-01-02T03:00:01"}],
        "warnings": [{"msg": "w0", "timeStamp": "2026-01-02T03:00:05"}],
        "errors": [],
    }  # fmt: skip
    whole = parse("".join(JobStream(StreamPosition(), lambda d, c: {}).advance(document, 1)))
    assert logs(whole) == ["w0", "e0", "e1"]
    for cut in range(3):
        position = StreamPosition.parse(whole[cut]["id"])
        rest = parse("".join(JobStream(position, lambda d, c: {}).advance(document, 1)))
        assert sorted(logs(whole[: cut + 1]) + logs(rest)) == ["e0", "e1", "w0"]


def test_unreadable_timestamps_and_records_still_stream() -> None:
    document = {
        "resultCode": -1,
        "events": ["a bare string", {"msg": "late", "timeStamp": "not a date"}],
        "warnings": None,
        "errors": [{"msg": "aware", "timeStamp": "2026-01-02T03:04:05+01:00", "errorCode": 1}],
    }
    found = parse("".join(JobStream(StreamPosition(), lambda d, c: {}).advance(document, 1)))
    assert logs(found) == ["aware", "a bare string", "late"]


class FailingWatch:
    def wait(self, uuid: str, seen_cas: int, timeout: float) -> tuple[None, int]:
        raise DatastoreUnavailable("the datastore is unreachable")


def test_a_datastore_gone_mid_stream_ends_it() -> None:
    stream = JobStream(StreamPosition(), lambda d, c: {})
    text = "".join(event_stream(FailingWatch(), UNKNOWN, 1, stream, [], 30))  # type: ignore[arg-type]
    assert text == f"retry: {events.RETRY_MS}\n\n"


class ChangingWatch:
    def wait(self, uuid: str, seen_cas: int, timeout: float) -> tuple[dict[str, Any], int]:
        return {"resultCode": -1, "events": []}, seen_cas + 1


def test_a_progress_that_fails_mid_stream_ends_it(caplog: pytest.LogCaptureFixture) -> None:
    def progress_of(document: dict[str, Any], cas: int) -> dict[str, Any]:
        raise ValueError("a broken progress()")

    stream = JobStream(StreamPosition(), progress_of)
    chunks = list(event_stream(ChangingWatch(), UNKNOWN, 1, stream, ["first"], 30))  # type: ignore[arg-type]
    assert chunks == [f"retry: {events.RETRY_MS}\n\nfirst"]
    assert "event stream of job" in caplog.text and "a broken progress()" in caplog.text


# -- other datastores --------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql", "redis"])
def test_the_stream_on_other_datastores(make_app: Any, tmp_path: Path, backend: str) -> None:
    with DATASTORES[backend](tmp_path) as url:
        app = new_app(
            make_app,
            SPACEWALK_DATASTORE_URL=url,
            SPACEWALK_QUEUE_URL=f"sqlite:///{tmp_path / 'queue.sqlite3'}",
        )
        client = app.test_client()
        uuid = start(client)
        writer = threading.Thread(target=play, args=(stored_job(app, uuid),))
        response = open_stream(client, f"/examples/events/{uuid}")
        writer.start()
        try:
            found = parse(b"".join(response.response).decode())
        finally:
            response.close()
            writer.join(30)
        check_complete(found)
        for state in app.extensions["spacewalk"].values():
            state.close()


# -- many streams on one gunicorn process ---------------------------------------------

STREAMS = 200
JOBS = 4


@pytest.fixture
def gthread_service(tmp_path: Path) -> Iterator[Callable[[int], tuple[str, str]]]:
    """Starts the example service on one gunicorn gthread process of
    ``threads`` threads; gives its host:port and datastore URL."""
    procs: list[subprocess.Popen[str]] = []

    def serve(threads: int) -> tuple[str, str]:
        port = free_port()
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        env = dict(os.environ, SPACEWALK_DATASTORE_URL=url, SPACEWALK_STREAM_MAX="90")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
             "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "examples.app:app"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/examples/branches")
                conn.getresponse().read()
                conn.close()
                return f"127.0.0.1:{port}", url
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail("gunicorn did not start:\n" + proc.communicate()[0])
                time.sleep(0.1)

    yield serve
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def follow(host: str, uuid: str, started: threading.Semaphore, out: list[Any]) -> None:
    """Read one stream to its end; put its log messages and last event on ``out``."""
    conn = http.client.HTTPConnection(*host.split(":"), timeout=60)
    try:
        conn.request("GET", f"/examples/events/{uuid}")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type", "").startswith(
            "text/event-stream"
        )
        text = ""
        signalled = False
        while True:
            line = response.readline()
            if not line:
                break
            text += line.decode()
            if not signalled and "event: progress" in text:
                started.release()
                signalled = True
        found = parse(text)
        out.append((uuid, logs(found), found[-1]))
    except Exception as exc:  # reported by the test
        out.append((uuid, exc, None))
        started.release()
    finally:
        conn.close()


@pytest.mark.slow
def test_200_concurrent_streams_on_one_gthread_process(
    gthread_service: Callable[[int], tuple[str, str]], make_app: Any
) -> None:
    host, url = gthread_service(STREAMS + 10)
    # the test's own app on the same datastore plays the jobs' worker
    app = new_app(make_app, SPACEWALK_DATASTORE_URL=url)
    client = app.test_client()
    uuids = [start(client) for _ in range(JOBS)]
    started = threading.Semaphore(0)
    out: list[Any] = []
    threads = [
        threading.Thread(target=follow, args=(host, uuids[i % JOBS], started, out), daemon=True)
        for i in range(STREAMS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for _ in range(STREAMS):
        assert started.acquire(timeout=max(0.1, deadline - time.monotonic())), "streams stuck"
    for uuid in uuids:
        job = stored_job(app, uuid)
        for index in range(3):
            job.job_log_info(f"{uuid} {index}")
        job.set_completeness(0.5)
        job.record_result(200)
    for thread in threads:
        thread.join(max(0.1, deadline + 30 - time.monotonic()))
    assert len(out) == STREAMS
    for uuid, messages, last in out:
        assert messages == [f"{uuid} {index}" for index in range(3)], (uuid, messages)
        assert last["event"] == "end" and last["data"] == {"completeness": 1.0, "result": 200}


@pytest.mark.slow
def test_a_client_that_goes_away_frees_its_thread(
    gthread_service: Callable[[int], tuple[str, str]], make_app: Any
) -> None:
    # one thread: the next request is answered only once the stream of the
    # client that left has ended, long before SPACEWALK_STREAM_MAX
    host, url = gthread_service(1)
    app = new_app(make_app, SPACEWALK_DATASTORE_URL=url)
    uuid = start(app.test_client())
    conn = http.client.HTTPConnection(*host.split(":"), timeout=30)
    conn.request("GET", f"/examples/events/{uuid}")
    response = conn.getresponse()
    assert b"event: progress" in response.read1(65536)
    conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    conn.close()
    job = stored_job(app, uuid)
    began = time.monotonic()
    for index in range(5):
        # the first write after the close may still be accepted; a later
        # one fails and ends the generator
        time.sleep(0.3)
        job.job_log_info(f"nobody reads {index}")
    other = http.client.HTTPConnection(*host.split(":"), timeout=30)
    other.request("GET", f"/examples/progress/{uuid}")
    assert other.getresponse().status == 200
    other.close()
    assert time.monotonic() - began < 30
