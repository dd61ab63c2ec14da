"""Prometheus metrics of one server: requests, latency, queue depth, batch sizes, errors, and
for each language model its engine (maaslab.serve.llm_service).

Each app gets its own CollectorRegistry, so several servers in one process (the tests, a page
that starts one) never clash over metric names in prometheus_client's global registry.

Language models, labelled by model (names as vLLM's, with our prefix):

- histograms `maaslab_llm_time_to_first_token_seconds`, `maaslab_llm_inter_token_latency_seconds`
  and `maaslab_llm_e2e_request_latency_seconds`, one observation per sequence (a choice);
- gauges `maaslab_llm_running_sequences`, `maaslab_llm_waiting_sequences`,
  `maaslab_llm_kv_blocks_used`, `maaslab_llm_kv_blocks_free`, `maaslab_llm_prefix_cache_hit_rate`
  (share of looked-up prompt blocks found in the cache), read from the engine's latest stats;
- counters `maaslab_llm_preemptions_total`, `maaslab_llm_generated_tokens_total`,
  `maaslab_llm_aborted_total` (sequences stopped early: a client left, a stop string).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets from 1 ms to 30 s: a digit takes about a millisecond, a long queue seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# A whole answer of a language model can take minutes: a thousand tokens at 50 ms each.
ANSWER_BUCKETS = (*LATENCY_BUCKETS, 60, 120, 300)
# The engine's numbers: (metric, help, kind, how to read it from (EngineStats, aborted)).
ENGINE_NUMBERS: tuple[tuple[str, str, str, Callable[[Any, int], float]], ...] = (
    ("running_sequences", "Sequences in the running batch", "gauge", lambda s, a: s.running),
    ("waiting_sequences", "Sequences waiting for KV blocks", "gauge", lambda s, a: s.waiting),
    ("kv_blocks_used", "KV cache blocks held by sequences", "gauge", lambda s, a: s.blocks.used),
    ("kv_blocks_free", "KV cache blocks free", "gauge", lambda s, a: s.blocks.free),
    (
        "prefix_cache_hit_rate",
        "Share of looked-up prompt blocks found in the prefix cache",
        "gauge",
        lambda s, a: s.blocks.hit_rate,
    ),
    ("preemptions", "Sequences preempted for KV blocks", "counter", lambda s, a: s.preemptions),
    (
        "generated_tokens",
        "Tokens the engine sampled",
        "counter",
        lambda s, a: s.generated_tokens,
    ),
    ("aborted", "Sequences stopped before their end", "counter", lambda s, a: a),
)


class EngineCollector:
    """The engines' gauges and counters, read from each one's latest stats at scrape time."""

    def __init__(self) -> None:
        self.engines: dict[str, Callable[[], tuple[Any, int]]] = {}

    def describe(self) -> Iterator[Metric]:
        """The metric families (empty), so the registry knows their names."""
        yield from self._families()

    def _families(self) -> list[Metric]:
        return [
            (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(
                f"maaslab_llm_{name}", text, labels=["model"]
            )
            for name, text, kind, _ in ENGINE_NUMBERS
        ]

    def collect(self) -> Iterator[Metric]:
        """One sample per engine in every family."""
        families = self._families()
        for model, read in self.engines.items():
            stats, aborted = read()
            for family, (_, _, _, value) in zip(families, ENGINE_NUMBERS, strict=True):
                family.add_metric([model], float(value(stats, aborted)))
        yield from families


class ServiceCollector:
    """Model versions and tenants, read at scrape time from the rollouts (maaslab.serve.versions)
    and the tenants' usage (maaslab.serve.tenants): one source of truth for /metrics, GET
    /usage and the rollout routes."""

    def __init__(self) -> None:
        self.table: Any = None  # a ModelTable, once watched
        self.usage: Any = None  # a quotas.Usage, once watched

    def describe(self) -> Iterator[Metric]:
        """The metric families (empty), so the registry knows their names."""
        yield from self._families().values()

    def _families(self) -> dict[str, Metric]:
        def counter(name: str, text: str, labels: list[str]) -> Metric:
            return CounterMetricFamily(name, text, labels=labels)

        return {
            "version_requests": counter(
                "maaslab_version_requests",
                "Inference requests routed to each model version",
                ["model", "version"],
            ),
            "canary": GaugeMetricFamily(
                "maaslab_canary_percent",
                "Share of unpinned requests sent to the challenger",
                labels=["model"],
            ),
            "shadow": counter(
                "maaslab_shadow",
                "Shadow copies to the challenger by outcome (agreed, disagreed, skipped)",
                ["model", "outcome"],
            ),
            "tenant_requests": counter(
                "maaslab_tenant_requests", "Requests answered per tenant", ["tenant"]
            ),
            "tenant_tokens": counter(
                "maaslab_tenant_tokens",
                "Model tokens per tenant (input: prompts, output: generated)",
                ["tenant", "direction"],
            ),
            "tenant_compute": counter(
                "maaslab_tenant_compute_seconds",
                "Model compute time per tenant (its share of each batch)",
                ["tenant"],
            ),
            "tenant_refused": counter(
                "maaslab_tenant_refused",
                "Requests refused per tenant by limit (daily, rate, tokens)",
                ["tenant", "reason"],
            ),
        }

    def collect(self) -> Iterator[Metric]:
        """One sample per version, model and tenant."""
        f = self._families()
        for name, rollout in list(getattr(self.table, "rollouts", {}).items()):
            state = rollout.state()
            for version, count in state["requests"].items():
                f["version_requests"].add_metric([name, version], count)
            f["canary"].add_metric([name], state["canary_percent"])
            shadow = state["shadow_stats"]
            for outcome, value in (
                ("agreed", shadow["agreed"]),
                ("disagreed", shadow["compared"] - shadow["agreed"]),
                ("skipped", shadow["skipped"]),
            ):
                f["shadow"].add_metric([name, outcome], value)
        if self.usage is not None:
            for tenant, row in self.usage.snapshot_all().items():
                f["tenant_requests"].add_metric([tenant], row["requests"])
                f["tenant_tokens"].add_metric([tenant, "input"], row["input_tokens"])
                f["tenant_tokens"].add_metric([tenant, "output"], row["output_tokens"])
                f["tenant_compute"].add_metric([tenant], row["compute_seconds"])
                for reason, n in row["refused"].items():
                    f["tenant_refused"].add_metric([tenant, reason], n)
        yield from f.values()


class ServerMetrics:
    """The metric families of one server, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "maaslab_requests_total",
            "Requests answered (gRPC calls under 'grpc <Method>', with HTTP's status for them)",
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

        self.time_to_first_token = Histogram(
            "maaslab_llm_time_to_first_token_seconds",
            "Time from a request's arrival to its first token, per sequence",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "maaslab_llm_inter_token_latency_seconds",
            "Time between two tokens of one sequence",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "maaslab_llm_e2e_request_latency_seconds",
            "Time from a request's arrival to a sequence's last token",
            ["model"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.engines = EngineCollector()
        r.register(self.engines)
        self.service = ServiceCollector()
        r.register(self.service)

    def watch_rollouts(self, table: Any) -> None:
        """Report each model version's requests, canary share and shadow agreement."""
        self.service.table = table

    def watch_tenants(self, usage: Any) -> None:
        """Report each tenant's usage (a quotas.Usage) at scrape time."""
        self.service.usage = usage

    def watch_engine(self, model: str, read: Callable[[], tuple[Any, int]]) -> None:
        """Report an engine's numbers: `read()` gives (its latest EngineStats, sequences
        aborted so far), called whenever metrics are scraped."""
        self.engines.engines[model] = read

    def latency_hook(self, model: str) -> Callable[[str, float], None]:
        """An EngineService on_latency hook that records `model`'s token latencies."""
        histograms = {
            "first_token": self.time_to_first_token.labels(model),
            "inter_token": self.inter_token.labels(model),
            "end_to_end": self.end_to_end.labels(model),
        }
        return lambda kind, seconds: histograms[kind].observe(seconds)

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
