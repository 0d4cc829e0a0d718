"""The runtime job: document format, compare-and-swap saves, logs, progress."""
from __future__ import annotations

import copy
import json
import multiprocessing
import re
import sqlite3
from importlib.metadata import version
from typing import Any

import pytest
from marshmallow import Schema, fields
from runtime_jobs.jobs import NoopJob, RequeueJob, ReturnsJob

from flask_spacewalk import INTERNAL_ERROR, NO_RESULT, BaseJob, BaseJobSchema
from flask_spacewalk.backends import sqlite as sqlite_backend
from flask_spacewalk.base_job import (
    INSTANCE_ATTRIBUTES,
    attribute_clashes,
    document_field_clashes,
)
from flask_spacewalk.errors import (
    CasMismatch,
    DuplicateJobType,
    InvalidJobDocument,
    JobNotFound,
    JobUpdateConflict,
    QueueUnavailable,
    UndeclaredField,
    UnknownJobType,
    UnstorableValue,
)
from flask_spacewalk.runtime.job import DOCUMENT_FIELDS, ErrorFinish, make_key
from flask_spacewalk.runtime.registry import JobRegistry

MARSHMALLOW_3 = version("marshmallow").startswith("3.")

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?$")

ZEROG_FIELDS = {
    "documentType", "jobType", "schemaVersion", "cas", "createdAt", "updatedAt",
    "uuid", "logId", "queueName", "queueKwargs", "queueJobId", "events", "errors",
    "warnings", "running", "errorCount", "completeness", "tickcount", "tickval",
    "resultCode",
}


class Root(BaseJob):
    NAME = "Root"
    BRANCH_NAME = "things"
    DESCRIPTION = "test root"


class Mixin(Root):
    """Transparent: sets neither name."""


class WithParams(Mixin):
    NAME = "With params"
    LEAF_NAME = "with_params"
    DESCRIPTION = "a leaf with parameters"

    class Params(Schema):
        n = fields.Integer(load_default=50)
        label = fields.String()
        tags = fields.List(fields.String(), load_default=list)

    def run(self) -> Any:
        return 200


def new_job(datastore: Any, queue: Any, cls: type = WithParams, **kwargs: Any) -> Any:
    job = cls(datastore, queue, **kwargs)
    job.save()
    return job


def test_document_has_exactly_zerog_fields_plus_params(datastore, queue):
    job = new_job(datastore, queue, label="x")
    stored, cas = datastore.read_with_cas(make_key(job.uuid))
    assert cas == job.cas and cas > 0
    assert DOCUMENT_FIELDS == ZEROG_FIELDS
    assert set(stored) == (ZEROG_FIELDS - {"queueName"}) | {"n", "label", "tags"}
    assert stored["documentType"] == "zerog_job"
    assert stored["jobType"] == "things_with_params"
    assert stored["logId"] == f"things_with_params_{job.uuid}"
    assert stored["schemaVersion"] == 1.0
    assert ISO.match(stored["createdAt"]) and ISO.match(stored["updatedAt"])
    assert stored["resultCode"] == NO_RESULT and stored["running"] is False
    assert stored["n"] == 50 and stored["tags"] == []


def test_params_become_attributes_with_load_defaults(datastore, queue):
    job = WithParams(datastore, queue, n=3)
    assert (job.n, job.tags) == (3, [])
    assert not hasattr(job, "label")
    assert WithParams(datastore, queue).tags is not WithParams(datastore, queue).tags


def test_job_type_comes_from_the_branch_directly_above():
    class Sub(Root):
        NAME = "Sub"
        BRANCH_NAME = "sub"

    class Leaf(Sub):
        NAME = "Leaf"
        LEAF_NAME = "leaf"

        def run(self) -> Any:
            return 200

    assert Leaf.JOB_TYPE == "sub_leaf"
    assert Leaf.is_leaf() and not Leaf.is_branch() and Sub.is_branch()
    # Names inherited from a parent do not count.
    assert not Mixin.is_branch() and not Mixin.is_leaf()


