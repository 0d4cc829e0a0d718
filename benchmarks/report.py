"""The report of ``make bench``: figures, ratios and target verdicts, as a
text table (stdout), a Markdown table (benchmarks/results.md), a PNG chart
(docs/_static/bench.png) and a generated section of docs/performance.rst.

Everything here but :func:`chart` is pure (tested by
tests/test_benchmarks.py); :func:`chart` imports matplotlib when called.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

BEGIN = ".. bench:begin"
END = ".. bench:end"

ENDPOINTS = ("leaves", "post-schema", "POST job", "progress", "info")
#: HTTP targets (issue 7): ratio to the plain view, gunicorn 2 sync workers.
HTTP_TARGETS = {"leaves": 1.0, "post-schema": 1.0, "progress": 0.9, "info": 0.9,
                "POST job": 0.5}
#: Worker throughput targets (issue 17): ratio to RQ's SimpleWorker, by
#: backend and process count (the same count for both).
THROUGHPUT_TARGETS = {("SQLite", "1"): 15.0, ("PostgreSQL", "1"): 5.0, ("Redis", "1"): 5.0,
                      ("PostgreSQL + beanstalkd", "1"): 4.0, ("SQLite, --batch 50", "1"): 30.0}
#: SQLite's 2 worker processes to its 1 (issue 17): a second process must add.
SQLITE_SCALING_TARGET = 1.3
#: POST-to-finished p50 target, ms (over HTTP).
LATENCY_TARGETS = {"SQLite": 2.0, "PostgreSQL": 5.0}
#: POST job req/s, gthread c16, PostgreSQL alone to SQLite (issue 17).
POST_BACKENDS_TARGET = 0.8
JOB_BACKENDS = ("SQLite", "PostgreSQL", "PostgreSQL + beanstalkd", "Redis",
                "SQLite, --batch 50", "PostgreSQL, --batch 50", "Redis, --batch 50")


@dataclass
class Target:
    """One target and how the run did."""

    what: str
    measured: float | None
    target: float
    #: ``">="`` or ``"<="``
    sense: str
    unit: str  # "x" (a ratio) or "ms"

    @property
    def met(self) -> bool:
        if self.measured is None:
            return False
        if self.sense == ">=":
            return self.measured >= self.target
        return self.measured <= self.target

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "NOT MEASURED"
        return "ok" if self.met else "BELOW TARGET"

    def describe(self) -> str:
        measured = "n/a" if self.measured is None else _num(self.measured, self.unit)
        return (f"{self.what}: {measured} (target {self.sense} "
                f"{_num(self.target, self.unit)}) {self.verdict}")


def _num(value: float, unit: str) -> str:
    return f"{value:.2f}x" if unit == "x" else f"{value:.2f} ms"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- summary ---------------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Rows of figures and the list of targets from the raw results that
    benchmarks/run.py collects."""
    http_rows = []
    targets: list[Target] = []
    runs = results.get("http", {}).get("runs", [])
    for server in dict.fromkeys(r["server"] for r in runs):
        for connections in dict.fromkeys(r["connections"] for r in runs):
            here = [r for r in runs if r["server"] == server and r["connections"] == connections]
            plain = [r for r in here if r["endpoint"] == "plain"]
            http_rows.append(_http_row(server, connections, "plain Flask view", plain, None))
            for endpoint in ENDPOINTS:
                mine = [r for r in here if r["endpoint"] == endpoint]
                paired = [r for r in plain if r["pair"] == endpoint]
                row = _http_row(server, connections, endpoint, mine, paired)
                if server == "sync":
                    target = Target(f"{endpoint}, sync, c{connections}, ratio to plain",
                                    row["ratio"], HTTP_TARGETS[endpoint], ">=", "x")
                    row["target"] = f">= {HTTP_TARGETS[endpoint]:.1f}x"
                    row["verdict"] = target.verdict
                    targets.append(target)
                http_rows.append(row)

    jobs = results.get("jobs", {})
    rates = jobs.get("throughput", {})
    latency = jobs.get("latency", {})
    job_rows = []
    for name in ("RQ", *JOB_BACKENDS):
        job_row: dict[str, Any] = {"backend": "RQ SimpleWorker" if name == "RQ" else name}
        for processes in ("1", "2"):
            mine = rates.get(name, {}).get(processes, [])
            job_row[f"rate{processes}"] = _median(mine)
            # each round's ratio to RQ's run of the same round, then the median
            reference = rates.get("RQ", {}).get(processes, [])
            ratio = _median([a / b for a, b in zip(mine, reference) if b])
            job_row[f"ratio{processes}"] = ratio if name != "RQ" else None
            if (name, processes) in THROUGHPUT_TARGETS:
                targets.append(Target(
                    f"{name} throughput, {processes} process(es), ratio to RQ",
                    ratio, THROUGHPUT_TARGETS[name, processes], ">=", "x"))
        lat = latency.get(name, {})
        job_row["p50"] = lat.get("p50_ms")
        job_row["p99"] = lat.get("p99_ms")
        job_row["gets"] = lat.get("gets_per_job")
        job_row["rss"] = lat.get("worker_rss_kib")
        if name in LATENCY_TARGETS:
            targets.append(Target(f"{name} POST-to-finished p50", job_row["p50"],
                                  LATENCY_TARGETS[name], "<=", "ms"))
        job_rows.append(job_row)

    sqlite = rates.get("SQLite", {})
    targets.append(Target(
        "SQLite throughput, 2 processes to 1",
        _median([two / one for one, two in zip(sqlite.get("1", []), sqlite.get("2", []))
                 if one]),
        SQLITE_SCALING_TARGET, ">=", "x"))
    post_rows, post_ratio = _post_backends(results.get("post_backends", {}))
    targets.append(Target("POST job, gthread c16, PostgreSQL alone to SQLite", post_ratio,
                          POST_BACKENDS_TARGET, ">=", "x"))

    rss_rows = [(what, kib) for what, kib in results.get("http", {}).get("rss_kib", {}).items()]
    for name in ("RQ", *JOB_BACKENDS):
        kib = latency.get(name, {}).get("worker_rss_kib")
        if name in latency:
            what = "rq worker (SimpleWorker)" if name == "RQ" else f"job worker, {name}"
            rss_rows.append((what, kib))
    errors = dict(jobs.get("errors", {}))
    if "error" in results.get("post_backends", {}):
        errors["POST job on PostgreSQL alone"] = results["post_backends"]["error"]
    return {"http": http_rows, "jobs": job_rows, "post_backends": post_rows, "rss": rss_rows,
            "targets": targets, "errors": errors}


