"""The pure parts of the benchmark suite (benchmarks/): reading wrk's output,
the POST script's status check, and the report writer. No wrk, gunicorn,
rq or matplotlib needed."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) leaves it out
    sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402
from benchmarks.http_bench import (  # noqa: E402
    POST_SCRIPT,
    BenchError,
    check_post_statuses,
    parse_wrk,
)

WRK_GET = """\
Running 2s test @ http://127.0.0.1:40123/examples/leaves
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.47ms    1.29ms  23.36ms   91.20%
    Req/Sec     2.33k   187.41     2.60k    77.50%
  Latency Distribution
     50%    3.21ms
     75%    3.66ms
     90%    4.35ms
     99%    9.12ms
  9288 requests in 2.00s, 2.85MB read
Requests/sec:   4643.61
Transfer/sec:      1.43MB
"""

WRK_ERRORS = """\
Running 2s test @ http://127.0.0.1:40123/plain
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.30ms   40.10ms   1.99s    99.10%
    Req/Sec     2.01k   300.00     2.50k    70.00%
  Latency Distribution
     50%  812.00us
     75%   10.20ms
     90%   20.00ms
     99%    1.50s
  8030 requests in 2.00s, 1.40MB read
  Socket errors: connect 0, read 3, write 0, timeout 12
  Non-2xx or 3xx responses: 4