def test_params_clashing_with_document_fields_are_reported():
    class Clash(Root):
        NAME = "Clash"
        LEAF_NAME = "clash"

        class Params(Schema):
            uuid = fields.String()
            x = fields.Integer(data_key="resultCode")

        def run(self) -> Any:
            return 200

    assert document_field_clashes(Clash) == ["resultCode", "uuid"]
    assert document_field_clashes(WithParams) == []


def test_params_clashing_with_job_attributes_are_reported():
    class Clash(Root):
        NAME = "Clash"
        LEAF_NAME = "attr_clash"

        class Params(Schema):
            queue = fields.String()
            x = fields.Integer(attribute="record_event")
            y = fields.Integer(data_key="save")  # the API name is free

        def run(self) -> Any:
            return 200

    assert attribute_clashes(Clash) == [
        ("queue", "set by RuntimeJob.__init__"),
        ("record_event", "flask_spacewalk.runtime.job.RuntimeJob.record_event"),
    ]
    assert attribute_clashes(WithParams) == []


def test_instance_attributes_of_the_runtime_are_all_known(datastore, queue):
    job = WithParams(datastore, queue, label="x", keepalive=lambda: None)
    params = set(WithParams.Params._declared_fields)
    assert set(vars(job)) - params - DOCUMENT_FIELDS == INSTANCE_ATTRIBUTES


class WithAttribute(Root):
    NAME = "With attribute"
    LEAF_NAME = "with_attribute"

    class Params(Schema):
        text = fields.String(attribute="message", load_default="hi")
        other = fields.String(attribute="note")

    def run(self) -> Any:
        return 200


def test_a_params_attribute_name_is_the_jobs_attribute(datastore, queue):
    loaded = WithAttribute.Params().load({"other": "o"})
    job = new_job(datastore, queue, WithAttribute, **loaded)
    assert (job.message, job.note) == ("hi", "o")
    stored = datastore.read(make_key(job.uuid))
    assert (stored["text"], stored["other"]) == ("hi", "o")
    again = WithAttribute(datastore, queue, **WithAttribute.load_fields(stored))
    assert (again.message, again.note) == ("hi", "o")


def test_reload_round_trips_and_keeps_keepalive(datastore, queue):
    calls = []
    job = new_job(datastore, queue, label="x")
    job.record_event("hello")
    job.keepalive = lambda: calls.append(1)
    job.reload()
    assert job.label == "x" and job.events[0].msg == "hello"
    job.keep_alive()
    assert calls == [1]


def test_stale_save_raises_cas_exception(datastore, queue):
    job = new_job(datastore, queue)
    other = JobRegistry([WithParams]).get_job(job.uuid, datastore, queue)
    other.update_attrs(n=7)
    job.n = 8
    with pytest.raises(CasMismatch):
        job.save()


def test_conflicting_updates_are_reapplied_not_lost(datastore, queue):
    job = new_job(datastore, queue)
    other = JobRegistry([WithParams]).get_job(job.uuid, datastore, queue)
    other.update_attrs(label="from other")
    other.record_event("other event")
    job.update_attrs(n=9)  # conflicts, reloads, re-applies
    job.record_warning("mine")
    fresh = JobRegistry([WithParams]).get_job(job.uuid, datastore, queue)
    assert (fresh.n, fresh.label) == (9, "from other")
    assert [e.msg for e in fresh.events] == ["other event"]
    assert [w.msg for w in fresh.warnings] == ["mine"]


def test_endless_conflicts_raise_instead_of_dropping(datastore, queue, monkeypatch):
    job = new_job(datastore, queue)

    def always_conflict(*args: Any, **kwargs: Any) -> Any:
        raise CasMismatch("stale")

    monkeypatch.setattr(datastore, "set_with_cas", always_conflict)
    monkeypatch.setattr("flask_spacewalk.runtime.job.time.sleep", lambda s: None)
    with pytest.raises(JobUpdateConflict, match="10 conflicts"):
        job.update_attrs(n=1)


