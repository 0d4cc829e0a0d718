"""One settings object (issue 13 item 3): the table of ``SPACEWALK_*`` keys,
where each value comes from, the standalone worker's defaults equal to the
app's, one default SQLite file for both, and a warning for a new, empty store."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_spacewalk import Spacewalk, defaults, make_datastore, worker
from flask_spacewalk.errors import ConfigurationError
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.settings import (
    DEFAULTS,
    KEYS,
    OPTIONS,
    Settings,
    config_defaults,
    environ_values,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_JOBS = ROOT / "examples" / "jobs"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.jobs.examples import BaseExampleJob  # noqa: E402

FIZZ = "/examples/fizz_buzz"
NEW_STORE = "created a new, empty job store"


@pytest.fixture(autouse=True)
def no_spacewalk_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it means; none leak in from outside."""
    for name in list(os.environ):
        if name.startswith("SPACEWALK_"):
            monkeypatch.delenv(name)


def make_app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(config)
    return app


# -- the table ----------------------------------------------------------------


def test_the_table_is_the_one_source_of_defaults_and_keywords() -> None:
    assert list(DEFAULTS) == [key.name for key in KEYS]
    assert len(set(DEFAULTS)) == len(KEYS)
    assert all(key.name.startswith("SPACEWALK_") and key.meaning for key in KEYS)
    assert OPTIONS["job_ttr"] == "SPACEWALK_JOB_TTR"
    assert DEFAULTS["SPACEWALK_JOB_TTR"] == defaults.JOB_TTR
    assert DEFAULTS["SPACEWALK_CANCEL_GRACE"] == defaults.CANCEL_GRACE
    assert DEFAULTS["SPACEWALK_SERVICE_NAME"] == defaults.SERVICE_NAME
    assert DEFAULTS["SPACEWALK_DATASTORE_URL"] == defaults.DATASTORE_URL


