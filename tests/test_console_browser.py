"""The console in a real browser: Playwright drives Debian's Chromium
(``/usr/bin/chromium``; Playwright never downloads one) against the example
app plus the tree of tests/console_jobs, served by gunicorn with a worker.

Each test waits for a condition (Playwright's auto-waiting ``expect``),
never for a fixed time. Screenshots of each state go to a temporary
directory, or to ``$SPACEWALK_CONSOLE_SCREENSHOTS`` (``make screenshots``
writes those of docs/console.rst into docs/_static).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_ci_or_skip
from reliability_support import free_port, log_tail, stop_process, wait_until

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 20_000
MARKUP = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>'

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("console-browser")]

try:
    from playwright.sync_api import Browser, Page, Request, expect, sync_playwright
    # expect() keeps its own 5 s default apart from the context's; a shared, loaded CI
    # machine runs a 6 s job's last seconds slower than that
    expect.set_options(timeout=TIMEOUT_MS)
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The console app with one worker process; its base URL."""
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
        "FLASK_SPACEWALK_DATASTORE_URL": f"sqlite:///{tmp / 'jobs.sqlite3'}",
        "FLASK_SPACEWALK_RUN_INLINE": "false",
        # a cancelled job that does not report progress is stopped after 1 s
        "FLASK_SPACEWALK_CANCEL_GRACE": "1",
        # the worker's record, a drain, and a paused queue, within half a second
        "FLASK_SPACEWALK_HEARTBEAT": "0.5",
        # threads (gthread): a job's page holds an event stream, which would
        # hold a whole sync web worker
        "GUNICORN_CMD_ARGS": "--threads 8",
    }
    log_path = tmp / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "console_app", "spacewalk", "serve",
             "--bind", f"127.0.0.1:{port}", "--web-workers", "2", "--processes", "1",
             "--grace", "2"],
            cwd=TESTS, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/examples/leaves", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        if not wait_until(up, timeout=30, interval=0.1):
            pytest.fail(f"the console app did not start:\n{log_tail(log_path)}")
        yield base
    finally:
        stop_process(proc, timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        requires_ci_or_skip("playwright is not installed: pip install -e '.[test]'")
    if not CHROMIUM.exists():
        requires_ci_or_skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors  # no script error on any page


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("SPACEWALK_CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_console(page: Page, base: str, root: str = "/examples", hash_: str = "") -> None:
    page.goto(f"{base}{root}/console{hash_}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def post(base: str, path: str, body: dict[str, Any]) -> str:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.load(answer)["uuid"])


def wait_finished(page: Page) -> None:
    expect(page.locator("main")).to_have_attribute("data-job-done", "true")


def test_fizz_buzz_from_the_tree_to_its_output(page: Page, server: str, shots: Path) -> None:
    open_console(page, server)
    tree = page.get_by_role("navigation", name="Job tree")
    expect(tree.get_by_role("link", name="FizzBuzz Job")).to_be_visible()
    expect(tree).to_contain_text("Solve FizzBuzz with settable n, fizz & buzz divisors")
    expect(tree.get_by_role("link", name="Waste Time Job")).to_be_visible()
    page.screenshot(path=shots / "console-tree.png")

    # by keyboard: follow the link, type, Enter submits
    tree.get_by_role("link", name="FizzBuzz Job").focus()
    page.keyboard.press("Enter")
    n = page.get_by_label("n", exact=True)
    expect(n).to_have_value("50")  # the defaults are filled in
    expect(page.get_by_label("fizzDivisor")).to_have_value("3")
    expect(page.get_by_label("buzzDivisor")).to_have_value("5")
    expect(n).to_have_attribute("min", "0")
    expect(n).to_have_attribute("max", "100000")
    n.fill("20")
    page.screenshot(path=shots / "console-form.png")
    with page.expect_request(lambda r: r.method == "POST") as posted:
        n.press("Enter")
    assert posted.value.post_data_json == {"n": 20, "fizzDivisor": 3, "buzzDivisor": 5}

    wait_finished(page)
    expect(page.locator(".pct")).to_have_text("100%")
    expect(page.locator(".result")).to_have_text("200")
    expect(page.locator(".job-status")).to_have_text("finished")
    expect(page.locator(".log-events li")).to_have_count(1)
    expect(page.locator(".log-events .msg")).to_contain_text("starting examples_fizz_buzz job")
    output = json.loads(page.locator("pre.data").inner_text())["output"]
    assert len(output) == 20 and output[14] == "FizzBuzz" and output[19] == "Buzz"
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    page.screenshot(path=shots / "console-finished.png", full_page=True)


def test_the_workers_page_shows_the_worker_and_drains_it(
    page: Page, server: str, shots: Path
) -> None:
    uuid = post(server, "/examples/waste_time/job", {"delay": 600})
    open_console(page, server, hash_="#/workers")
    expect(page.get_by_role("heading", name="Workers")).to_be_visible()
    first = page.locator("tr[data-worker]").first
    expect(first).to_be_visible()
    worker_id = first.get_attribute("data-worker")
    row = page.locator(f'tr[data-worker="{worker_id}"]')
    try:
        # the worker runs the job; its row links to the job's page
        expect(row.locator(".badge")).to_have_text("running")
        expect(row.get_by_role("link", name="examples_waste_time")).to_have_attribute(
            "href", f"#/job/{uuid}")
        expect(row).to_contain_text(" MiB")
        row.locator('[data-role="drain"]').click()
        expect(page.locator(".list-note")).to_contain_text(f"Worker {worker_id}: draining")
        expect(row.locator(".badge")).to_have_text("draining")
        expect(row.locator('[data-role="undrain"]')).to_be_visible()
        page.screenshot(path=shots / "console-workers.png")
        row.locator('[data-role="undrain"]').click()
        expect(row.locator(".badge")).to_have_text("running")
    finally:
        # the other tests need the worker, free and taking jobs
        for path in (f"/examples/cancel/{uuid}", f"/examples/workers/{worker_id}/undrain"):
            try:
                urllib.request.urlopen(urllib.request.Request(f"{server}{path}", method="POST"),
                                       timeout=10).close()
            except OSError:
                pass


def test_the_retire_button_asks_the_worker_to_retire(page: Page, server: str) -> None:
    # A real retire ends the shared server's only worker (test_workers.py
    # retires real ones): here the server's answers are stood in for, and
    # the test checks what the button sends and what the page then shows.
    open_console(page, server, hash_="#/workers")
    first = page.locator("tr[data-worker]").first
    expect(first).to_be_visible()
    worker_id = first.get_attribute("data-worker")
    assert worker_id
    listing = json.loads(urllib.request.urlopen(f"{server}/examples/workers", timeout=10).read())
    [record] = [w for w in listing["workers"] if w["id"] == worker_id]
    sent: list[Request] = []

    def retire(route: Any) -> None:
        sent.append(route.request)
        route.fulfill(status=202, content_type="application/json",
                      body=json.dumps({"id": worker_id, "state": "retiring"}))

    def workers(route: Any) -> None:
        retiring = {**record, "state": "retiring"} if sent else record
        route.fulfill(content_type="application/json",
                      body=json.dumps({**listing, "workers": [retiring]}))

    page.route(f"{server}/examples/workers/*/retire", retire)
    page.route(f"{server}/examples/workers", workers)
    row = page.locator(f'tr[data-worker="{worker_id}"]')
    row.locator('[data-role="retire"]').click()
    expect(page.locator(".list-note")).to_contain_text(f"Worker {worker_id}: retiring")
    expect(row.locator(".badge")).to_have_text("retiring")
    expect(row.locator('[data-role="retire"]')).to_have_count(0)
    assert [(r.method, r.url) for r in sent] == [
        ("POST", f"{server}/examples/workers/{urllib.parse.quote(worker_id)}/retire")]


def test_invalid_values_are_shown_at_their_fields(page: Page, server: str, shots: Path) -> None:
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    open_console(page, server, hash_="#/leaf/examples/fizz_buzz")
    n = page.get_by_label("n", exact=True)
    n.fill("-1")
    page.get_by_role("button", name="Start job").click()
    field = page.locator(".field", has=n)
    expect(field.locator(".field-error")).to_be_visible()
    expect(field.locator(".field-error")).to_contain_text("0")
    expect(n).to_have_attribute("aria-invalid", "true")
    expect(n).to_be_focused()
    expect(page.locator(".summary")).to_contain_text("1 field needs attention")
    assert posts == []  # checked in the browser: nothing was sent
    page.screenshot(path=shots / "console-field-error.png")

    # A rule JSON Schema cannot express: the server's 422 shows at the field.
    open_console(page, server, "/console_tests", "#/leaf/console_tests/shout")
    page.get_by_label("message").fill("hello")
    times = page.get_by_label("times")
    times.fill("3")
    page.get_by_role("button", name="Start job").click()
    error = page.locator(".field", has=times).locator(".field-error")
    expect(error).to_have_text("Must be an even number.")
    expect(page.locator(".summary")).to_contain_text("The server did not start the job")
    assert [r.post_data_json for r in posts] == [{"message": "hello", "times": 3}]
    page.screenshot(path=shots / "console-server-error.png")
    times.fill("4")
    page.get_by_role("button", name="Start job").click()
    wait_finished(page)


def test_cancel_a_long_job_and_see_it_cancelled(page: Page, server: str, shots: Path) -> None:
    progress: list[tuple[int, str | None]] = []

    def seen(response: Any) -> None:
        if "/progress/" in response.url:
            progress.append((response.status, response.request.headers.get("if-none-match")))

    page.on("response", seen)
    # the polling the console falls back to without EventSource (a job's
    # page follows its event stream otherwise)
    page.add_init_script("delete window.EventSource")
    open_console(page, server, hash_="#/leaf/examples/waste_time")
    page.get_by_label("delay").fill("600")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator(".log-events .msg").first).to_contain_text("starting examples_waste_time")
    expect(page.locator(".state")).to_contain_text("Running")
    # the page asks with If-None-Match and the server answers 304 while nothing changed
    unchanged = page.wait_for_event(
        "response", lambda r: "/progress/" in r.url and r.status == 304, timeout=TIMEOUT_MS
    )
    assert unchanged.request.headers["if-none-match"] == progress[-1][1]
    assert progress[0] == (200, None)  # the first time it holds no ETag
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator(".cancel-note")).to_contain_text("Cancel")  # "Cancelling: ...", or over
    wait_finished(page)
    expect(page.locator(".cancel-note")).to_have_text("Cancelled.")
    expect(page.locator(".job-status")).to_have_text("cancelled")
    expect(page.locator(".result")).to_have_text("410")
    expect(page.locator(".log-errors .msg").last).to_have_text("cancelled")
    page.screenshot(path=shots / "console-cancelled.png", full_page=True)


def test_recent_jobs_filter_and_cancel(page: Page, server: str, shots: Path) -> None:
    uuid = post(server, "/examples/waste_time/job", {"delay": 600})
    open_console(page, server)
    row = page.locator(f'tr[data-uuid="{uuid}"]')
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("running")  # the worker is free
    page.screenshot(path=shots / "console-jobs.png")
    page.get_by_label("Status").select_option("running")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(row).to_be_visible()
    row.get_by_role("button", name=f"Cancel Waste Time Job {uuid}").click()
    expect(page.locator(".list-note")).to_contain_text(uuid)
    expect(row).to_be_hidden()  # no longer running
    # the API's five words, and a cancelled job is cancelled, not failed
    expect(page.get_by_label("Status").locator("option")).to_have_text(
        ["any", "queued", "running", "finished", "cancelled", "failed"]
    )
    page.get_by_label("Status").select_option("failed")
    expect(row).to_be_hidden()
    page.get_by_label("Status").select_option("cancelled")
    expect(row.locator(".badge")).to_have_text("cancelled")
    # a cancelled job can be retried from the list too
    expect(row.get_by_role("link", name=f"Retry Waste Time Job {uuid}")).to_be_visible()
    row.get_by_role("link", name="Waste Time Job", exact=True).click()
    wait_finished(page)
    expect(page.locator(".job-status")).to_have_text("cancelled")


def test_job_messages_are_text_never_markup(page: Page, server: str, shots: Path) -> None:
    open_console(page, server, "/console_tests", "#/leaf/console_tests/shout")
    expect(page.get_by_role("navigation", name="Job tree")).to_contain_text("<em>browser</em>")
    expect(page.locator("header h1")).to_contain_text("Console <test> jobs")
    page.get_by_label("message").fill(MARKUP)
    page.get_by_role("button", name="Start job").click()
    wait_finished(page)
    for kind in ("events", "warnings", "errors"):
        expect(page.locator(f".log-{kind} .msg").first).to_have_text(MARKUP)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main script, main b").count() == 0
    assert json.loads(page.locator("pre.data").inner_text())["message"] == MARKUP
    page.screenshot(path=shots / "console-escaped.png", full_page=True)


def test_a_form_of_every_kind_sends_typed_json(page: Page, server: str, shots: Path) -> None:
    open_console(page, server, "/console_tests", "#/leaf/console_tests/forms/everything")
    page.get_by_label("name").fill("much too long")
    page.get_by_label("code").fill("abc")
    page.get_by_label("count").fill("2.5")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator(".summary")).to_contain_text("3 fields need attention")
    for label, text in (("name", "at most 8"), ("code", "Must match"), ("count", "")):
        expect(page.locator(".field", has=page.get_by_label(label)).locator(".field-error"))\
            .to_be_visible()
        if text:
            expect(page.locator(".field", has=page.get_by_label(label))).to_contain_text(text)

    page.get_by_label("name").fill("abc")
    page.get_by_label("code").fill("XYZ")
    page.get_by_label("mode").select_option("slow")
    page.get_by_label("count").fill("3")
    page.get_by_label("ratio").fill("0.25")
    page.get_by_label("flag").check()
    page.get_by_role("button", name="Add tags item").click()
    page.get_by_role("textbox", name="tags item 1").fill("a")
    page.get_by_role("button", name="Add tags item").click()
    page.get_by_role("textbox", name="tags item 2").fill("bc")
    page.get_by_label("Set point").check()
    point = page.locator("fieldset.object", has_text="Set point")
    point.get_by_label("x").fill("4")
    expect(point.get_by_label("y")).to_have_value("0")
    page.get_by_role("button", name="Add path item").click()
    item = page.locator("fieldset.array", has_text="path").locator("li").first
    item.get_by_label("x").fill("1")
    item.get_by_label("y").fill("2")
    page.get_by_label("color").select_option("green")
    page.screenshot(path=shots / "console-everything.png", full_page=True)
    with page.expect_request(lambda r: r.method == "POST") as posted:
        page.get_by_role("button", name="Start job").click()
    expected = {
        "name": "abc", "code": "XYZ", "mode": "slow", "count": 3, "ratio": 0.25, "flag": True,
        "tags": ["a", "bc"], "point": {"x": 4, "y": 0}, "path": [{"x": 1, "y": 2}],
        "color": "green",
    }
    assert posted.value.post_data_json == expected
    wait_finished(page)
    assert json.loads(page.locator("pre.data").inner_text()) == expected


