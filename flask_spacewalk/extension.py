"""``Spacewalk``: the Flask extension, its configuration and per-app state."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from flask import Flask, current_app

from .backends import check_url, make_datastore, make_queue
from .discovery import discover
from .errors import ConfigurationError
from .runtime.protocols import Datastore, Queue
from .runtime.registry import JobRegistry
from .tree import Leaf, Tree
from .validation import ParamsValidator

if TYPE_CHECKING:
    from .jobs import BaseJob

#: Every key the extension reads, with its default.
DEFAULTS: dict[str, Any] = {
    "SPACEWALK_SERVICE_NAME": "spacewalk",
    "SPACEWALK_DATASTORE_URL": "sqlite:///spacewalk.sqlite3",
    "SPACEWALK_QUEUE_URL": None,
    "SPACEWALK_URL_PREFIX": "",
    "SPACEWALK_MAX_CONTENT_LENGTH": 1024 * 1024,
    "SPACEWALK_CORS_ORIGINS": None,
    "SPACEWALK_EXPOSE_DUMP": True,
    "SPACEWALK_JOB_TTR": 30,
    "SPACEWALK_RUN_INLINE": None,
    "SPACEWALK_EXPOSE_DOCS": True,
    "SPACEWALK_CANCEL_GRACE": 10,
    "SPACEWALK_CONSOLE": True,
    "SPACEWALK_API_TITLE": None,
    "SPACEWALK_API_VERSION": "1",
}

#: A view decorator, as in Flask's ``View.decorators``.
ViewDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: Connections a forked process inherited (see SpacewalkState.connections).
_INHERITED: list[tuple[Datastore, Queue]] = []

#: Constructor keywords and the keys they override.
OPTIONS = {key[len("SPACEWALK_"):].lower(): key for key in DEFAULTS}


@dataclass(frozen=True)
class Settings:
    """One tree's resolved configuration (SPEC section 4)."""

    service_name: str
    datastore_url: str
    queue_url: str
    url_prefix: str
    max_content_length: int
    cors_origins: tuple[str, ...]
    expose_dump: bool
    job_ttr: float
    run_inline: bool | None
    cancel_grace: float
    expose_docs: bool = True
    console: bool = True
    #: ``info.title`` and ``info.version`` of the OpenAPI document.
    api_title: str = "spacewalk"
    api_version: str = "1"

    @property
    def queue_name(self) -> str:
        return f"{self.service_name}_jobs"


@dataclass
class LeafSchemas:
    """What a leaf's POST needs, built once at start-up."""

    post_schema: dict[str, Any]
    validator: ParamsValidator


