"""The lifecycle owner (runtime/lifecycle.py): one method per transition,
and no other module writing what it owns."""
from __future__ import annotations

import ast
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_postgres import postgres_url
from backend_support import QUEUES, _close
from runtime_jobs.jobs import NoopJob, RequeueJob, ReturnsJob

from flask_spacewalk import NO_RESULT
from flask_spacewalk.backends import make_queue
from flask_spacewalk.errors import QueueUnavailable
from flask_spacewalk.runtime import lifecycle as lifecycle_module
from flask_spacewalk.runtime.cancel import CancelAnswer, CancelWatch, request_cancel
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.lifecycle import Lifecycle
from flask_spacewalk.runtime.outcome import ChangeRefused, Outcome

PACKAGE = Path(lifecycle_module.__file__).resolve().parent.parent

#: The attributes only the lifecycle writes.
OWNED = frozenset({"running", "resultCode", "queueJobId"})
#: (module, function) pairs outside the lifecycle allowed to write them: the
#: job's document loading and its ZeroG API, which job code may call or
#: override.
ALLOWED = {
    ("runtime/job.py", "RuntimeJob.__init__"),
    ("runtime/job.py", "RuntimeJob.record_result"),
}
#: Queue calls that write a job's entry, by the name of the object called on.
QUEUE_CALLS = {"put": ("queue",), "delete": ("queue", "entry"), "release": ("entry",)}


def _owner_violations(path: Path) -> Iterator[str]:
    """Every write of an owned attribute or a job's queue entry in ``path``."""
    relative = path.relative_to(PACKAGE).as_posix()
    tree = ast.parse(path.read_text(), str(path))
    scopes: list[str] = []

    def where(node: ast.AST) -> str:
        return f"{relative}:{node.lineno} ({'.'.join(scopes) or 'module'})"  # type: ignore[attr-defined]

    def allowed() -> bool:
        return (relative, ".".join(scopes)) in ALLOWED

    def targets(node: ast.AST) -> Iterator[ast.AST]:
        if isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                yield from targets(element)
        else:
            yield node

    def visit(node: ast.AST) -> Iterator[str]:
        scoped = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        if scoped:
            scopes.append(node.name)  # type: ignore[attr-defined]
        written: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            written = [t for target in node.targets for t in targets(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            written = list(targets(node.target))
        for target in written:
            if isinstance(target, ast.Attribute) and target.attr in OWNED and not allowed():
                yield f"{where(node)} assigns .{target.attr}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            receiver = ast.unparse(node.func.value).lower()
            if name == "update_attrs" and not allowed():
                for keyword in node.keywords:
                    if keyword.arg in OWNED:
                        yield f"{where(node)} update_attrs({keyword.arg}=...)"
            if name in QUEUE_CALLS and receiver.endswith(QUEUE_CALLS[name]):
                yield f"{where(node)} calls {ast.unparse(node.func)}()"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "job"
            and node.attr.startswith("_")
            and relative != "runtime/job.py"
        ):
            yield f"{where(node)} touches the job's private .{node.attr}"
        for child in ast.iter_child_nodes(node):
            yield from visit(child)
        if scoped:
            scopes.pop()

    yield from visit(tree)


def test_only_the_lifecycle_writes_a_jobs_state_and_queue_entry() -> None:
    # backends/ are the queues themselves; the lifecycle is the owner.
    sources = [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "backends"
        and path.relative_to(PACKAGE).as_posix() != "runtime/lifecycle.py"
    ]
    assert len(sources) > 20
    violations = [line for path in sources for line in _owner_violations(path)]
    assert violations == []


def test_the_scan_finds_what_it_forbids(tmp_path: Path, monkeypatch: Any) -> None:
    # The scan itself can fail: each kind of write it forbids is found.
    package = tmp_path / "pkg"
    package.mkdir()
    source = package / "bad.py"
    source.write_text(
        "def f(job, entry, queue, item):\n"
        "    job.running = True\n"
        "    job.resultCode, job.cas = 200, 1\n"
        "    item.queueJobId: int = 3\n"
        "    job.update_attrs(running=False, completeness=1.0)\n"
        "    job.queue.put(job.uuid)\n"
        "    queue.delete(7)\n"
        "    entry.release(delay=1)\n"
        "    entry.delete()\n"
        "    job._before_change = None\n"
        "    job.update_attrs(completeness=0.5)\n"
    )
    monkeypatch.setattr(f"{__name__}.PACKAGE", package)
    found = list(_owner_violations(source))
    assert [line.split(" ", 2)[2] for line in found] == [
        "assigns .running",
        "assigns .resultCode",
        "assigns .queueJobId",
        "update_attrs(running=...)",
        "calls job.queue.put()",
        "calls queue.delete()",
        "calls entry.release()",
        "calls entry.delete()",
        "touches the job's private ._before_change",
    ]


# -- the transitions -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One database for the datastore and the queue: the transitions take
    the shared transactions of the SQLite file and of PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'spacewalk.sqlite3'}"
    else:
        with postgres_url(tmp_path) as url:
            yield url


