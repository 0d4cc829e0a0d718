"""Datastores and queues, chosen by URL.

The scheme of a URL names the backend; :data:`_BACKENDS` is the one place
that maps schemes to backends, and a backend's module is imported only when
a URL names it. ``functools.partial(make_datastore, url)`` and
``functools.partial(make_queue, url)`` are ZeroG's ``makeDatastore()`` and
``makeQueue(queueName)``.

``sqlite:///relative/path.db``
    A file relative to the instance path (the working directory when there
    is none).
``sqlite:////absolute/path.db``
    An absolute path.
``postgresql://user@host:5432/dbname`` (or ``postgres://``)
    Documents or queue in PostgreSQL (psycopg 3); one database may hold
    both.
``redis://host:6379/0``
    Documents or queue in Redis (redis-py).
``beanstalkd://host:11300``
    The queue in beanstalkd (greenstalk), as ZeroG keeps it: queue only.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from .. import defaults
from ..errors import ConfigurationError
from ..runtime.protocols import SpacewalkDatastore as Datastore
from ..runtime.protocols import SpacewalkQueue as Queue

if TYPE_CHECKING:
    # mypy checks here that every backend has every ability.
    from .beanstalkd import BeanstalkdQueue
    from .pgqueue import PostgresQueue
    from .postgres import PostgresDatastore
    from .redis import RedisDatastore, RedisQueue
    from .sqlite import SqliteDatastore, SqliteQueue

    _DATASTORE_CLASSES: tuple[type[Datastore], ...] = (
        SqliteDatastore, PostgresDatastore, RedisDatastore,
    )
    _QUEUE_CLASSES: tuple[type[Queue], ...] = (
        SqliteQueue, PostgresQueue, RedisQueue, BeanstalkdQueue,
    )

__all__ = ["check_url", "make_datastore", "make_queue", "resolve_sqlite_path"]

_KINDS = ("datastore", "queue")


class _Backend(NamedTuple):
    """How to open one scheme's datastore and queue (None: not offered)."""

    #: ``(url, instance_path) -> Datastore``
    datastore: Callable[[str, str | None], Datastore] | None
    #: ``(url, name, instance_path, default_ttr) -> Queue``
    queue: Callable[[str, str, str | None, float], Queue] | None
    #: ``(url) -> object``: raise ConfigurationError for a malformed URL
    check: Callable[[str], object]


def _sqlite_datastore(url: str, instance_path: str | None) -> Datastore:
    from .sqlite import SqliteDatastore

    return SqliteDatastore(resolve_sqlite_path(url, instance_path))


def _sqlite_queue(
    url: str, name: str, instance_path: str | None, default_ttr: float
) -> Queue:
    from .sqlite import SqliteQueue

    return SqliteQueue(
        resolve_sqlite_path(url, instance_path), name, default_ttr=default_ttr
    )


