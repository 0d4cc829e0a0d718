"""``<prefix>/metrics`` (SPEC section 8): parsed with prometheus_client's
own parser, on every datastore, against the jobs each test makes; and the
Grafana dashboard of examples/grafana, whose queries name only these
metrics."""
from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import DATASTORES, QUEUES
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from flask_spacewalk import Spacewalk
from flask_spacewalk.runtime.durations import BUCKETS
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.records import utcnow
from flask_spacewalk.runtime.worker_loop import Worker
from flask_spacewalk.web.routes import UUID_PATTERN

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
JOBS = TESTS / "metrics_jobs"
DASHBOARD = ROOT / "examples" / "grafana" / "spacewalk-dashboard.json"
#: SPEC section 8's names, and the counter of results we add.
SPEC_NAMES = {"spacewalk_jobs", "spacewalk_queue_jobs", "spacewalk_queue_oldest_ready_seconds",
              "spacewalk_workers", "spacewalk_job_duration_seconds"}  # fmt: skip
NAMES = SPEC_NAMES | {"spacewalk_job_results"}
OK, FAIL = "ops_ok", "ops_fail"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: FlaskClient, path: str = "/metrics") -> tuple[dict[str, Any], Samples]:
    """The families by name, and every sample by (name, sorted labels)."""
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values() for s in family.samples
    }  # fmt: skip
    return families, samples


def jobs(samples: Samples, job_type: str) -> dict[str, float]:
    """``spacewalk_jobs`` of ``job_type`` by status, zeros left out."""
    found = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "spacewalk_jobs" and label["job_type"] == job_type and value:
            found[label["status"]] = value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def new_app(tmp_path: Path, datastore_url: str, queue_url: str, **config: Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SPACEWALK_DATASTORE_URL=datastore_url, SPACEWALK_QUEUE_URL=queue_url,
                      SPACEWALK_RUN_INLINE=False, **config)  # fmt: skip
    from metrics_jobs.jobs import OpsRoot

    Spacewalk(app, JOBS, OpsRoot)
    return app


@pytest.fixture(params=sorted(DATASTORES))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    # the datastore's own queue where it has one; SQLite's file beside PostgreSQL
    queue = request.param if request.param in QUEUES else "sqlite"
    with DATASTORES[request.param](tmp_path) as datastore_url:
        with QUEUES[queue](tmp_path) as queue_url:
            app = new_app(tmp_path, datastore_url, queue_url)
            yield app
            for state in app.extensions["spacewalk"].values():
                state.close()


def post(client: FlaskClient, leaf: str, body: Any = None) -> str:
    response = client.post(f"/ops/{leaf}/job", json=body or {})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["uuid"])


def run_worker(app: Flask) -> Worker:
    """A worker that runs every ready job, then exits as on SIGTERM."""
    state = app.extensions["spacewalk"]["/ops"]
    worker = Worker(state.registry, state.make_datastore, state.make_queue,
                    state.settings.queue_name)  # fmt: skip
    worker.run(burst=True)
    return worker


