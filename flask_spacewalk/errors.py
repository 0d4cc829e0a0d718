"""The exception hierarchy of flask-spacewalk.

Everything raised on purpose derives from :class:`SpacewalkError`. The
runtime and backend errors carry no Flask; the HTTP layer maps them to the
one JSON error shape (see :mod:`flask_spacewalk.web.http`).
"""
from __future__ import annotations


class SpacewalkError(Exception):
    """Base class of every error raised by flask-spacewalk."""


class ConfigurationError(SpacewalkError):
    """A bad setting, URL or job tree, found at start-up."""


class NotSupported(SpacewalkError, NotImplementedError):
    """A datastore or queue of your own (ZeroG's, say) lacks an ability
    beyond ZeroG's protocol that was asked of it (``list_jobs``,
    ``has_entry``); ``GET R/jobs`` answers it with 501."""


# -- datastore ---------------------------------------------------------------


class DatastoreError(SpacewalkError):
    """Base class of the datastore's errors."""


class CasMismatch(DatastoreError):
    """A compare-and-swap write was given a stale ``cas``.

    This is a datastore's ``casException``.
    """


class DocumentLocked(DatastoreError):
    """The document is locked by another writer (``lockedException``)."""


class DocumentExists(DatastoreError):
    """``create()`` found the key already there (``existsException``)."""


class DocumentNotFound(DatastoreError):
    """``update()`` or a compare-and-swap write found no such key."""


class DatastoreUnavailable(DatastoreError):
    """The datastore cannot be reached (refused, timed out, locked too long)."""


class UnstorableValue(DatastoreError, ValueError):
    """A value that a stored document cannot hold, refused before writing.

    A document holds what standard JSON holds and what comes back the same
    from every datastore: dicts with str keys, lists, str, int, finite
    float, bool and None. NaN and Infinity, a ``set``, ``bytes``, any other
    object, a str with a NUL character or a lone surrogate, and nesting
    deeper than :data:`~flask_spacewalk.runtime.encoding.MAX_DEPTH` are
    refused on every backend. It is a :exc:`ValueError` too, as
    ``json.dumps`` raises for NaN.

    :param path: where the value sits, ``results[2].score`` (``""``: the
        value itself).
    :param problem: what is wrong with it.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        where = f"field {path}" if path else "the value"
        super().__init__(f"cannot store {where}: {problem}")

    def __reduce__(self) -> tuple[type[UnstorableValue], tuple[str, str]]:
        return type(self), (self.path, self.problem)


# -- queue -------------------------------------------------------------------


class QueueError(SpacewalkError):
    """Base class of the queue's errors."""


class EntryNotReserved(QueueError):
    """The entry is no longer reserved by this holder.

    Its lease ran out (and another worker may hold it now) or it was deleted.
    """


class QueueUnavailable(QueueError):
    """The queue cannot be reached."""


# -- jobs --------------------------------------------------------------------


class JobError(SpacewalkError):
    """Base class of the errors about stored jobs."""


class JobNotFound(JobError):
    """No job document is stored under that uuid."""


class UnknownJobType(JobError):
    """A stored job names a ``jobType`` that no registered class handles."""


class InvalidJobDocument(JobError):
    """A stored job document cannot be loaded by its class's schema."""


class JobUpdateConflict(JobError):
    """A change could not be saved: too many compare-and-swap conflicts."""


class UndeclaredField(JobError, TypeError):
    """``update_attrs`` was given a name that is no field of the job's
    document, which would not be saved: declare it in the job's ``Params``
    or ``BASE_SCHEMA`` (a ZeroG-style job: its ``SCHEMA``).

    :param names: the undeclared names, sorted.
    """

    def __init__(self, job_class: str, names: list[str]) -> None:
        self.job_class = job_class
        self.names = list(names)
        listed = ", ".join(repr(name) for name in self.names)
        fields = "is not a field" if len(self.names) == 1 else "are not fields"
        super().__init__(
            f"{job_class}.update_attrs(): {listed} {fields} of the job document and would"
            " not be saved; declare it in the job's Params or BASE_SCHEMA (a ZeroG-style"
            f" job: its SCHEMA), or keep it unsaved with plain assignment"
            f" (self.{self.names[0]} = ...)"
        )

    def __reduce__(self) -> tuple[type[UndeclaredField], tuple[str, list[str]]]:
        return type(self), (self.job_class, self.names)


class DuplicateJobType(ConfigurationError):
    """Two job classes claim one ``JOB_TYPE``."""


class JobModuleImportError(ConfigurationError):
    """A job module failed to import, or ``modules_dir`` names nothing."""


class JobTreeError(ConfigurationError):
    """The job classes do not form a valid tree.

    :param problems: one line each; the message lists them all, so that
        they can be fixed in one go.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "".join(f"\n  - {problem}" for problem in self.problems)
        plural = "s" if count != 1 else ""
        super().__init__(f"the job tree has {count} problem{plural}:{lines}")

    def __reduce__(self) -> tuple[type[JobTreeError], tuple[list[str]]]:
        return type(self), (self.problems,)


# -- POST parameters ---------------------------------------------------------


class ParamsInvalid(SpacewalkError):
    """A POST body does not fit the leaf's Params (answered with 422).

    :param errors: lists of messages keyed by field (data key), or by
        ``"_schema"`` for what concerns the body as a whole.
    """

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors
