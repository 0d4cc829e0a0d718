"""The ``flask spacewalk`` command group: worker, workers, routes, openapi,
requeue, purge, queues, serve."""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from . import defaults
from .errors import SpacewalkError
from .runtime.fleet import WorkerAction, find_worker, live_workers, request_action, request_for_host
from .runtime.lifecycle import Lifecycle
from .runtime.queue_control import pause_queue, queue_overview, resume_queue
from .runtime.records import utcnow
from .runtime.registry import JobRegistry
from .runtime.retention import PURGEABLE, PurgeCount, cutoff, purge
from .runtime.webhooks import DeliveryStatus
from .runtime.worker_loop import MAX_BATCH
from .settings import parse_duration
from .web.routes import blueprint_name
from .worker import run_workers

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


def _progress_roots(app: Flask) -> Callable[[str], str | None]:
    """A jobType's tree root path, for the webhook body's ``progress``."""
    states: dict[str, SpacewalkState] = app.extensions.get("spacewalk", {})
    roots = {leaf.job_type: path for path, state in states.items()
             for leaf in state.tree.leaves()}  # fmt: skip
    return roots.get


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
    batch: int = 1,
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
        retention=settings.retention,
        heartbeat=settings.heartbeat,
        webhooks=settings.webhooks,
        progress_root=_progress_roots(app),
        processes=processes,
        grace=grace,
        max_jobs=max_jobs,
        max_memory=max_memory * 2**20 if max_memory else None,
        batch=batch,
    )


_worker_options = [
    click.option("--processes", "-p", default=1, show_default=True, help="Worker processes."),
    click.option("--grace", default=float(defaults.SHUTDOWN_GRACE), show_default=True,
                 help="Seconds a running job may take to finish on SIGTERM."),
    click.option("--max-jobs", type=int, help="Recycle a worker process after N jobs."),
    click.option("--max-memory", type=int,
                 help="Recycle a worker process above this many MiB resident."),
    click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=1, show_default=True,
                 help="Claim up to N ready jobs at a time and run them one after another "
                 "(SQLite, PostgreSQL, Redis; a crash re-runs the unfinished ones after their "
                 "lease)."),
    click.option("--tree", help="Run only the tree at this root path."),
]


def worker_options(func: Any) -> Any:
    for option in reversed(_worker_options):
        func = option(func)
    return func