#: Each queue kind beside the SQLite datastore is enough for the options.
SQLITE_DATASTORE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def lifecycle(registry: Any, datastore: Any, queue: Any) -> Lifecycle:
    return Lifecycle(datastore, queue, registry, error_retry_delay=0.0,
                     default_requeue_delay=0.0)


def stored(datastore: Any, uuid: str) -> dict[str, Any]:
    document: dict[str, Any] = datastore.read(make_key(uuid))
    return document


def test_create_stores_and_enqueues(lifecycle: Lifecycle, datastore: Any, queue: Any) -> None:
    job = NoopJob(datastore, queue)
    lifecycle.create(job, priority=5)
    document = stored(datastore, job.uuid)
    assert document["queueKwargs"] == {"priority": 5}
    assert document["queueJobId"] == job.queueJobId > 0
    assert document["queueName"] == queue.queueName
    entry = queue.reserve(timeout=0)
    assert entry is not None and entry.body == f'"{job.uuid}"'


def test_create_refuses_a_stored_job(lifecycle: Lifecycle, datastore: Any, queue: Any) -> None:
    job = NoopJob(datastore, queue)
    job.save()
    with pytest.raises(ValueError, match="already stored"):
        lifecycle.create(job)
    assert queue.reserve(timeout=0) is None


