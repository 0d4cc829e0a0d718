"""``make bench``: the benchmark suite of docs/performance.rst.

``python -m benchmarks.run`` (from the project root, in the project's
virtualenv with the ``bench`` extra) runs the HTTP and job benchmarks (see
benchmarks/README.md), prints the tables, writes benchmarks/results.json,
benchmarks/results.md, docs/_static/bench.png and the generated section of
docs/performance.rst, and ends with the list of missed targets. It exits 0
when targets are missed (they are reported, not enforced); 2 when the suite
itself could not run.

Knobs (environment): ``BENCH_DURATION`` (seconds of each wrk run, default
2), ``BENCH_ROUNDS`` (HTTP rounds, default 3), ``BENCH_JOB_ROUNDS``
(throughput rounds, default 3), ``BENCH_JOBS`` (no-op jobs per throughput
run, default 3000), ``BENCH_RQ_JOBS`` (the same for RQ, default 800),
``BENCH_LATENCY_JOBS`` (default 200).

``python -m benchmarks.run --report-only`` rewrites the report from
benchmarks/results.json without measuring.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from . import report

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "benchmarks" / "results.json"
RESULTS_MD = ROOT / "benchmarks" / "results.md"
CHART = ROOT / "docs" / "_static" / "bench.png"
PERFORMANCE_RST = ROOT / "docs" / "performance.rst"


def knob(name: str, default: int) -> int:
    value = int(os.environ.get(name, default))
    if value < 1:
        raise SystemExit(f"{name} must be >= 1")
    return value


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (
        done.stdout or done.stderr).strip() else "unavailable"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3]) + " (1, 5, 15 min)"
    except OSError:
        return "?"


def machine_facts() -> dict[str, str]:
    """CPU, kernel, load and the versions of everything measured."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = re.findall(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{models[0] if models else platform.processor() or '?'}, "
               f"{os.cpu_count()} logical CPUs",
        "load average at start": _loadavg(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "flask": _version("flask"),
        "gunicorn": _version("gunicorn"),
        "rq": _version("rq"),
        "redis-py": _version("redis"),
        "psycopg": _version("psycopg"),
        "SQLite": sqlite3.sqlite_version,
    }
    try:
        import psycopg

        with psycopg.connect("postgresql://127.0.0.1:5432/test", connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            facts["PostgreSQL server"] = str(row[0]) if row else "?"
    except Exception as exc:  # noqa: BLE001 - a fact, not a failure
        facts["PostgreSQL server"] = f"unavailable ({type(exc).__name__})"
    try:
        from .jobs_bench import redis_client

        facts["Redis server"] = str(redis_client().info("server")["redis_version"])
    except Exception as exc:  # noqa: BLE001
        facts["Redis server"] = f"unavailable ({type(exc).__name__})"
    facts["beanstalkd"] = _output(["beanstalkd", "-v"])
    facts["wrk"] = _output(["wrk", "-v"]).split(" Copyright")[0]
    return facts


def measure(log: Any) -> dict[str, Any]:
    from .http_bench import BenchError, run_http
    from .jobs_bench import run_jobs
    from .post_backends_bench import run_post_backends

    duration = knob("BENCH_DURATION", 2)
    rounds = knob("BENCH_ROUNDS", 3)
    results: dict[str, Any] = {
        "settings": {
            "BENCH_DURATION": duration, "BENCH_ROUNDS": rounds,
            "BENCH_JOB_ROUNDS": knob("BENCH_JOB_ROUNDS", 3),
            "BENCH_JOBS": knob("BENCH_JOBS", 3000),
            "BENCH_RQ_JOBS": knob("BENCH_RQ_JOBS", 800),
            "BENCH_LATENCY_JOBS": knob("BENCH_LATENCY_JOBS", 200),
        },
        "facts": machine_facts(),
    }
    settings = results["settings"]
    start = time.monotonic()
    log(f"HTTP: {rounds} round(s) of {duration} s wrk runs")
    results["http"] = run_http(f"{duration}s", rounds, log)
    log(f"jobs: {settings['BENCH_JOB_ROUNDS']} throughput round(s), "
        f"{settings['BENCH_LATENCY_JOBS']} latency jobs")
    results["jobs"] = run_jobs(settings["BENCH_JOBS"], settings["BENCH_RQ_JOBS"],
                               settings["BENCH_JOB_ROUNDS"], settings["BENCH_LATENCY_JOBS"],
                               log)
    log(f"POST job on PostgreSQL alone beside SQLite: {rounds} round(s) of {duration} s")
    try:
        results["post_backends"] = run_post_backends(f"{duration}s", rounds, log)
    except (BenchError, RuntimeError, OSError) as exc:  # reported, the rest stands
        results["post_backends"] = {"error": str(exc).splitlines()[0]}
        log(f"  FAILED {results['post_backends']['error']}")
    results["facts"]["load average at end"] = _loadavg()
    results["seconds"] = round(time.monotonic() - start)
    return results


def command_line(settings: dict[str, int]) -> str:
    defaults = {"BENCH_DURATION": 2, "BENCH_ROUNDS": 3, "BENCH_JOB_ROUNDS": 3,
                "BENCH_JOBS": 3000, "BENCH_RQ_JOBS": 800, "BENCH_LATENCY_JOBS": 200}
    changed = [f"{k}={v}" for k, v in settings.items() if defaults.get(k) != v]
    return " ".join([*changed, "make bench"])


def write_report(results: dict[str, Any]) -> list[report.Target]:
    summary = report.summarize(results)
    command = command_line(results["settings"])
    facts = dict(results["facts"])
    print(report.text_report(summary))
    RESULTS_MD.write_text(report.markdown(summary, facts, command))
    CHART.parent.mkdir(parents=True, exist_ok=True)
    report.chart(summary, str(CHART))
    section = report.rst_section(summary, facts, command, "_static/bench.png",
                                 "../benchmarks/results.md")
    PERFORMANCE_RST.write_text(report.replace_section(PERFORMANCE_RST.read_text(), section))
    print(f"wrote {RESULTS_MD.relative_to(ROOT)}, {CHART.relative_to(ROOT)}, "
          f"{PERFORMANCE_RST.relative_to(ROOT)}")
    return [t for t in summary["targets"] if not t.met]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from benchmarks/results.json")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    if args.report_only:
        results = json.loads(RESULTS_JSON.read_text())
    else:
        missing = [tool for tool in ("wrk", "beanstalkd") if shutil.which(tool) is None]
        if missing:
            print(f"error: {', '.join(missing)} not found (apt-get install "
                  f"{' '.join(missing)})", file=sys.stderr)
            return 2
        results = measure(log)
        RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    missed = write_report(results)
    errors = results.get("jobs", {}).get("errors", {})
    failed_runs = [r for r in results.get("http", {}).get("runs", []) if "error" in r]
    print()
    if missed:
        print(f"{len(missed)} target(s) missed (reported, not enforced; exit status 0):")
        for target in missed:
            print(f"  - {target.describe()}")
    else:
        print("every target met")
    if errors or failed_runs:
        print(f"{len(errors)} job benchmark error(s), {len(failed_runs)} rejected wrk run(s): "
              "see benchmarks/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