def test_reload_of_a_deleted_job_raises(datastore, queue):
    job = new_job(datastore, queue)
    datastore.delete(job.key())
    with pytest.raises(JobNotFound):
        job.reload()


def _bump_events(db_url: str, uuid: str, count: int) -> None:
    from flask_spacewalk import make_datastore, make_queue

    datastore = make_datastore(db_url)
    queue = make_queue(db_url, "test_jobs")
    job = JobRegistry([WithParams]).get_job(uuid, datastore, queue)
    for i in range(count):
        job.record_event(f"{i}")
        # update_attrs re-applies absolute values; a read-modify-write
        # belongs in a function that record_change re-runs after a reload.
        job.record_change(lambda: setattr(job, "n", job.n + 1))


def test_cas_conflicts_across_processes_lose_nothing(datastore, queue, db_url):
    job = new_job(datastore, queue, n=0)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_bump_events, args=(db_url, job.uuid, 25)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    job.reload()
    assert len(job.events) == 100
    assert job.n == 100


def test_messages_are_stored_as_str(datastore, queue):
    job = new_job(datastore, queue)
    job.record_event(123)
    job.record_warning(["a"])
    job.record_error(418, ValueError("bad"))
    stored = datastore.read(job.key())
    assert stored["events"][0]["msg"] == "123"
    assert stored["warnings"][0]["msg"] == "['a']"
    assert stored["errors"][0] == {
        "msg": "bad", "errorCode": 418, "timeStamp": stored["errors"][0]["timeStamp"]
    }
    assert ISO.match(stored["errors"][0]["timeStamp"])
    assert stored["errorCount"] == 1


def test_completeness_is_clamped(datastore, queue):
    job = new_job(datastore, queue)
    job.set_completeness(1.5)
    assert job.completeness == 1.0
    job.set_completeness(-3)
    assert job.completeness == 0.0
    job.add_to_completeness(0.25)
    assert datastore.read(job.key())["completeness"] == 0.25


def test_ticks_add_up_to_completeness(datastore, queue):
    job = new_job(datastore, queue)
    job.set_tick_value(0.005)
    job.tick()
    assert job.completeness == 0
    job.tick()
    assert job.completeness == pytest.approx(0.01)
    assert job.tickcount == 0


def test_keep_alive_is_called_by_progress(datastore, queue):
    calls: list[str] = []
    job = WithParams(datastore, queue, keepalive=lambda: calls.append(name))
    job.save()
    # Every progress call, where a worker raises JobCancelled for a cancel.
    for name, call in [
        ("set_completeness", lambda: job.set_completeness(0.5)),
        ("add_to_completeness", lambda: job.add_to_completeness(0.1)),
        ("set_tick_value", lambda: job.set_tick_value(0.001)),
        ("tick", job.tick),
        ("record_event", lambda: job.record_event("e")),
        ("job_log_info", lambda: job.job_log_info("i")),
    ]:
        call()
        assert name in calls, name
    assert job.events[-1].msg == "i" and job.completeness == 0.6


def test_progress_info_data_and_continue_running(datastore, queue):
    job = new_job(datastore, queue)
    job.record_event("e")
    assert job.progress() == {"completeness": 0.0, "result": -1}
    assert isinstance(job.progress()["completeness"], float)
    info = job.info()
    assert [e["msg"] for e in info["events"]] == ["e"]
    assert info["errors"] == [] and info["warnings"] == []
    assert job.get_data() == {}
    assert job.continue_running() == NO_RESULT
    for _ in range(job.MAX_ERRORS):
        job.record_error(500, "x")
    assert job.continue_running() == INTERNAL_ERROR