def _post_backends(
    results: dict[str, Any],
) -> tuple[list[dict[str, Any]], float | None]:
    """The rows of POST job req/s by datastore, and the median of each
    round's PostgreSQL-to-SQLite ratio."""
    rates = results.get("rates", {})
    p50s = results.get("p50_ms", {})
    rows = [{"backend": name, "rate": _median(rates.get(name, [])),
             "p50": _median(p50s.get(name, []))} for name in rates]
    ratio = _median([p / s for p, s in zip(rates.get("PostgreSQL", []),
                                           rates.get("SQLite", [])) if s])
    return rows, ratio


def _http_row(server: str, connections: int, endpoint: str, mine: list[dict[str, Any]],
              paired: list[dict[str, Any]] | None) -> dict[str, Any]:
    good = [r for r in mine if "error" not in r]
    rate = _median([r["requests_per_second"] for r in good])
    row: dict[str, Any] = {
        "server": server, "connections": connections, "endpoint": endpoint,
        "rate": rate,
        "p50": _median([r["p50_ms"] for r in good]),
        "p99": _median([r["p99_ms"] for r in good]),
        "errors": sum(sum(r["socket_errors"].values()) + r["non_2xx"] for r in good),
        "failed": [r["error"] for r in mine if "error" in r],
        "ratio": None, "target": "", "verdict": "",
    }
    if paired is not None:
        # The median of each round's ratio to the /plain run just before it:
        # the load of a shared machine changes between rounds more than
        # between two neighbouring runs.
        base = {r["round"]: r["requests_per_second"] for r in paired if "error" not in r}
        row["ratio"] = _median([r["requests_per_second"] / base[r["round"]]
                                for r in good if base.get(r["round"])])
        row["baseline"] = _median(list(base.values()))
    return row


# -- formatting ------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ",.0f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{suffix}"


def _errors(row: dict[str, Any]) -> str:
    text = str(row["errors"]) if row["errors"] else "0"
    if row["failed"]:
        text += f", {len(row['failed'])} run(s) rejected: {row['failed'][0]}"
    return text


def tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of each table, as text cells."""
    http = [
        [r["server"], str(r["connections"]), r["endpoint"], _f(r["rate"]),
         _f(r["p50"], ".2f"), _f(r["p99"], ".2f"),
         "(baseline)" if r["endpoint"] == "plain Flask view" else _f(r["ratio"], ".2f", "x"),
         r["target"], r["verdict"], _errors(r)]
        for r in summary["http"]
    ]
    jobs = [
        [r["backend"], _f(r["rate1"]), "(reference)" if r["ratio1"] is None and
         r["backend"].startswith("RQ") else _f(r["ratio1"], ".1f", "x"),
         _f(r["rate2"]), "(reference)" if r["backend"].startswith("RQ")
         else _f(r["ratio2"], ".1f", "x"),
         _f(r["p50"], ".2f"), _f(r["p99"], ".2f"),
         "in-process" if r["backend"].startswith("RQ") else _f(r["gets"], ".2f")]
        for r in summary["jobs"]
    ]
    post = [[r["backend"], _f(r["rate"]), _f(r["p50"], ".2f")]
            for r in summary.get("post_backends", [])]
    rss = [[what, _f(kib / 1024 if kib else None, ".1f")] for what, kib in summary["rss"]]
    targets = [
        [t.what, "n/a" if t.measured is None else _num(t.measured, t.unit),
         f"{t.sense} {_num(t.target, t.unit)}", t.verdict]
        for t in summary["targets"]
    ]
    return [
        ("HTTP (gunicorn, wrk -t2, SQLite)",
         ["gunicorn", "conns", "endpoint", "req/s", "p50 ms", "p99 ms", "ratio to plain",
          "target", "verdict", "socket errors + non-2xx"], http),
        ("Jobs (no-op)",
         ["backend", "jobs/s, 1 process", "ratio to RQ", "jobs/s, 2 processes",
          "ratio to RQ", "POST-to-finished p50 ms", "p99 ms", "GETs per job"], jobs),
        ("POST job by datastore (gunicorn gthread, wrk c16, queue in the same database)",
         ["datastore", "req/s", "p50 ms"], post),
        ("Peak RSS (VmHWM)", ["process", "MiB"], rss),
        ("Targets", ["target", "measured", "target", "verdict"], targets),
    ]


def text_report(summary: dict[str, Any]) -> str:
    out = []
    for title, header, rows in tables(summary):
        widths = [max(len(c) for c in col) for col in zip(header, *rows)]
        out.append(title)
        for cells in (header, *rows):
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        out.append("")
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(summary: dict[str, Any], facts: dict[str, str], command: str) -> str:
    out = ["# flask-spacewalk benchmark results", "",
           f"Generated by `{command}` on {facts.get('date', '?')}; see benchmarks/README.md.",
           ""]
    out += [f"- {key}: {value}" for key, value in facts.items()]
    out.append("")
    for title, header, rows in tables(summary):
        out += [f"## {title}", "", "| " + " | ".join(header) + " |",
                "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in rows]
        out.append("")
    if summary["errors"]:
        out += ["## Errors", ""] + [f"- {k}: {v}" for k, v in summary["errors"].items()] + [""]
    return "\n".join(out)


def _rst_cell(text: str) -> str:
    return text.replace("*", "\\*").replace("`", "\\`").replace("|", "\\|") or ".."


def rst_list_table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    out = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for cells in (header, *rows):
        first, *rest = cells
        out.append(f"   * - {_rst_cell(first)}")
        out += [f"     - {_rst_cell(c)}" if c else "     -" for c in rest]
    out.append("")
    return out


def rst_section(summary: dict[str, Any], facts: dict[str, str], command: str,
                image: str, markdown_path: str) -> str:
    """The generated part of docs/performance.rst, markers included."""
    out = [BEGIN, "", ".. This section is written by ``make bench`` (benchmarks/report.py):",
           "   edit the rest of the page, not this.", "",
           "Results", "-------", "",
           f"Measured by ``{command}`` on {facts.get('date', '?')}, on a machine shared with",
           "other jobs (its load is below): compare the ratios, which are measured in the",
           "same run with each baseline run right beside the figure it divides, rather",
           "than the absolute figures.", "",
           ".. list-table:: The machine", "   :header-rows: 0", ""]
    for key, value in facts.items():
        out += [f"   * - {_rst_cell(key)}", f"     - {_rst_cell(value)}"]
    out.append("")
    missed = [t for t in summary["targets"] if not t.met]
    if missed:
        out += ["Targets missed in this run:", ""]
        out += [f"- {_rst_cell(t.describe())}" for t in missed]
        out.append("")
    else:
        out += ["Every target was met in this run.", ""]
    for title, header, rows in tables(summary):
        out += rst_list_table(title, header, rows)
    if summary["errors"]:
        out += ["Errors in this run:", ""]
        out += [f"- {_rst_cell(k)}: {_rst_cell(v)}" for k, v in summary["errors"].items()]
        out.append("")
    out += [f".. image:: {image}", "   :alt: bar charts of the figures above", "",
            "The same tables in Markdown (``benchmarks/results.md``):", "",
            f".. literalinclude:: {markdown_path}", "   :language: markdown", "", END]
    return "\n".join(out) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with everything from the line ``.. bench:begin`` to the line
    ``.. bench:end`` (both included) replaced by ``section``; the rest is
    kept byte for byte.

    :raise ValueError: the markers are missing, repeated or out of order.
    """
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ValueError(f"expected one {BEGIN!r} line, then one {END!r} line")
    if not section.endswith("\n"):
        section += "\n"
    return "".join(lines[: begins[0]]) + section + "".join(lines[ends[0] + 1:])


