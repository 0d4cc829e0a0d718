"""The ``flask spacewalk`` command group: worker, routes, openapi, serve."""
from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from . import defaults
from .errors import SpacewalkError
from .runtime.registry import JobRegistry
from .web.routes import blueprint_name
from .worker import heartbeat_seconds, run_workers

if TYPE_CHECKING:
    from .web.state import SpacewalkState

spacewalk_cli = AppGroup("spacewalk", help="Serve and run flask-spacewalk jobs.")


def _states(app: Flask, tree: str | None) -> list[SpacewalkState]:
    states: dict[str, SpacewalkState] = app.extensions.get("spacewalk", {})
    if tree is not None:
        if tree not in states:
            raise click.UsageError(f"no tree at {tree}; trees: {', '.join(states) or 'none'}")
        return [states[tree]]
    if not states:
        raise click.UsageError("no Spacewalk tree is registered on this app")
    return list(states.values())


def _worker_group(app: Flask, tree: str | None) -> tuple[SpacewalkState, JobRegistry]:
    """The state whose connections the worker uses, and every job it runs.

    Trees that share a datastore, queue and service are served by one
    worker; trees that do not must be run one at a time with ``--tree``.
    """
    states = _states(app, tree)
    first = states[0].settings
    key = (first.datastore_url, first.queue_url, first.service_name)
    for state in states[1:]:
        s = state.settings
        if (s.datastore_url, s.queue_url, s.service_name) != key:
            raise click.UsageError(
                "the trees use different datastores, queues or services; "
                f"choose one with --tree ({', '.join(st.root_path for st in states)})"
            )
    registry = JobRegistry()
    for state in states:
        registry.add_classes(state.registry.get_registered_classes())
    return states[0], registry


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        )


def _run_workers(
    app: Flask,
    tree: str | None,
    *,
    processes: int,
    grace: float,
    max_jobs: int | None,
    max_memory: int | None,
) -> int:
    """Supervise job workers for the app; ``max_memory`` in MiB, as the
    ``--max-memory`` option gives it."""
    state, registry = _worker_group(app, tree)
    _configure_logging()
    settings = state.settings
    return run_workers(
        registry,
        datastore_url=settings.datastore_url,
        queue_url=settings.queue_url,
        service=settings.service_name,
        ttr=settings.job_ttr,
        instance_path=state.instance_path,
        job_context=app.app_context,
        cancel_grace=settings.cancel_grace,
        heartbeat=heartbeat_seconds(settings),
        processes=processes,
        grace=grace,
        max_jobs=max_jobs,
        max_memory=max_memory * 2**20 if max_memory else None,
    )


_worker_options = [
    click.option("--processes", "-p", default=1, show_default=True, help="Worker processes."),
    click.option("--grace", default=float(defaults.SHUTDOWN_GRACE), show_default=True,
                 help="Seconds a running job may take to finish on SIGTERM."),
    click.option("--max-jobs", type=int, help="Recycle a worker process after N jobs."),
    click.option("--max-memory", type=int,
                 help="Recycle a worker process above this many MiB resident."),
    click.option("--tree", help="Run only the tree at this root path."),
]


def worker_options(func: Any) -> Any:
    for option in reversed(_worker_options):
        func = option(func)
    return func


@spacewalk_cli.command("worker")
@worker_options
def worker_command(
    processes: int, grace: float, max_jobs: int | None, max_memory: int | None, tree: str | None
) -> None:
    """Run worker processes for this app's jobs until SIGTERM."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    sys.exit(
        _run_workers(
            app, tree, processes=processes, grace=grace, max_jobs=max_jobs, max_memory=max_memory
        )
    )


@spacewalk_cli.command("routes")
def routes_command() -> None:
    """List the generated endpoints, one a line."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for state in _states(app, None):
        prefix = blueprint_name(state.root_path) + "."
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
            if rule.endpoint.startswith(prefix) and rule.methods:
                methods = ",".join(sorted(rule.methods - {"HEAD", "OPTIONS"}))
                click.echo(f"{methods:5} {rule.rule}")


@spacewalk_cli.command("openapi")
@click.option("--prefix", help="The URL prefix whose trees to document (needed when several).")
@click.option("--indent", default=2, show_default=True, help="JSON indent; 0 for one line.")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-",
              help="Write to this file instead of standard output.")
def openapi_command(prefix: str | None, indent: int, output: Any) -> None:
    """Print the OpenAPI document of the trees at one URL prefix.

    Every tree at the prefix is included, whatever SPACEWALK_EXPOSE_DOCS
    says: a service that does not serve its document can still publish it.
    """
    from .web.openapi import openapi_document

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    states = _states(app, None)
    prefixes = sorted({state.tree.url_prefix for state in states})
    if prefix is None:
        if len(prefixes) > 1:
            raise click.UsageError(
                f"trees are mounted at several prefixes; choose one with --prefix "
                f"({', '.join(repr(p) for p in prefixes)})"
            )
        prefix = prefixes[0]
    prefix = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
    chosen = [state for state in states if state.tree.url_prefix == prefix]
    if not chosen:
        raise click.UsageError(
            f"no tree at prefix {prefix!r}; prefixes: {', '.join(repr(p) for p in prefixes)}"
        )
    document = openapi_document(chosen)
    output.write(json.dumps(document, indent=indent or None, ensure_ascii=False) + "\n")


