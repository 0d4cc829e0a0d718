"""The ``Spacewalk`` extension: init_app, configuration, per-app state (SPEC 1, 4)."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_spacewalk import Spacewalk, backends
from flask_spacewalk.errors import ConfigurationError
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.worker_loop import Worker
from flask_spacewalk.settings import DEFAULTS
from flask_spacewalk.web.state import SpacewalkState

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) leaves it out
    sys.path.insert(0, str(ROOT))

from jobtrees.api_tree import ApiRoot  # noqa: E402

from examples.jobs.examples import BaseExampleJob  # noqa: E402

EXAMPLE_JOBS = ROOT / "examples" / "jobs"
API_JOBS = TESTS / "jobtrees" / "api_tree"
FIZZ = "/examples/fizz_buzz"

NewApp = Callable[..., Flask]


@pytest.fixture
def new_app(tmp_path: Path) -> Iterator[NewApp]:
    """A bare app with its instance path in ``tmp_path``; Spacewalk's
    connections are closed afterwards."""
    apps: list[Flask] = []

    def make(testing: bool = True, **config: Any) -> Flask:
        app = Flask(__name__, instance_path=str(tmp_path))
        app.testing = testing
        app.config.update(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        for state in app.extensions.get("spacewalk", {}).values():
            if state._connections:
                datastore, queue = state.connections()
                datastore.close()
                queue.close()


@pytest.fixture
def app(new_app: NewApp, db_url: str) -> Flask:
    return new_app(SPACEWALK_DATASTORE_URL=db_url)


def start(client: FlaskClient, leaf: str, body: Any = None) -> str:
    response = client.post(f"{leaf}/job", json=body if body is not None else {})
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.get_json()["uuid"])


def progress(client: FlaskClient, root: str, uuid: str) -> dict[str, Any]:
    response = client.get(f"{root}/progress/{uuid}")
    assert response.status_code == 200
    return dict(response.get_json())


def run_worker(state: SpacewalkState, **kwargs: Any) -> Worker:
    """Run the tree's jobs until its queue is empty."""
    worker = Worker(
        state.registry,
        state.make_datastore,
        state.make_queue,
        state.settings.queue_name,
        **kwargs,
    )
    try:
        worker.run(burst=True)
    finally:
        worker.datastore.close()
        worker.queue.close()
    return worker


# -- registering ----------------------------------------------------------------


def test_direct_form(app: Flask) -> None:
    spacewalk = Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    client = app.test_client()
    assert client.get("/examples/branches").get_json() == []
    assert progress(client, "/examples", start(client, FIZZ, {"n": 3}))["result"] == 200
    states = app.extensions["spacewalk"]
    assert isinstance(states, dict) and list(states) == ["/examples"]
    state = states["/examples"]
    assert isinstance(state, SpacewalkState)
    assert state.root_path == "/examples"
    assert spacewalk.state(app) is state
    with app.app_context():
        assert spacewalk.state() is state
    assert "spacewalk" in app.cli.commands
    # Flask's rule: the extension never keeps the app.
    assert not any(isinstance(value, Flask) for value in vars(spacewalk).values())


def test_factory_form(new_app: NewApp, db_url: str) -> None:
    spacewalk = Spacewalk(modules_dir=EXAMPLE_JOBS, base_job=BaseExampleJob)
    first = new_app(SPACEWALK_DATASTORE_URL=db_url)
    second = new_app(SPACEWALK_DATASTORE_URL=db_url, SPACEWALK_URL_PREFIX="/other")
    spacewalk.init_app(first)
    spacewalk.init_app(second)
    assert first.test_client().get("/examples/leaves").status_code == 200
    assert second.test_client().get("/other/examples/leaves").status_code == 200
    assert second.test_client().get("/examples/leaves").status_code == 404
    assert spacewalk.state(first) is first.extensions["spacewalk"]["/examples"]
    assert spacewalk.state(second) is second.extensions["spacewalk"]["/other/examples"]
    with pytest.raises(RuntimeError):
        spacewalk.state(new_app())


def test_init_app_arguments_override_the_constructors(app: Flask) -> None:
    spacewalk = Spacewalk(modules_dir="nowhere", base_job=BaseExampleJob, url_prefix="/a")
    spacewalk.init_app(app, modules_dir=API_JOBS, base_job=ApiRoot, url_prefix="/b")
    assert app.test_client().get("/b/svc/leaves").status_code == 200


