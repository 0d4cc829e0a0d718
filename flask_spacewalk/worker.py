"""Run workers without Flask: ``python -m flask_spacewalk.worker``.

::

    python -m flask_spacewalk.worker --jobs examples/jobs \\
        --datastore sqlite:////tmp/spacewalk.sqlite3 --processes 2

Settings come from ``SPACEWALK_*`` environment variables, read as the
Flask app reads them (:mod:`flask_spacewalk.settings`), and the options
above, which win. Run from the app's folder, the defaults find the app's
default store: ``sqlite:///spacewalk.sqlite3`` relative to ``./instance``,
Flask's instance folder of an app module there.

``flask spacewalk worker`` runs the same code with the app's config.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, Callable

from . import defaults
from .backends import make_datastore, make_queue
from .base_job import BaseJob, parent_branch
from .discovery import find_job_classes, import_modules
from .errors import ConfigurationError
from .runtime.registry import JobRegistry
from .runtime.supervisor import EXIT_RETIRED, Supervisor
from .runtime.webhooks import Webhook, WebhookRecorder
from .runtime.worker_loop import (
    Worker,
    WorkerShutdown,
    check_batch,
    install_cancel_handler,
    install_shutdown_handler,
)
from .settings import DEFAULTS, Settings, environ_values, queue_name_for
from .tree import build_tree

__all__ = [
    "build_parser",
    "main",
    "progress_roots",
    "queue_name_for",
    "run_workers",
    "worker_settings",
]

log = logging.getLogger(__name__)


def run_workers(
    registry: JobRegistry,
    *,
    datastore_url: str,
    queue_url: str,
    service: str = defaults.SERVICE_NAME,
    processes: int = 1,
    ttr: float = defaults.JOB_TTR,
    grace: float = defaults.SHUTDOWN_GRACE,
    max_jobs: int | None = None,
    max_memory: int | None = None,
    instance_path: str | None = None,
    job_context: Callable[[], ContextManager[Any]] | None = None,
    cancel_grace: float = defaults.CANCEL_GRACE,
    retention: float | None = None,
    heartbeat: float = defaults.HEARTBEAT,
    webhooks: Sequence[Webhook] = (),
    progress_root: Callable[[str], str | None] = lambda job_type: None,
    batch: int = 1,
) -> int:
    """Supervise ``processes`` worker processes until SIGTERM or SIGINT, or
    until every one was retired.

    Connections are opened in each child, after the fork; each child is a
    worker with a record of its own, refreshed every ``heartbeat`` seconds.

    :param retention: seconds ended jobs are kept (``SPACEWALK_RETENTION``):
        the workers delete older ones; None keeps every job.

    :param heartbeat: seconds between two flushes of each worker's run
        durations (:func:`heartbeat_seconds`).
    :param webhooks: ``SPACEWALK_WEBHOOKS``: each worker records the
        deliveries of the jobs it ends, and a thread of it sends due ones.
    :param progress_root: a jobType's tree root path, for the webhook
        body's ``progress``.
    :param batch: entries each worker claims at a time
        (:class:`~flask_spacewalk.runtime.worker_loop.Worker`'s ``batch``).

    :return: the process exit code.
    :raises ValueError: ``batch`` is not an integer from 1 to
        :data:`~flask_spacewalk.runtime.worker_loop.MAX_BATCH`.
    """
    check_batch(batch)
    parent = os.getpid()

    def child() -> int:
        worker = Worker(
            registry,
            functools.partial(make_datastore, datastore_url, instance_path=instance_path),
            functools.partial(
                make_queue, queue_url, instance_path=instance_path, default_ttr=ttr
            ),
            queue_name_for(service),
            ttr=ttr,
            job_context=job_context,
            max_jobs=max_jobs,
            max_memory=max_memory,
            parent_pid=parent,
            cancel_grace=cancel_grace,
            retention=retention,
            heartbeat=heartbeat,
            service=service,
            webhooks=WebhookRecorder(webhooks, progress_root) if webhooks else None,
            batch=batch,
        )
        install_shutdown_handler(worker, grace)
        # A child that gives up on a stuck cancelled job exits; the
        # supervisor starts another.
        install_cancel_handler(worker)
        log.info("worker %d: running jobs from %s", os.getpid(), worker.queue_name)
        try:
            worker.run()
        except WorkerShutdown as exc:
            log.warning("worker %d: %s; job released", os.getpid(), exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if worker.retired:
            log.info("worker %d: retired", os.getpid())
            return EXIT_RETIRED
        return 0

    return Supervisor(child, processes=processes, grace=grace).run()


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; each option's default is its ``SPACEWALK_*``
    variable of ``environ`` (``os.environ`` by default), else the key's default.

    :raise ConfigurationError: a bad ``SPACEWALK_*`` variable.
    """
    environ = os.environ if environ is None else environ
    env = environ_values(environ)

    def default(name: str) -> Any:
        return env.get(name, DEFAULTS[name])

    parser = argparse.ArgumentParser(
        prog="python -m flask_spacewalk.worker",
        description="Run flask-spacewalk worker processes.",
    )
    parser.add_argument(
        "--jobs",
        required=True,
        action="append",
        help="directory or dotted package of job modules (repeatable)",
    )
    parser.add_argument(
        "--datastore",
        default=default("SPACEWALK_DATASTORE_URL"),
        help="datastore URL (default: $SPACEWALK_DATASTORE_URL or %(default)s)",
    )
    parser.add_argument(
        "--queue",
        default=default("SPACEWALK_QUEUE_URL"),
        help="queue URL (default: $SPACEWALK_QUEUE_URL, else the SQLite datastore)",
    )
    parser.add_argument(
        "--service",
        default=default("SPACEWALK_SERVICE_NAME"),
        help="service name; the queue is <service>_jobs "
        "(default: $SPACEWALK_SERVICE_NAME or %(default)s)",
    )
    parser.add_argument("--processes", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--ttr",
        type=positive_float,
        default=default("SPACEWALK_JOB_TTR"),
        help="seconds of lease on a reserved job (default: $SPACEWALK_JOB_TTR or %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=defaults.SHUTDOWN_GRACE,
        help="seconds a job may finish on SIGTERM (default: %(default)s)",
    )
    parser.add_argument(
        "--cancel-grace",
        type=positive_float,
        default=default("SPACEWALK_CANCEL_GRACE"),
        help="seconds a cancelled job has to reach a progress call before it is "
        "stopped by force (default: $SPACEWALK_CANCEL_GRACE or %(default)s)",
    )
    parser.add_argument(
        "--heartbeat",
        type=positive_float,
        default=default("SPACEWALK_HEARTBEAT"),
        help="seconds between two writes of a worker's record "
        "(default: $SPACEWALK_HEARTBEAT or %(default)s)",
    )
    parser.add_argument("--max-jobs", type=int, help="recycle a process after N jobs")
    parser.add_argument(
        "--batch",
        type=batch_size,
        default=1,
        help="claim up to N ready jobs at a time and run them one after another "
        "(SQLite, PostgreSQL, Redis; a crash re-runs the unfinished ones after their lease;"
        " default: 1)",
    )
    parser.add_argument(
        "--max-memory", type=int, help="recycle a process above this many MiB resident"
    )
    parser.add_argument(
        "--instance-path",
        default=os.path.abspath(defaults.INSTANCE_FOLDER),
        help="base of relative sqlite:/// paths (default: ./instance, where "
        "app.instance_path is for a Flask app module in the working directory)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def positive_float(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:  # NaN included
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def batch_size(text: str) -> int:
    """An argparse type: how many entries a worker claims at a time."""
    try:
        return check_batch(int(text))
    except ValueError as exc:
        message = str(exc) if text.strip().lstrip("+-").isdigit() else "it is not an integer"
        raise argparse.ArgumentTypeError(f"{text!r}: {message}") from None


def worker_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Settings:
    """The settings of a command line: its options, then the environment.

    :raise ConfigurationError: a bad value, naming its key and source.
    """
    return Settings.from_environ(
        environ,
        {
            "datastore_url": args.datastore,
            "queue_url": args.queue,
            "service_name": args.service,
            "job_ttr": args.ttr,
            "cancel_grace": args.cancel_grace,
            "heartbeat": args.heartbeat,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    try:
        # Fail now, in the foreground, on a bad URL rather than in every child.
        settings = worker_settings(args)
        modules = [m for spec in args.jobs for m in import_modules(spec)]
        registry = JobRegistry(find_job_classes(modules))
        if not len(registry):
            raise ConfigurationError(f"no job classes found in {', '.join(args.jobs)}")
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_workers(
        registry,
        datastore_url=settings.datastore_url,
        queue_url=settings.queue_url,
        service=settings.service_name,
        processes=args.processes,
        ttr=settings.job_ttr,
        grace=args.grace,
        max_jobs=args.max_jobs,
        max_memory=args.max_memory * 2**20 if args.max_memory else None,
        instance_path=args.instance_path,
        cancel_grace=settings.cancel_grace,
        retention=settings.retention,
        heartbeat=settings.heartbeat,
        webhooks=settings.webhooks,
        progress_root=progress_roots(registry, settings.url_prefix),
        batch=args.batch,
    )


def progress_roots(registry: JobRegistry, url_prefix: str) -> Callable[[str], str | None]:
    """A jobType's tree root path under ``url_prefix``, as the app serving
    these classes mounts them (None for a class of no tree)."""
    roots: dict[str, str] = {}
    classes = registry.get_registered_classes()
    for cls in classes:
        top = cls
        while (parent := parent_branch(top)) is not None:
            top = parent
        if not isinstance(top, type) or not issubclass(top, BaseJob):
            continue
        try:
            tree = build_tree(top, classes, url_prefix)
        except ConfigurationError:
            continue
        roots.update((leaf.job_type, tree.root.path) for leaf in tree.leaves())
    return roots.get


if __name__ == "__main__":
    sys.exit(main())
