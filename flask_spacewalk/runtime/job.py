"""The runtime job: ZeroG's ``BaseJob``, its document and its saves.

A job is one document in the datastore under ``zerog_job_<uuid>``. Every
change goes through :meth:`RuntimeJob.record_change`: apply the change, save
with compare-and-swap, and on a conflict reload and apply it again, so that
concurrent writers (the worker, a cancel request, the job itself) never lose
each other's updates.
"""
from __future__ import annotations

import datetime
import json
import logging
import random
import time
import uuid as uuid_module
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, ClassVar

from marshmallow import Schema, fields

from ..errors import JobNotFound, JobUpdateConflict, UndeclaredField, UnstorableValue
from .adapters import as_datastore, as_queue
from .document import DocumentDumper, DocumentLoader
from .lifecycle import Lifecycle
from .outcome import INTERNAL_ERROR as INTERNAL_ERROR
from .outcome import NO_RESULT as NO_RESULT
from .outcome import ChangeRefused
from .outcome import ErrorContinue as ErrorContinue
from .outcome import ErrorFinish as ErrorFinish
from .outcome import RunResult as RunResult
from .outcome import WarningContinue as WarningContinue
from .outcome import WarningFinish as WarningFinish
from .protocols import Datastore, Queue
from .records import (
    ErrorRecord,
    ErrorSchema,
    EventRecord,
    EventSchema,
    WarningRecord,
    WarningSchema,
    make_error,
    make_event,
    make_warning,
    utcnow,
)
from .status import JOB_KEY_PREFIX

log = logging.getLogger(__name__)

DOCUMENT_TYPE = "zerog_job"

#: How often a change is re-applied after compare-and-swap conflicts.
MAX_SAVE_ATTEMPTS = 10


def make_key(uuid: str) -> str:
    """The datastore key of the job ``uuid``: ``zerog_job_<uuid>``."""
    return JOB_KEY_PREFIX + uuid


class BaseJobSchema(Schema):
    """The fields every ZeroG job document has, and nothing else."""

    documentType = fields.String()
    jobType = fields.String()
    schemaVersion = fields.Float()

    createdAt = fields.DateTime(format="iso")
    updatedAt = fields.DateTime(format="iso")
    cas = fields.Integer()

    uuid = fields.String()
    logId = fields.String()

    queueName = fields.String()
    queueKwargs = fields.Dict()
    queueJobId = fields.Integer()

    events = fields.List(fields.Nested(EventSchema))
    errors = fields.List(fields.Nested(ErrorSchema))
    warnings = fields.List(fields.Nested(WarningSchema))

    running = fields.Boolean()
    errorCount = fields.Integer()
    completeness = fields.Float()
    tickcount = fields.Float()
    tickval = fields.Float()
    resultCode = fields.Integer()