def test_init_app_needs_a_tree(app: Flask) -> None:
    with pytest.raises(ConfigurationError):
        Spacewalk().init_app(app)
    with pytest.raises(ConfigurationError):
        Spacewalk(modules_dir=EXAMPLE_JOBS).init_app(app)


@pytest.mark.parametrize("base_job", [object, "BaseExampleJob", int])
def test_base_job_must_be_a_basejob_subclass(app: Flask, base_job: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        Spacewalk(app, EXAMPLE_JOBS, base_job)
    assert str(info.value) == (
        f"base_job must be a subclass of flask_spacewalk.BaseJob, not {base_job!r}"
    )
    assert "spacewalk" not in app.extensions or not app.extensions["spacewalk"]


def test_second_init_app_on_the_same_app_raises(app: Flask) -> None:
    spacewalk = Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    with pytest.raises(ConfigurationError, match="already"):
        spacewalk.init_app(app)
    with pytest.raises(ConfigurationError, match="already"):
        spacewalk.init_app(app, url_prefix="/elsewhere")
    assert app.test_client().get("/examples/leaves").status_code == 200


def test_init_app_may_be_retried_after_a_failure(new_app: NewApp, db_url: str) -> None:
    spacewalk = Spacewalk(modules_dir=EXAMPLE_JOBS, base_job=BaseExampleJob)
    app = new_app(SPACEWALK_DATASTORE_URL="nosuch://x")
    with pytest.raises(ConfigurationError):
        spacewalk.init_app(app)
    app.config["SPACEWALK_DATASTORE_URL"] = db_url
    spacewalk.init_app(app)
    assert app.test_client().get("/examples/leaves").status_code == 200


@pytest.mark.parametrize(
    "options",
    [{"datastore": "sqlite:///x"}, {"URL_PREFIX": "/x"}, {"url_prefix": "/x", "prefix": ""}],
)
def test_unknown_keywords_are_type_errors(app: Flask, options: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        Spacewalk(modules_dir=EXAMPLE_JOBS, base_job=BaseExampleJob, **options)
    with pytest.raises(TypeError):
        Spacewalk(modules_dir=EXAMPLE_JOBS, base_job=BaseExampleJob).init_app(app, **options)
    assert "spacewalk" not in app.extensions or not app.extensions["spacewalk"]


def test_two_trees_side_by_side(app: Flask, datastore: Any) -> None:
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    Spacewalk(app, API_JOBS, ApiRoot)
    assert sorted(app.extensions["spacewalk"]) == ["/examples", "/svc"]
    client = app.test_client()
    assert client.get("/examples/leaves").status_code == 200
    assert client.get("/svc/leaves").status_code == 200
    fizz = start(client, FIZZ, {"n": 3})
    ping = start(client, "/svc/ping")
    assert progress(client, "/examples", fizz)["result"] == 200
    assert progress(client, "/svc", ping)["result"] == 200
    # They share the datastore, but each tree serves only its own jobs.
    assert datastore.read(make_key(ping))["jobType"] == "svc_ping"
    for kind in ("progress", "info", "data", "dump"):
        assert client.get(f"/svc/{kind}/{fizz}").status_code == 404
        assert client.get(f"/examples/{kind}/{ping}").status_code == 404
    assert list(app.cli.commands).count("spacewalk") == 1


def test_one_tree_twice_under_two_prefixes(app: Flask) -> None:
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, url_prefix="/v2")
    client = app.test_client()
    uuid = start(client, f"/v2{FIZZ}", {"n": 3})
    assert client.get(f"/v2/examples/progress/{uuid}").status_code == 200
    assert client.get("/v2/examples/leaves").get_json()[1]["path"] == "/v2/examples/fizz_buzz"
    assert client.get("/examples/leaves").get_json()[1]["path"] == "/examples/fizz_buzz"


@pytest.mark.parametrize("second_prefix", ["", "/", "//"])
def test_two_trees_at_one_root_path_are_refused(app: Flask, second_prefix: str) -> None:
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    with pytest.raises(ConfigurationError, match="/examples"):
        Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, url_prefix=second_prefix)
    assert app.test_client().get("/examples/leaves").status_code == 200


# -- configuration ---------------------------------------------------------------