def test_interrupt_finish_records_result(datastore, queue):
    job = new_job(datastore, queue)
    with pytest.raises(ErrorFinish):
        job.raise_error_finish(422, "bad input")
    stored = datastore.read(job.key())
    assert stored["resultCode"] == 422 and stored["completeness"] == 1.0
    assert stored["errors"][0]["errorCode"] == 422


def test_enqueue_puts_the_json_uuid(datastore, queue):
    job = WithParams(datastore, queue)
    job.enqueue(delay=0)
    entry = queue.reserve(timeout=0)
    assert json.loads(entry.body) == job.uuid and entry.body == json.dumps(job.uuid)
    stored = datastore.read(job.key())
    assert stored["queueJobId"] == entry.id
    assert stored["queueName"] == "test_jobs"
    assert stored["queueKwargs"] == {"delay": 0}


def test_enqueue_failure_marks_the_job(datastore, queue, monkeypatch):
    job = WithParams(datastore, queue)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise QueueUnavailable("queue down")

    monkeypatch.setattr(queue, "put", refuse)
    # ZeroG's order (stored, queued, marked when the put fails) is what a
    # queue that cannot write the datastore's file gets.
    monkeypatch.setattr(queue, "put_with_document", lambda *args, **kwargs: None)
    with pytest.raises(QueueUnavailable):
        job.enqueue()
    assert datastore.read(job.key())["queueJobId"] == -1


def test_a_new_job_in_the_queues_sqlite_file_is_stored_with_its_entry_or_not_at_all(
    datastore, queue, monkeypatch
):
    job = WithParams(datastore, queue)
    job.enqueue(delay=0)
    stored, cas = datastore.read_with_cas(job.key())
    assert stored["queueJobId"] > 0 and cas == job.cas

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_backend, "_write_document", fail)
    second = WithParams(datastore, queue)
    with pytest.raises(QueueUnavailable):
        second.enqueue()
    monkeypatch.undo()
    assert datastore.read(second.key()) is None
    entry = queue.reserve(timeout=0)
    assert json.loads(entry.body) == job.uuid
    entry.delete()
    assert queue.reserve(timeout=0) is None


def test_zerog_written_document_loads(datastore, queue):
    # As ZeroG's Couchbase writer stores it: int completeness, no queueName,
    # timestamps without a fraction.
    uuid = "9726b1fa-01e0-4c10-931e-55128415587d"
    document = {
        "documentType": "zerog_job", "jobType": "rt_requeue", "schemaVersion": 1.0,
        "createdAt": "2021-11-20T02:55:10", "updatedAt": "2021-11-20T02:55:25.709894",
        "cas": 0, "uuid": uuid, "logId": f"rt_requeue_{uuid}",
        "queueKwargs": {"ttr": 2592000}, "queueJobId": 4, "events": [], "errors": [],
        "warnings": [], "running": False, "errorCount": 0, "completeness": 1,
        "tickcount": 1.0, "tickval": 1.0, "resultCode": 200, "times": 1, "delay": 0.0,
        "runs": 1, "pids": [],
    }
    datastore.set(make_key(uuid), document)
    job = JobRegistry([RequeueJob]).get_job(uuid, datastore, queue)
    assert job.progress() == {"completeness": 1.0, "result": 200}
    assert job.createdAt.microsecond == 0


def test_unknown_document_keys_are_rejected(datastore, queue):
    job = new_job(datastore, queue, cls=NoopJob)
    stored = datastore.read(job.key())
    stored["bogus"] = 1
    datastore.set(job.key(), stored)
    with pytest.raises(InvalidJobDocument, match="bogus"):
        JobRegistry([NoopJob]).get_job(job.uuid, datastore, queue)


