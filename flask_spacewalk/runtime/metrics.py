"""The Prometheus metrics of a deployment, read from its backends at scrape
time by a ``prometheus_client`` collector.

Every figure is read from counts the backends keep as they write (never a
scan of the jobs), so a scrape costs about the same whatever the number of
stored jobs:

- ``spacewalk_jobs{job_type,status}``: the datastore's job counts
  (:class:`~flask_spacewalk.runtime.protocols.JobCounter`);
- ``spacewalk_queue_jobs{queue,state}`` and
  ``spacewalk_queue_oldest_ready_seconds{queue}``: :func:`queue_stats`;
- ``spacewalk_workers{state}``: :func:`worker_states`;
- ``spacewalk_job_duration_seconds{job_type}`` and
  ``spacewalk_job_results_total{job_type,status}``: the record the workers
  flush (:mod:`~flask_spacewalk.runtime.durations`).

No label is ever a uuid.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..errors import NotSupported
from .durations import Histogram, read_durations
from .fleet import live_workers
from .protocols import SpacewalkDatastore, SpacewalkQueue
from .status import STATUSES

__all__ = [
    "QUEUE_STATES",
    "WORKER_STATES",
    "MetricsSource",
    "SpacewalkCollector",
    "queue_stats",
    "worker_states",
]

#: The ``state`` values of ``spacewalk_queue_jobs``.
QUEUE_STATES = ("ready", "delayed", "reserved")
#: The ``state`` values of ``spacewalk_workers`` (SPEC section 8).
WORKER_STATES = ("idle", "running", "draining", "retiring")
#: The statuses a run that recorded a result may end a job in.
_RESULT_STATUSES = ("finished", "failed", "cancelled")


def queue_stats(queue: SpacewalkQueue) -> dict[str, Any]:
    """``{"ready", "delayed", "reserved", "oldestReadyAge"}`` of ``queue``,
    from its :class:`~flask_spacewalk.runtime.protocols.QueueStats` ability
    (``GET R/queues``'s figures; no age from a foreign queue's
    ``stats_tube``); ``{}`` where it cannot count."""
    try:
        depths = queue.queue_stats()
    except NotSupported:
        return {}
    for depth in depths:
        if depth.name == queue.queueName:
            return {
                "ready": depth.ready,
                "delayed": depth.delayed,
                "reserved": depth.reserved,
                "oldestReadyAge": depth.oldest_ready_age,
            }
    return {}


def worker_states(datastore: SpacewalkDatastore) -> dict[str, int]:
    """The live workers by state, from their heartbeat records
    (:func:`~flask_spacewalk.runtime.fleet.live_workers`); ``{}`` where the
    datastore keeps none."""
    try:
        records = live_workers(datastore)
    except NotSupported:
        return {}
    return dict(Counter(str(record.get("state")) for record in records))


@dataclass
class MetricsSource:
    """What one scrape reads: the distinct datastores and queues of the
    trees it covers, and the jobTypes they define (listed at 0 until they
    have jobs, so a rate over them starts at their first job)."""

    datastores: Sequence[SpacewalkDatastore] = ()
    queues: Sequence[SpacewalkQueue] = ()
    job_types: Iterable[str] = field(default_factory=tuple)


class SpacewalkCollector(Collector):
    """Reads :func:`source`'s backends at each scrape.

    A backend that cannot be read raises its unavailable error out of
    :meth:`collect`, and the scrape fails (503), rather than reporting
    figures that are only part of the truth.
    """

    def __init__(self, source: Callable[[], MetricsSource]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        source = self._source()
        yield self._jobs(source)
        yield from self._queues(source.queues)
        workers = GaugeMetricFamily(
            "spacewalk_workers", "Live job workers by state.", labels=["state"]
        )
        states: Counter[str] = Counter()
        for datastore in source.datastores:
            states.update(worker_states(datastore))
        if states:
            for state in sorted(set(WORKER_STATES) | set(states)):
                workers.add_metric([state], states[state])
        yield workers
        yield from self._runs(source.datastores)

    @staticmethod
    def _jobs(source: MetricsSource) -> Metric:
        family = GaugeMetricFamily(
            "spacewalk_jobs", "Stored jobs by jobType and status.", labels=["job_type", "status"]
        )
        counts: Counter[tuple[str, str]] = Counter(
            {(job_type, status): 0 for job_type in source.job_types for status in STATUSES}
        )
        for datastore in source.datastores:
            try:
                counts.update(datastore.count_jobs())
            except NotSupported:
                continue
        for (job_type, status), n in sorted(counts.items()):
            family.add_metric([job_type, status], n)
        return family

    @staticmethod
    def _queues(queues: Sequence[SpacewalkQueue]) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "spacewalk_queue_jobs", "Queue entries by state.", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "spacewalk_queue_oldest_ready_seconds",
            "Seconds since the oldest ready entry became ready (0: none is ready).",
            labels=["queue"],
        )
        for queue in queues:
            stats = queue_stats(queue)
            if not stats:
                continue
            for state in QUEUE_STATES:
                depth.add_metric([queue.queueName, state], stats[state])
            age = stats.get("oldestReadyAge")
            if age is not None or stats["ready"] == 0:
                oldest.add_metric([queue.queueName], age or 0.0)
        yield depth
        yield oldest

    @staticmethod
    def _runs(datastores: Sequence[SpacewalkDatastore]) -> Iterator[Metric]:
        histograms: dict[str, Histogram] = {}
        for datastore in datastores:
            for job_type, histogram in read_durations(datastore).items():
                histograms.setdefault(job_type, Histogram()).add(histogram)
        durations = HistogramMetricFamily(
            "spacewalk_job_duration_seconds",
            "Seconds each run() that recorded a result took.",
            labels=["job_type"],
        )
        results = CounterMetricFamily(
            "spacewalk_job_results",
            "Runs that recorded a result, by the status they ended the job in.",
            labels=["job_type", "status"],
        )
        for job_type, histogram in sorted(histograms.items()):
            durations.add_metric([job_type], histogram.cumulative(), histogram.sum)
            for status in sorted(set(_RESULT_STATUSES) | set(histogram.results)):
                results.add_metric([job_type, status], histogram.results.get(status, 0))
        yield durations
        yield results
