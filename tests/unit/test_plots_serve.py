"""Figures of the serving lesson: built from load results and a /metrics scrape."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from maaslab.errors import MaaslabError
from maaslab.plots import batch_size_histogram, latency_histogram, load_curves, throughput_timeline
from maaslab.serve.loadtest import LoadResult
from maaslab.serve.metrics import ServerMetrics as Registry
from maaslab.serve.scrape import parse_metrics


def _result(concurrency: int, latency_ms: float, n: int = 50, rejected: int = 0) -> LoadResult:
    rng = np.random.default_rng(concurrency)
    lat = rng.gamma(4.0, latency_ms / 4.0, n)
    status = np.array([200] * (n - rejected) + [503] * rejected)
    started = np.sort(rng.uniform(0, 2.0, n))
    ok = lat[status == 200]
    return LoadResult(
        model="sentiment-minilm",
        concurrency=concurrency,
        requests=n,
        ok=n - rejected,
        rejected=rejected,
        errors={},
        seconds=2.0 + lat.max() / 1000,
        throughput=(n - rejected) / 2.0,
        p50_ms=float(np.percentile(ok, 50)),
        p90_ms=float(np.percentile(ok, 90)),
        p99_ms=float(np.percentile(ok, 99)),
        latencies_ms=lat,
        status=status,
        started_s=started,
        finished_s=started + lat / 1000,
    )


def test_load_curves_one_throughput_line_and_two_latency_lines_per_mode():
    results = {
        "batching on": [_result(c, 20.0 + c) for c in (4, 1, 16)],
        "batching off": [_result(c, 10.0 * c) for c in (1, 4, 16)],
    }
    fig = load_curves(results, title="t")
    assert isinstance(fig, go.Figure) and len(fig.data) == 6
    on = fig.data[0]
    assert on.name == "batching on" and list(on.x) == [1, 4, 16]  # sorted by concurrency
    p99 = next(t for t in fig.data if t.name == "batching off p99")
    assert list(p99.y) == [r.p99_ms for r in results["batching off"]]
    assert fig.layout.yaxis2.type == "log"


def test_latency_histogram_marks_percentiles_and_shows_rejects():
    r = _result(8, 30.0, rejected=5)
    fig = latency_histogram(r)
    assert [t.name for t in fig.data] == ["200 answers", "503 rejects"]
    assert len(fig.data[0].x) == 45 and len(fig.layout.shapes) == 3
    assert fig.layout.shapes[2].x0 == pytest.approx(r.p99_ms)


def test_batch_size_histogram_from_a_scrape():
    reg = Registry()
    hook = reg.batch_hook("sentiment-minilm")
    for rows in (1, 2, 3, 4, 32, 32):
        hook(rows, rows, 0.01)
    fig = batch_size_histogram(parse_metrics(reg.render().body.decode()), "sentiment-minilm")
    bars = dict(zip(fig.data[0].x, fig.data[0].y, strict=True))
    assert bars["1"] == 1 and bars["2"] == 1 and bars["3-4"] == 2 and bars["17-32"] == 2
    assert bars[">512"] == 0 and "mean 12.3 rows" in fig.layout.title.text
    with pytest.raises(MaaslabError, match="no batches of 'digits-cnn'"):
        batch_size_histogram(parse_metrics(reg.render().body.decode()), "digits-cnn")


def test_throughput_timeline_adds_up_to_the_answers():
    r = _result(4, 15.0, n=80, rejected=10)
    fig = throughput_timeline(r, bin_s=0.5)
    assert sum(fig.data[0].y) * 0.5 == pytest.approx(70)
    assert sum(fig.data[1].y) * 0.5 == pytest.approx(10)
