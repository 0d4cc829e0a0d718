"""``Spacewalk``: the Flask extension; ``init_app`` builds a tree's state
(:mod:`.web.state`) and registers its blueprint (:mod:`.web.views`)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from flask import Flask, current_app

from .discovery import discover
from .errors import ConfigurationError
from .runtime.registry import JobRegistry
from .settings import Settings, check_options, config_defaults
from .tree import Leaf
from .validation import ParamsValidator
from .web.state import LeafSchemas, SpacewalkState, ViewDecorator

if TYPE_CHECKING:
    from .base_job import BaseJob

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
        self.options = check_options(options)
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

        Reads these keys from the config, then from ``SPACEWALK_*``
        environment variables for those the config leaves unset, and writes
        each value it used back with ``setdefault`` (the environment's or the
        default, never a keyword's, which is this tree's alone):
        ``SPACEWALK_SERVICE_NAME``, ``SPACEWALK_DATASTORE_URL``,
        ``SPACEWALK_QUEUE_URL``, ``SPACEWALK_URL_PREFIX``,
        ``SPACEWALK_MAX_CONTENT_LENGTH``, ``SPACEWALK_CORS_ORIGINS``,
        ``SPACEWALK_EXPOSE_DUMP``, ``SPACEWALK_JOB_TTR``,
        ``SPACEWALK_CANCEL_GRACE``, ``SPACEWALK_EXPOSE_DOCS``,
        ``SPACEWALK_CONSOLE``, ``SPACEWALK_EXPOSE_METRICS``,
        ``SPACEWALK_API_TITLE`` (default: the app's
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

        settings = Settings.from_mapping(
            app.config, {**self.options, **check_options(options)}, os.environ,
            app_name=app.name,
        )
        # Flask-SQLAlchemy's habit, but a key set only in the environment is
        # written back with the environment's value, not hidden by the default.
        for key, value in config_defaults(app.config, os.environ).items():
            app.config.setdefault(key, value)
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
        from .web.views import make_blueprint

        app.register_blueprint(make_blueprint(state))
        states[tree.root.path] = state
        if settings.expose_docs:
            from .web.docs import register_docs

            register_docs(app, tree.url_prefix, state.decorators)
        if settings.expose_metrics:
            from .web.probes import register_probes

            register_probes(app, tree.url_prefix, state.decorators)
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


def _leaf_schemas(leaf: Leaf) -> LeafSchemas:
    validator = ParamsValidator(leaf.cls.Params)
    return LeafSchemas(post_schema=validator.json_schema, validator=validator)