_BASE_SCHEMA = BaseJobSchema()
#: The names of the fields every job document has.
DOCUMENT_FIELDS = frozenset(_BASE_SCHEMA.fields)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class RuntimeJob(ABC):
    """ZeroG's job: a document with compare-and-swap saves, logs and progress.

    Subclasses set :attr:`JOB_TYPE` and :attr:`SCHEMA` and implement
    :meth:`run`. Build a job as ZeroG does:
    ``JobClass(datastore, queue, keepalive=None, **fields)``, where
    ``fields`` are loaded document fields (or none, for a new job).
    """

    DOCUMENT_TYPE: ClassVar[str] = DOCUMENT_TYPE
    SCHEMA_VERSION: ClassVar[str] = "1.0"
    JOB_TYPE: ClassVar[str] = ""
    SCHEMA: ClassVar[type[Schema]] = BaseJobSchema
    # The run policy (runtime/policy.py; docs/jobs.rst "Run policy"):
    #: Errors after which :meth:`continue_running` ends the job with 500.
    MAX_ERRORS: ClassVar[int] = 3
    #: Seconds before the first retry of a failed run; None: the worker's
    #: ``ERROR_RETRY_DELAY`` (30 s, ZeroG's).
    RETRY_DELAY: ClassVar[float | None] = None
    #: Each further retry waits this many times longer (plus up to 10 %
    #: jitter when above 1).
    RETRY_BACKOFF: ClassVar[float] = 1.0
    #: The longest a retry waits, in seconds.
    RETRY_MAX_DELAY: ClassVar[float] = 3600.0
    #: Seconds one run may take on a worker (None: no limit); past it the
    #: run is stopped and error 504 recorded. Inline runs ignore it.
    TIMEOUT: ClassVar[float | None] = None

    #: One schema instance, dumper and loader per schema class: building a
    #: schema costs more than dumping a document with it.
    _schema_cache: ClassVar[dict[type, tuple[Schema, DocumentDumper, DocumentLoader]]] = {}

    #: Set by :meth:`guarded`: asked before each application of a change.
    _guard: Callable[[], str | None] | None = None
    #: Set by :meth:`writing_through`: tried first by each save.
    _writer: Callable[[str, dict[str, Any], int], int | None] | None = None

    def __init__(
        self,
        datastore: Datastore,
        queue: Queue,
        keepalive: Callable[[], Any] | None = None,
        **kwargs: Any,
    ):
        # ZeroG builds jobs with its own objects: given every ability here
        self.datastore = as_datastore(datastore)
        self.queue = as_queue(queue)
        self.keepalive = keepalive

        now = utcnow()
        self.documentType: str = kwargs.get("documentType", self.DOCUMENT_TYPE)
        self.jobType: str = kwargs.get("jobType", self.JOB_TYPE)
        self.schemaVersion = kwargs.get("schemaVersion", self.SCHEMA_VERSION)

        self.createdAt: datetime.datetime = kwargs.get("createdAt", now)
        self.updatedAt: datetime.datetime = kwargs.get("updatedAt", now)
        self.cas: int = kwargs.get("cas") or 0

        self.uuid: str = kwargs.get("uuid") or str(uuid_module.uuid4())
        self.logId: str = kwargs.get("logId", f"{self.JOB_TYPE}_{self.uuid}")

        if "queueName" in kwargs:
            self.queueName: str = kwargs["queueName"]
        self.queueKwargs: dict[str, Any] = kwargs.get("queueKwargs", {})
        self.queueJobId: int = kwargs.get("queueJobId", 0)

        self.events: list[EventRecord] = kwargs.get("events", [])
        self.errors: list[ErrorRecord] = kwargs.get("errors", [])
        self.warnings: list[WarningRecord] = kwargs.get("warnings", [])

        self.running: bool = kwargs.get("running", False)
        self.errorCount: int = kwargs.get("errorCount", 0)
        self.completeness: float = kwargs.get("completeness", 0)
        self.tickcount: float = kwargs.get("tickcount", 0.0)
        self.tickval: float = kwargs.get("tickval", 0.001)
        self.resultCode: int = kwargs.get("resultCode", NO_RESULT)
        # run() may set resultCode without saving it: see stored_result
        self._saved_result: int = self.resultCode

    # -- the document ------------------------------------------------------

    @classmethod
    def _codecs(cls) -> tuple[Schema, DocumentDumper, DocumentLoader]:
        cached = RuntimeJob._schema_cache.get(cls.SCHEMA)
        if cached is None:
            schema = cls.SCHEMA()
            cached = (
                schema,
                DocumentDumper(schema, _BASE_SCHEMA),
                DocumentLoader(schema, _BASE_SCHEMA),
            )
            RuntimeJob._schema_cache[cls.SCHEMA] = cached
        return cached

    @classmethod
    def schema(cls) -> Schema:
        """The (shared) instance of :attr:`SCHEMA`."""
        return cls._codecs()[0]

    @classmethod
    def load_fields(cls, document: dict[str, Any]) -> dict[str, Any]:
        """Deserialize a stored document into constructor keywords, as
        ``SCHEMA().load(document)`` does."""
        return cls._codecs()[2].load(document)

    def key(self) -> str:
        """This job's datastore key."""
        return make_key(self.uuid)

    def dump(self) -> dict[str, Any]:
        """The job document, as stored."""
        return self._codecs()[1].dump(self)

    def dumps(self, **kwargs: Any) -> str:
        """The job document as JSON text; ``kwargs`` go to ``json.dumps``."""
        return json.dumps(self.dump(), **kwargs)

    def __str__(self) -> str:
        return self.dumps(indent=4)

    # -- saving --------------------------------------------------------------

    @property
    def stored_result(self) -> int:
        """The ``resultCode`` as last loaded or saved, whatever ``run()``
        set since without saving it."""
        return self._saved_result

    @contextmanager
    def guarded(self, guard: Callable[[], str | None]) -> Iterator[None]:
        """While the block runs, every change :meth:`record_change` applies,
        at first and after each conflict, is first put to ``guard``, which
        answers None to let it be saved or why not: then nothing is saved
        and :class:`~flask_spacewalk.runtime.outcome.ChangeRefused` is
        raised with the answer. The lifecycle guards the writes it makes
        through the job's overridable API (``record_result``) this way.
        """
        outer, self._guard = self._guard, guard
        try:
            yield
        finally:
            self._guard = outer

    @contextmanager
    def writing_through(
        self, write: Callable[[str, dict[str, Any], int], int | None]
    ) -> Iterator[None]:
        """While the block runs, each :meth:`save` first offers its
        document to ``write(key, document, cas)``, which writes it with
        compare-and-swap and answers the new cas, or None to leave it to the
        datastore. The lifecycle records a result this way together with
        the deletion of its queue entry, in one transaction.
        """
        outer, self._writer = self._writer, write
        try:
            yield
        finally:
            self._writer = outer

    def save(self) -> None:
        """Write the document with compare-and-swap on :attr:`cas`, once.

        :raises: the datastore's ``casException`` when another writer saved
            the job since it was loaded.
        :raises UnstorableValue: the document holds a value no datastore
            stores (NaN, a set...). Nothing is written, and a stored job
            goes back to its stored state: a change that cannot be saved
            does not stay applied, so the next save (the worker's record of
            the error) writes a good document.
        """
        self.updatedAt = utcnow()
        try:
            document = self.dump()
            cas = None if self._writer is None else self._writer(self.key(), document, self.cas)
            if cas is None:
                _, cas = self.datastore.set_with_cas(self.key(), document, cas=self.cas)
            self.cas = cas
        except UnstorableValue:
            self._restore()
            raise
        self._saved_result = self.resultCode

    def _restore(self) -> None:
        """Drop the changes not saved: back to the stored document (a job
        never stored, or gone meanwhile, keeps its attributes)."""
        if not self.cas:
            return
        data, cas = self.datastore.read_with_cas(self.key())
        if not isinstance(data, dict):
            return
        data["cas"] = cas
        fields = self.load_fields(data)
        # A field the stored document lacks must not keep its unsaved value.
        for name in self._codecs()[1].attributes:
            vars(self).pop(name, None)
        self.__init__(  # type: ignore[misc]
            self.datastore, self.queue, keepalive=self.keepalive, **fields
        )

    def reload(self) -> None:
        """Load the stored document again, replacing this job's attributes.

        :raises JobNotFound: the document is gone.
        """
        data, cas = self.datastore.read_with_cas(self.key())
        if not isinstance(data, dict):
            raise JobNotFound(f"job {self.uuid} is no longer stored")
        data["cas"] = cas
        # __init__ is ZeroG's way to reset attributes; the keepalive is ours
        # to keep, not the document's.
        self.__init__(  # type: ignore[misc]
            self.datastore, self.queue, keepalive=self.keepalive, **self.load_fields(data)
        )

    def record_change(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Apply ``func`` and save; on a conflict reload and apply it again.

        Tries :data:`MAX_SAVE_ATTEMPTS` times with random jitter between
        attempts.

        :raises JobUpdateConflict: every attempt met a conflict; the change is
            not saved, and the caller must know it.
        :raises ChangeRefused: the guard set with :meth:`guarded` refused it.
        """
        conflicts = (self.datastore.casException, self.datastore.lockedException)
        for attempt in range(MAX_SAVE_ATTEMPTS):
            try:
                if self._guard is not None:
                    reason = self._guard()
                    if reason is not None:
                        raise ChangeRefused(reason)
                func(*args, **kwargs)
                self.save()
                return True
            except conflicts:
                log.debug("job %s: save conflict %d, reloading", self.uuid, attempt + 1)
            # Jitter spreads writers that collided; it grows with each retry.
            time.sleep(random.uniform(0, 0.002 * 2**attempt))
            self.reload()
        raise JobUpdateConflict(
            f"job {self.uuid}: change not saved after {MAX_SAVE_ATTEMPTS} conflicts"
        )

    def update_attrs(self, **kwargs: Any) -> None:
        """Set attributes and save them.

        :raises UndeclaredField: a name is not a field of the job's document
            (its ``Params`` or ``BASE_SCHEMA``), so its value would be lost;
            nothing is set or saved.
        """
        undeclared = kwargs.keys() - self._codecs()[1].attributes
        if undeclared:
            raise UndeclaredField(type(self).__qualname__, sorted(undeclared))

        def apply() -> None:
            for name, value in kwargs.items():
                setattr(self, name, value)

        self.record_change(apply)

    def record_event(self, msg: Any) -> None:
        """Add an event to the job's log (a progress call: see :meth:`keep_alive`)."""
        self.keep_alive()
        event = make_event(msg)
        self.record_change(lambda: self.events.append(event))

    def record_warning(self, msg: Any) -> None:
        """Add a warning to the job's log."""
        warning = make_warning(msg)
        self.record_change(lambda: self.warnings.append(warning))

    def record_error(
        self, errorCode: int, msg: Any, exception: BaseException | None = None
    ) -> None:
        """Add an error to the job's log and count it.

        :param exception: the unhandled exception behind the error, when the
            worker records one; subclasses may override to treat some
            exceptions specially.
        """
        error = make_error(errorCode, msg)

        def apply() -> None:
            self.errors.append(error)
            self.errorCount += 1

        self.record_change(apply)

    def record_result(self, resultCode: int) -> None:
        """Record the job's final result; completeness becomes 1.

        A job with its final result is no longer running, so this also
        clears ``running`` (in the same write).
        """
        self.update_attrs(resultCode=resultCode, completeness=1.0, running=False)

    # -- logging -------------------------------------------------------------

    def job_log_info(self, msg: Any) -> None:
        """Log ``msg`` and record it as an event."""
        log.info("%s: %s", self.logId, msg)
        self.record_event(msg)

    def job_log_warning(self, msg: Any) -> None:
        """Log ``msg`` and record it as a warning."""
        log.warning("%s: %s", self.logId, msg)
        self.record_warning(msg)

    def job_log_error(self, errorCode: int, msg: Any) -> None:
        """Log ``msg`` and record it as an error."""
        log.error("%s: %s", self.logId, msg)
        self.record_error(errorCode, msg)

    # -- interrupts ----------------------------------------------------------

    def raise_warning_continue(self, resultCode: int, msg: Any) -> None:
        """Record a warning and stop this run; the job runs again later."""
        self.job_log_warning(msg)
        raise WarningContinue(msg)

    def raise_warning_finish(self, resultCode: int, msg: Any) -> None:
        """Record a warning and finish the job with ``resultCode``."""
        self.job_log_warning(msg)
        self.record_result(resultCode)
        raise WarningFinish(msg)

    def raise_error_continue(self, errorCode: int, msg: Any) -> None:
        """Record an error and stop this run; the job runs again later."""
        self.job_log_error(errorCode, msg)
        raise ErrorContinue(msg)

    def raise_error_finish(self, errorCode: int, msg: Any) -> None:
        """Record an error and finish the job with ``errorCode``."""
        self.job_log_error(errorCode, msg)
        self.record_result(errorCode)
        raise ErrorFinish(msg)

    # -- progress ------------------------------------------------------------

    def keep_alive(self) -> None:
        """Tell the worker the job is alive (renews its queue lease).

        Every progress call (``set_completeness``, ``add_to_completeness``,
        ``set_tick_value``, ``tick``, ``record_event`` and so
        ``job_log_info``) calls it first; under a worker it raises
        :class:`~flask_spacewalk.runtime.cancel.JobCancelled` once the job's
        cancellation is requested.
        """
        if callable(self.keepalive):
            self.keepalive()

    def set_completeness(self, completeness: float) -> None:
        """Set completeness, clamped to 0..1, and save it."""
        self.keep_alive()
        value = _clamp(completeness, 0.0, 1.0)
        if value != completeness:
            log.warning("%s: completeness %r clamped to %r", self.logId, completeness, value)
        self.update_attrs(completeness=value, tickcount=self.tickcount)

    def add_to_completeness(self, delta: float) -> None:
        """Add ``delta`` and any unrecorded ticks to completeness."""
        self.set_completeness(self.completeness + delta + self.tickcount)

    def set_tick_value(self, tickval: float) -> None:
        """Set how much one :meth:`tick` adds to completeness."""
        self.keep_alive()
        self.update_attrs(tickval=tickval)

    def tick(self) -> None:
        """Count one tick; saved once the ticks add up to 0.01."""
        self.keep_alive()
        self.tickcount += self.tickval
        if self.tickcount >= 0.01:
            self.add_to_completeness(0)
            self.tickcount = 0

    # -- queueing ------------------------------------------------------------

    def enqueue(self, **queue_kwargs: Any) -> None:
        """Save the job if it is new, then put it on its queue.

        ``queue_kwargs`` (``ttr``, ``delay``, ``priority``) go to
        ``queue.put`` and are kept in ``queueKwargs``: see
        :meth:`Lifecycle.enqueue <flask_spacewalk.runtime.lifecycle.Lifecycle.enqueue>`,
        which does it.
        """
        Lifecycle(self.datastore, self.queue).enqueue(self, **queue_kwargs)

    # -- answers -------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        """``completeness`` and ``result``; override to add fields."""
        return {"completeness": float(self.completeness), "result": self.resultCode}

    def info(self) -> dict[str, Any]:
        """Progress plus the events, errors and warnings."""
        return {
            "completeness": float(self.completeness),
            "result": self.resultCode,
            "events": [e.dump() for e in self.events],
            "errors": [e.dump() for e in self.errors],
            "warnings": [w.dump() for w in self.warnings],
        }

    def get_data(self) -> Any:
        """The job's output; override it (``{}`` by default)."""
        return {}

    def continue_running(self) -> int:
        """After an error: :data:`NO_RESULT` to retry, or a final code.

        By default the job stops with :data:`INTERNAL_ERROR` once it has
        recorded :attr:`MAX_ERRORS` errors.
        """
        if self.errorCount >= self.MAX_ERRORS:
            return INTERNAL_ERROR
        return NO_RESULT

    @abstractmethod
    def run(self) -> RunResult:
        """Do the job's work.

        :return: a result code (HTTP-like, 200 for success), or
            ``(resultCode, delay)``; :data:`NO_RESULT` asks to run again
            after ``delay`` seconds.
        """