class Age(click.ParamType):  # type: ignore[type-arg]
    """A number of seconds: ``90s``, ``15m``, ``12h``, ``7d`` or plain ``600``."""

    name = "age"
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        factor = self.UNITS.get(text[-1:], None)
        number = text[:-1] if factor else text
        try:
            seconds = float(number) * (factor or 1)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):  # NaN and negatives too
            self.fail(f"{value!r} is not an age such as 90s, 15m, 12h, 7d or 600", param, ctx)
        return seconds


@spacewalk_cli.command("requeue")
@click.option("--stale", "older_than", type=Age(), required=True,
              help="Requeue queued jobs not written for this long (90s, 15m, 12h, 7d, or "
                   "seconds) whose queue entry is gone.")
@click.option("--dry-run", is_flag=True, help="Only list the jobs that would be requeued.")
@click.option("--tree", help="Only the tree at this root path.")
def requeue_command(older_than: float, dry_run: bool, tree: str | None) -> None:
    """Enqueue again the queued jobs whose queue entry was lost.

    For a queue that lost its entries (beanstalkd restarted without -b, a
    Redis without persistence). A job whose entry still exists is left
    alone. Prints one line per job, then the counts.
    """
    from .runtime.stale import requeue_stale

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state, registry = _worker_group(app, tree)
    datastore, queue = state.connections()
    found = requeued = 0
    jobs = requeue_stale(datastore, queue, registry, older_than, dry_run=dry_run)
    while True:
        try:
            job = next(jobs, None)
        except SpacewalkError as exc:  # an unreachable datastore or queue
            raise click.ClickException(str(exc)) from exc
        if job is None:
            break
        found += 1
        where = (f"entry {job.queue_job_id} is gone" if isinstance(job.queue_job_id, int)
                 and job.queue_job_id > 0 else f"queueJobId {job.queue_job_id}")
        if dry_run:
            click.echo(f"would requeue {job.uuid} {job.job_type} (updated {job.updated_at},"
                       f" {where})")
        elif job.new_id is None:
            click.echo(f"skipped {job.uuid} {job.job_type}: {job.skipped}")
        else:
            requeued += 1
            click.echo(f"requeued {job.uuid} {job.job_type} (updated {job.updated_at},"
                       f" {where}) as entry {job.new_id}")
    if dry_run:
        click.echo(f"{found} stale queued job(s) found; dry run, nothing requeued")
    else:
        click.echo(f"{found} stale queued job(s) found, {requeued} requeued")


@spacewalk_cli.command("serve")
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True,
              help="Address gunicorn listens on.")
@click.option("--web-workers", "-w", default=2, show_default=True,
              help="gunicorn worker processes.")
@click.option("--timeout", "-t", default=30, show_default=True,
              help="gunicorn restarts a web worker silent for this many seconds.")
@worker_options
@click.pass_context
def serve_command(
    ctx: click.Context,
    bind: str,
    web_workers: int,
    timeout: int,
    processes: int,
    grace: float,
    max_jobs: int | None,
    max_memory: int | None,
    tree: str | None,
) -> None:
    """Serve the app with gunicorn and run job workers beside it.

    For the embedded (SQLite) deployment on one machine. SIGTERM or Ctrl-C
    stops both; SIGHUP, SIGTTIN, SIGTTOU and SIGUSR1 go to gunicorn. A job
    supervisor that dies is started again; if gunicorn ends, so does serve.
    Other gunicorn settings come from GUNICORN_CMD_ARGS, as with gunicorn;
    the options above, when given, override it.
    """
    from .serve import Serve

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    _worker_group(app, tree)  # fail before forking on a bad choice
    _configure_logging()
    options = {"bind": bind, "workers": web_workers, "timeout": timeout}
    given = {
        key for key, param in (("bind", "bind"), ("workers", "web_workers"),
                               ("timeout", "timeout"))
        if ctx.get_parameter_source(param) is not click.core.ParameterSource.DEFAULT
    }

    def run_web() -> None:
        _gunicorn(app, options, given)

    def run_jobs() -> int:
        return _run_workers(
            app, tree, processes=processes, grace=grace, max_jobs=max_jobs, max_memory=max_memory
        )

    sys.exit(Serve(run_web, run_jobs).run())


def _gunicorn(app: Flask, options: dict[str, Any], given: set[str]) -> None:
    """Serve the already loaded ``app`` with gunicorn.

    :param options: settings; those not in ``given`` are defaults that
        ``GUNICORN_CMD_ARGS`` may override.
    """
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            from_env = vars(self.cfg.parser().parse_args(self.cfg.get_cmd_args_from_env()))
            for key, value in options.items():
                if key in given or from_env.get(key) is None:
                    self.cfg.set(key, value)
            for key, value in from_env.items():
                if value is not None and key != "args" and key not in given:
                    self.cfg.set(key.lower(), value)

        def load(self) -> Flask:
            return app

    Application().run()
