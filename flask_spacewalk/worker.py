"""Run workers without Flask: ``python -m flask_spacewalk.worker``.

::

    python -m flask_spacewalk.worker --jobs examples/jobs \\
        --datastore sqlite:////tmp/spacewalk.sqlite3 --processes 2

``flask spacewalk worker`` runs the same code with the app's config.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, Callable

from .backends import check_url, make_datastore, make_queue
from .discovery import find_job_classes, import_modules
from .errors import ConfigurationError
from .runtime.registry import JobRegistry
from .runtime.supervisor import Supervisor
from .runtime.worker import (
    Worker,
    WorkerShutdown,
    install_cancel_handler,
    install_shutdown_handler,
)

log = logging.getLogger(__name__)

DEFAULT_DATASTORE_URL = "sqlite:///spacewalk.sqlite3"
#: Seconds a cancelled job has to reach a progress call (SPACEWALK_CANCEL_GRACE).
DEFAULT_CANCEL_GRACE = 10.0


def queue_name_for(service: str) -> str:
    """The queue of a service: ``<service>_jobs``, as ZeroG names it."""
    return f"{service}_jobs"


def run_workers(
    registry: JobRegistry,
    *,
    datastore_url: str,
    queue_url: str,
    service: str = "spacewalk",
    processes: int = 1,
    ttr: float = 30,
    grace: float = 30,
    max_jobs: int | None = None,
    max_memory: int | None = None,
    instance_path: str | None = None,
    job_context: Callable[[], ContextManager[Any]] | None = None,
    cancel_grace: float = DEFAULT_CANCEL_GRACE,
) -> int:
    """Supervise ``processes`` worker processes until SIGTERM or SIGINT.

    Connections are opened in each child, after the fork.

    :return: the process exit code.
    """
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
        return 0

    return Supervisor(child, processes=processes, grace=grace).run()


def build_parser() -> argparse.ArgumentParser:
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
        default=os.environ.get("SPACEWALK_DATASTORE_URL", DEFAULT_DATASTORE_URL),
        help="datastore URL (default: $SPACEWALK_DATASTORE_URL or %(default)s)",
    )
    parser.add_argument(
        "--queue",
        default=os.environ.get("SPACEWALK_QUEUE_URL"),
        help="queue URL (default: $SPACEWALK_QUEUE_URL, else the SQLite datastore)",
    )
    parser.add_argument(
        "--service",
        default=os.environ.get("SPACEWALK_SERVICE_NAME", "spacewalk"),
        help="service name; the queue is <service>_jobs (default: %(default)s)",
    )
    parser.add_argument("--processes", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--ttr",
        type=float,
        default=float(os.environ.get("SPACEWALK_JOB_TTR", 30)),
        help="seconds of lease on a reserved job (default: %(default)s)",
    )
    parser.add_argument(
        "--grace", type=float, default=30, help="seconds a job may finish on SIGTERM"
    )
    parser.add_argument(
        "--cancel-grace",
        type=positive_float,
        default=os.environ.get("SPACEWALK_CANCEL_GRACE", DEFAULT_CANCEL_GRACE),
        help="seconds a cancelled job has to reach a progress call before it is "
        "stopped by force (default: $SPACEWALK_CANCEL_GRACE or %(default)s)",
    )
    parser.add_argument("--max-jobs", type=int, help="recycle a process after N jobs")
    parser.add_argument(
        "--max-memory", type=int, help="recycle a process above this many MiB resident"
    )
    parser.add_argument(
        "--instance-path",
        default=os.getcwd(),
        help="base of relative sqlite:/// paths (default: the working directory)",
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


def default_queue_url(datastore_url: str, queue_url: str | None) -> str:
    """The queue URL, defaulting to the datastore's when that is SQLite."""
    if queue_url:
        return queue_url
    if datastore_url.startswith("sqlite:"):
        return datastore_url
    raise ConfigurationError(
        "a queue URL is required when the datastore is not SQLite "
        "(SPACEWALK_QUEUE_URL or --queue)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    try:
        queue_url = default_queue_url(args.datastore, args.queue)
        modules = [m for spec in args.jobs for m in import_modules(spec)]
        registry = JobRegistry(find_job_classes(modules))
        if not len(registry):
            raise ConfigurationError(f"no job classes found in {', '.join(args.jobs)}")
        # Fail now, in the foreground, on a bad URL rather than in every child.
        check_url(args.datastore, "datastore")
        check_url(queue_url, "queue")
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_workers(
        registry,
        datastore_url=args.datastore,
        queue_url=queue_url,
        service=args.service,
        processes=args.processes,
        ttr=args.ttr,
        grace=args.grace,
        max_jobs=args.max_jobs,
        max_memory=args.max_memory * 2**20 if args.max_memory else None,
        instance_path=args.instance_path,
        cancel_grace=args.cancel_grace,
    )


if __name__ == "__main__":
    sys.exit(main())
