"""The reliability soak (``make soak``): the checks of the reliability tests,
repeated until ``--minutes`` have passed, then a summary.

Each round runs a kill round (workers SIGKILLed at random under 1,000 jobs,
on SQLite, and on PostgreSQL + beanstalkd when both are reachable), an HTTP
load with gunicorn workers restarted meanwhile, and every bad client of
``tests/test_reliability_http.py``. A round does not start once the time is
up; the exit code is 1 when any check found a problem.

    python benchmarks/soak.py --minutes 10
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from backend_support import DATASTORES, QUEUES  # noqa: E402
from reliability_support import (  # noqa: E402
    Restarter,
    http_load,
    kill_round,
    web_service,
)
from test_reliability_http import _bad_clients  # noqa: E402


def bad_clients_round(tmp: Path) -> list[str]:
    problems = []
    with web_service(tmp) as service:
        for name, (send, expected) in _bad_clients(service.port).items():
            status = send()[0]
            if status != expected:
                problems.append(f"bad client {name!r}: {status}, expected {expected}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--posts", type=int, default=4000)
    args = parser.parse_args()
    backends = [("sqlite", "sqlite")]
    if "postgresql" in DATASTORES and "beanstalkd" in QUEUES and shutil.which("beanstalkd"):
        backends.append(("postgresql", "beanstalkd"))
    end = time.monotonic() + args.minutes * 60
    rounds, problems = 0, []
    totals = {"jobs": 0, "kills": 0, "reruns": 0, "posts": 0, "created": 0, "failed": 0}
    while time.monotonic() < end:
        rounds += 1
        with tempfile.TemporaryDirectory(prefix="spacewalk-soak-") as name:
            tmp = Path(name)
            for datastore, queue in backends:
                try:
                    with contextlib.ExitStack() as stack:
                        d_url = stack.enter_context(DATASTORES[datastore](tmp))
                        q_url = stack.enter_context(QUEUES[queue](tmp))
                        report = kill_round(f"{datastore}+{queue}", d_url, q_url, tmp,
                                            jobs=args.jobs)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # pytest's skip of a missing service, too
                    problems.append(f"kill round {datastore}+{queue}: {exc!r}")
                    continue
                print(f"round {rounds}: {report.summary()}", flush=True)
                problems += report.problems
                totals["jobs"] += report.jobs
                totals["kills"] += report.kills
                totals["reruns"] += report.reruns
            (tmp / "web").mkdir()
            with web_service(tmp / "web") as service:
                restarter = Restarter(service)
                load = http_load(service, posts=args.posts, disrupt=restarter, disrupt_every=400)
            print(f"round {rounds}: {load.summary('HTTP load with restarts')}", flush=True)
            problems += load.problems
            problems += [f"5xx other than 503: {s}" for s in load.statuses if s >= 500 and s != 503]
            totals["posts"] += args.posts
            totals["created"] += len(load.created)
            totals["failed"] += sum(load.failures.values())
            (tmp / "bad").mkdir()
            bad = bad_clients_round(tmp / "bad")
            print(f"round {rounds}: bad clients, problems {len(bad)}", flush=True)
            problems += bad
    print(f"soak: {rounds} rounds in {args.minutes:g} min; " +
          ", ".join(f"{k} {v}" for k, v in totals.items()) + f"; problems {len(problems)}")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
