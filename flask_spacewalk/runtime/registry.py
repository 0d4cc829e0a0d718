"""The job registry: ``JOB_TYPE`` -> job class, and loading stored jobs."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from marshmallow import ValidationError

from ..errors import (
    ConfigurationError,
    DuplicateJobType,
    InvalidJobDocument,
    JobNotFound,
    UnknownJobType,
)
from .job import RuntimeJob, make_key
from .policy import policy_problems
from .protocols import Datastore, Queue


class JobRegistry:
    """Maps each ``JOB_TYPE`` to the one class that runs it."""

    def __init__(self, job_classes: Iterable[type[RuntimeJob]] = ()):
        self._classes: dict[str, type[RuntimeJob]] = {}
        self.add_classes(job_classes)

    def add_classes(self, job_classes: Iterable[type[RuntimeJob]]) -> None:
        """Register job classes.

        :raises DuplicateJobType: two different classes claim one jobType.
        :raises TypeError: a class is not a runtime job or has no jobType.
        :raises ConfigurationError: a class's run policy (``RETRY_DELAY``,
            ``TIMEOUT``...) is bad, which would otherwise fail its runs.
        """
        for job_class in job_classes:
            if not (isinstance(job_class, type) and issubclass(job_class, RuntimeJob)):
                raise TypeError(f"{job_class!r} is not a job class")
            job_type = job_class.JOB_TYPE
            if not job_type:
                raise TypeError(f"{job_class.__qualname__} has no JOB_TYPE")
            problems = policy_problems(job_class)
            if problems:
                raise ConfigurationError(f"{_describe(job_class)}: {'; '.join(problems)}")
            known = self._classes.get(job_type)
            if known is not None and known is not job_class:
                raise DuplicateJobType(
                    f"jobType {job_type!r} is claimed by both "
                    f"{_describe(known)} and {_describe(job_class)}"
                )
            self._classes[job_type] = job_class

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def get(self, job_type: str) -> type[RuntimeJob] | None:
        """The class registered for ``job_type``, if any."""
        return self._classes.get(job_type)

    def get_registered_classes(self) -> list[type[RuntimeJob]]:
        """Every registered class, in registration order."""
        return list(self._classes.values())

    def make_job(
        self,
        data: dict[str, Any],
        datastore: Datastore,
        queue: Queue,
        keepalive: Callable[[], Any] | None = None,
    ) -> RuntimeJob:
        """Build a job from a stored document.

        :raises UnknownJobType: no class handles the document's jobType.
        :raises InvalidJobDocument: the class's schema rejects the document.
        """
        job_type = data.get("jobType")
        job_class = self._classes.get(job_type) if isinstance(job_type, str) else None
        if job_class is None:
            raise UnknownJobType(f"no job class is registered for jobType {job_type!r}")
        try:
            fields = job_class.load_fields(data)
        except ValidationError as exc:
            raise InvalidJobDocument(
                f"job {data.get('uuid')!r} of type {job_type!r} cannot be loaded: "
                f"{exc.messages}"
            ) from exc
        return job_class(datastore, queue, keepalive=keepalive, **fields)

    def get_job(
        self,
        uuid: str,
        datastore: Datastore,
        queue: Queue,
        keepalive: Callable[[], Any] | None = None,
    ) -> RuntimeJob:
        """Load the stored job ``uuid``.

        :raises JobNotFound: nothing is stored under that uuid.
        :raises InvalidJobDocument: the stored value is not a job document.
        """
        data, cas = datastore.read_with_cas(make_key(uuid))
        return self.stored_job(uuid, data, cas, datastore, queue, keepalive)

    def stored_job(
        self,
        uuid: str,
        data: Any,
        cas: int,
        datastore: Datastore,
        queue: Queue,
        keepalive: Callable[[], Any] | None = None,
    ) -> RuntimeJob:
        """The job ``uuid`` from its stored value and cas, as read.

        :raises JobNotFound: nothing was stored under that uuid.
        :raises InvalidJobDocument: the stored value is not a job document.
        """
        if data is None:
            raise JobNotFound(f"no job is stored with uuid {uuid!r}")
        if not isinstance(data, dict):
            raise InvalidJobDocument(f"job {uuid!r} is stored as {type(data).__name__}")
        data["cas"] = cas
        return self.make_job(data, datastore, queue, keepalive)


def _describe(job_class: type) -> str:
    return f"{job_class.__module__}.{job_class.__qualname__}"