def test_a_refused_put_marks_the_job(
    lifecycle: Lifecycle, datastore: Any, queue: Any, monkeypatch: Any
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise QueueUnavailable("down")

    monkeypatch.setattr(queue, "put", refuse)
    monkeypatch.setattr(queue, "put_with_document", refuse, raising=False)
    job = NoopJob(datastore, queue)
    with pytest.raises(QueueUnavailable):
        lifecycle.create(job)
    monkeypatch.undo()
    document = datastore.read(make_key(job.uuid))
    # One transaction stores nothing; the other path stores the job marked.
    assert document is None or document["queueJobId"] == -1


def test_start_marks_running_unless_finished_or_cancelled(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    fresh, ended, cancelled = (NoopJob(datastore, queue) for _ in range(3))
    for job in (fresh, ended, cancelled):
        job.save()
    assert lifecycle.start(fresh) is None
    assert stored(datastore, fresh.uuid)["running"] is True

    # The result arrives between the load and the running write: the
    # conflict makes the start read it.
    late = NoopJob(datastore, queue, **{"uuid": ended.uuid, "cas": ended.cas})
    ended.record_result(201)
    assert lifecycle.start(late) == Outcome(201, recorded=True)
    assert stored(datastore, ended.uuid)["running"] is False

    request_cancel(datastore, cancelled.uuid)
    watch = CancelWatch(datastore, cancelled.uuid, lambda: None, grace=10)
    assert lifecycle.start(cancelled, watch) == Outcome(410, cancelled=True)
    assert stored(datastore, cancelled.uuid)["running"] is False


def test_a_refused_change_saves_nothing(datastore: Any, queue: Any) -> None:
    job = NoopJob(datastore, queue)
    job.save()
    with pytest.raises(ChangeRefused) as refused, job.guarded(lambda: "no"):
        job.update_attrs(completeness=0.5)
    assert refused.value.reason == "no"
    assert stored(datastore, job.uuid)["completeness"] == 0
    job.update_attrs(completeness=0.25)  # the guard is gone with its block
    assert stored(datastore, job.uuid)["completeness"] == 0.25


def test_finish_records_requeues_and_settles(
    lifecycle: Lifecycle, registry: Any, datastore: Any, queue: Any
) -> None:
    job = RequeueJob(datastore, queue, times=2, delay=0.0)
    lifecycle.create(job)
    entry = queue.reserve(timeout=0)
    outcome = lifecycle.run(job)
    assert outcome == Outcome(NO_RESULT, 0.0)
    lifecycle.finish(job, outcome, entry=entry)
    document = stored(datastore, job.uuid)
    assert (document["running"], document["resultCode"]) == (False, NO_RESULT)
    entry = queue.reserve(timeout=0)  # the new entry; the old one is gone
    assert entry is not None and entry.id == document["queueJobId"]
    job = registry.get_job(job.uuid, datastore, queue)
    lifecycle.finish(job, lifecycle.run(job), entry=entry)
    assert stored(datastore, job.uuid)["resultCode"] == 200
    assert queue.reserve(timeout=0) is None


def test_recover_records_the_dead_run(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    job = NoopJob(datastore, queue, running=True)
    job.save()
    assert lifecycle.recover(job) is None  # runs again
    assert [e.msg for e in job.errors] == ["worker died while running the job (killed?)"]
    job = NoopJob(datastore, queue, running=True, errorCount=2)
    job.save()
    assert lifecycle.recover(job) == Outcome(500)


def test_requeue_stale_claims_the_job_first(
    lifecycle: Lifecycle, registry: Any, datastore: Any, queue: Any
) -> None:
    job = NoopJob(datastore, queue)
    job.save()
    other = registry.get_job(job.uuid, datastore, queue)
    assert lifecycle.requeue_stale(other, delay=0) is True
    assert queue.reserve(timeout=0) is not None
    # A copy read before that claim loses: nothing is queued twice.
    assert lifecycle.requeue_stale(job, delay=0) is False
    assert queue.reserve(timeout=0) is None


def test_cancel_answers_as_the_protocol_says(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    queued = NoopJob(datastore, queue)
    lifecycle.create(queued)
    assert lifecycle.cancel(queued) is CancelAnswer.CANCELLED
    assert queue.reserve(timeout=0) is None  # its entry is deleted
    assert lifecycle.cancel(queued) is CancelAnswer.FINISHED
    running = NoopJob(datastore, queue, running=True)
    running.save()
    assert lifecycle.cancel(running) is CancelAnswer.CANCELLING
    # A result stored after the API read the job: the conflict finds it.
    late = NoopJob(datastore, queue, uuid=running.uuid, cas=running.cas, running=True)
    running.record_result(200)
    assert lifecycle.cancel(late) is CancelAnswer.FINISHED


def test_run_inline_runs_as_a_worker_would(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    done = ReturnsJob(datastore, queue, value=201)
    lifecycle.run_inline(done)
    assert stored(datastore, done.uuid)["resultCode"] == 201
    assert queue.reserve(timeout=0) is None
    # NO_RESULT runs again at once, up to INLINE_MAX_RUNS times, then the
    # job stays queued.
    endless = RequeueJob(datastore, queue, times=100, delay=0.0)
    lifecycle.run_inline(endless)
    document = stored(datastore, endless.uuid)
    assert (document["runs"], document["resultCode"]) == (Lifecycle.INLINE_MAX_RUNS, NO_RESULT)
    assert queue.reserve(timeout=0) is not None


def test_jobs_enqueue_is_the_lifecycles(datastore: Any, queue: Any, monkeypatch: Any) -> None:
    # ZeroG job code calls job.enqueue(): one implementation, the lifecycle's.
    calls = []
    monkeypatch.setattr(Lifecycle, "enqueue", lambda self, job, **kw: calls.append((job, kw)))
    job = NoopJob(datastore, queue)
    job.enqueue(delay=3)
    assert calls == [(job, {"delay": 3})]


def test_release_stops_the_run_and_gives_the_entry_back(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    job = NoopJob(datastore, queue)
    lifecycle.create(job)
    entry = queue.reserve(timeout=0)
    assert lifecycle.start(job) is None
    lifecycle.release(entry, job=job)  # the worker shuts down mid-run
    assert stored(datastore, job.uuid)["running"] is False
    again = queue.reserve(timeout=0)
    assert again is not None and again.id == entry.id


def test_skip_drops_the_entry_and_a_leftover_request(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    job = NoopJob(datastore, queue)
    lifecycle.create(job)
    job.record_result(200)
    request_cancel(datastore, job.uuid)
    lifecycle.skip(job, queue.reserve(timeout=0))
    assert queue.reserve(timeout=0) is None
    assert datastore.read(f"spacewalk_cancel_{job.uuid}") is None


def test_cancel_stuck_records_the_cancellation(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    job = NoopJob(datastore, queue, running=True)
    lifecycle.create(job)
    request_cancel(datastore, job.uuid)
    lifecycle.cancel_stuck(job.uuid, queue.reserve(timeout=0))
    document = stored(datastore, job.uuid)
    assert (document["resultCode"], document["running"]) == (410, False)
    assert datastore.read(f"spacewalk_cancel_{job.uuid}") is None
    assert queue.reserve(timeout=0) is None
    with pytest.raises(TypeError, match="registry"):
        Lifecycle(datastore, queue).cancel_stuck(job.uuid, queue.reserve(timeout=0))


def test_a_failed_finish_leaves_the_entry_to_its_lease(
    lifecycle: Lifecycle, datastore: Any, queue: Any, monkeypatch: Any, caplog: Any
) -> None:
    job = NoopJob(datastore, queue)
    lifecycle.create(job)
    entry = queue.reserve(timeout=0)
    outcome = lifecycle.run(job)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise QueueUnavailable("down")

    monkeypatch.setattr(job, "record_result", down)
    lifecycle.finish(job, outcome, entry=entry)  # logged, not raised
    assert "cannot record outcome" in caplog.text
    entry.touch()  # still reserved by this worker: its lease brings the job back
    # Inline, with no entry, the failure is the caller's (a 503).
    with pytest.raises(QueueUnavailable):
        lifecycle.finish(job, outcome)


def test_a_cancellation_that_was_not_stored_keeps_its_request(
    lifecycle: Lifecycle, datastore: Any, queue: Any, monkeypatch: Any
) -> None:
    """The request must outlive a failed write: the entry's lease brings the
    job back, and that run must still find the job cancelled."""
    from flask_spacewalk.errors import DatastoreUnavailable
    from flask_spacewalk.runtime.cancel import cancel_requested

    job = NoopJob(datastore, queue)
    lifecycle.create(job)
    entry = queue.reserve(timeout=0)
    request_cancel(datastore, job.uuid)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise DatastoreUnavailable("down")

    with monkeypatch.context() as patch:
        patch.setattr(job, "record_change", down)
        outage = lifecycle.finish(job, Outcome(410, cancelled=True), entry=entry)
    assert isinstance(outage, DatastoreUnavailable)
    assert cancel_requested(datastore, job.uuid)
    lifecycle.finish(job, Outcome(410, cancelled=True), entry=entry)
    assert not cancel_requested(datastore, job.uuid)
    assert datastore.read(make_key(job.uuid))["resultCode"] == 410


# -- starting options on every queue (SPEC section 7) ----------------------------------


@pytest.fixture(params=sorted(QUEUES))
def any_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A queue of each kind the conformance suite runs, beside the SQLite
    datastore (where a job's document lives does not change its entry)."""
    with QUEUES[request.param](tmp_path) as url:
        queue = make_queue(url, "options")
        yield queue
        _close(queue)


@SQLITE_DATASTORE
def test_a_delayed_job_is_reserved_once_its_delay_ran_out(
    registry: Any, datastore: Any, any_queue: Any
) -> None:
    # 1 s: beanstalkd counts whole seconds, and rounds a delay up
    job = NoopJob(datastore, any_queue)
    created = time.monotonic()
    Lifecycle(datastore, any_queue, registry).create(job, delay=1)
    assert stored(datastore, job.uuid)["queueKwargs"] == {"delay": 1}
    assert any_queue.reserve(timeout=0) is None
    entry = any_queue.reserve(timeout=5)
    waited = time.monotonic() - created
    assert entry is not None and json.loads(entry.body) == job.uuid
    # never before the delay; the upper bound leaves room for a loaded
    # machine (the suite runs on two busy cores): "within 1 s after" is
    # what a quiet machine shows, not what a test can promise
    assert 0.9 <= waited < 4.0
    entry.delete()


@SQLITE_DATASTORE
def test_ready_jobs_are_reserved_by_priority_then_in_order(
    registry: Any, datastore: Any, any_queue: Any
) -> None:
    lifecycle = Lifecycle(datastore, any_queue, registry)
    started = []
    for priority in (None, 0, 2**32 - 1, 7, None, 7, 0):
        job = NoopJob(datastore, any_queue)
        lifecycle.create(job, **({} if priority is None else {"priority": priority}))
        started.append((2**31 if priority is None else priority, job.uuid))
    order = []
    while (entry := any_queue.reserve(timeout=0)) is not None:
        order.append(json.loads(entry.body))
        entry.delete()
    # sorted() is stable: equal priorities keep the order they were created in
    assert order == [uuid for _, uuid in sorted(started, key=lambda pair: pair[0])]


@pytest.mark.parametrize("priority", [-1, 2**32, 1.5, True, "1"])
def test_every_queue_refuses_a_priority_out_of_range(any_queue: Any, priority: Any) -> None:
    with pytest.raises(ValueError, match="priority"):
        any_queue.put("job", priority=priority)
    assert any_queue.reserve(timeout=0) is None


@SQLITE_DATASTORE
def test_a_requeued_job_keeps_its_priority(
    registry: Any, datastore: Any, any_queue: Any
) -> None:
    lifecycle = Lifecycle(datastore, any_queue, registry)
    job = NoopJob(datastore, any_queue)
    lifecycle.create(job, priority=3, delay=0)
    entry = any_queue.reserve(timeout=0)
    assert entry is not None
    lifecycle.requeue(job, 0)
    entry.delete()
    assert stored(datastore, job.uuid)["queueKwargs"] == {"priority": 3, "delay": 0}
    again = any_queue.reserve(timeout=0)
    assert again is not None and again.stats()["pri"] == 3
    again.delete()


def test_run_inline_keeps_its_starting_options(
    lifecycle: Lifecycle, datastore: Any, queue: Any
) -> None:
    job = NoopJob(datastore, queue)
    lifecycle.run_inline(job, priority=9)
    document = stored(datastore, job.uuid)
    assert (document["resultCode"], document["queueKwargs"]) == (200, {"priority": 9})
    # the requeue after INLINE_MAX_RUNS keeps the priority
    endless = RequeueJob(datastore, queue, times=100, delay=0.0)
    lifecycle.run_inline(endless, priority=4)
    assert stored(datastore, endless.uuid)["queueKwargs"] == {"priority": 4, "delay": 0.0}
    entry = queue.reserve(timeout=0)
    assert entry is not None and entry.stats()["pri"] == 4
