"""Prometheus metrics of one server: requests, latency, queue depth, batch sizes, errors.

Each app gets its own CollectorRegistry, so several servers in one process (the tests, a page
that starts one) never clash over metric names in prometheus_client's global registry.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets from 1 ms to 30 s: a digit takes about a millisecond, a long queue seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The metric families of one server, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "maaslab_requests_total",
            "HTTP requests answered",
            ["model", "endpoint", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "maaslab_request_seconds",
            "Time from request to response",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "maaslab_errors_total", "Responses with a 4xx or 5xx status", ["code"], registry=r
        )
        self.queue_depth = Gauge(
            "maaslab_queue_depth", "Requests waiting in a model's queue", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "maaslab_batch_size",
            "Rows run together in one model call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "maaslab_batch_seconds",
            "Time of one batched model call",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "maaslab_rejected_total", "Requests refused with a full queue", ["model"], registry=r
        )
        # Overload answers must stay fast; timing them alone shows it (the latency histogram
        # above mixes them with the slow successes).
        self.reject_latency = Histogram(
            "maaslab_rejected_seconds",
            "Time to answer a 503",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch_queue(self, model: str, depth) -> None:
        """Report `depth()` as the model's queue depth whenever metrics are scraped."""
        self.queue_depth.labels(model).set_function(depth)

    def batch_hook(self, model: str):
        """A Batcher on_batch hook that records batch sizes and times for `model`."""

        def hook(rows: int, requests: int, seconds: float) -> None:
            self.batch_size.labels(model).observe(rows)
            self.batch_seconds.labels(model).observe(seconds)

        return hook

    def observe(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(model, endpoint, str(code)).inc()
        self.latency.labels(model, endpoint).observe(seconds)
        if code >= 400:
            self.errors.labels(str(code)).inc()
        if code == 503:
            self.reject_latency.labels(model).observe(seconds)

    def render(self) -> Response:
        """The text exposition format for GET /metrics."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Time every HTTP request and count it by model, route template and status code."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: pass through, remembering the status code sent."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The route template (not the raw path) keeps label values few and bounded.
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            model = scope.get("path_params", {}).get("name", "") if route else ""
            self.metrics.observe(str(model)[:64], endpoint, status, time.perf_counter() - started)


def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the app's registry in Prometheus text format."""
    return request.app.state.metrics.render()