def documented_default(value: Any) -> str:
    """A default as docs/configuration.rst spells it."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def test_the_documented_table_is_the_table() -> None:
    text = (ROOT / "docs" / "configuration.rst").read_text(encoding="utf-8")
    rows = re.findall(
        r"^   \* - ``(SPACEWALK_[A-Z_]+)``\n     - ``([^`]*)``\n     - (.+)$",
        text,
        re.MULTILINE,
    )
    assert rows == [
        (key.name, documented_default(key.default), key.meaning) for key in KEYS
    ]
    # and each key's own entry starts with the same default
    entries = dict(
        re.findall(r"^``(SPACEWALK_[A-Z_]+)``\n    Default ``([^`]*)``", text, re.MULTILINE)
    )
    assert entries == {key.name: documented_default(key.default) for key in KEYS}


def test_the_shared_defaults_are_the_signatures_defaults() -> None:
    import inspect

    from flask_spacewalk import backends, cli
    from flask_spacewalk.backends.sqlite import SqliteQueue
    from flask_spacewalk.runtime.supervisor import Supervisor
    from flask_spacewalk.runtime.worker_loop import Worker

    def default(func: Any, name: str) -> Any:
        return inspect.signature(func).parameters[name].default

    assert default(Worker, "ttr") == defaults.JOB_TTR
    assert default(Worker, "cancel_grace") == defaults.CANCEL_GRACE
    assert default(Supervisor, "grace") == defaults.SHUTDOWN_GRACE
    assert default(backends.make_queue, "default_ttr") == defaults.JOB_TTR
    assert default(SqliteQueue, "default_ttr") == defaults.JOB_TTR
    assert default(worker.run_workers, "ttr") == defaults.JOB_TTR
    assert default(worker.run_workers, "grace") == defaults.SHUTDOWN_GRACE
    assert default(worker.run_workers, "cancel_grace") == defaults.CANCEL_GRACE
    assert default(worker.run_workers, "service") == defaults.SERVICE_NAME
    grace = next(p for p in cli.worker_command.params if p.name == "grace")
    assert grace.default == defaults.SHUTDOWN_GRACE


# -- where a value comes from ---------------------------------------------------


def test_precedence_keyword_then_config_then_environment_then_default() -> None:
    environ = {
        "SPACEWALK_SERVICE_NAME": "env",
        "SPACEWALK_URL_PREFIX": "/env",
        "SPACEWALK_JOB_TTR": "40",
        "SPACEWALK_CANCEL_GRACE": "4",
    }
    config = {"SPACEWALK_SERVICE_NAME": "config", "SPACEWALK_URL_PREFIX": "/config"}
    settings = Settings.from_mapping(config, {"service_name": "keyword"}, environ)
    assert settings.service_name == "keyword"  # keyword > config > env
    assert settings.url_prefix == "/config"  # config > env
    assert settings.job_ttr == 40.0 and settings.cancel_grace == 4.0  # env > default
    assert settings.max_content_length == defaults.MAX_CONTENT_LENGTH  # default
    # a key the config sets, even to its default, hides the environment
    assert Settings.from_mapping({"SPACEWALK_JOB_TTR": 30}, {}, environ).job_ttr == 30.0


@pytest.mark.parametrize(
    ("name", "text", "attribute", "value"),
    [
        ("SPACEWALK_EXPOSE_DUMP", "false", "expose_dump", False),
        ("SPACEWALK_EXPOSE_DUMP", "No", "expose_dump", False),
        ("SPACEWALK_EXPOSE_DUMP", "0", "expose_dump", False),
        ("SPACEWALK_EXPOSE_DOCS", "yes", "expose_docs", True),
        ("SPACEWALK_CONSOLE", " TRUE ", "console", True),
        ("SPACEWALK_CONSOLE", "1", "console", True),
        ("SPACEWALK_MAX_CONTENT_LENGTH", "2048", "max_content_length", 2048),
        ("SPACEWALK_JOB_TTR", "2.5", "job_ttr", 2.5),
        ("SPACEWALK_CANCEL_GRACE", "1e1", "cancel_grace", 10.0),
        ("SPACEWALK_CORS_ORIGINS", "https://a.example, https://b.example,",
         "cors_origins", ("https://a.example", "https://b.example")),
        ("SPACEWALK_CORS_ORIGINS", "*", "cors_origins", ("*",)),
        ("SPACEWALK_API_TITLE", "My jobs", "api_title", "My jobs"),
        ("SPACEWALK_API_VERSION", "2.3.0", "api_version", "2.3.0"),
        ("SPACEWALK_QUEUE_URL", "sqlite:///other.sqlite3", "queue_url", "sqlite:///other.sqlite3"),
        ("SPACEWALK_RETENTION", "7d", "retention", 604800.0),
        ("SPACEWALK_RETENTION", " 12H ", "retention", 43200.0),
        ("SPACEWALK_RETENTION", "15m", "retention", 900.0),
        ("SPACEWALK_RETENTION", "90s", "retention", 90.0),
        ("SPACEWALK_RETENTION", "3600", "retention", 3600.0),
    ],
)
def test_environment_strings_are_parsed_by_the_keys_type(
    name: str, text: str, attribute: str, value: Any
) -> None:
    settings = Settings.from_mapping({}, {}, {name: text})
    assert getattr(settings, attribute) == value
    assert type(getattr(settings, attribute)) is type(value)


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("SPACEWALK_EXPOSE_DUMP", "maybe", "true or false"),
        ("SPACEWALK_RUN_INLINE", "sometimes", "true or false"),
        ("SPACEWALK_MAX_CONTENT_LENGTH", "1.5", "invalid literal"),
        ("SPACEWALK_MAX_CONTENT_LENGTH", "-1", ">= 0"),
        ("SPACEWALK_JOB_TTR", "soon", "could not convert"),
        ("SPACEWALK_JOB_TTR", "0", "> 0"),
        ("SPACEWALK_JOB_TTR", "inf", "finite"),
        ("SPACEWALK_CANCEL_GRACE", "nan", "> 0"),
        ("SPACEWALK_SERVICE_NAME", "", "empty"),
        ("SPACEWALK_DATASTORE_URL", "mysql://u:s3cret@db/jobs", "supported schemes"),
        ("SPACEWALK_QUEUE_URL", "nosuch://x", "supported schemes"),
        ("SPACEWALK_RETENTION", "0", "> 0 (None keeps every job)"),
        ("SPACEWALK_RETENTION", "-1h", "finite duration >= 0"),
        ("SPACEWALK_RETENTION", "a week", "such as 90s, 15m, 12h, 7d or 600"),
        ("SPACEWALK_RETENTION", "7w", "such as 90s, 15m, 12h, 7d or 600"),
        ("SPACEWALK_RETENTION", "inf", "finite"),
    ],
)
def test_a_bad_environment_value_names_the_key_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, reason: str
) -> None:
    for read in (
        lambda: Settings.from_mapping({}, {}, {name: text}),
        lambda: Settings.from_environ({name: text}),
        lambda: environ_values({name: text}),
    ):
        with pytest.raises(ConfigurationError) as info:
            read()
        message = str(info.value)
        assert name in message and "from the environment" in message and reason in message
        assert "s3cret" not in message
    # the app reads the real environment
    monkeypatch.setenv(name, text)
    with pytest.raises(ConfigurationError, match=f"{name}.*from the environment"):
        Spacewalk(make_app(tmp_path), EXAMPLE_JOBS, BaseExampleJob)


def test_a_bad_value_names_where_it_came_from() -> None:
    with pytest.raises(ConfigurationError, match=r"SPACEWALK_JOB_TTR 'soon' \(from app.config\)"):
        Settings.from_mapping({"SPACEWALK_JOB_TTR": "soon"}, {}, {})
    with pytest.raises(
        ConfigurationError, match=r"SPACEWALK_JOB_TTR -1 \(from the keyword job_ttr\)"
    ):
        Settings.from_mapping({}, {"job_ttr": -1}, {})
    with pytest.raises(
        ConfigurationError, match=r"SPACEWALK_RUN_INLINE 'often' \(from the keyword run_inline\)"
    ):
        Settings.from_mapping({}, {"run_inline": "often"}, {})
    with pytest.raises(
        ConfigurationError, match=r"SPACEWALK_CANCEL_GRACE 0 \(from the command line\)"
    ):
        Settings.from_environ({}, {"cancel_grace": 0})
    with pytest.raises(TypeError, match="unknown Spacewalk option"):
        Settings.from_mapping({}, {"ttr": 1}, {})


def test_the_retention_is_off_by_default_and_takes_numbers_and_durations() -> None:
    assert Settings.from_mapping({}, {}, {}).retention is None
    for value, seconds in [(None, None), ("", None), (86400, 86400.0), (0.5, 0.5),
                           ("1.5h", 5400.0)]:  # fmt: skip
        assert Settings.from_mapping({"SPACEWALK_RETENTION": value}, {}, {}).retention == seconds
    assert Settings.from_mapping({}, {"retention": "7d"}, {}).retention == 604800.0
    for value in (True, 0, -5, float("nan"), [3600]):
        with pytest.raises(ConfigurationError, match=r"bad SPACEWALK_RETENTION .*app.config"):
            Settings.from_mapping({"SPACEWALK_RETENTION": value}, {}, {})


def test_a_config_string_is_read_as_its_type() -> None:
    # "false" in a config file read as text is false, not a true string
    settings = Settings.from_mapping(
        {"SPACEWALK_EXPOSE_DUMP": "false", "SPACEWALK_JOB_TTR": "60"}, {}, {}
    )
    assert settings.expose_dump is False and settings.job_ttr == 60.0


def test_the_app_honours_environment_variables_its_config_leaves_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "from-env.sqlite3"
    monkeypatch.setenv("SPACEWALK_DATASTORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SPACEWALK_EXPOSE_DUMP", "false")
    monkeypatch.setenv("SPACEWALK_SERVICE_NAME", "from-env")
    monkeypatch.setenv("SPACEWALK_JOB_TTR", "45")
    monkeypatch.setenv("SPACEWALK_RUN_INLINE", "false")
    app = make_app(tmp_path, SPACEWALK_SERVICE_NAME="from-config")
    app.testing = True
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    client = app.test_client()
    response = client.post(f"{FIZZ}/job", json={"n": 1})
    assert response.status_code == 201
    uuid = response.get_json()["uuid"]
    assert client.get(f"/examples/dump/{uuid}").status_code == 404  # EXPOSE_DUMP=false
    # RUN_INLINE=false from the environment beats app.testing
    assert client.get(f"/examples/progress/{uuid}").get_json()["result"] == -1
    stored = make_datastore(f"sqlite:///{db}")
    try:
        assert stored.read(make_key(uuid))["queueName"] == "from-config_jobs"
    finally:
        stored.close()
    state = app.extensions["spacewalk"]["/examples"]
    assert state.settings.job_ttr == 45.0 and state.settings.expose_dump is False
    state.close()


def test_the_effective_values_are_written_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPACEWALK_JOB_TTR", "45")
    monkeypatch.setenv("SPACEWALK_EXPOSE_DUMP", "no")
    monkeypatch.setenv("SPACEWALK_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("SPACEWALK_URL_PREFIX", "/env")
    app = make_app(tmp_path, SPACEWALK_URL_PREFIX="/config")
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob, service_name="keyword")
    # the environment's values, parsed, where the config left the key unset
    assert app.config["SPACEWALK_JOB_TTR"] == 45.0
    assert app.config["SPACEWALK_EXPOSE_DUMP"] is False
    assert app.config["SPACEWALK_CORS_ORIGINS"] == ("https://a.example", "https://b.example")
    # the config's own value stays; defaults elsewhere; a keyword is this
    # tree's alone, so a second tree on the app does not inherit it
    assert app.config["SPACEWALK_URL_PREFIX"] == "/config"
    assert app.config["SPACEWALK_SERVICE_NAME"] == defaults.SERVICE_NAME
    assert app.config["SPACEWALK_QUEUE_URL"] is None
    assert set(DEFAULTS) <= set(app.config)
    assert config_defaults(app.config, os.environ) == {}


def test_a_failed_init_app_writes_nothing_back(tmp_path: Path) -> None:
    app = make_app(tmp_path, SPACEWALK_JOB_TTR="soon")
    before = dict(app.config)
    with pytest.raises(ConfigurationError):
        Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    assert dict(app.config) == before


# -- the standalone worker --------------------------------------------------------


def test_the_workers_defaults_are_the_apps() -> None:
    app_settings = Settings.from_mapping({}, {}, {}, app_name="spacewalk")
    assert Settings.from_environ({}) == app_settings
    args = worker.build_parser({}).parse_args(["--jobs", "j"])
    assert args.datastore == app_settings.datastore_url
    assert args.queue is None and app_settings.queue_url == app_settings.datastore_url
    assert args.service == app_settings.service_name
    assert args.ttr == app_settings.job_ttr
    assert args.cancel_grace == app_settings.cancel_grace
    assert args.grace == defaults.SHUTDOWN_GRACE
    # relative sqlite paths: the instance folder beside an app in the
    # working directory, as Flask's app.instance_path
    assert args.instance_path == os.path.abspath("instance")


def test_the_worker_reads_the_environment_through_the_settings() -> None:
    environ = {
        "SPACEWALK_DATASTORE_URL": "sqlite:////srv/jobs.sqlite3",
        "SPACEWALK_SERVICE_NAME": "env",
        "SPACEWALK_JOB_TTR": "45",
        "SPACEWALK_CANCEL_GRACE": "4",
    }
    args = worker.build_parser(environ).parse_args(["--jobs", "j", "--ttr", "50"])
    settings = worker.worker_settings(args, environ)
    assert settings == dataclasses.replace(
        Settings.from_environ(environ), job_ttr=50.0
    )
    assert settings.datastore_url == "sqlite:////srv/jobs.sqlite3"
    assert settings.queue_name == "env_jobs" and settings.cancel_grace == 4.0


def test_the_standalone_worker_takes_the_retention_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(worker, "run_workers", lambda registry, **kw: captured.update(kw) or 0)
    monkeypatch.setenv("SPACEWALK_RETENTION", "7d")
    assert worker.main(["--jobs", str(EXAMPLE_JOBS)]) == 0
    assert captured["retention"] == 604800.0


def run_worker_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask_spacewalk.worker", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACEWALK_")}
    env.update(extra)
    return env


def test_the_worker_cli_names_a_bad_environment_variable(tmp_path: Path) -> None:
    proc = run_worker_cli(
        "--jobs", str(EXAMPLE_JOBS), env=clean_environ(SPACEWALK_JOB_TTR="soon"), cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "SPACEWALK_JOB_TTR 'soon' (from the environment)" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- one default SQLite file for the app and the worker ----------------------------

APP_MODULE = """
from flask import Flask
from flask_spacewalk import Spacewalk
from jobs.hello import HelloRoot