def test_registry_refuses_duplicates_and_unknown_types(datastore, queue):
    class Again(Root):
        NAME = "again"
        LEAF_NAME = "with_params"

        def run(self) -> Any:
            return 200

    with pytest.raises(DuplicateJobType, match="things_with_params"):
        JobRegistry([WithParams, Again])
    registry = JobRegistry([WithParams, WithParams])
    assert len(registry) == 1 and "things_with_params" in registry
    job = new_job(datastore, queue, cls=ReturnsJob)
    with pytest.raises(UnknownJobType, match="rt_returns"):
        registry.get_job(job.uuid, datastore, queue)
    with pytest.raises(JobNotFound):
        registry.get_job("no-such-uuid", datastore, queue)
    datastore.set(make_key("str-doc"), "not a document")
    with pytest.raises(InvalidJobDocument):
        registry.get_job("str-doc", datastore, queue)


@pytest.mark.skipif(not MARSHMALLOW_3, reason="default=/missing= exist only in marshmallow 3")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_zerog_marshmallow3_idioms_keep_working(datastore, queue):
    class OldStyle(Root):
        NAME = "Old style"
        LEAF_NAME = "old_style"

        class Params(Schema):
            n = fields.Integer(default=50, missing=50)

        def run(self) -> Any:
            return 200

    job = new_job(datastore, queue, cls=OldStyle)
    assert job.n == 50
    assert datastore.read(job.key())["n"] == 50


def test_base_schema_fields_persist(datastore, queue):
    class Extra(BaseJobSchema):
        output = fields.List(fields.String())

    class WithOutput(Root):
        NAME = "With output"
        LEAF_NAME = "with_output"
        BASE_SCHEMA = Extra

        def run(self) -> Any:
            self.update_attrs(output=["a"])
            return 200

    job = new_job(datastore, queue, cls=WithOutput)
    job.run()
    assert datastore.read(job.key())["output"] == ["a"]


def _both_dumps(job: Any) -> tuple[dict, dict]:
    return job.dump(), job.schema().dump(job)


def test_fast_dump_equals_marshmallow_dump(datastore, queue):
    job = new_job(datastore, queue, label="x", tags=["a"])
    job.record_event("e")
    job.record_warning("w")
    job.record_error(418, "err")
    job.enqueue(delay=1)
    job.update_attrs(completeness=1, schemaVersion="1.0", cas=job.cas)
    fast, slow = _both_dumps(job)
    assert fast == slow
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True)
    job.queueJobId = None
    assert _both_dumps(job)[0] == _both_dumps(job)[1]
    # A dict in place of a record: the marshmallow path takes over.
    job.events.append({"msg": "raw", "timeStamp": job.createdAt})
    assert _both_dumps(job)[0] == _both_dumps(job)[1]


def test_schemas_that_change_zerog_fields_get_the_marshmallow_dump(datastore, queue):
    from marshmallow import post_dump

    class Renamed(BaseJobSchema):
        completeness = fields.Float(data_key="done")

    class Hooked(BaseJobSchema):
        @post_dump
        def tag(self, data: dict, **kwargs: Any) -> dict:
            data["tagged"] = True
            return data

    for base, check in ((Renamed, "done"), (Hooked, "tagged")):
        class Job(Root):
            NAME = "j"
            LEAF_NAME = f"custom_{check}"
            BASE_SCHEMA = base

            def run(self) -> Any:
                return 200

        job = Job(datastore, queue)
        assert check in job.dump() and job.dump() == job.schema().dump(job)


def _both_loads(cls: Any, document: dict) -> tuple[Any, Any]:
    """What the fast loader and marshmallow make of ``document``: the
    keywords, or the ValidationError's messages."""
    from marshmallow import ValidationError

    answers = []
    for load in (cls.load_fields, cls.schema().load):
        try:
            answers.append(load(copy.deepcopy(document)))
        except ValidationError as exc:
            answers.append(("invalid", exc.messages))
    return answers[0], answers[1]


