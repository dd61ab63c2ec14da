"""Read a server's Prometheus /metrics page back into numbers (what a dashboard plots).

The names are those maaslab.serve.metrics registers: maaslab_requests_total{model,endpoint,code},
maaslab_request_seconds (histogram), maaslab_queue_depth{model}, maaslab_batch_size (histogram),
maaslab_batch_seconds (histogram), maaslab_rejected_total{model}, maaslab_errors_total{code},
maaslab_rejected_seconds (histogram of 503 answer times; empty on servers without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from maaslab.errors import MaaslabError


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram as upper bounds and per-bucket (not cumulative) counts."""

    bounds: tuple[float, ...]  # upper bound of each bucket; the last is +inf
    counts: tuple[int, ...]  # observations in each bucket (between the previous bound and this)
    count: int  # all observations
    total: float  # their sum

    @property
    def mean(self) -> float:
        """Mean observation (nan when empty)."""
        return self.total / self.count if self.count else float("nan")

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) by linear interpolation inside its bucket, as Prometheus'
        histogram_quantile does; nan when empty, the last finite bound if it lies in +inf."""
        if not self.count or not 0 <= q <= 1:
            return float("nan")
        rank, seen = q * self.count, 0
        for lower, upper, n in zip((0.0, *self.bounds[:-1]), self.bounds, self.counts, strict=True):
            if n and seen + n >= rank:
                if not np.isfinite(upper):
                    return lower
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
        return self.bounds[-2] if len(self.bounds) > 1 else float("nan")


@dataclass(frozen=True)
class ServerMetrics:
    """One scrape of /metrics."""

    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (model, route, code)
    queue_depth: dict[str, float] = field(default_factory=dict)  # model -> waiting requests
    batch_size: dict[str, Histogram] = field(default_factory=dict)  # model -> rows per batch
    batch_seconds: dict[str, Histogram] = field(default_factory=dict)  # model -> batch call time
    latency: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (model, route)
    rejected: dict[str, int] = field(default_factory=dict)  # model -> 503s for a full queue
    reject_latency: dict[str, Histogram] = field(default_factory=dict)  # model -> 503 answer time
    errors: dict[str, int] = field(default_factory=dict)  # status code -> 4xx/5xx answers

    def requests_by_code(self, model: str | None = None) -> dict[str, int]:
        """Answered requests per status code (of one model, or all)."""
        out: dict[str, int] = {}
        for (m, _route, code), n in self.requests.items():
            if model is None or m == model:
                out[code] = out.get(code, 0) + n
        return out

    def mean_batch_size(self, model: str) -> float:
        """Average rows per model call so far (nan before the first batch)."""
        h = self.batch_size.get(model)
        return h.mean if h is not None else float("nan")


def _histograms(samples: list, keys: tuple[str, ...]) -> dict[tuple[str, ...], Histogram]:
    # Group _bucket/_count/_sum samples by their label values; buckets arrive cumulative.
    groups: dict[tuple[str, ...], dict] = {}
    for s in samples:
        key = tuple(s.labels.get(k, "") for k in keys)
        g = groups.setdefault(key, {"buckets": {}, "count": 0, "sum": 0.0})
        if s.name.endswith("_bucket"):
            g["buckets"][float(s.labels["le"])] = s.value
        elif s.name.endswith("_count"):
            g["count"] = int(s.value)
        elif s.name.endswith("_sum"):
            g["sum"] = float(s.value)
    out = {}
    for key, g in groups.items():
        bounds = sorted(g["buckets"])
        cumulative = np.asarray([g["buckets"][b] for b in bounds])
        counts = np.diff(cumulative, prepend=0.0).round().astype(int)
        out[key] = Histogram(tuple(bounds), tuple(int(c) for c in counts), g["count"], g["sum"])
    return out


def parse_metrics(text: str) -> ServerMetrics:
    """ServerMetrics from Prometheus text exposition format."""
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(name: str, suffixes: tuple[str, ...] = ("",)) -> list:
        fam = families.get(name)
        wanted = {name + s for s in suffixes}
        return [s for s in fam.samples if s.name in wanted] if fam is not None else []

    return ServerMetrics(
        requests={
            (s.labels["model"], s.labels["endpoint"], s.labels["code"]): int(s.value)
            for s in samples("maaslab_requests", ("_total",))
        },
        queue_depth={s.labels["model"]: s.value for s in samples("maaslab_queue_depth")},
        batch_size={
            k[0]: h
            for k, h in _histograms(
                samples("maaslab_batch_size", ("_bucket", "_count", "_sum")), ("model",)
            ).items()
        },
        batch_seconds={
            k[0]: h
            for k, h in _histograms(
                samples("maaslab_batch_seconds", ("_bucket", "_count", "_sum")), ("model",)
            ).items()
        },
        latency={
            (k[0], k[1]): h
            for k, h in _histograms(
                samples("maaslab_request_seconds", ("_bucket", "_count", "_sum")),
                ("model", "endpoint"),
            ).items()
        },
        rejected={
            s.labels["model"]: int(s.value) for s in samples("maaslab_rejected", ("_total",))
        },
        errors={s.labels["code"]: int(s.value) for s in samples("maaslab_errors", ("_total",))},
        reject_latency={
            k[0]: h
            for k, h in _histograms(
                samples("maaslab_rejected_seconds", ("_bucket", "_count", "_sum")), ("model",)
            ).items()
        },
    )


def scrape_metrics(url: str, api_key: str | None = None, timeout: float = 10.0) -> ServerMetrics:
    """GET {url}/metrics and parse it (MaaslabError when the server does not answer).

    Parameters
    ----------
    url : the server, e.g. "http://127.0.0.1:8000".
    api_key : Bearer key when the server requires one.
    timeout : seconds to wait for the answer.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url.rstrip("/") + "/metrics", headers=headers, timeout=timeout)
    except httpx.HTTPError as err:
        raise MaaslabError(f"cannot read {url}/metrics: {type(err).__name__}: {err}") from None
    if response.status_code != 200:
        raise MaaslabError(f"{url}/metrics answered {response.status_code}: {response.text[:200]}")
    return parse_metrics(response.text)