app = Flask(__name__)
Spacewalk(app, "jobs", HelloRoot)
"""

JOBS_MODULE = """
from flask_spacewalk import BaseJob

class HelloRoot(BaseJob):
    NAME = "Hello"
    DESCRIPTION = "greetings"
    BRANCH_NAME = "hello"

class Hi(HelloRoot):
    NAME = "Hi"
    DESCRIPTION = "says hi"
    LEAF_NAME = "hi"

    def run(self):
        return 200
"""

POST_ONE = """
from swapp import app
response = app.test_client().post("/hello/hi/job", json={})
assert response.status_code == 201, response.get_data(as_text=True)
print(response.get_json()["uuid"])
"""


def test_the_app_and_the_worker_share_the_default_sqlite_file(tmp_path: Path) -> None:
    folder = tmp_path / "myapp"
    (folder / "jobs").mkdir(parents=True)
    (folder / "swapp.py").write_text(textwrap.dedent(APP_MODULE), encoding="utf-8")
    (folder / "jobs" / "hello.py").write_text(textwrap.dedent(JOBS_MODULE), encoding="utf-8")
    env = clean_environ()
    posted = subprocess.run(
        [sys.executable, "-c", POST_ONE], cwd=folder, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert posted.returncode == 0, posted.stderr
    uuid = posted.stdout.strip()
    db = folder / "instance" / "spacewalk.sqlite3"
    # the app made the store, and said where
    assert f"{NEW_STORE} at {db}" in posted.stderr

    worker_proc = subprocess.Popen(
        [sys.executable, "-m", "flask_spacewalk.worker", "--jobs", "jobs"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    store = make_datastore(f"sqlite:///{db}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if store.read(make_key(uuid))["resultCode"] == 200:
                break
            time.sleep(0.05)
    finally:
        store.close()
        worker_proc.send_signal(signal.SIGTERM)
        output, _ = worker_proc.communicate(timeout=60)
    assert worker_proc.returncode == 0, output
    document = make_datastore(f"sqlite:///{db}")
    try:
        assert document.read(make_key(uuid))["resultCode"] == 200, output
    finally:
        document.close()
    # the worker found the app's store: no new one, here or in the cwd
    assert NEW_STORE not in output
    assert not (folder / "spacewalk.sqlite3").exists()


def test_the_example_apps_instance_folder_is_the_workers_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # make run's app and the worker run from the repository's root
    from examples.app import app

    monkeypatch.chdir(ROOT)
    args = worker.build_parser({}).parse_args(["--jobs", "examples/jobs"])
    assert args.instance_path == app.instance_path == str(ROOT / "instance")


# -- a new, empty store is announced ---------------------------------------------------


def test_a_new_sqlite_store_is_announced_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tmp_path / "instance")
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    path = tmp_path / "instance" / "spacewalk.sqlite3"
    state = app.extensions["spacewalk"]["/examples"]
    with caplog.at_level(logging.WARNING, logger="flask_spacewalk"):
        assert app.test_client().post(f"{FIZZ}/job", json={"n": 1}).status_code == 201
    announced = [r for r in caplog.records if NEW_STORE in r.getMessage()]
    assert len(announced) == 1  # the datastore made it; the queue found it
    assert announced[0].levelno == logging.WARNING
    assert announced[0].getMessage() == f"{NEW_STORE} at {path}"
    state.close()

    caplog.clear()
    again = make_datastore(f"sqlite:///{path}")
    try:
        with caplog.at_level(logging.WARNING, logger="flask_spacewalk"):
            again.read("anything")
    finally:
        again.close()
    assert NEW_STORE not in caplog.text


def test_an_empty_file_is_a_new_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "touched.sqlite3"
    path.touch()
    store = make_datastore(f"sqlite:///{path}")
    try:
        with caplog.at_level(logging.WARNING, logger="flask_spacewalk"):
            store.read("k")
    finally:
        store.close()
    assert f"{NEW_STORE} at {path}" in caplog.text


def test_new_postgresql_tables_are_announced(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("psycopg")
    from backend_postgres import DATABASE_URL, admin, dropped_afterwards, new_schema_name

    admin().close()  # skips when there is no server
    schema = new_schema_name()
    url = f"{DATABASE_URL}?schema={schema}"
    with dropped_afterwards(schema):
        store = make_datastore(url)
        try:
            with caplog.at_level(logging.WARNING, logger="flask_spacewalk"):
                store.read("k")
        finally:
            store.close()
        announced = [r.getMessage() for r in caplog.records if NEW_STORE in r.getMessage()]
        assert announced == [
            f'{NEW_STORE}: table "{schema}"."spacewalk_documents"'
            f" in PostgreSQL database 127.0.0.1:5432/test"
        ]
        caplog.clear()
        again = make_datastore(url)
        try:
            with caplog.at_level(logging.WARNING, logger="flask_spacewalk"):
                again.read("k")
        finally:
            again.close()
        assert NEW_STORE not in caplog.text


def test_new_postgresql_tables_on_the_search_path_name_their_schema(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("psycopg")
    from backend_postgres import DATABASE_URL, admin, dropped_afterwards, new_schema_name

    schema = new_schema_name()
    with admin() as conn:  # skips when there is no server
        conn.execute(f'CREATE SCHEMA "{schema}"')
    with dropped_afterwards(schema):
        # no schema parameter: the table goes where the search path says
        store = make_datastore(f"{DATABASE_URL}?options=-csearch_path%3D{schema}")
        try:
            with caplog.at_level(logging.WARNING, logger="flask_spacewalk"):
                store.read("k")
        finally:
            store.close()
    assert f'table "{schema}"."spacewalk_documents" in PostgreSQL' in caplog.text


@pytest.mark.parametrize(("value", "inline"), [("false", False), ("0", False), ("yes", True)])
def test_run_inline_switched_on_a_live_app_is_read_as_its_type(
    tmp_path: Path, value: str, inline: bool
) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.testing = True  # inline, unless the key says otherwise
    Spacewalk(app, EXAMPLE_JOBS, BaseExampleJob)
    app.config["SPACEWALK_RUN_INLINE"] = value  # after init_app, as a test may
    try:
        uuid = app.test_client().post("/examples/fizz_buzz/job", json={"n": 3}).get_json()["uuid"]
        progress = app.test_client().get(f"/examples/progress/{uuid}").get_json()
        assert progress["result"] == (200 if inline else -1)
    finally:
        app.extensions["spacewalk"]["/examples"].close()


@pytest.mark.parametrize("url", ["sqlite:///jobs.db", "postgresql://db.example/jobs",
                                 "postgres://db.example/jobs"])
def test_the_queue_defaults_to_a_sqlite_or_postgresql_datastore(url: str) -> None:
    settings = Settings.from_mapping({"SPACEWALK_DATASTORE_URL": url}, {}, {})
    assert settings.queue_url == url


def test_a_redis_datastore_needs_a_queue_url() -> None:
    with pytest.raises(ConfigurationError, match="not SQLite or PostgreSQL"):
        Settings.from_mapping({"SPACEWALK_DATASTORE_URL": "redis://127.0.0.1:6379/0"}, {}, {})