def _sqlite_relative_path(url: str) -> str:
    """The path of a ``sqlite:`` URL as written: relative unless it starts
    with ``/``."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} names a host; use sqlite:///relative/path"
            " or sqlite:////absolute/path"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"sqlite URL {url!r} takes no query or fragment")
    path = parts.path[1:]
    if not path or path.endswith("/"):
        raise ConfigurationError(
            f"sqlite URL {url!r} names no file; use sqlite:///relative/path"
            " or sqlite:////absolute/path"
        )
    if path == ":memory:":
        # each connection would get its own database
        raise ConfigurationError("an in-memory sqlite database cannot be shared")
    return path


def resolve_sqlite_path(url: str, instance_path: str | None = None) -> str:
    """The absolute file path of a ``sqlite:`` URL.

    A relative path is taken from ``instance_path``, or from the working
    directory when that is None. The file's directory is created when
    missing; if that fails the backend reports the file unavailable at first
    use.

    :raise ConfigurationError: the URL is not a valid ``sqlite:`` URL.
    """
    if _scheme(url) != "sqlite":
        raise ConfigurationError(f"{_redact(url)!r} is not a sqlite URL")
    path = _sqlite_relative_path(url)
    base = os.getcwd() if instance_path is None else os.fspath(instance_path)
    path = os.path.abspath(os.path.join(base, path))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError:
        pass
    return path


def _module(name: str, extra: str) -> Any:
    try:
        return importlib.import_module(f".{name}", __name__)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {name} backend needs a package that is not installed ({exc.name}); "
            f"pip install 'flask-spacewalk[{extra}]'"
        ) from exc


def _remote_datastore(name: str, extra: str, cls: str) -> Callable[[str, str | None], Datastore]:
    def open_datastore(url: str, instance_path: str | None) -> Datastore:
        return getattr(_module(name, extra), cls)(url)  # type: ignore[no-any-return]

    return open_datastore


def _remote_queue(
    name: str, extra: str, cls: str
) -> Callable[[str, str, str | None, float], Queue]:
    def open_queue(url: str, queue: str, instance_path: str | None, default_ttr: float) -> Queue:
        return getattr(_module(name, extra), cls)(  # type: ignore[no-any-return]
            url, queue, default_ttr=default_ttr
        )

    return open_queue


def _remote_check(name: str, extra: str) -> Callable[[str], object]:
    def check(url: str) -> object:
        return _module(name, extra).check_url(url)

    return check


_POSTGRES = _Backend(
    _remote_datastore("postgres", "postgresql", "PostgresDatastore"),
    _remote_queue("pgqueue", "postgresql", "PostgresQueue"),
    _remote_check("postgres", "postgresql"),
)
_BACKENDS: dict[str, _Backend] = {
    "sqlite": _Backend(_sqlite_datastore, _sqlite_queue, _sqlite_relative_path),
    "postgresql": _POSTGRES,
    "postgres": _POSTGRES,
    "redis": _Backend(
        _remote_datastore("redis", "redis", "RedisDatastore"),
        _remote_queue("redis", "redis", "RedisQueue"),
        _remote_check("redis", "redis"),
    ),
    "beanstalkd": _Backend(
        None,
        _remote_queue("beanstalkd", "beanstalkd", "BeanstalkdQueue"),
        _remote_check("beanstalkd", "beanstalkd"),
    ),
}


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def _redact(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    return parts._replace(
        netloc=parts.netloc.replace(f":{password}@", ":***@")
    ).geturl()


def _backend(url: str, kind: str) -> _Backend:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    if not isinstance(url, str):
        raise ConfigurationError(f"a {kind} URL must be a string, not {url!r}")
    backend = _BACKENDS.get(_scheme(url))
    if backend is None or getattr(backend, kind) is None:
        schemes = ", ".join(
            f"{name}://" for name, b in _BACKENDS.items() if getattr(b, kind)
        )
        raise ConfigurationError(
            f"unsupported {kind} URL {_redact(url)!r}; supported schemes: {schemes}"
        )
    return backend


def check_url(url: str, kind: str) -> None:
    """Check that ``url`` names a usable ``kind`` of backend, without
    connecting or creating anything.

    :param kind: ``"datastore"`` or ``"queue"``.
    :raise ConfigurationError: a bad URL or an unsupported scheme.
    """
    _backend(url, kind).check(url)


def make_datastore(url: str, *, instance_path: str | None = None) -> Datastore:
    """The datastore at ``url``. It connects on first use.

    :param instance_path: The base of relative ``sqlite:`` paths.
    :raise ConfigurationError: a bad URL or an unsupported scheme.
    """
    open_datastore = _backend(url, "datastore").datastore
    assert open_datastore is not None
    return open_datastore(url, instance_path)


def make_queue(
    url: str,
    name: str,
    *,
    instance_path: str | None = None,
    default_ttr: float = defaults.JOB_TTR,
) -> Queue:
    """The queue ``name`` at ``url``. It connects on first use.

    :param instance_path: The base of relative ``sqlite:`` paths.
    :param default_ttr: The lease of an entry put without a ``ttr``.
    :raise ConfigurationError: a bad URL or an unsupported scheme.
    """
    open_queue = _backend(url, "queue").queue
    assert open_queue is not None
    return open_queue(url, name, instance_path, default_ttr)