def test_config_defaults_are_written_back(new_app: NewApp) -> None:
    app = new_app(SPACEWALK_SERVICE_NAME="mine")
    before = dict(app.config)
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    added = set(app.config) - set(before)
    assert added and all(key.startswith("SPACEWALK_") for key in added)
    assert all(app.config[key] == value for key, value in before.items())
    assert app.config["SPACEWALK_SERVICE_NAME"] == "mine"
    expected = {
        "SPACEWALK_DATASTORE_URL": "sqlite:///spacewalk.sqlite3",
        "SPACEWALK_URL_PREFIX": "",
        "SPACEWALK_MAX_CONTENT_LENGTH": 1024 * 1024,
        "SPACEWALK_EXPOSE_DUMP": True,
        "SPACEWALK_JOB_TTR": 30,
    }
    for key, value in expected.items():
        assert app.config[key] == value
    for key in ("SPACEWALK_QUEUE_URL", "SPACEWALK_CORS_ORIGINS", "SPACEWALK_RUN_INLINE"):
        assert key in app.config and app.config[key] is None
    assert set(DEFAULTS) <= set(app.config)


def test_the_default_datastore_is_in_the_instance_path(new_app: NewApp, tmp_path: Path) -> None:
    app = new_app()
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    start(app.test_client(), FIZZ, {"n": 1})
    assert (tmp_path / "spacewalk.sqlite3").is_file()


def test_a_relative_sqlite_url_is_under_the_instance_path(
    new_app: NewApp, tmp_path: Path
) -> None:
    app = new_app(SPACEWALK_DATASTORE_URL="sqlite:///data/jobs.db")
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    start(app.test_client(), FIZZ, {"n": 1})
    assert (tmp_path / "data" / "jobs.db").is_file()


def test_constructor_keywords_override_config(new_app: NewApp, tmp_path: Path) -> None:
    config_db = tmp_path / "config.db"
    keyword_db = tmp_path / "keyword.db"
    app = new_app(
        SPACEWALK_DATASTORE_URL=f"sqlite:///{config_db}",
        SPACEWALK_URL_PREFIX="/config",
        SPACEWALK_MAX_CONTENT_LENGTH=10,
        SPACEWALK_EXPOSE_DUMP=False,
        SPACEWALK_SERVICE_NAME="config",
    )
    Spacewalk(
        app,
        EXAMPLE_JOBS,
        BaseExampleJob,
        datastore_url=f"sqlite:///{keyword_db}",
        url_prefix="/keyword",
        max_content_length=1000,
        expose_dump=True,
        service_name="keyword",
        run_inline=False,
    )
    client = app.test_client()
    assert client.get("/config/examples/leaves").status_code == 404
    uuid = start(client, f"/keyword{FIZZ}", {"n": 20})  # 10 bytes would be too few
    dump = client.get(f"/keyword/examples/dump/{uuid}")
    assert dump.status_code == 200
    assert dump.get_json()["queueName"] == "keyword_jobs"
    assert dump.get_json()["resultCode"] == -1  # run_inline=False beats app.testing
    assert keyword_db.is_file() and not config_db.exists()
    # setdefault: the app's own values stay
    assert app.config["SPACEWALK_URL_PREFIX"] == "/config"


def test_service_name_names_the_queue(new_app: NewApp, db_url: str) -> None:
    app = new_app(testing=False, SPACEWALK_DATASTORE_URL=db_url, SPACEWALK_SERVICE_NAME="fizz")
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    client = app.test_client()
    uuid = start(client, FIZZ, {"n": 1})
    assert client.get(f"/examples/dump/{uuid}").get_json()["queueName"] == "fizz_jobs"
    state = app.extensions["spacewalk"]["/examples"]
    assert state.settings.queue_name == "fizz_jobs"
    assert run_worker(state).jobs_done == 1


def test_job_ttr_is_the_lease_of_queued_jobs(new_app: NewApp, db_url: str) -> None:
    app = new_app(testing=False, SPACEWALK_DATASTORE_URL=db_url, SPACEWALK_JOB_TTR=123)
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    uuid = start(app.test_client(), FIZZ, {"n": 1})
    _, queue = app.extensions["spacewalk"]["/examples"].connections()
    entry = queue.reserve(timeout=0)
    assert entry is not None and json.loads(entry.body) == uuid
    assert entry.stats()["ttr"] == 123
    entry.release()