def test_fast_load_equals_marshmallow_load(datastore, queue):
    job = new_job(datastore, queue, label="x", tags=["a"])
    job.record_event("e")
    job.record_warning("w")
    job.record_error(418, "err")
    job.enqueue(delay=1)
    stored = datastore.read(job.key())
    assert WithParams._codecs()[2].fast
    fast, slow = _both_loads(WithParams, stored)
    assert fast == slow and fast["events"][0].msg == "e"
    zerog = dict(stored, completeness=1, createdAt="2021-11-20T02:55:10")
    del zerog["queueName"]
    odd_values = {
        "completeness": "0.5", "cas": "12", "running": "true", "running ": True,
        "createdAt": "2021-11-20T02:55:10+00:00", "updatedAt": "2021-11-20",
        "logId": None,
        "queueJobId": 3.0, "schemaVersion": True, "resultCode": None,
        "tickval": float("nan"), "queueKwargs": [], "documentType": 7,
        "events": [{"msg": "m", "timeStamp": "2021-11-20T02:55:10", "x": 1}],
        "errors": [{"msg": "m", "timeStamp": "2021-11-20T02:55:10", "errorCode": "418"}],
        "warnings": [{"msg": 5, "timeStamp": "2021-11-20T02:55:10.1"}],
        "n": "7", "unknown": 1,
    }
    basic = dict(stored, createdAt="20211120T025510")  # Python reads it, marshmallow not
    for document in [zerog, basic] + [dict(stored, **{k: v}) for k, v in odd_values.items()]:
        fast, slow = _both_loads(WithParams, document)
        assert fast == slow, document


def test_schemas_that_change_how_zerog_fields_load_get_marshmallow(datastore, queue):
    from marshmallow import EXCLUDE, post_load, validate

    class Checked(BaseJobSchema):
        completeness = fields.Float(validate=validate.Range(0, 0.5))

    class Hooked(BaseJobSchema):
        @post_load
        def mark(self, data: dict, **kwargs: Any) -> dict:
            data["label"] = "hooked"
            return data

    class Lenient(BaseJobSchema):
        class Meta:
            unknown = EXCLUDE

    for base, fast in ((Checked, False), (Hooked, False), (Lenient, True)):
        class Job(Root):
            NAME = "j"
            LEAF_NAME = f"load_{base.__name__.lower()}"
            BASE_SCHEMA = base

            class Params(Schema):
                label = fields.String()

            def run(self) -> Any:
                return 200

        job = Job(datastore, queue, label="x")
        job.update_attrs(completeness=1.0)
        document = dict(datastore.read(job.key()), stranger=1)
        assert Job._codecs()[2].fast is fast
        assert _both_loads(Job, document)[0] == _both_loads(Job, document)[1]


# -- what a document may hold (issue 12) ---------------------------------------


def test_update_attrs_refuses_a_field_the_document_does_not_have(datastore, queue):
    job = new_job(datastore, queue, label="x")
    stored, cas = datastore.read_with_cas(job.key())
    with pytest.raises(UndeclaredField) as caught:
        job.update_attrs(n=1, answer=42)
    message = str(caught.value)
    assert "'answer' is not a field" in message and "Params or BASE_SCHEMA" in message
    assert caught.value.names == ["answer"]
    assert isinstance(caught.value, TypeError)
    # nothing applied, nothing saved
    assert (job.n, hasattr(job, "answer")) == (50, False)
    assert datastore.read_with_cas(job.key()) == (stored, cas)
    # names every undeclared field at once
    with pytest.raises(UndeclaredField, match="'answer', 'datastore' are not fields"):
        job.update_attrs(datastore=None, answer=1)


def test_private_attributes_and_declared_fields_are_unaffected(datastore, queue):
    job = new_job(datastore, queue)
    job.scratch = {1, 2}  # a private attribute is never stored, so anything goes
    job.update_attrs(n=7, label="y", tags=["t"], resultCode=201, queueName="q")
    job.save()
    stored = datastore.read(job.key())
    assert (stored["n"], stored["label"], stored["tags"], stored["resultCode"]) == (
        7, "y", ["t"], 201
    )
    assert "scratch" not in stored