Requests/sec:   4012.30
Transfer/sec:    716.00KB
"""

WRK_POST = WRK_GET.replace("Requests/sec:", "STATUS 201 9288\nRequests/sec:")


def test_parse_wrk_rate_and_percentiles() -> None:
    result = parse_wrk(WRK_GET)
    assert result.requests_per_second == 4643.61
    assert result.p50_ms == pytest.approx(3.21)
    assert result.p99_ms == pytest.approx(9.12)
    assert result.requests == 9288
    assert result.socket_errors == {}
    assert result.non_2xx == 0
    assert result.errors == 0


def test_parse_wrk_units_and_errors() -> None:
    result = parse_wrk(WRK_ERRORS)
    assert result.p50_ms == pytest.approx(0.812)
    assert result.p99_ms == pytest.approx(1500.0)
    assert result.socket_errors == {"read": 3, "timeout": 12}
    assert result.non_2xx == 4
    assert result.errors == 19


def test_parse_wrk_needs_the_latency_distribution() -> None:
    without = "".join(line + "\n" for line in WRK_GET.splitlines()
                      if "%" not in line or "Latency " in line or "Req/Sec" in line)
    with pytest.raises(BenchError, match="latency distribution"):
        parse_wrk(without)
    with pytest.raises(BenchError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_post_status_check_accepts_all_201() -> None:
    assert check_post_statuses(WRK_POST) == {201: 9288}
    assert check_post_statuses(WRK_POST + "STATUS 201 12\n") == {201: 9300}


def test_post_status_check_rejects_a_script_that_did_not_run() -> None:
    # wrk ignores a script it cannot load, sends GETs, and prints no STATUS
    with pytest.raises(BenchError, match="did not run"):
        check_post_statuses(WRK_GET)


def test_post_status_check_rejects_other_statuses() -> None:
    with pytest.raises(BenchError, match="503"):
        check_post_statuses(WRK_POST + "STATUS 503 2\n")


def test_post_script_is_valid_lua_text() -> None:
    script = POST_SCRIPT % {"body": '{"n": 20}'}
    assert "wrk.body = '{\"n\": 20}'" in script
    assert 'string.format("STATUS %d %d\\n", status, count)' in script


def _run(server: str, connections: int, endpoint: str, pair: str, rate: float,
         **extra: object) -> dict[str, object]:
    run: dict[str, object] = {
        "server": server, "connections": connections, "endpoint": endpoint, "pair": pair,
        "round": 0, "requests_per_second": rate, "p50_ms": 1.0, "p99_ms": 5.0,
        "requests": 100, "socket_errors": {}, "non_2xx": 0,
    }
    run.update(extra)
    return run


def _results() -> dict[str, object]:
    runs = []
    for endpoint in report.ENDPOINTS:
        runs.append(_run("sync", 16, "plain", endpoint, 1000.0))
        runs.append(_run("sync", 16, endpoint, endpoint,
                         400.0 if endpoint == "POST job" else 1000.0))
    runs.append(_run("sync", 16, "plain", "info", 1000.0,
                     socket_errors={"timeout": 2}))
    return {
        "http": {"runs": runs, "rss_kib": {"gunicorn sync worker": 40960}},
        "jobs": {
            "throughput": {"RQ": {"1": [250.0], "2": [400.0]},
                           "SQLite": {"1": [4000.0], "2": [5000.0]},
                           "SQLite, --batch 50": {"1": [8000.0], "2": []},
                           "Redis": {"1": [900.0], "2": [2000.0]}},
            "latency": {"SQLite": {"p50_ms": 2.5, "p99_ms": 9.0, "gets_per_job": 1.5,
                                   "worker_rss_kib": 35000}},
            "errors": {"PostgreSQL + beanstalkd": "backend unavailable: refused"},
        },
        "post_backends": {"rates": {"SQLite": [1000.0, 1200.0, 900.0],
                                    "PostgreSQL": [900.0, 840.0, 810.0]},
                          "p50_ms": {"SQLite": [5.0], "PostgreSQL": [6.0]}},
    }


def test_summary_ratios_and_targets() -> None:
    summary = report.summarize(_results())
    post = next(r for r in summary["http"] if r["endpoint"] == "POST job")
    assert post["ratio"] == pytest.approx(0.4)
    assert post["verdict"] == "BELOW TARGET"
    plain = summary["http"][0]
    assert plain["endpoint"] == "plain Flask view" and plain["errors"] == 2
    verdicts = {t.what: t.verdict for t in summary["targets"]}
    assert verdicts["leaves, sync, c16, ratio to plain"] == "ok"
    assert verdicts["SQLite throughput, 1 process(es), ratio to RQ"] == "ok"  # 16x >= 15x
    assert "SQLite throughput, 2 process(es), ratio to RQ" not in verdicts  # 2 to 1 instead
    assert verdicts["SQLite throughput, 2 processes to 1"] == "BELOW TARGET"  # 1.25x
    assert verdicts["SQLite, --batch 50 throughput, 1 process(es), ratio to RQ"] == "ok"  # 32x
    assert verdicts["Redis throughput, 1 process(es), ratio to RQ"] == "BELOW TARGET"  # 3.6x
    assert verdicts["SQLite POST-to-finished p50"] == "BELOW TARGET"  # 2.5 ms > 2 ms
    # each round's ratio (0.9, 0.7, 0.9), then the median
    post_backends = next(t for t in summary["targets"] if t.what.startswith("POST job, gth"))
    assert post_backends.measured == pytest.approx(0.9) and post_backends.met
    assert verdicts["PostgreSQL + beanstalkd throughput, 1 process(es), ratio to RQ"] == (
        "NOT MEASURED")
    text = report.text_report(summary)
    assert "BELOW TARGET" in text and "0.40x" in text
    assert re.search(r"SQLite, --batch 50 +8,000 +32\.0x", text)
    assert re.search(r"PostgreSQL +840 +6\.00", text)


def test_replace_section_keeps_the_rest_byte_for_byte() -> None:
    before = "Title\n=====\n\nhand  written\r\ntext\n\n"
    after = "\nMore\n----\n\nkept *as is*  \n"
    text = before + report.BEGIN + "\nold figures\n" + report.END + "\n" + after
    new = report.replace_section(text, report.BEGIN + "\nnew figures\n" + report.END + "\n")
    assert new == before + report.BEGIN + "\nnew figures\n" + report.END + "\n" + after
    # the result can be replaced again
    assert report.replace_section(new, report.BEGIN + "\n" + report.END) == (
        before + report.BEGIN + "\n" + report.END + "\n" + after)


@pytest.mark.parametrize("text", [
    "no markers\n",
    report.BEGIN + "\n",
    report.END + "\n" + report.BEGIN + "\n",
    report.BEGIN + "\n" + report.END + "\n" + report.BEGIN + "\n" + report.END + "\n",
])
def test_replace_section_needs_one_pair_of_markers(text: str) -> None:
    with pytest.raises(ValueError):
        report.replace_section(text, "x")


def test_rst_section_is_between_markers_and_lists_missed_targets() -> None:
    summary = report.summarize(_results())
    section = report.rst_section(summary, {"CPU": "test"}, "make bench",
                                 "_static/bench.png", "../benchmarks/results.md")
    lines = section.splitlines()
    assert lines[0] == report.BEGIN and lines[-1] == report.END
    assert "Targets missed in this run:" in section
    assert "- POST job, sync, c16, ratio to plain: 0.40x (target >= 0.50x)" in section
    assert ".. image:: _static/bench.png" in section
    assert ".. list-table:: Targets" in section
    markdown = report.markdown(summary, {"CPU": "test"}, "make bench")
    assert "| sync | 16 | POST job | 400 |" in markdown


def test_http_ratio_is_the_median_of_each_rounds_ratio() -> None:
    # the machine's load moves between rounds: each run is divided by the
    # /plain run just before it (1.0, 1.2, 1.1), not median by median (1.0)
    runs = []
    for round_, (plain, leaves) in enumerate([(1000.0, 1000.0), (400.0, 480.0),
                                              (2000.0, 2200.0)]):
        runs.append(_run("sync", 16, "plain", "leaves", plain, round=round_))
        runs.append(_run("sync", 16, "leaves", "leaves", leaves, round=round_))
    summary = report.summarize({"http": {"runs": runs}})
    leaves = next(r for r in summary["http"] if r["endpoint"] == "leaves")
    assert leaves["ratio"] == pytest.approx(1.1)
    assert leaves["rate"] == 1000.0


def test_the_purge_benchmark_seeds_and_purges_a_small_store(tmp_path: Path) -> None:
    # benchmarks/purge_bench.py without gunicorn: its seed and its purge,
    # with a few jobs and small batches
    from benchmarks.purge_bench import latency_summary, purge_store, seed
    from flask_spacewalk import make_datastore
    from flask_spacewalk.runtime.query import JobQuery

    url = f"sqlite:///{tmp_path / 'purge.sqlite3'}"
    seed(url, 23)
    store = make_datastore(url)
    assert len(store.list_jobs(JobQuery(statuses=frozenset({"finished"}), limit=100))) == 23
    result = purge_store(url, 7 * 86400, 5)
    assert (result["deleted"], result["skipped"]) == (23, 0)
    assert 0 < result["delete"] <= result["longest_delete"] <= result["longest_batch"]
    assert result["batch"] <= result["longest_batch"] <= result["seconds"]
    assert store.list_jobs(JobQuery(limit=100)) == []
    store.close()
    summary = latency_summary([0.002, 0.001, 0.003, 0.250])
    assert summary["count"] == 4 and summary["max"] == 250.0 and summary["p50"] == 2.5


def test_the_wait_benchmark_runs_a_few_jobs() -> None:
    from benchmarks.wait_bench import run

    results = run(jobs=3, interval=0.02, warmup=1)
    for name in ("wait", "poll"):
        assert results[name]["count"] == 3
        assert results[name]["p50"] > 0
    assert results["wait"]["requests_per_job"] == 1.0
    assert results["poll"]["requests_per_job"] >= 2.0


def test_request_stages_summary_of_commit_times() -> None:
    from benchmarks.request_stages import summarize

    stats = summarize([50_000] * 98 + [2_000_000, 3_000_000])
    assert stats["median_us"] == 50.0
    assert stats["mean_us"] == pytest.approx(99.0)
    assert stats["p99_us"] == 3000.0
    assert stats["share_over_1ms"] == pytest.approx(5_000_000 / 9_900_000)
    with pytest.raises(ValueError):
        summarize([])


def test_request_stages_stops_on_an_error_answer() -> None:
    from benchmarks.request_stages import check_status

    check_status("POST job", "201 CREATED")
    with pytest.raises(SystemExit, match="POST job answered 500"):
        check_status("POST job", "500 INTERNAL SERVER ERROR")


def test_request_stages_runs_a_few_requests() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.request_stages", "--requests", "20", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "POST job" in done.stdout and "COMMIT: median" in done.stdout
    assert "document read" in done.stdout  # a stage of the progress poll
