"""Prometheus metrics of one API process (``GET /metrics``).

- ``idcard_http_request_duration_seconds{method,route,status}``: every request, by route
  template (never the raw path: project and job ids would explode the label space).
- ``idcard_job_stage_seconds{stage,priority}``: time queued and running of the jobs
  this process waited for (the synchronous route); workers see the rest.
- ``idcard_jobs{status}``: jobs in the database by status, counted at scrape time.
- ``idcard_queue_depth{queue}``: messages waiting per recognition queue.

The registry belongs to the app, so that several apps in one process (tests) do not
collide in prometheus_client's global registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idcard.db import new_session
from idcard.jobs import status_counts
from idcard.models import Job

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _StateCollector(Collector):
    """Read at scrape time: the database's job counts and the queues' depths."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration; collect() queries live state

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("idcard_jobs", "Jobs in the database by status",
                                 labels=["status"])
        try:
            with new_session(self._metrics.database_url) as session:
                counts = status_counts(session)
            for status, n in counts.items():
                jobs.add_metric([status], n)
            yield jobs
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail on the database
            log.warning("metrics: job counts unavailable (%s)", type(exc).__name__)
        depth = GaugeMetricFamily("idcard_queue_depth", "Jobs waiting per queue",
                                  labels=["queue"])
        try:
            for queue, n in self._metrics.dispatcher.queue_depths().items():
                depth.add_metric([queue], n)
            yield depth
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: queue depths unavailable (%s)", type(exc).__name__)


class ApiMetrics:
    def __init__(self, dispatcher: object, database_url: str) -> None:
        self.dispatcher = dispatcher  # an api.dispatch.Dispatcher
        self.database_url = database_url
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "idcard_http_request_duration_seconds", "HTTP request latency",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "idcard_job_stage_seconds",
            "Time jobs awaited by this API process spent queued and running",
            ["stage", "priority"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_StateCollector(self))

    def observe_job(self, job: Job) -> None:
        if job.started_at is not None:
            self.stage_seconds.labels("queued", job.priority).observe(
                (job.started_at - job.created_at).total_seconds())
            if job.finished_at is not None:
                self.stage_seconds.labels("running", job.priority).observe(
                    (job.finished_at - job.started_at).total_seconds())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request (pure ASGI: streaming responses are timed to the end)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - start)
