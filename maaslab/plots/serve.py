"""Figures of lesson 14 and the Serve page: load curves, latency and batch-size histograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.errors import MaaslabError
from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout
from maaslab.serve.loadtest import LoadResult, throughput_over_time
from maaslab.serve.scrape import ServerMetrics


def load_curves(results: Mapping[str, Sequence[LoadResult]], title: str = "") -> go.Figure:
    """Throughput (left) and p50/p99 latency (right) against concurrency, one colour per mode.

    Parameters
    ----------
    results : mode name (e.g. "batching on") -> LoadResults at increasing concurrency.
    title : shown above both panels (e.g. the model and the machine).
    """
    titles = ("throughput (answers/s, higher is better)", "latency (ms, solid p50, dashed p99)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    for i, (mode, rows) in enumerate(results.items()):
        rows = sorted(rows, key=lambda r: r.concurrency)
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        x = [r.concurrency for r in rows]
        fig.add_scatter(
            x=x,
            y=[r.throughput for r in rows],
            mode="lines+markers",
            name=mode,
            line={"color": color},
            legendgroup=mode,
            row=1,
            col=1,
            hovertemplate=f"{mode}, %{{x}} clients: %{{y:.1f}} answers/s<extra></extra>",
        )
        for q, dash in (("p50", "solid"), ("p99", "dash")):
            fig.add_scatter(
                x=x,
                y=[getattr(r, f"{q}_ms") for r in rows],
                mode="lines+markers",
                name=f"{mode} {q}",
                line={"color": color, "dash": dash},
                legendgroup=mode,
                showlegend=False,
                row=1,
                col=2,
                hovertemplate=f"{mode}, %{{x}} clients: {q} %{{y:.1f}} ms<extra></extra>",
            )
    for col in (1, 2):
        fig.update_xaxes(
            title_text="concurrent clients", type="log", dtick=np.log10(2), row=1, col=col
        )
    fig.update_yaxes(title_text="answers per second", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="ms", type="log", row=1, col=2)
    fig.update_layout(**layout(400), title=title or None)
    return fig


def latency_histogram(result: LoadResult, bins: int = 40) -> go.Figure:
    """How the ok answers' latencies spread, with p50, p90 and p99 marked.

    Parameters
    ----------
    result : one load run.
    bins : number of histogram bars.
    """
    ok = result.ok_latencies_ms
    fig = go.Figure()
    fig.add_histogram(
        x=ok,
        nbinsx=bins,
        marker_color=TRAIN_COLOR,
        name="200 answers",
        hovertemplate="%{x} ms: %{y} answers<extra></extra>",
    )
    rejected = result.rejected_latencies_ms
    if len(rejected):
        fig.add_histogram(
            x=rejected,
            nbinsx=bins,
            marker_color=TEST_COLOR,
            name="503 rejects",
            hovertemplate="%{x} ms: %{y} rejects<extra></extra>",
        )
    for i, (q, dash) in enumerate((("p50", "solid"), ("p90", "dot"), ("p99", "dash"))):
        value = getattr(result, f"{q}_ms")
        if np.isfinite(value):
            # Labels one under another: close percentiles would otherwise print over each other.
            fig.add_vline(
                x=value,
                line_dash=dash,
                line_color="#111827",
                annotation_text=f"{q} {value:.0f} ms",
                annotation={
                    "y": 1 - 0.08 * i,
                    "yref": "paper",
                    "yanchor": "top",
                    "xanchor": "left",
                    "bgcolor": "rgba(255,255,255,0.85)",
                },
            )
    fig.update_layout(
        **layout(),
        barmode="overlay",
        xaxis_title="latency (ms)",
        yaxis_title="requests",
        title=f"{result.model}, {result.concurrency} clients: {result.throughput:.1f} answers/s",
    )
    return fig


def batch_size_histogram(metrics: ServerMetrics, model: str) -> go.Figure:
    """How many rows each model call ran (from /metrics): one bar per histogram bucket.

    Parameters
    ----------
    metrics : a scrape_metrics() result.
    model : the served model's name.
    """
    if model not in metrics.batch_size:
        have = ", ".join(metrics.batch_size) or "none"
        raise MaaslabError(
            f"no batches of {model!r} in these metrics yet: send it requests "
            f"first (models with batches: {have})"
        )
    h = metrics.batch_size[model]
    lower = (0.0, *h.bounds[:-1])
    labels = [
        f"{hi:g}" if hi - lo <= 1 else f"{lo + 1:g}-{hi:g}" if np.isfinite(hi) else f">{lo:g}"
        for lo, hi in zip(lower, h.bounds, strict=True)
    ]
    fig = go.Figure()
    fig.add_bar(
        x=labels,
        y=list(h.counts),
        marker_color=TRAIN_COLOR,
        hovertemplate="%{x} rows: %{y} batches<extra></extra>",
    )
    fig.update_layout(
        **layout(),
        xaxis_title="rows per model call",
        yaxis_title="batches",
        xaxis_type="category",
        title=f"{model}: {h.count} batches, mean {h.mean:.1f} rows",
    )
    return fig


def throughput_timeline(result: LoadResult, bin_s: float = 0.5) -> go.Figure:
    """Answers per second over the run (and rejects, if any): does throughput hold steady?

    Parameters
    ----------
    result : one load run.
    bin_s : width of a time bin in seconds.
    """
    t, ok = throughput_over_time(result, bin_s)
    fig = go.Figure()
    fig.add_scatter(
        x=t, y=ok, mode="lines", line={"color": TRAIN_COLOR, "shape": "hv"}, name="200 answers/s"
    )
    if result.rejected:
        done = result.finished_s[result.status == 503]
        counts, _ = np.histogram(done, bins=len(t), range=(0.0, len(t) * bin_s))
        fig.add_scatter(
            x=t,
            y=counts / bin_s,
            mode="lines",
            name="503 rejects/s",
            line={"color": TEST_COLOR, "shape": "hv"},
        )
    fig.update_layout(
        **layout(),
        xaxis_title="seconds since start",
        yaxis_title="per second",
        title=f"{result.model}, {result.concurrency} clients",
    )
    return fig
