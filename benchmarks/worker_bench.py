"""The worker on the SQLite backend: latency and throughput of no-op jobs.

Run ``python benchmarks/worker_bench.py`` (``make bench`` runs it). It prints:

- latency: a no-op job enqueued to an idle worker process, until its
  document says completeness 1 and result 200 (median, p90), against the
  baseline of a bare queue round trip (put in one process, a blocked
  reserve returning in another) measured in the same run;
- throughput: no-op jobs one worker process runs per second, against the
  baseline of bare put+reserve+delete cycles in one process.

Targets (issue 2): latency under 10 ms median; 1,000 jobs/s or more.
"""
from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_jobs import NoopJob  # noqa: E402

from flask_spacewalk import make_datastore, make_queue  # noqa: E402
from flask_spacewalk.runtime.job import make_key  # noqa: E402
from flask_spacewalk.runtime.registry import JobRegistry  # noqa: E402
from flask_spacewalk.runtime.worker import Worker  # noqa: E402

QUEUE = "bench_jobs"
LATENCY_ROUNDS = 300
THROUGHPUT_JOBS = 5000


def worker(url: str, burst: bool = False) -> Worker:
    return Worker(
        JobRegistry([NoopJob]),
        lambda: make_datastore(url),
        lambda name: make_queue(url, name),
        QUEUE,
    )


def serve(url: str) -> None:
    worker(url).run()


def echo(url: str, rounds: int) -> None:
    queue = make_queue(url, "echo_in")
    back = make_queue(url, "echo_out")
    for _ in range(rounds):
        entry = queue.reserve(timeout=30)
        assert entry is not None
        entry.delete()
        back.put("pong")


def quantiles(samples: list[float]) -> str:
    samples = sorted(samples)
    median = statistics.median(samples)
    p90 = samples[int(len(samples) * 0.9)]
    return f"median {median * 1e3:6.2f} ms  p90 {p90 * 1e3:6.2f} ms"


def queue_round_trip(url: str) -> list[float]:
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=echo, args=(url, LATENCY_ROUNDS))
    proc.start()
    out, back = make_queue(url, "echo_in"), make_queue(url, "echo_out")
    samples = []
    for _ in range(LATENCY_ROUNDS):
        start = time.perf_counter()
        out.put("ping")
        entry = back.reserve(timeout=30)
        assert entry is not None
        entry.delete()
        samples.append(time.perf_counter() - start)
    proc.join()
    return samples


def job_latency(url: str) -> list[float]:
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=serve, args=(url,), daemon=True)
    proc.start()
    datastore, queue = make_datastore(url), make_queue(url, QUEUE)
    samples = []
    try:
        for _ in range(LATENCY_ROUNDS):
            time.sleep(0.002)  # let the worker go back to waiting: "idle"
            job = NoopJob(datastore, queue)
            start = time.perf_counter()
            job.enqueue()
            key = make_key(job.uuid)
            while True:
                document: Any = datastore.read(key)
                if document["resultCode"] == 200 and document["completeness"] == 1.0:
                    break
            samples.append(time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.join()
    return samples


def queue_cycles(url: str) -> float:
    queue = make_queue(url, "cycles")
    start = time.perf_counter()
    for _ in range(THROUGHPUT_JOBS):
        queue.put("x")
        entry = queue.reserve(timeout=0)
        assert entry is not None
        entry.delete()
    return THROUGHPUT_JOBS / (time.perf_counter() - start)


def job_throughput(url: str) -> float:
    datastore, queue = make_datastore(url), make_queue(url, QUEUE)
    for _ in range(THROUGHPUT_JOBS):
        NoopJob(datastore, queue).enqueue()
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()

    def burst() -> None:
        w = worker(url)
        start = time.perf_counter()
        w.run(burst=True)
        result.put((w.jobs_done, time.perf_counter() - start))

    proc = ctx.Process(target=burst)
    proc.start()
    done, seconds = result.get(timeout=600)
    proc.join()
    assert done == THROUGHPUT_JOBS, done
    return done / seconds


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.sqlite3"
        baseline = queue_round_trip(url)
        latency = job_latency(url)
        print(f"queue round trip (baseline)        {quantiles(baseline)}")
        print(f"no-op job, enqueue to finished     {quantiles(latency)}")
        print(f"  ratio of medians: {statistics.median(latency) / statistics.median(baseline):.1f}x"
              "  (target: job median < 10 ms)")
        cycles = queue_cycles(url)
        jobs = job_throughput(url)
        print(f"put+reserve+delete (baseline)      {cycles:8.0f} /s")
        print(f"no-op jobs, one worker process     {jobs:8.0f} /s")
        print(f"  ratio: {jobs / cycles:.2f}  (target: >= 1000 jobs/s)")


if __name__ == "__main__":
    main()
