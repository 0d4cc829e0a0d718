"""The documentation stays honest: every key and public name is documented,
the jobs of docs/jobs.rst run as the page says, and Sphinx builds cleanly."""
from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_ci_or_skip
from flask import Flask
from flask.testing import FlaskClient

import flask_spacewalk
from flask_spacewalk import Spacewalk
from flask_spacewalk.runtime.policy import backoff_delay, retry_delay
from flask_spacewalk.settings import DEFAULTS
from flask_spacewalk.tree import RESERVED_NAMES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLE_JOBS = DOCS / "examples"
if str(EXAMPLE_JOBS) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_JOBS))

from report_jobs import FetchRatesJob, ReportJobs  # noqa: E402


def documented_keys(text: str) -> set[str]:
    return set(re.findall(r"``(SPACEWALK_[A-Z_]+)``", text))


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    missing = sorted(set(DEFAULTS) - documented_keys(text))
    assert not missing, f"docs/configuration.rst does not document {missing}"


def test_documented_keys_exist() -> None:
    # A key that is documented but read nowhere misleads a reader.
    text = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    unknown = sorted(documented_keys(text) - set(DEFAULTS))
    assert not unknown, f"docs/configuration.rst documents unknown keys {unknown}"


def test_the_jobs_page_lists_every_reserved_name() -> None:
    text = (DOCS / "jobs.rst").read_text(encoding="utf-8")
    section = text.split("reserved because the API uses them", 1)[1].split(". ", 1)[0]
    assert set(re.findall(r"``([^`]+)``", section)) == set(RESERVED_NAMES)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, dedented body)`` of each ``code-block`` of an rst text."""
    blocks = re.findall(r"^\.\. code-block:: (\w+)\n\n((?:    .*\n|[ ]*\n)+)", text, re.MULTILINE)
    return [(lang, textwrap.dedent(body).strip("\n") + "\n") for lang, body in blocks]


def console_output(block: str, command: str) -> list[str]:
    """The lines a console block shows after ``$ command``, to the next blank line."""
    lines = block.splitlines()
    start = lines.index(f"$ {command}") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_the_quickstarts_routes_are_what_flask_spacewalk_routes_prints(tmp_path: Path) -> None:
    # The quickstart's own project, written from its code blocks, and the
    # command as it shows it.
    blocks = code_blocks((DOCS / "quickstart.rst").read_text(encoding="utf-8"))
    python = [body for lang, body in blocks if lang == "python"]
    hello = next(body for body in python if "class HelloJobs" in body)
    app_py = next(body for body in python if "Spacewalk(app" in body)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "hello.py").write_text(hello, encoding="utf-8")
    (tmp_path / "app.py").write_text(app_py, encoding="utf-8")
    command = "flask --app app spacewalk routes"
    shown = next(
        console_output(body, command) for lang, body in blocks
        if lang == "console" and f"$ {command}\n" in body
    )
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "spacewalk", "routes"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert shown == result.stdout.splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_takes_its_port_from_the_command_line_only() -> None:
    # As README.rst says: `make run PORT=9000`; an exported PORT is ignored.
    def bind(*args: str, **env: str) -> str:
        result = subprocess.run(
            ["make", "-n", "run", *args], cwd=ROOT, capture_output=True, text=True,
            timeout=60, check=True, env={**os.environ, **env},
        )
        return re.findall(r"--bind (\S+)", result.stdout)[-1]

    assert bind() == "127.0.0.1:8888"
    assert bind("PORT=9000") == "127.0.0.1:9000"
    assert bind(PORT="7777") == "127.0.0.1:8888"
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    assert "make run PORT=9000" in readme


def test_console_output_helper_can_fail() -> None:
    block = "$ a\none\ntwo\n\n$ b\nthree\n"
    assert console_output(block, "a") == ["one", "two"]
    assert console_output(block, "b") == ["three"]


def reference_names(text: str) -> set[str]:
    """Names documented by an ``auto*`` or plain object directive."""
    found = set()
    for name in re.findall(r"^\.\. (?:auto)?(?:class|function|data|exception)::\s*(\S+)",
                           text, re.MULTILINE):
        found.add(name.rsplit(".", 1)[-1])
    return found


def test_every_public_name_is_in_the_reference() -> None:
    documented = reference_names((DOCS / "reference.rst").read_text(encoding="utf-8"))
    missing = sorted(set(flask_spacewalk.__all__) - documented)
    assert not missing, f"docs/reference.rst does not document {missing}"


def test_reference_names_helper_can_fail() -> None:
    assert reference_names(".. autoclass:: Spacewalk\n.. data:: NO_RESULT\n") == {
        "Spacewalk",
        "NO_RESULT",
    }
    assert reference_names("Spacewalk is mentioned, not documented\n") == set()


def generic_titles(document: dict[str, Any], app: Flask) -> set[str]:
    """The document's operations as api.rst titles: ``GET {root}/info/<uuid>``."""
    (state,) = app.extensions["spacewalk"].values()
    branches = {branch.path for branch in state.tree.branches()}
    leaves = {leaf.path for leaf in state.tree.leaves()}
    titles = set()
    for path, operations in document["paths"].items():
        node, _, rest = path.rpartition("/")
        if node in branches and rest in ("branches", "leaves", "post-schema", "job"):
            generic = f"{{branch}}/{rest}"
        elif node in leaves:
            generic = f"{{leaf}}/{rest}"
        elif path.startswith(state.root_path + "/"):
            generic = "{root}" + path[len(state.root_path):]
        else:
            generic = "{prefix}" + path
        # path parameters as api.rst writes them: <uuid>, <id>
        generic = re.sub(r"/\{(\w+)\}", r"/<\1>", generic)
        titles.update(f"{method.upper()} {generic}" for method in operations)
    return titles