def get_json(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as answer:
        return json.load(answer)


def cancel_and_wait(base: str, uuid: str) -> None:
    """Cancel a job and wait for its result, so the worker is free again."""
    request = urllib.request.Request(f"{base}/examples/cancel/{uuid}", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    ended = wait_until(
        lambda: get_json(base, f"/examples/progress/{uuid}")["result"] != -1,
        timeout=30, interval=0.1,
    )
    assert ended, f"job {uuid} was not cancelled"


def test_a_job_no_worker_has_taken_is_queued_not_running(
    page: Page, server: str, shots: Path
) -> None:
    # The one worker process runs the first job; the second waits for it.
    busy = post(server, "/examples/waste_time/job", {"delay": 600})
    try:
        assert wait_until(
            lambda: get_json(server, f"/examples/dump/{busy}")["running"],
            timeout=30, interval=0.1,
        ), "the worker did not take the first job"
        waiting = post(server, "/examples/fizz_buzz/job", {"n": 5})
        try:
            open_console(page, server, hash_=f"#/job/{waiting}")
            expect(page.locator(".job-status")).to_have_text("queued")
            expect(page.locator(".state")).to_contain_text("Queued")
            expect(page.locator(".state")).not_to_contain_text("Running")
            page.screenshot(path=shots / "console-queued.png")
            open_console(page, server, hash_=f"#/job/{busy}")
            expect(page.locator(".job-status")).to_have_text("running")
            expect(page.locator(".state")).to_contain_text("Running")
        finally:
            cancel_and_wait(server, waiting)
    finally:
        cancel_and_wait(server, busy)


def test_a_running_jobs_log_lines_come_by_its_event_stream(
    page: Page, server: str, shots: Path
) -> None:
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    uuid = post(server, "/examples/waste_time/job", {"delay": 6})
    open_console(page, server, hash_=f"#/job/{uuid}")
    expect(page.locator("main")).to_have_attribute("data-job-stream", "open")
    # lines while it runs, then its end, all without polling info
    expect(page.locator(".log-events li").nth(2)).to_be_attached(timeout=20_000)
    assert page.locator("main").get_attribute("data-job-done") is None  # still running
    wait_finished(page)
    expect(page.locator(".pct")).to_have_text("100%")
    expect(page.locator(".job-status")).to_have_text("finished")
    events = get_json(server, f"/examples/info/{uuid}")["events"]
    expect(page.locator(".log-events li")).to_have_count(len(events))
    expect(page.locator(".log-events .msg").last).to_have_text(events[-1]["msg"])
    assert any(f"/examples/events/{uuid}" in u for u in asked)
    assert not any(f"/examples/info/{uuid}" in u for u in asked)
    page.screenshot(path=shots / "console-stream.png", full_page=True)


def test_without_event_source_a_job_is_polled(page: Page, server: str) -> None:
    page.add_init_script("delete window.EventSource")
    uuid = post(server, "/console_tests/shout/job", {"message": "polled"})
    open_console(page, server, "/console_tests", f"#/job/{uuid}")
    wait_finished(page)
    expect(page.locator(".log-warnings .msg")).to_have_text("polled")
    expect(page.locator("main")).not_to_have_attribute("data-job-stream", "open")


def test_a_stream_that_keeps_failing_falls_back_to_polling(page: Page, server: str) -> None:
    page.route("**/events/**", lambda route: route.abort())
    uuid = post(server, "/console_tests/shout/job", {"message": "fallback"})
    open_console(page, server, "/console_tests", f"#/job/{uuid}")
    expect(page.locator("main")).to_have_attribute("data-job-stream", "polling", timeout=30_000)
    wait_finished(page)
    expect(page.locator(".log-errors .msg")).to_have_text("fallback")


def test_a_traceback_keeps_its_line_breaks(page: Page, server: str, shots: Path) -> None:
    uuid = post(server, "/console_tests/crash/job", {})
    open_console(page, server, "/console_tests", f"#/job/{uuid}")
    wait_finished(page)
    expect(page.locator(".job-status")).to_have_text("failed")
    message = page.locator(".log-errors .msg").first
    expect(message).to_contain_text("ValueError: the input was bad")
    stored = get_json(server, f"/console_tests/info/{uuid}")["errors"][0]["msg"]
    assert stored.startswith("Traceback (most recent call last):\n")
    # innerText is what is rendered: collapsed white space would join the lines
    assert message.inner_text().rstrip("\n") == stored.rstrip("\n")
    lines = message.evaluate(
        "e => e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)"
    )
    assert lines >= stored.count("\n") - 0.5
    page.screenshot(path=shots / "console-traceback.png", full_page=True)


def test_an_unknown_job_says_so(page: Page, server: str, shots: Path) -> None:
    uuid = "00000000-0000-4000-8000-000000000000"
    open_console(page, server, hash_=f"#/job/{uuid}")
    expect(page.locator("main h2")).to_have_text("No such job")
    expect(page.locator("main")).to_contain_text(f"no job {uuid}")
    expect(page.locator("main progress")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("unfinished")
    expect(page.locator("main")).not_to_contain_text("0%")
    page.screenshot(path=shots / "console-no-such-job.png")


@pytest.mark.parametrize(
    "hash_", ["#/leaf/%E0%A4%A", "#/leaf/examples/%", "#/job/not-a-uuid", "#/nowhere"]
)
def test_a_malformed_link_says_so(page: Page, server: str, hash_: str) -> None:
    open_console(page, server, hash_=hash_)
    expect(page.locator("main h2")).to_have_text("Not a valid link")
    expect(page.locator("main")).to_contain_text("not a link this console makes")
    # the tree still works from there
    page.get_by_role("navigation", name="Job tree").get_by_role("link", name="FizzBuzz Job").click()
    expect(page.locator("main h2")).to_have_text("FizzBuzz Job")


def test_retry_a_failed_job_with_an_edited_field(page: Page, server: str, shots: Path) -> None:
    uuid = post(server, "/console_tests/divide/job", {"divisor": 0, "label": "kept"})
    open_console(page, server, "/console_tests", f"#/job/{uuid}")
    wait_finished(page)
    expect(page.locator(".job-status")).to_have_text("failed")
    page.get_by_role("link", name="Retry").click()
    # the job's form, filled in with what it was started with
    expect(page.locator("main h2")).to_have_text("Retry Divide")
    divisor = page.get_by_label("divisor")
    expect(divisor).to_have_value("0")
    expect(page.get_by_label("label")).to_have_value("kept")
    divisor.fill("4")
    page.screenshot(path=shots / "console-retry.png")
    with page.expect_request(lambda r: r.method == "POST") as posted:
        page.get_by_role("button", name="Retry job").click()
    assert urllib.parse.urlsplit(posted.value.url).path == f"/console_tests/retry/{uuid}"
    assert posted.value.post_data_json == {"divisor": 4, "label": "kept"}
    # the same job, run again to its end
    expect(page.locator(".job-status")).to_have_text("finished")
    expect(page.locator(".uuid")).to_have_text(uuid)
    wait_finished(page)
    expect(page.locator(".log-events .msg")).to_have_text(
        ["Error - finished", "Retried (was failed with 500); changed divisor", "kept / 4 = 3"])
    expect(page.locator(".log-errors .msg").first).to_contain_text("ZeroDivisionError")
    expect(page.get_by_role("link", name="Retry")).to_be_hidden()


def test_without_dump_a_retry_keeps_the_parameters_it_has(page: Page, server: str) -> None:
    uuid = post(server, "/console_tests/divide/job", {"divisor": 0, "label": "kept"})

    def no_dump(route: Any) -> None:
        # the page of a tree with SPACEWALK_EXPOSE_DUMP = False
        answer = route.fetch()
        route.fulfill(response=answer,
                      body=answer.text().replace('data-dump="true"', 'data-dump="false"'))

    page.route(f"{server}/console_tests/console", no_dump)
    open_console(page, server, "/console_tests", f"#/retry/{uuid}")
    expect(page.locator("main form")).to_contain_text("runs again with the parameters it has")
    expect(page.locator("main input")).to_have_count(0)  # no form of defaults to send
    assert wait_until(
        lambda: get_json(server, f"/console_tests/progress/{uuid}")["result"] == 500,
        timeout=30, interval=0.1,
    ), "the job did not fail"
    with page.expect_request(lambda r: r.method == "POST") as posted:
        page.get_by_role("button", name="Retry job").click()
    assert posted.value.post_data_json == {}
    expect(page.locator(".uuid")).to_have_text(uuid)
    expect(page.locator(".log-events .msg").nth(1)).to_have_text("Retried (was failed with 500)")
    assert get_json(server, f"/console_tests/dump/{uuid}")["label"] == "kept"


def test_a_bulk_retry_counts_then_retries_the_jobs_of_the_filter(
    page: Page, server: str, shots: Path
) -> None:
    uuids = [post(server, "/console_tests/divide/job", {"divisor": 0}) for _ in range(3)]
    assert wait_until(
        lambda: all(get_json(server, f"/console_tests/progress/{u}")["result"] == 500
                    for u in uuids), timeout=30, interval=0.1,
    ), "the jobs did not fail"
    dry = urllib.request.Request(f"{server}/console_tests/jobs/retry?status=failed&dryRun=true",
                                 method="POST")
    with urllib.request.urlopen(dry, timeout=10) as answer:
        failed = json.load(answer)["matched"]
    assert failed >= 3
    open_console(page, server, "/console_tests")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Retry failed jobs…").click()
    go = page.get_by_role("button", name=f"Retry the {failed:,} failed jobs matching this filter")
    expect(go).to_be_visible()
    page.screenshot(path=shots / "console-bulk.png")
    go.click()
    expect(page.locator(".bulk-note")).to_have_text(
        f"Retried {failed:,} of the {failed:,} jobs read; done.")
    for uuid in uuids:
        events = get_json(server, f"/console_tests/info/{uuid}")["events"]
        # (the worker may have run it, and failed it, again since)
        assert [e["msg"] for e in events[:2]] == ["Error - finished",
                                                  "Retried (was failed with 500)"]
    page.get_by_role("button", name="Back").click()
    expect(page.get_by_role("button", name="Retry failed jobs…")).to_be_visible()


# -- the docs page and other sites ------------------------------------------------------

#: Collects the page's Content-Security-Policy violations.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (event) => window.__csp.push(`${event.violatedDirective} ${event.blockedURI}`));
"""


def test_the_docs_page_runs_under_its_csp_and_shows_descriptions_as_text(
    page: Page, server: str, shots: Path
) -> None:
    page.add_init_script(CSP_WATCH)
    page.goto(f"{server}/docs")
    docs = page.locator("#swagger-ui")
    tag = page.locator(".opblock-tag-section", has_text="console_tests/forms")
    expect(tag).to_be_visible()  # Swagger UI ran: its bundle and our script
    # tag descriptions come from job classes' DESCRIPTION, as text
    expect(docs).to_contain_text("Jobs the <em>browser</em> tests run")
    expect(docs).to_contain_text('<img src=x onerror="window.__pwned = 3">')
    expect(docs).to_contain_text("Console <test> jobs.")  # a NAME, in the document's own
    page.screenshot(path=shots / "docs-escaped.png", full_page=True)
    # and so do the operations' descriptions, once opened
    shout = page.locator(".opblock", has_text="/console_tests/shout/job")
    shout.locator(".opblock-summary").click()
    expect(shout).to_contain_text("Logs its message as an event, a warning and an error")

    # "Try it out" posts JSON from the page's own origin: not refused
    fizz = page.locator(".opblock-post", has_text="/examples/fizz_buzz/job")
    fizz.locator(".opblock-summary").click()
    fizz.get_by_role("button", name="Try it out").click()
    fizz.locator("textarea.body-param__text").fill('{"n": 3}')
    job_path = "/examples/fizz_buzz/job"
    with page.expect_response(lambda r: urllib.parse.urlsplit(r.url).path == job_path) as posted:
        fizz.get_by_role("button", name="Execute").click()
    assert posted.value.status == 201, posted.value.text()
    # the documented default priority comes along, and is accepted
    assert urllib.parse.urlsplit(posted.value.url).query == "priority=2147483648"
    assert posted.value.request.headers["content-type"] == "application/json"

    assert page.evaluate("window.__pwned") is None
    assert docs.locator("em, img[src='x']").count() == 0
    assert page.evaluate("window.__csp") == []


def test_a_form_on_another_site_starts_no_job(page: Page, server: str) -> None:
    # Another origin, served by Playwright itself: no second server needed.
    evil = "http://evil.test"
    forms = "".join(
        f'<form method="post" action="{server}{action}" enctype="{enctype}">'
        f'<input type="hidden" name="n" value="3"><button>{name}</button></form>'
        for name, action, enctype in (
            ("empty", "/examples/fizz_buzz/job", "application/x-www-form-urlencoded"),
            ("plain", "/examples/fizz_buzz/job", "text/plain"),
            ("cancel", "/examples/cancel/00000000-0000-4000-8000-000000000000",
             "application/x-www-form-urlencoded"),
            ("pause", "/examples/queues/spacewalk_jobs/pause", "application/x-www-form-urlencoded"),
        )
    )
    page.route(f"{evil}/", lambda route: route.fulfill(content_type="text/html", body=forms))
    for name in ("empty", "plain", "cancel", "pause"):
        page.goto(f"{evil}/")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name=name).click()
        assert answer.value.status == 403, (name, answer.value.text())
        body = json.loads(answer.value.text())
        assert body["code"] == 403 and "another site (http://evil.test)" in body["message"]


def test_the_options_fold_starts_a_job_later_with_a_priority(
    page: Page, server: str, shots: Path
) -> None:
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    open_console(page, server, hash_="#/leaf/examples/fizz_buzz")
    run_at, priority = page.get_by_label("Run at"), page.get_by_label("Priority")
    expect(run_at).to_be_hidden()  # folded away until asked for
    page.get_by_text("Options", exact=True).click()
    # a bad priority is the server's 400, said next to the button
    priority.fill("-3")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator(".form-status")).to_contain_text("priority must be an integer")
    # the browser's local time, an hour from now
    later = dt.datetime.now().replace(microsecond=0) + dt.timedelta(hours=1)
    run_at.fill(later.isoformat())
    priority.fill("7")
    page.screenshot(path=shots / "console-options.png")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator(".job-status")).to_have_text("queued")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(posts[-1].url).query)
    assert set(query) == {"runAt", "priority"} and query["priority"] == ["7"]
    assert query["runAt"][0].endswith("Z")
    uuid = page.url.rsplit("/", 1)[1]
    try:
        kwargs = get_json(server, f"/examples/dump/{uuid}")["queueKwargs"]
        assert kwargs["priority"] == 7 and 3500 < kwargs["delay"] <= 3600
    finally:
        cancel_and_wait(server, uuid)


def test_the_queues_page_pauses_and_resumes_the_queue(
    page: Page, server: str, shots: Path
) -> None:
    open_console(page, server)
    page.get_by_role("link", name="Queues").click()
    row = page.locator('tr[data-queue="spacewalk_jobs"]')
    expect(row.locator(".badge")).to_have_text("active")
    pause = row.get_by_role("button", name="Pause queue spacewalk_jobs")
    try:
        pause.click()
        expect(row.locator(".badge")).to_have_text("paused")
        expect(page.locator(".list-note")).to_contain_text("Queue spacewalk_jobs: paused")
        assert get_json(server, "/examples/queues")["queues"][0]["paused"] is True
        time.sleep(1)  # two heartbeats: the worker has seen the pause
        uuid = post(server, "/examples/fizz_buzz/job", {"n": 3})
        cells = row.locator("td")
        expect(cells.nth(1)).to_have_text("1")  # ready, waiting for the resume
        expect(cells.nth(4)).to_have_text(re.compile(r"^\d+ s$"))  # its wait
        page.screenshot(path=shots / "console-queues.png")
        assert get_json(server, f"/examples/progress/{uuid}")["result"] == -1
        row.get_by_role("button", name="Resume queue spacewalk_jobs").click()
        expect(row.locator(".badge")).to_have_text("active")
        expect(cells.nth(1)).to_have_text("0")
        assert wait_until(
            lambda: get_json(server, f"/examples/progress/{uuid}")["result"] == 200,
            timeout=30, interval=0.1,
        )
    finally:  # the other tests need a worker that takes jobs
        request = urllib.request.Request(
            f"{server}/examples/queues/spacewalk_jobs/resume", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