@spacewalk_cli.command("worker")
@worker_options
def worker_command(
    processes: int, grace: float, max_jobs: int | None, max_memory: int | None, batch: int,
    tree: str | None,
) -> None:
    """Run worker processes for this app's jobs until SIGTERM."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    sys.exit(
        _run_workers(
            app, tree, processes=processes, grace=grace, max_jobs=max_jobs, max_memory=max_memory,
            batch=batch,
        )
    )


@spacewalk_cli.group("workers", invoke_without_command=True)
@click.option("--tree", help="The tree whose datastore to read (needed when several).")
@click.pass_context
@with_appcontext
def workers_group(ctx: click.Context, tree: str | None) -> None:
    """Print the live job workers; drain, undrain or retire them."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    datastore, _ = _worker_group(app, tree)[0].connections()
    ctx.obj = datastore
    if ctx.invoked_subcommand is not None:
        return
    try:
        workers = live_workers(datastore)
    except SpacewalkError as exc:
        raise click.ClickException(str(exc)) from exc
    if not workers:
        click.echo("no live workers")
        return
    now = utcnow()
    rows = [("ID", "HOST", "PID", "STATE", "JOB", "JOB TYPE", "DONE", "FAILED", "RSS", "SEEN")]
    for w in workers:
        seen = (now - dt.datetime.fromisoformat(w["lastSeen"])).total_seconds()
        rows.append((w["id"], w["host"], str(w["pid"]), w["state"], w["job"] or "-",
                     w["jobType"] or "-", str(w["jobsDone"]), str(w["jobsFailed"]),
                     f"{w['rss'] / 2**20:.0f} MiB", f"{max(0, seen):.0f}s ago"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _worker_action(action: WorkerAction) -> click.Command:
    @click.command(action.value, help=f"{action.value.capitalize()} one worker or every live"
                   " worker of a host.")  # fmt: skip
    @click.argument("worker_id", metavar="ID", required=False)
    @click.option("--host", help="Every live worker of this host.")
    @click.pass_obj
    def command(datastore: Any, worker_id: str | None, host: str | None) -> None:
        if (worker_id is None) == (host is None):
            raise click.UsageError("give a worker ID or --host, not both")
        try:
            if host is not None:
                moved = request_for_host(datastore, host, action)
                if not moved:
                    raise click.ClickException(f"no live worker on host {host}")
            else:
                assert worker_id is not None
                record = find_worker(datastore, worker_id)
                if record is None:
                    raise click.ClickException(f"no live worker {worker_id}")
                moved = [(worker_id, request_action(datastore, record, action))]
        except SpacewalkError as exc:
            raise click.ClickException(str(exc)) from exc
        for moved_id, state in moved:
            click.echo(f"{moved_id}: {state}")

    return command


for _action in WorkerAction:
    workers_group.add_command(_worker_action(_action))


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

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return parse_duration(value)
        except ValueError:
            self.fail(f"{value!r} is not an age such as 90s, 15m, 12h, 7d or 600", param, ctx)


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


class Statuses(click.ParamType):  # type: ignore[type-arg]
    """Ended statuses, comma-separated: ``finished,failed``."""

    name = "status"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> frozenset[str]:
        if isinstance(value, frozenset):
            return value
        words = [word.strip().lower() for word in str(value).split(",")]
        for word in words:
            if word in ("queued", "running"):
                self.fail(f"{word} jobs are never purged: only ended ones (finished, failed,"
                          " cancelled); cancel them first", param, ctx)
            if word not in PURGEABLE:
                self.fail(f"{word!r} is not a status to purge; choose from finished, failed,"
                          " cancelled", param, ctx)
        return frozenset(words)


@spacewalk_cli.command("purge")
@click.option("--older-than", type=Age(), required=True,
              help="Delete jobs ended (last written) longer ago than this: 90s, 15m, 12h, "
                   "7d, or seconds.")
@click.option("--status", "statuses", type=Statuses(), multiple=True,
              help="Only jobs of this status: finished, failed or cancelled; repeatable or "
                   "comma-separated (default: all three).")
@click.option("--dry-run", is_flag=True, help="Only count the jobs that would be deleted.")
@click.option("--tree", help="Only the jobs of the tree at this root path.")
def purge_command(
    older_than: float, statuses: tuple[frozenset[str], ...], dry_run: bool, tree: str | None
) -> None:
    """Delete the ended jobs last written more than --older-than ago, with
    their cancel requests and queue entries; print how many.

    A job that changes while it is being deleted (a retry made it live
    again) is skipped, with a warning naming it.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state, registry = _worker_group(app, tree)
    wanted = frozenset().union(*statuses) or PURGEABLE
    datastore, queue = state.connections()
    types = frozenset(cls.JOB_TYPE for cls in registry.get_registered_classes())
    before = cutoff(older_than)
    total = PurgeCount()
    try:
        for count in purge(Lifecycle(datastore, queue, registry), types, before, wanted,
                           dry_run=dry_run):  # fmt: skip
            total += count
    except SpacewalkError as exc:  # an unreachable datastore, say
        raise click.ClickException(f"{exc} (deleted {total.deleted} job(s) before)") from exc
    which = f"last written before {before} UTC ({', '.join(sorted(wanted))})"
    if dry_run:
        click.echo(f"would delete {total.matched} job(s) {which}; dry run, nothing deleted")
    else:
        click.echo(f"deleted {total.deleted} job(s) {which}; {total.skipped} skipped")


@spacewalk_cli.group("queues", invoke_without_command=True)
@click.option("--tree", help="The tree at this root path (when trees use different queues).")
@click.pass_context
@with_appcontext
def queues_command(ctx: click.Context, tree: str | None) -> None:
    """Print the queues: entries ready, delayed and reserved, the wait of
    the oldest ready one, and whether this project's workers skip it."""
    ctx.meta["spacewalk.tree"] = tree
    if ctx.invoked_subcommand is not None:
        return
    state, _ = _worker_group(current_app._get_current_object(), tree)  # type: ignore[attr-defined]
    try:
        items = queue_overview(*state.connections())
    except SpacewalkError as exc:  # unreachable, or a queue that cannot count
        raise click.ClickException(str(exc)) from exc
    rows = [("QUEUE", "READY", "DELAYED", "RESERVED", "OLDEST READY", "PAUSED")]
    for item in items:
        age = item["oldestReadyAge"]
        rows.append((item["name"], str(item["ready"]), str(item["delayed"]),
                     str(item["reserved"]), "-" if age is None else f"{age:.1f} s",
                     "yes" if item["paused"] else "no"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1])]
        click.echo("  ".join([*cells, row[-1]]))


@queues_command.command("pause")
@click.argument("name")
@click.pass_context
def queue_pause_command(ctx: click.Context, name: str) -> None:
    """Pause queue NAME: this project's workers take none of its entries
    within one heartbeat (SPACEWALK_HEARTBEAT), until it is resumed."""
    _pause_or_resume(ctx, name, pause=True)


@queues_command.command("resume")
@click.argument("name")
@click.pass_context
def queue_resume_command(ctx: click.Context, name: str) -> None:
    """Resume queue NAME: workers take its entries again within one heartbeat."""
    _pause_or_resume(ctx, name, pause=False)


def _pause_or_resume(ctx: click.Context, name: str, pause: bool) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state, _ = _worker_group(app, ctx.meta.get("spacewalk.tree"))
    own = state.settings.queue_name
    if name != own:
        raise click.UsageError(f"{name!r} is not this service's queue, {own!r}")
    datastore, _ = state.connections()
    try:
        (pause_queue if pause else resume_queue)(datastore, name)
    except SpacewalkError as exc:
        raise click.ClickException(str(exc)) from exc
    within = f"within {state.settings.heartbeat:g} s"
    if pause:
        click.echo(f"paused {name}: workers take none of its entries {within}")
    else:
        click.echo(f"resumed {name}: workers take its entries again {within}")


@spacewalk_cli.command("webhooks")
@click.option("--failed", is_flag=True, help="Only deliveries that gave up.")
@click.option("--pending", is_flag=True, help="Only deliveries not yet answered with a 2xx.")
@click.option("--job", "uuid", metavar="UUID", help="Only the deliveries of this job.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="At most this many, newest first.")
@click.option("--retry", "retry_id", metavar="ID",
              help="Send this failed or pending delivery (its webhook-id) again now.")
@click.option("--tree", help="The tree whose datastore to read (needed when several).")
@with_appcontext
def webhooks_command(failed: bool, pending: bool, uuid: str | None, limit: int,
                     retry_id: str | None, tree: str | None) -> None:
    """List recent webhook deliveries, or retry one now (a worker sends it)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    datastore, _ = _worker_group(app, tree)[0].connections()
    if failed and pending:
        raise click.UsageError("give --failed or --pending, not both")
    try:
        if retry_id is not None:
            if not datastore.retry_delivery(retry_id, time.time()):
                raise click.ClickException(
                    f"no failed or pending delivery {retry_id} (delivered ones are not resent)")
            click.echo(f"{retry_id}: pending, due now")
            return
        status = DeliveryStatus.FAILED if failed else DeliveryStatus.PENDING if pending else None
        found = datastore.list_deliveries(status, uuid, limit)
    except SpacewalkError as exc:
        raise click.ClickException(str(exc)) from exc
    if not found:
        click.echo("no webhook deliveries")
        return
    rows = [("ID", "EVENT", "JOB", "URL", "STATUS", "TRIES", "LAST", "NEXT TRY")]
    for d in found:
        last = d.attempts[-1] if d.attempts else None
        answer = "-" if last is None else str(last["status"] or last["error"])
        next_try = "-" if d.next_at is None or d.status != DeliveryStatus.PENDING else (
            dt.datetime.fromtimestamp(d.next_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"))
        rows.append((d.id, d.event, d.uuid, d.url, d.status, str(len(d.attempts)), answer,
                     next_try))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@spacewalk_cli.command("serve")
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True,
              help="Address gunicorn listens on.")
@click.option("--web-workers", "-w", default=2, show_default=True,
              help="gunicorn worker processes.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(min=1),
              help="Threads of each gunicorn worker (gthread): a request that waits"
                   " (Prefer: wait) holds one. 1: sync workers, which --timeout"
                   " restarts when a request outlasts it.")
@click.option("--timeout", "-t", default=30, show_default=True,
              help="gunicorn restarts a web worker silent for this many seconds.")
@worker_options
@click.pass_context
def serve_command(
    ctx: click.Context,
    bind: str,
    web_workers: int,
    threads: int,
    timeout: int,
    processes: int,
    grace: float,
    max_jobs: int | None,
    max_memory: int | None,
    batch: int,
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
    # gthread: a request waiting for a job's result (Prefer: wait, the long
    # poll) holds a thread, not the whole worker process (docs/live.rst)
    options = {"bind": bind, "workers": web_workers, "timeout": timeout,
               "worker_class": "gthread" if threads > 1 else "sync", "threads": threads}
    given = {
        key for key, param in (("bind", "bind"), ("workers", "web_workers"),
                               ("timeout", "timeout"), ("threads", "threads"))
        if ctx.get_parameter_source(param) is not click.core.ParameterSource.DEFAULT
    }

    def run_web() -> None:
        _gunicorn(app, options, given)

    def run_jobs() -> int:
        return _run_workers(
            app, tree, processes=processes, grace=grace, max_jobs=max_jobs, max_memory=max_memory,
            batch=batch,
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
