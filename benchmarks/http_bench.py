"""Requests per second of the generated API against a plain Flask view.

Run ``python benchmarks/http_bench.py`` (``make bench`` runs it; needs
``wrk``). gunicorn serves ``benchmarks/bench_app.py`` with 2 sync workers on
loopback; wrk loads each endpoint in turn, alternating with the plain Flask
JSON view, the baseline, so that both see the same machine. It prints each
endpoint's median req/s and its ratio to the baseline.

Targets (issue 3): leaves and post-schema >= 90 % of the baseline, progress
>= 70 %, POST job >= 50 %.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATION = os.environ.get("BENCH_DURATION", "4s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = 16

POST_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"n": 20}'
wrk.headers["Content-Type"] = "application/json"
-- Each wrk thread has its own Lua state: count there, add up in done().
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("STATUS %d %d\\n", status, count))
  end
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, script: str | None = None) -> float:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url}: error answers\n{out}")
    if script:
        # wrk silently ignores a script it cannot load and sends GETs: the
        # script's own summary proves it ran, and every answer was a 201.
        statuses = dict(re.findall(r"STATUS (\d+) (\d+)", out))
        if set(statuses) != {"201"}:
            raise SystemExit(f"POST script did not run as expected: {statuses}\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            FLASK_SPACEWALK_DATASTORE_URL=f"sqlite:///{tmp}/bench.sqlite3",
            FLASK_SPACEWALK_RUN_INLINE="false",
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
             "--log-level", "warning", "benchmarks.bench_app:app"],
            cwd=ROOT, env=env,
        )
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/plain", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            request = urllib.request.Request(
                base + "/examples/fizz_buzz/job", data=b'{"n": 20}',
                headers={"Content-Type": "application/json"},
            )
            uuid = json.loads(urllib.request.urlopen(request).read())["uuid"]
            script = Path(tmp) / "post.lua"
            script.write_text(POST_SCRIPT)
            cases = {
                "GET leaves": (base + "/examples/leaves", None, 0.9),
                "GET post-schema": (base + "/examples/fizz_buzz/post-schema", None, 0.9),
                "GET progress": (base + f"/examples/progress/{uuid}", None, 0.7),
                "POST job": (base + "/examples/fizz_buzz/job", str(script), 0.5),
            }
            results: dict[str, list[float]] = {"plain Flask view": []}
            for name, (url, lua, _) in cases.items():
                results[name] = []
                for _ in range(ROUNDS):
                    results["plain Flask view"].append(wrk(base + "/plain"))
                    results[name].append(wrk(url, lua))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    baseline = statistics.median(results["plain Flask view"])
    print(f"gunicorn 2 sync workers, wrk -t2 -c{CONNECTIONS} -d{DURATION}, median of {ROUNDS}")
    print(f"{'plain Flask view':<18} {baseline:8.0f} req/s  (baseline)")
    failed = False
    for name, (_, _, target) in cases.items():
        rate = statistics.median(results[name])
        ratio = rate / baseline
        verdict = "ok" if ratio >= target else "BELOW TARGET"
        failed |= ratio < target
        print(f"{name:<18} {rate:8.0f} req/s  {ratio:6.0%} of baseline "
              f"(target {target:.0%}) {verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
