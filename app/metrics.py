"""Prometheus metrics: HTTP requests of this API process, and job figures read from Redis.

Request counters live in this process. Job counts, finished totals, durations, queue lengths and
live workers are read from Redis at scrape time, so every API process reports the same job
figures, whichever worker ran the jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.jobs import JOB_TYPES
from worker.store import JOB_STATUSES, JobStore, WorkerHeartbeats
from worker.store.redis_client import TRANSIENT_REDIS_ERRORS
from worker.store.scripts import DURATION_BUCKETS_S

logger = logging.getLogger(__name__)

# kombu's Redis transport keeps priority levels 3, 6 and 9 in separate lists next to the queue.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_LEVELS = (3, 6, 9)


class JobCollector(Collector):
    """Reads job figures from Redis when Prometheus scrapes /metrics."""

    def __init__(self, jobs: JobStore, heartbeats: WorkerHeartbeats) -> None:
        self.jobs = jobs
        self.heartbeats = heartbeats

    def _queue_length(self, queue: str) -> int:
        client = self.jobs.redis
        keys = [queue, *[f"{queue}{_PRIORITY_SEPARATOR}{level}" for level in _PRIORITY_LEVELS]]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            return sum(pipe.execute())

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.jobs.status_counts()
            totals = self.jobs.finished_totals()
            durations = self.jobs.duration_histograms()
            queues = sorted({job_type.queue for job_type in JOB_TYPES.values()})
            lengths = {queue: self._queue_length(queue) for queue in queues}
            alive = self.heartbeats.alive()
        except TRANSIENT_REDIS_ERRORS as error:
            logger.warning("metrics: Redis unreachable, job figures omitted: %s", error)
            return

        jobs = GaugeMetricFamily(
            "fragility_jobs", "Jobs in each status now, by job type.", labels=["type", "status"]
        )
        for job_type in sorted(JOB_TYPES):
            for status in JOB_STATUSES:
                jobs.add_metric([job_type, status], counts.get((job_type, status), 0))
        yield jobs

        finished = GaugeMetricFamily(
            "fragility_jobs_finished",
            "Jobs that reached each final status since the store was created (a counter kept "
            "in Redis).",
            labels=["type", "status"],
        )
        for (job_type, status), value in sorted(totals.items()):
            finished.add_metric([job_type, status], value)
        yield finished

        queue_length = GaugeMetricFamily(
            "fragility_queue_length", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, length in lengths.items():
            queue_length.add_metric([queue], length)
        yield queue_length

        workers = GaugeMetricFamily(
            "fragility_workers_alive",
            "Workers with a recent heartbeat, by queue.",
            labels=["queue"],
        )
        for queue in sorted(set(queues) | set(alive)):
            workers.add_metric([queue], len(alive.get(queue, [])))
        yield workers

        histogram = HistogramMetricFamily(
            "fragility_job_duration_seconds",
            "Seconds from the start of a job's last attempt to its final status.",
            labels=["type"],
        )
        for job_type, values in sorted(durations.items()):
            buckets = [(str(float(b)), values.get(str(b), 0.0)) for b in DURATION_BUCKETS_S]
            buckets.append(("+Inf", values.get("+Inf", 0.0)))
            histogram.add_metric([job_type], buckets, values.get("sum", 0.0))
        yield histogram


def route_template(scope: Scope) -> str:
    """Return the template of the route that answered the request, or "unmatched".

    FastAPI sets scope["route"] only for its API routes. Its own plain routes (/docs, /redoc,
    /openapi.json, /docs/oauth2-redirect) are found by matching the request against the app's
    routes again.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template:
        return template
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL and getattr(candidate, "path", None):
            return candidate.path
    return "unmatched"


class RequestMetrics:
    """ASGI middleware counting requests and timing them, labelled by route template.

    The route template (``/v1/jobs/{job_id}``), not the path, keeps label values few.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "fragility_http_requests",
            "HTTP requests answered, by method, route and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "fragility_http_request_duration_seconds",
            "Seconds from receiving a request to sending its response headers.",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                template = route_template(scope)
                self.latency.labels(scope["method"], template).observe(
                    time.perf_counter() - started
                )
                self.requests.labels(scope["method"], template, str(status)).inc()
            await send(message)

        await self.app(scope, receive, recording_send)