@dataclass
class SpacewalkState:
    """One job tree served by one app: ``app.extensions["spacewalk"][path]``."""

    tree: Tree
    settings: Settings
    registry: JobRegistry
    instance_path: str
    schemas: dict[str, LeafSchemas] = field(default_factory=dict)
    decorators: tuple[ViewDecorator, ...] = ()
    _connections: dict[int, tuple[Datastore, Queue]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root_path(self) -> str:
        """The tree's root URL path, prefix included."""
        return self.tree.root.path

    def connections(self) -> tuple[Datastore, Queue]:
        """This process's datastore and queue, opened on first use.

        Keyed by process id, so an app loaded before gunicorn forks never
        shares a connection with its children.
        """
        pid = os.getpid()
        pair = self._connections.get(pid)
        if pair is None:
            with self._lock:
                pair = self._connections.get(pid)
                if pair is None:
                    # The parent's objects stay referenced, never used: an
                    # SQLite connection must not even be closed in a child.
                    _INHERITED.extend(self._connections.values())
                    self._connections.clear()
                    pair = (self.make_datastore(), self.make_queue())
                    self._connections[pid] = pair
        return pair

    def close(self) -> None:
        """Close this process's connections; the next request opens new ones."""
        with self._lock:
            pair = self._connections.pop(os.getpid(), None)
        if pair is not None:
            for backend in pair:
                close = getattr(backend, "close", None)
                if close is not None:
                    close()

    def make_datastore(self) -> Datastore:
        return make_datastore(self.settings.datastore_url, instance_path=self.instance_path)

    def make_queue(self, name: str | None = None) -> Queue:
        return make_queue(
            self.settings.queue_url,
            name or self.settings.queue_name,
            instance_path=self.instance_path,
            default_ttr=self.settings.job_ttr,
        )

    def run_inline(self, app: Flask) -> bool:
        """Whether a POSTed job runs inside the request (read per request)."""
        value = self.settings.run_inline
        if value is None:
            value = app.config.get("SPACEWALK_RUN_INLINE")
        return app.testing if value is None else bool(value)


class Spacewalk:
    """Serve a tree of job classes as a REST API.

    ::

        spacewalk = Spacewalk(app, "jobs", ExampleBaseJob)

        # or, with an app factory:
        spacewalk = Spacewalk(modules_dir="jobs", base_job=ExampleBaseJob)
        spacewalk.init_app(app)

    :param app: the app to serve on now, if any.
    :param modules_dir: a directory (absolute, or relative to
        ``app.root_path``, then the working directory) or a dotted package
        whose modules define the jobs.
    :param base_job: the root job class; it sets ``BRANCH_NAME``.
    :param decorators: view decorators applied to every route under the
        tree's root, first innermost, as Flask's ``View.decorators``; the
        place for the app's own authentication.
    :param options: override config keys, named without the ``SPACEWALK_``
        prefix in lower case: ``datastore_url``, ``url_prefix``...
    """

    def __init__(
        self,
        app: Flask | None = None,
        modules_dir: str | os.PathLike[str] | None = None,
        base_job: type[BaseJob] | None = None,
        *,
        decorators: Sequence[ViewDecorator] = (),
        **options: Any,
    ):
        self.modules_dir = modules_dir
        self.base_job = base_job
        self.decorators = tuple(decorators)
        self.options = _check_options(options)
        self._states: WeakKeyDictionary[Flask, SpacewalkState] = WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        modules_dir: str | os.PathLike[str] | None = None,
        base_job: type[BaseJob] | None = None,
        *,
        decorators: Sequence[ViewDecorator] | None = None,
        **options: Any,
    ) -> None:
        """Discover the jobs and register their blueprint on ``app``.

        Arguments given here override the constructor's.

        Reads these config keys, writing each default back with
        ``setdefault``: ``SPACEWALK_SERVICE_NAME``, ``SPACEWALK_DATASTORE_URL``,
        ``SPACEWALK_QUEUE_URL``, ``SPACEWALK_URL_PREFIX``,
        ``SPACEWALK_MAX_CONTENT_LENGTH``, ``SPACEWALK_CORS_ORIGINS``,
        ``SPACEWALK_EXPOSE_DUMP``, ``SPACEWALK_JOB_TTR``,
        ``SPACEWALK_CANCEL_GRACE``, ``SPACEWALK_EXPOSE_DOCS``,
        ``SPACEWALK_CONSOLE``, ``SPACEWALK_API_TITLE`` (default: the app's
        name), ``SPACEWALK_API_VERSION`` and ``SPACEWALK_RUN_INLINE`` (read
        again at each request).

        :raises ConfigurationError: a bad setting or job tree, or this
            extension is already registered on ``app``.
        """
        if app in self._states:
            raise ConfigurationError("this Spacewalk is already registered on the app")
        modules_dir = modules_dir if modules_dir is not None else self.modules_dir
        base_job = base_job if base_job is not None else self.base_job
        if modules_dir is None or base_job is None:
            raise ConfigurationError("Spacewalk needs a modules_dir and a base_job")

        settings = _settings(app, {**self.options, **_check_options(options)})
        tree = discover(modules_dir, base_job, settings.url_prefix, root_path=app.root_path)
        states: dict[str, SpacewalkState] = app.extensions.setdefault("spacewalk", {})
        if tree.root.path in states:
            raise ConfigurationError(
                f"two Spacewalk trees are served at {tree.root.path}; "
                "give one of them another url_prefix"
            )
        state = SpacewalkState(
            tree=tree,
            settings=settings,
            registry=JobRegistry(tree.job_classes()),
            instance_path=app.instance_path,
            schemas={leaf.path: _leaf_schemas(leaf) for leaf in tree.leaves()},
            decorators=self.decorators if decorators is None else tuple(decorators),
        )
        from .cli import spacewalk_cli
        from .views import make_blueprint

        app.register_blueprint(make_blueprint(state))
        states[tree.root.path] = state
        if settings.expose_docs:
            from .docs import register_docs

            register_docs(app, tree.url_prefix, state.decorators)
        self._states[app] = state
        if "spacewalk" not in app.cli.commands:
            app.cli.add_command(spacewalk_cli)

    def state(self, app: Flask | None = None) -> SpacewalkState:
        """This extension's state on ``app`` (the current app by default)."""
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError("this Spacewalk is not registered on the app") from None


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown Spacewalk option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(OPTIONS))}"
        )
    return options


def _settings(app: Flask, options: dict[str, Any]) -> Settings:
    for key, default in DEFAULTS.items():
        app.config.setdefault(key, default)
    values = {name: options.get(name, app.config[key]) for name, key in OPTIONS.items()}

    datastore_url = str(values["datastore_url"])
    check_url(datastore_url, "datastore")
    queue_url = values["queue_url"]
    if not queue_url:
        if not datastore_url.startswith("sqlite:"):
            raise ConfigurationError(
                "SPACEWALK_QUEUE_URL is required when the datastore is not SQLite"
            )
        queue_url = datastore_url
    check_url(str(queue_url), "queue")

    origins = values["cors_origins"] or ()
    if isinstance(origins, str):
        origins = tuple(o.strip() for o in origins.split(",") if o.strip())
    try:
        max_length = int(values["max_content_length"])
        ttr = float(values["job_ttr"])
        cancel_grace = float(values["cancel_grace"])
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad Spacewalk setting: {exc}") from exc
    if not cancel_grace > 0:  # NaN included
        raise ConfigurationError("SPACEWALK_CANCEL_GRACE must be > 0")
    if max_length < 0 or ttr <= 0:
        raise ConfigurationError(
            "SPACEWALK_MAX_CONTENT_LENGTH must be >= 0 and SPACEWALK_JOB_TTR > 0"
        )
    service = str(values["service_name"])
    if not service:
        raise ConfigurationError("SPACEWALK_SERVICE_NAME must not be empty")
    return Settings(
        service_name=service,
        datastore_url=datastore_url,
        queue_url=str(queue_url),
        url_prefix=str(values["url_prefix"] or ""),
        max_content_length=max_length,
        cors_origins=tuple(origins),
        expose_dump=bool(values["expose_dump"]),
        job_ttr=ttr,
        cancel_grace=cancel_grace,
        # Only a constructor keyword is fixed here; the config key is read
        # at each request, so tests can switch it on an existing app.
        run_inline=options.get("run_inline"),
        expose_docs=bool(values["expose_docs"]),
        console=bool(values["console"]),
        api_title=str(values["api_title"] or app.name),
        api_version=str(values["api_version"] or DEFAULTS["SPACEWALK_API_VERSION"]),
    )


def _leaf_schemas(leaf: Leaf) -> LeafSchemas:
    validator = ParamsValidator(leaf.cls.Params)
    return LeafSchemas(post_schema=validator.json_schema, validator=validator)