@pytest.mark.parametrize("key", ["SPACEWALK_DATASTORE_URL", "SPACEWALK_QUEUE_URL"])
@pytest.mark.parametrize("url", ["mysql://db/jobs", "sqlite3:///x.db", "jobs.db", "://x"])
def test_a_bad_url_scheme_lists_the_supported_ones(
    new_app: NewApp, db_url: str, key: str, url: str
) -> None:
    app = new_app(**{"SPACEWALK_DATASTORE_URL": db_url, key: url})
    with pytest.raises(ConfigurationError) as info:
        Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    assert "sqlite://" in str(info.value)
    assert "spacewalk" not in app.extensions or not app.extensions["spacewalk"]
    assert app.test_client().get("/examples/leaves").status_code == 404


@pytest.mark.parametrize(
    "url", ["sqlite://host/x.db", "sqlite:///", "sqlite:///:memory:", "sqlite:///x.db?mode=ro"]
)
def test_a_malformed_sqlite_url_is_refused(new_app: NewApp, url: str) -> None:
    with pytest.raises(ConfigurationError):
        Spacewalk(new_app(SPACEWALK_DATASTORE_URL=url), EXAMPLE_JOBS, BaseExampleJob)


def test_a_password_in_a_bad_url_is_not_shown(new_app: NewApp) -> None:
    app = new_app(SPACEWALK_DATASTORE_URL="mysql://user:s3cret@db/jobs")
    with pytest.raises(ConfigurationError) as info:
        Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    assert "s3cret" not in str(info.value)