def test_the_metrics_follow_the_jobs(app: Flask) -> None:
    client = app.test_client()
    families, samples = scrape(client)
    assert NAMES <= set(families)
    # every jobType of the tree is there before its first job, at 0
    assert jobs(samples, OK) == {} and value(samples, "spacewalk_jobs", job_type=OK,
                                             status="failed") == 0  # fmt: skip
    oks = [post(client, "ok") for _ in range(4)]
    post(client, "fail")
    post(client, "fail")
    _, samples = scrape(client)
    assert jobs(samples, OK) == {"queued": 4} and jobs(samples, FAIL) == {"queued": 2}
    queue = "spacewalk_jobs"
    assert value(samples, "spacewalk_queue_jobs", queue=queue, state="ready") == 6
    assert value(samples, "spacewalk_queue_jobs", queue=queue, state="reserved") == 0

    assert client.post(f"/ops/cancel/{oks[0]}").status_code == 200
    _, samples = scrape(client)
    assert jobs(samples, OK) == {"queued": 3, "cancelled": 1}

    run_worker(app)
    families, samples = scrape(client)
    assert jobs(samples, OK) == {"finished": 3, "cancelled": 1}
    assert jobs(samples, FAIL) == {"failed": 2}
    assert value(samples, "spacewalk_queue_jobs", queue=queue, state="ready") == 0
    assert value(samples, "spacewalk_queue_oldest_ready_seconds", queue=queue) == 0
    # the runs that recorded a result, and how long they took (ok sleeps 30 ms)
    assert value(samples, "spacewalk_job_duration_seconds_count", job_type=OK) == 3
    assert value(samples, "spacewalk_job_duration_seconds_count", job_type=FAIL) == 2
    assert value(samples, "spacewalk_job_duration_seconds_bucket", job_type=OK, le="0.025") == 0
    assert value(samples, "spacewalk_job_duration_seconds_bucket", job_type=OK, le="+Inf") == 3
    assert value(samples, "spacewalk_job_duration_seconds_sum", job_type=OK) >= 0.09
    assert value(samples, "spacewalk_job_results_total", job_type=OK, status="finished") == 3
    assert value(samples, "spacewalk_job_results_total", job_type=FAIL, status="failed") == 2
    assert value(samples, "spacewalk_job_results_total", job_type=FAIL, status="finished") == 0
    buckets = [s.labels["le"] for s in families["spacewalk_job_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["job_type"] == OK]  # fmt: skip
    assert buckets == [*(repr(b) for b in BUCKETS), "+Inf"]

    # a deleted job (a purge's doing) leaves the counts at once
    datastore, _ = app.extensions["spacewalk"]["/ops"].connections()
    assert datastore.delete(make_key(oks[1]))
    _, samples = scrape(client)
    assert jobs(samples, OK) == {"finished": 2, "cancelled": 1}
    # and a later run adds to the durations the last worker flushed as it exited
    post(client, "ok")
    run_worker(app)
    _, samples = scrape(client)
    assert value(samples, "spacewalk_job_duration_seconds_count", job_type=OK) == 4
    assert jobs(samples, OK) == {"finished": 3, "cancelled": 1}


def test_the_workers_gauge_counts_the_live_workers_by_state(app: Flask) -> None:
    datastore = app.extensions["spacewalk"]["/ops"].connections()[0]
    now = utcnow()
    seen = {"live": now.isoformat(), "gone": (now - datetime.timedelta(hours=1)).isoformat()}
    for id, state, when in [("a", "running", "live"), ("b", "running", "live"),
                            ("c", "draining", "live"), ("d", "running", "gone"),
                            ("e", "retiring", "gone")]:  # fmt: skip
        datastore.save_worker(f"host-1-{id}", {
            "id": f"host-1-{id}", "host": "host", "pid": 1, "state": state,
            "heartbeat": 5, "lastSeen": seen[when], "startedAt": seen["live"],
        })
    _, samples = scrape(app.test_client())
    # the dead ones (three heartbeats gone) are not counted; every state is listed
    assert {state: value(samples, "spacewalk_workers", state=state)
            for state in ("idle", "running", "draining", "retiring")} == {
        "idle": 0, "running": 2, "draining": 1, "retiring": 0}


def test_no_label_is_a_uuid(app: Flask) -> None:
    client = app.test_client()
    uuid = post(client, "ok", {"seconds": 0})
    run_worker(app)
    text = client.get("/metrics").get_data(as_text=True)
    assert uuid not in text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert "uuid" not in sample.labels
            assert not any(UUID_PATTERN.search(v) for v in sample.labels.values()), sample


def test_the_queue_depth_of_beanstalkd(tmp_path: Path) -> None:
    # the queue's queue_stats (GET R/queues) gives the depth, and the age of
    # the oldest ready entry as an estimate in whole seconds
    with QUEUES["beanstalkd"](tmp_path) as queue_url:
        app = new_app(tmp_path, f"sqlite:///{tmp_path / 'jobs.sqlite3'}", queue_url)
        client = app.test_client()
        try:
            post(client, "ok")
            post(client, "ok", {"seconds": 0})
            client.post("/ops/ok/job?delay=60", json={})
            families, samples = scrape(client)
            queue = "spacewalk_jobs"
            assert value(samples, "spacewalk_queue_jobs", queue=queue, state="ready") == 2
            assert value(samples, "spacewalk_queue_jobs", queue=queue, state="delayed") == 1
            age = value(samples, "spacewalk_queue_oldest_ready_seconds", queue=queue)
            assert 0 <= age < 30
        finally:
            app.extensions["spacewalk"]["/ops"].close()


def test_the_oldest_ready_entry_ages(tmp_path: Path) -> None:
    app = new_app(tmp_path, *[f"sqlite:///{tmp_path / 'jobs.sqlite3'}"] * 2)
    client = app.test_client()
    post(client, "ok")
    client.post("/ops/ok/job?delay=60", json={})  # delayed: not ready, not the oldest
    _, first = scrape(client)
    _, second = scrape(client)
    age = [value(s, "spacewalk_queue_oldest_ready_seconds", queue="spacewalk_jobs")
           for s in (first, second)]  # fmt: skip
    assert 0 < age[0] < age[1] < 30
    app.extensions["spacewalk"]["/ops"].close()


def test_a_backend_that_cannot_be_read_fails_the_scrape(tmp_path: Path) -> None:
    from test_outages import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.2"
    app = new_app(tmp_path, dead, dead)
    response = app.test_client().get("/metrics")
    assert response.status_code == 503
    assert response.get_json()["message"].startswith("datastore unavailable: Redis server")


def test_openmetrics_is_served_to_who_asks(tmp_path: Path) -> None:
    app = new_app(tmp_path, *[f"sqlite:///{tmp_path / 'jobs.sqlite3'}"] * 2)
    response = app.test_client().get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.mimetype == "application/openmetrics-text"
    assert response.get_data(as_text=True).endswith("# EOF\n")
    assert response.headers["Cache-Control"] == "no-store"
    app.extensions["spacewalk"]["/ops"].close()


# -- the Grafana dashboard ----------------------------------------------------------


def exposed_series(names: set[str]) -> set[str]:
    """The series names Prometheus stores for these families."""
    series = set()
    for name in names:
        series.add(name)
        if name == "spacewalk_job_duration_seconds":
            series |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        if name == "spacewalk_job_results":
            series = (series - {name}) | {f"{name}_total"}
    return series


def test_the_dashboard_queries_only_metrics_that_exist(tmp_path: Path) -> None:
    app = new_app(tmp_path, *[f"sqlite:///{tmp_path / 'jobs.sqlite3'}"] * 2)
    families, _ = scrape(app.test_client())
    app.extensions["spacewalk"]["/ops"].close()
    series = exposed_series(set(families))
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 36
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("queue depth", "oldest ready", "jobs by status", "failure rate",
                  "duration", "workers"):  # fmt: skip
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(spacewalk_[a-z_]+)\b", target["expr"]))
            assert names, target["expr"]
            assert names <= series, (panel["title"], names - series)
            used |= names
    # p50 and p95 of the durations, from the buckets
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert "histogram_quantile(0.5" in exprs and "histogram_quantile(0.95" in exprs
    assert {"spacewalk_workers", "spacewalk_queue_oldest_ready_seconds"} <= used


def test_the_alert_rules_of_the_docs_query_only_metrics_that_exist(tmp_path: Path) -> None:
    import yaml

    app = new_app(tmp_path, *[f"sqlite:///{tmp_path / 'jobs.sqlite3'}"] * 2)
    families, _ = scrape(app.test_client())
    app.extensions["spacewalk"]["/ops"].close()
    text = (ROOT / "docs" / "operations.rst").read_text(encoding="utf-8")
    blocks = re.findall(r"^\.\. code-block:: yaml\n\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    rules = [rule for block in blocks for group in (yaml.safe_load(
        "\n".join(line[4:] for line in block.splitlines())) or {}).get("groups", [])
        for rule in group["rules"]]  # fmt: skip
    assert {rule["alert"] for rule in rules} == {
        "SpacewalkQueueLatency", "SpacewalkNoLiveWorkers", "SpacewalkFailureRate"
    }
    series = exposed_series(set(families))
    for rule in rules:
        names = set(re.findall(r"\b(spacewalk_[a-z_]+)\b", rule["expr"]))
        assert names and names <= series, rule["alert"]