@pytest.mark.parametrize(
    "value, problem",
    [
        (float("nan"), "nan is not a JSON number"),
        ({"a": [1, float("inf")]}, "inf is not a JSON number"),
        ({1, 2}, "a set is not a JSON value"),
        (b"bytes", "a bytes is not a JSON value"),
        ("nul \x00", "NUL character"),
        ("half \udc80", "lone surrogate"),
    ],
)
def test_a_change_that_cannot_be_saved_is_not_kept(datastore, queue, value, problem):
    job = new_job(datastore, queue, cls=ReturnsJob, value="good")
    job.record_event("before")
    stored, cas = datastore.read_with_cas(job.key())
    job.running = True  # an unsaved change goes with it: back to the stored state
    with pytest.raises(UnstorableValue, match=re.escape(problem)) as caught:
        job.update_attrs(value=value)
    assert caught.value.path.startswith("value")
    assert datastore.read_with_cas(job.key()) == (stored, cas)
    assert (job.value, job.running, job.cas) == ("good", False, cas)
    # the next save writes a good document, the error recorded with it
    job.record_error(INTERNAL_ERROR, str(caught.value))
    stored = datastore.read(job.key())
    assert stored["value"] == "good" and stored["errorCount"] == 1
    assert stored["errors"][0]["msg"].startswith("cannot store field value")
    assert [e["msg"] for e in stored["events"]] == ["before"]


def test_an_unsaved_value_the_stored_document_lacks_is_dropped(datastore, queue):
    job = new_job(datastore, queue, cls=ReturnsJob)  # no value stored
    job.value = {1, 2}  # set by plain assignment, saved by the next change
    job.private = "kept"
    with pytest.raises(UnstorableValue, match="cannot store field value: a set"):
        job.record_event("progress")
    assert not hasattr(job, "value") and job.private == "kept"
    job.record_event("progress")
    assert [e["msg"] for e in datastore.read(job.key())["events"]] == ["progress"]


def test_save_refuses_an_unstorable_document(datastore, queue):
    job = ReturnsJob(datastore, queue, value=float("nan"))
    with pytest.raises(UnstorableValue, match="cannot store field value: nan"):
        job.save()
    assert datastore.read(job.key()) is None and job.cas == 0
    saved = new_job(datastore, queue, cls=ReturnsJob, value=1)
    saved.completeness = float("inf")
    with pytest.raises(UnstorableValue, match="field completeness: inf"):
        saved.save()
    assert saved.completeness == 0


@pytest.mark.parametrize("one_transaction", [True, False])
def test_enqueue_of_an_unstorable_job_stores_and_queues_nothing(
    datastore, queue, monkeypatch, one_transaction
):
    if not one_transaction:
        monkeypatch.setattr(queue, "put_with_document", lambda *args, **kwargs: None)
    job = ReturnsJob(datastore, queue, value={"x": float("nan")})
    with pytest.raises(UnstorableValue, match=r"field value\.x: nan"):
        job.enqueue()
    assert datastore.read(job.key()) is None
    assert queue.reserve(timeout=0) is None
    assert (job.cas, job.queueJobId, job.queueKwargs) == (0, 0, {})
    assert not hasattr(job, "queueName")


@pytest.mark.parametrize("delay", [float("nan"), float("inf")])
def test_enqueue_with_an_unstorable_delay_queues_nothing(datastore, queue, delay):
    job = new_job(datastore, queue)
    stored = datastore.read_with_cas(job.key())
    with pytest.raises(UnstorableValue, match=r"field queueKwargs\.delay"):
        job.enqueue(delay=delay)
    assert queue.reserve(timeout=0) is None
    assert datastore.read_with_cas(job.key()) == stored