def test_a_datastore_that_is_not_sqlite_needs_a_queue_url(
    new_app: NewApp, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    # A stand-in for postgresql:// or redis://, whatever backends exist now.
    fake = backends._Backend(
        datastore=lambda url, instance_path: backends.make_datastore(db_url),
        queue=None,
        check=lambda url: None,
    )
    monkeypatch.setitem(backends._BACKENDS, "fakedb", fake)
    app = new_app(SPACEWALK_DATASTORE_URL="fakedb://host/jobs")
    with pytest.raises(ConfigurationError, match="SPACEWALK_QUEUE_URL"):
        Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    with pytest.raises(ConfigurationError, match="SPACEWALK_QUEUE_URL"):
        Spacewalk(new_app(SPACEWALK_DATASTORE_URL="redis://db/0"), EXAMPLE_JOBS,
                  BaseExampleJob)  # fmt: skip
    # PostgreSQL is a queue too: its URL serves for both
    app = new_app(SPACEWALK_DATASTORE_URL="postgresql://db/jobs")
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    (state,) = app.extensions["spacewalk"].values()
    assert state.settings.queue_url == "postgresql://db/jobs"
    app = new_app(SPACEWALK_DATASTORE_URL="fakedb://host/jobs", SPACEWALK_QUEUE_URL=db_url)
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    assert progress(app.test_client(), "/examples", start(app.test_client(), FIZZ))["result"] == 200


@pytest.mark.parametrize(
    "config",
    [
        {"SPACEWALK_MAX_CONTENT_LENGTH": "lots"},
        {"SPACEWALK_MAX_CONTENT_LENGTH": -1},
        {"SPACEWALK_JOB_TTR": 0},
        {"SPACEWALK_JOB_TTR": "soon"},
        {"SPACEWALK_SERVICE_NAME": ""},
        {"SPACEWALK_URL_PREFIX": "/a b"},
    ],
)
def test_bad_settings_are_refused(new_app: NewApp, config: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Spacewalk(new_app(**config), EXAMPLE_JOBS, BaseExampleJob)


def test_url_prefix_is_normalised(app: Flask) -> None:
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, url_prefix="api/v1/")
    leaves = app.test_client().get("/api/v1/examples/leaves").get_json()
    assert [item["path"] for item in leaves] == [
        "/api/v1/examples/waste_time",
        "/api/v1/examples/fizz_buzz",
    ]


# -- finding the job modules ----------------------------------------------------


def test_modules_dir_relative_to_the_app_root_path(
    app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Path(app.root_path) == TESTS
    monkeypatch.chdir(tmp_path)  # not found from the working directory
    Spacewalk(app, "jobtrees/api_tree", ApiRoot)
    assert app.test_client().get("/svc/tools/leaves").status_code == 200


def test_modules_dir_relative_to_the_working_directory(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    Spacewalk(app, "examples/jobs", BaseExampleJob)
    assert app.test_client().get("/examples/leaves").status_code == 200


def test_modules_dir_as_a_dotted_package(app: Flask) -> None:
    Spacewalk(app, "examples.jobs", BaseExampleJob)
    assert len(app.test_client().get("/examples/leaves").get_json()) == 2


def test_modules_dir_that_names_nothing(app: Flask) -> None:
    with pytest.raises(ConfigurationError, match="no_such_jobs"):
        Spacewalk(app, "no_such_jobs", BaseExampleJob)


# -- job code runs in an app context ----------------------------------------------


def test_inline_jobs_run_in_an_app_context(new_app: NewApp, db_url: str) -> None:
    app = new_app(SPACEWALK_DATASTORE_URL=db_url, MARK="inline")
    Spacewalk(app, API_JOBS, ApiRoot)
    client = app.test_client()
    uuid = start(client, "/svc/special/context")
    assert progress(client, "/svc", uuid)["result"] == 200
    assert client.get(f"/svc/data/{uuid}").get_json() == {
        "app": app.name,
        "seen": {"app": app.name, "mark": "inline"},
    }


def test_worker_jobs_run_in_the_given_app_context(new_app: NewApp, db_url: str) -> None:
    app = new_app(testing=False, SPACEWALK_DATASTORE_URL=db_url, MARK="worker")
    Spacewalk(app, API_JOBS, ApiRoot)
    client = app.test_client()
    state = app.extensions["spacewalk"]["/svc"]

    with_context = start(client, "/svc/special/context")
    run_worker(state, job_context=app.app_context)
    assert progress(client, "/svc", with_context)["result"] == 200
    seen = client.get(f"/svc/dump/{with_context}").get_json()["seen"]
    assert seen == {"app": app.name, "mark": "worker"}

    # Without one, current_app is not there: the job's run fails.
    without = start(client, "/svc/special/context")
    run_worker(state)
    info = client.get(f"/svc/info/{without}").get_json()
    assert info["errors"] and "application context" in info["errors"][0]["msg"]


# -- connections ----------------------------------------------------------------


def test_connections_are_opened_lazily(new_app: NewApp, tmp_path: Path) -> None:
    db = tmp_path / "lazy" / "jobs.db"
    app = new_app(SPACEWALK_DATASTORE_URL=f"sqlite:///{db}")
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    state = app.extensions["spacewalk"]["/examples"]
    client = app.test_client()
    for path in ("/examples/branches", "/examples/leaves", f"{FIZZ}/post-schema"):
        assert client.get(path).status_code == 200
    assert client.post(f"{FIZZ}/job", json={"n": "x"}).status_code == 422
    assert not db.exists()
    assert not state._connections
    assert client.get("/examples/progress/00000000-0000-4000-8000-000000000000").status_code == 404
    assert db.is_file()


def test_connections_are_per_process(app: Flask) -> None:
    """A child forked after the app used its backends (gunicorn's workers)
    uses them on connections of its own: the backends see to it
    (tests/test_conformance.py), so the state keeps one pair of objects."""
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    client = app.test_client()
    uuid = start(client, FIZZ, {"n": 4})
    state = app.extensions["spacewalk"]["/examples"]
    parent = state.connections()
    assert state.connections()[0] is parent[0] and state.connections()[1] is parent[1]
    parent_connection = parent[0]._db._conn

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running any teardown
        try:
            os.close(read_end)
            child = state.connections()
            again = state.connections()
            document = child[0].read(make_key(uuid))
            report = {
                "own_connection": child[0]._db._conn not in (None, parent_connection),
                "cached": again[0] is child[0] and again[1] is child[1],
                "result": document["resultCode"],
            }
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"{}")
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert report == {"own_connection": True, "cached": True, "result": 200}
    # The parent's connections are untouched and still work.
    assert state.connections()[0] is parent[0]
    assert parent[0]._db._conn is parent_connection
    assert progress(client, "/examples", uuid)["result"] == 200


# -- running inline ---------------------------------------------------------------


def test_run_inline_follows_app_testing_at_request_time(app: Flask) -> None:
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    client = app.test_client()
    assert app.config["SPACEWALK_RUN_INLINE"] is None
    app.testing = True
    assert progress(client, "/examples", start(client, FIZZ, {"n": 1}))["result"] == 200
    app.testing = False
    assert progress(client, "/examples", start(client, FIZZ, {"n": 1}))["result"] == -1
    app.testing = True
    assert progress(client, "/examples", start(client, FIZZ, {"n": 1}))["result"] == 200


def test_run_inline_config_is_read_at_request_time(new_app: NewApp, db_url: str) -> None:
    app = new_app(testing=False, SPACEWALK_DATASTORE_URL=db_url)
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    client = app.test_client()
    first = start(client, FIZZ, {"n": 1})
    assert progress(client, "/examples", first)["result"] == -1
    app.config["SPACEWALK_RUN_INLINE"] = True
    assert progress(client, "/examples", start(client, FIZZ, {"n": 1}))["result"] == 200
    app.testing = True
    app.config["SPACEWALK_RUN_INLINE"] = False
    second = start(client, FIZZ, {"n": 1})
    assert progress(client, "/examples", second)["result"] == -1
    assert run_worker(app.extensions["spacewalk"]["/examples"]).jobs_done == 2
    assert progress(client, "/examples", first)["result"] == 200
    assert progress(client, "/examples", second)["result"] == 200


def test_no_result_inline_reruns_ten_times_then_stays_queued(app: Flask) -> None:
    Spacewalk(app, API_JOBS, ApiRoot)
    client = app.test_client()
    uuid = start(client, "/svc/special/again")
    document = client.get(f"/svc/dump/{uuid}").get_json()
    assert document["runs"] == 10
    assert document["resultCode"] == -1
    assert document["running"] is False
    assert document["queueJobId"] > 0
    _, queue = app.extensions["spacewalk"]["/svc"].connections()
    entry = queue.reserve(timeout=0)
    assert entry is not None and json.loads(entry.body) == uuid
    assert queue.reserve(timeout=0) is None  # exactly one entry
    entry.release()


def test_a_job_that_finishes_inline_leaves_no_queue_entry(app: Flask) -> None:
    Spacewalk(app, API_JOBS, ApiRoot)
    client = app.test_client()
    uuid = start(client, "/svc/ping")
    assert client.get(f"/svc/dump/{uuid}").get_json()["runs"] == 1
    _, queue = app.extensions["spacewalk"]["/svc"].connections()
    assert queue.reserve(timeout=0) is None


# -- CORS ---------------------------------------------------------------------------

ORIGIN_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods")


def cors_app(new_app: NewApp, db_url: str, origins: Any) -> FlaskClient:
    app = new_app(SPACEWALK_DATASTORE_URL=db_url)
    if origins is not None:
        app.config["SPACEWALK_CORS_ORIGINS"] = origins

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    return app.test_client()


def test_no_cors_headers_by_default(new_app: NewApp, db_url: str) -> None:
    client = cors_app(new_app, db_url, None)
    origin = {"Origin": "https://a.example"}
    for response in (
        client.get("/examples/leaves", headers=origin),
        client.post(f"{FIZZ}/job", json={"n": 1}, headers=origin),
        client.options(
            f"{FIZZ}/job", headers=origin | {"Access-Control-Request-Method": "POST"}
        ),
    ):
        assert not any(h.startswith("Access-Control-") for h in response.headers.keys())


def test_cors_for_listed_origins_only(new_app: NewApp, db_url: str) -> None:
    client = cors_app(new_app, db_url, ["https://a.example"])
    good = {"Origin": "https://a.example"}
    response = client.get("/examples/leaves", headers=good)
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "Origin" in response.headers.get("Vary", "")
    response = client.post(f"{FIZZ}/job", json={"n": 1}, headers=good)
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert set(response.headers["Access-Control-Expose-Headers"].split(", ")) == {
        "Location", "Link", "ETag", "Retry-After", "Idempotent-Replayed", "Preference-Applied"
    }
    # error answers too, or a browser cannot read them
    response = client.post(f"{FIZZ}/job", json={"n": "x"}, headers=good)
    assert response.status_code == 422
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    response = client.get("/examples/nope", headers=good)
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"

    for other in ({"Origin": "https://b.example"}, {"Origin": "null"}, {}):
        response = client.get("/examples/leaves", headers=other)
        assert response.status_code == 200
        assert "Access-Control-Allow-Origin" not in response.headers
    # The app's own routes are none of the extension's business.
    assert "Access-Control-Allow-Origin" not in client.get("/hello", headers=good).headers


def test_cors_origins_as_a_comma_separated_string(new_app: NewApp, db_url: str) -> None:
    client = cors_app(new_app, db_url, "https://a.example, https://c.example")
    for origin in ("https://a.example", "https://c.example"):
        response = client.get("/examples/leaves", headers={"Origin": origin})
        assert response.headers["Access-Control-Allow-Origin"] == origin
    response = client.get("/examples/leaves", headers={"Origin": "https://b.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_for_any_origin(new_app: NewApp, db_url: str) -> None:
    client = cors_app(new_app, db_url, ["*"])
    for origin in ("https://a.example", "http://localhost:3000"):
        response = client.get("/examples/branches", headers={"Origin": origin})
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_preflight(new_app: NewApp, db_url: str) -> None:
    client = cors_app(new_app, db_url, ["https://a.example"])
    response = client.options(
        f"{FIZZ}/job",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert "POST" in methods
    assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
    response = client.options(
        f"{FIZZ}/job",
        headers={"Origin": "https://b.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_preflight_is_the_same_at_every_path(new_app: NewApp, db_url: str) -> None:
    # It names every method the tree takes, so that it tells nothing about
    # which paths exist; the request that follows gets its own 404 or 405.
    client = cors_app(new_app, db_url, ["https://a.example"])
    for path in ("/examples/leaves", f"{FIZZ}/job", "/examples/nope", "/examples"):
        response = client.options(
            path, headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
        )
        assert response.status_code == 200, path
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert methods == {"DELETE", "GET", "HEAD", "OPTIONS", "POST"}, path
    # a plain OPTIONS (no preflight) still names the path's own methods
    response = client.options("/examples/leaves", headers={"Origin": "https://a.example"})
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert client.options("/examples/nope").status_code == 404


# -- protecting the API with the app's own auth ----------------------------------------

TOKEN = "s3cret"


def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
    """The docs' example: a bearer token checked before every view."""
    from functools import wraps

    from flask import abort, request

    @wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            abort(401, "a valid bearer token is required")
        return view(*args, **kwargs)

    return checked


def protected_app(new_app: NewApp, db_url: str, **config: Any) -> FlaskClient:
    app = new_app(SPACEWALK_DATASTORE_URL=db_url, **config)

    @app.get("/public")
    def public() -> dict[str, str]:
        return {"open": "yes"}

    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, decorators=[require_token])
    return app.test_client()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_decorators_guard_every_route_of_the_tree(new_app: NewApp, db_url: str) -> None:
    client = protected_app(new_app, db_url)
    uuid = start_with(client, AUTH)
    requests = [
        ("GET", "/examples/branches"),
        ("GET", "/examples/leaves"),
        ("GET", f"{FIZZ}/post-schema"),
        ("POST", f"{FIZZ}/job"),
        ("GET", f"/examples/progress/{uuid}"),
        ("GET", f"/examples/info/{uuid}"),
        ("GET", f"/examples/data/{uuid}"),
        ("GET", f"/examples/dump/{uuid}"),
        # unknown paths and methods too: no hint of what exists
        ("GET", "/examples/nope"),
        ("DELETE", "/examples/leaves"),
    ]
    for method, path in requests:
        response = client.open(path, method=method, json={"n": 3})
        assert response.status_code == 401, (method, path)
        assert response.get_json() == {
            "code": 401,
            "status": "Unauthorized",
            "message": "a valid bearer token is required",
        }
    for method, path in requests[:-2]:
        response = client.open(path, method=method, json={"n": 3}, headers=AUTH)
        assert response.status_code in (200, 201), (method, path, response.get_json())
    assert client.get("/examples/nope", headers=AUTH).status_code == 404
    assert client.delete("/examples/leaves", headers=AUTH).status_code == 405
    # the app's own routes are the app's business
    assert client.get("/public").status_code == 200


def start_with(client: FlaskClient, headers: dict[str, str]) -> str:
    response = client.post(f"{FIZZ}/job", json={"n": 3}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["uuid"])


def test_cors_preflight_passes_the_auth_and_401s_carry_cors(
    new_app: NewApp, db_url: str
) -> None:
    # A browser sends the preflight without credentials: it must not be
    # turned away, and a 401 must be readable by the page.
    client = protected_app(new_app, db_url, SPACEWALK_CORS_ORIGINS="https://a.example")
    origin = {"Origin": "https://a.example"}
    preflight = client.options(
        f"{FIZZ}/job",
        headers=origin
        | {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    denied = client.post(f"{FIZZ}/job", json={"n": 1}, headers=origin)
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "https://a.example"


def test_options_goes_through_the_decorators(new_app: NewApp, db_url: str) -> None:
    # Flask's automatic OPTIONS answers before any view: it told a client
    # without credentials which paths exist (200 here, 401 there).
    client = protected_app(new_app, db_url)
    paths = ("/examples/leaves", f"{FIZZ}/job", "/examples/cancel/x", "/examples/nope",
             "/examples", "/examples/", "/openapi.json", "/docs", "/docs/swagger-ui.css",
             "/docs/nope.js")
    for path in paths:
        response = client.options(path)
        assert response.status_code == 401, path
        assert response.get_json()["message"] == "a valid bearer token is required"
        assert "Allow" not in response.headers
    allowed = {"/examples/leaves": {"GET", "HEAD", "OPTIONS"}, f"{FIZZ}/job": {"POST", "OPTIONS"},
               "/examples/cancel/x": {"POST", "OPTIONS"}, "/docs": {"GET", "HEAD", "OPTIONS"}}
    for path, methods in allowed.items():
        response = client.options(path, headers=AUTH)
        assert response.status_code == 200, path
        assert set(response.headers["Allow"].split(", ")) == methods, path
    for path in ("/examples/nope", "/examples"):
        assert client.options(path, headers=AUTH).status_code == 404


def test_a_preflight_reveals_no_path_under_auth(new_app: NewApp, db_url: str) -> None:
    client = protected_app(new_app, db_url, SPACEWALK_CORS_ORIGINS="https://a.example")
    answers = set()
    for path in ("/examples/leaves", f"{FIZZ}/job", "/examples/nope", "/examples"):
        response = client.options(path, headers={"Origin": "https://a.example",
                                                 "Access-Control-Request-Method": "POST"})
        assert response.status_code == 200, path
        answers.add((response.get_data(), tuple(sorted(response.headers.items()))))
    assert len(answers) == 1  # byte for byte the same
    # another origin's preflight is an OPTIONS like any other: the auth decides
    response = client.options(f"{FIZZ}/job", headers={"Origin": "https://b.example",
                                                      "Access-Control-Request-Method": "POST"})
    assert response.status_code == 401
    # so is an allowed origin's OPTIONS that is no preflight
    response = client.options(f"{FIZZ}/job", headers={"Origin": "https://a.example"})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"


def test_decorators_apply_in_flask_view_order(new_app: NewApp, db_url: str) -> None:
    calls: list[str] = []

    def tracer(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            def traced(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return view(*args, **kwargs)

            return traced

        return decorator

    app = new_app(SPACEWALK_DATASTORE_URL=db_url)
    spacewalk = Spacewalk(modules_dir=EXAMPLE_JOBS, base_job=BaseExampleJob,
                          decorators=[tracer("unused")])
    spacewalk.init_app(app, decorators=[tracer("inner"), tracer("outer")])
    assert app.test_client().get("/examples/leaves").status_code == 200
    # as Flask's View.decorators: the first is applied first, so runs last
    assert calls == ["outer", "inner"]


def test_an_app_wide_before_request_hook_gets_json_errors_under_the_tree(
    new_app: NewApp, db_url: str
) -> None:
    from flask import abort, request

    app = new_app(SPACEWALK_DATASTORE_URL=db_url)

    @app.before_request
    def check_token() -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            abort(401, "a valid bearer token is required")

    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    client = app.test_client()
    for path in ("/examples/leaves", "/examples/nope"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.get_json()["message"] == "a valid bearer token is required"
    assert client.get("/examples/leaves", headers=AUTH).status_code == 200
    # outside the tree, the app's own (HTML) handler answers
    assert client.get("/elsewhere").mimetype == "text/html"


def test_decorators_guard_the_openapi_document_and_docs(new_app: NewApp, db_url: str) -> None:
    client = protected_app(new_app, db_url)
    for path in ("/openapi.json", "/docs", "/docs/swagger-ui.css"):
        assert client.get(path).status_code == 401, path
        with client.get(path, headers=AUTH) as response:  # closes the sent file
            assert response.status_code == 200, path