# -- the chart -------------------------------------------------------------------------


def chart(summary: dict[str, Any], path: str) -> None:
    """Three bar charts: HTTP ratios to the plain view, jobs/s against RQ,
    POST-to-finished latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5.2))
    groups = [(s, c) for s, c in dict.fromkeys((r["server"], r["connections"])
                                              for r in summary["http"])]
    width = 0.8 / max(1, len(groups))
    for g, (server, connections) in enumerate(groups):
        ratios = []
        for endpoint in ENDPOINTS:
            row = next((r for r in summary["http"] if r["server"] == server
                        and r["connections"] == connections and r["endpoint"] == endpoint), None)
            ratios.append(row["ratio"] if row and row["ratio"] else 0.0)
        xs = [i + (g - (len(groups) - 1) / 2) * width for i in range(len(ENDPOINTS))]
        ax1.bar(xs, ratios, width, label=f"{server}, c{connections}")
    for i, endpoint in enumerate(ENDPOINTS):
        ax1.hlines(HTTP_TARGETS[endpoint], i - 0.45, i + 0.45, colors="black",
                   linestyles="dashed", label="target (sync)" if i == 0 else None)
    ax1.axhline(1.0, color="grey", linewidth=0.6)
    ax1.set_xticks(range(len(ENDPOINTS)), ENDPOINTS)
    ax1.set_ylabel("req/s as a ratio to the plain Flask view")
    ax1.set_title("HTTP (gunicorn 2 workers, wrk -t2)")
    ax1.legend(fontsize=8)

    names = [r["backend"].replace("PostgreSQL + beanstalkd", "PostgreSQL\n+ beanstalkd")
             .replace("RQ SimpleWorker", "RQ\nSimpleWorker") for r in summary["jobs"]]
    xs1 = [i - 0.2 for i in range(len(names))]
    xs2 = [i + 0.2 for i in range(len(names))]
    ax2.bar(xs1, [r["rate1"] or 0 for r in summary["jobs"]], 0.4, label="1 process")
    ax2.bar(xs2, [r["rate2"] or 0 for r in summary["jobs"]], 0.4, label="2 processes")
    for x, row in zip(xs1, summary["jobs"]):
        if row["ratio1"]:
            ax2.annotate(f"{row['ratio1']:.1f}x", (x, row["rate1"]), ha="center",
                         va="bottom", fontsize=8)
    for x, row in zip(xs2, summary["jobs"]):
        if row["ratio2"]:
            ax2.annotate(f"{row['ratio2']:.1f}x", (x, row["rate2"]), ha="center",
                         va="bottom", fontsize=8)
    ax2.set_xticks(range(len(names)), names, fontsize=8)
    ax2.set_ylabel("no-op jobs per second (ratio to RQ above the bars)")
    ax2.set_title("Worker throughput")
    ax2.legend(fontsize=8)

    ax3.bar(xs1, [r["p50"] or 0 for r in summary["jobs"]], 0.4, label="p50")
    ax3.bar(xs2, [r["p99"] or 0 for r in summary["jobs"]], 0.4, label="p99")
    for i, row in enumerate(summary["jobs"]):
        if row["backend"] in LATENCY_TARGETS:
            ax3.hlines(LATENCY_TARGETS[row["backend"]], i - 0.45, i + 0.45, colors="black",
                       linestyles="dashed", label="target p50")
    ax3.set_xticks(range(len(names)), names, fontsize=8)
    ax3.set_ylabel("ms from POST (RQ: enqueue) to finished")
    ax3.set_title("Latency, idle worker (RQ in-process, ours over HTTP)")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