def test_the_api_page_is_in_step_with_the_openapi_document() -> None:
    # One section per operation of the served document, and none for an
    # operation that does not exist; the branches' "is a branch, not a job"
    # routes, left out of the document, are rows of the errors table.
    from examples.app import create_app

    app = create_app()  # the document needs no datastore: none is opened
    document = app.test_client().get("/openapi.json").get_json()
    expected = generic_titles(document, app) | {
        "GET {prefix}/openapi.json", "GET {prefix}/docs", "GET {root}/console",
        "GET {prefix}/metrics", "GET {prefix}/healthz", "GET {prefix}/readyz",
    }
    by_branch = {"GET {branch}/post-schema", "POST {branch}/job"}
    assert not by_branch & expected
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    titles = set(re.findall(r"^``([A-Z]+ \{\w+\}/[^`]+)``\n[~^-]+$", text, re.MULTILINE))
    assert titles == expected
    assert "``post-schema`` or ``job`` on a branch path" in text


# -- the jobs of docs/jobs.rst ---------------------------------------------


@pytest.fixture
def reports_app(tmp_path: Path) -> Iterator[Flask]:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.testing = True  # POSTed jobs run inside the request
    Spacewalk(app, EXAMPLE_JOBS, ReportJobs)
    yield app
    for state in app.extensions["spacewalk"].values():
        state.close()


@pytest.fixture
def client(reports_app: Flask) -> FlaskClient:
    return reports_app.test_client()


def post(client: FlaskClient, path: str, params: dict[str, Any]) -> str:
    response = client.post(f"/reports/{path}/job", json=params)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["uuid"])


def test_the_tree_of_the_jobs_page(client: FlaskClient) -> None:
    assert client.get("/reports/branches").get_json() == [
        {"path": "/reports/sales", "name": "Sales reports", "description": "Reports about sales"}
    ]
    leaves = client.get("/reports/sales/leaves").get_json()
    assert [(leaf["path"], leaf["jobType"]) for leaf in leaves] == [
        ("/reports/sales/totals", "sales_totals")
    ]
    assert [leaf["jobType"] for leaf in client.get("/reports/leaves").get_json()] == [
        "reports_wait_for_data",
        "reports_import",
        "reports_fetch_rates",
    ]


# The test shown on docs/jobs.rst ("Testing jobs").
def test_totals_job(client: FlaskClient) -> None:
    response = client.post("/reports/sales/totals/job", json={"month": "2026-02", "days": 28})
    assert response.status_code == 201
    uuid = response.get_json()["uuid"]

    assert client.get(f"/reports/progress/{uuid}").get_json() == {
        "completeness": 1.0,
        "result": 200,
    }
    assert client.get(f"/reports/data/{uuid}").get_json() == {"month": "2026-02", "total": 4060}

    response = client.post("/reports/sales/totals/job", json={"month": "February"})
    assert response.status_code == 422
    assert "month" in response.get_json()["errors"]


def test_no_result_runs_the_job_again(client: FlaskClient) -> None:
    uuid = post(client, "wait_for_data", {"ready_after": 3})
    dump = client.get(f"/reports/dump/{uuid}").get_json()
    assert (dump["attempts"], dump["resultCode"]) == (3, 200)


def test_interrupts_and_custom_progress(client: FlaskClient) -> None:
    uuid = post(client, "import", {"source": "https://example.com/rows.csv"})
    progress = client.get(f"/reports/progress/{uuid}").get_json()
    assert progress == {"completeness": 1.0, "result": 200, "stage": "done", "rows": 400}

    uuid = post(client, "import", {"source": "ftp://example.com/rows.csv"})
    info = client.get(f"/reports/info/{uuid}").get_json()
    assert info["result"] == 400
    assert [e["errorCode"] for e in info["errors"]] == [400]

    uuid = post(client, "import", {"source": "https://example.com/empty.csv", "batches": 0})
    info = client.get(f"/reports/info/{uuid}").get_json()
    assert info["result"] == 204 and len(info["warnings"]) == 1 and info["errors"] == []


def test_the_run_policy_example(client: FlaskClient) -> None:
    # The table of docs/jobs.rst ("Run policy"), without and with all the jitter.
    low = [retry_delay(FetchRatesJob, k, 30.0, FixedRng(0.0)) for k in range(1, 9)]
    high = [retry_delay(FetchRatesJob, k, 30.0, FixedRng(1.0)) for k in range(1, 9)]
    assert low == [5, 10, 20, 40, 80, 160, 320, 600]
    assert high == pytest.approx([5.5, 11, 22, 44, 88, 176, 352, 600])
    assert backoff_delay(1, 30.0) == 30.0  # a class without a policy: ZeroG's
    # Inline, TIMEOUT does not apply: the job simply runs.
    uuid = post(client, "fetch_rates", {"currency": "CHF"})
    assert client.get(f"/reports/progress/{uuid}").get_json()["result"] == 200


class FixedRng(random.Random):
    """Draws ``value`` every time."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


# -- the build -------------------------------------------------------------


@pytest.mark.docs
def test_sphinx_builds_without_warnings(tmp_path: Path) -> None:
    if importlib.util.find_spec("sphinx") is None:
        requires_ci_or_skip("Sphinx is not installed: pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "reference.html").exists()
