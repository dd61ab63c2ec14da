"""Figures of a load test as it runs: throughput, latency percentiles and queue depth over time,
and after it ends every request's latency against the moment it was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout

if TYPE_CHECKING:  # only for the hints: maaslab.plots must import without httpx's client code
    from maaslab.serve.loadtest import LiveStats, LoadResult

REJECTED_COLOR = "#dc2626"  # 503 answers: the queue was full


def _finite(values: Sequence[float]) -> list[float | None]:
    # plotly draws None as a gap; nan before the first answer would break the line's scale.
    return [float(v) if np.isfinite(v) else None for v in values]


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if np.isfinite(value) else "—"


def dashboard_tiles(stats: LiveStats, queue_depth: float) -> list[tuple[str, str, str | None]]:
    """The eight numbers of a load-test dashboard as (label, value, help), throughput first.

    Parameters
    ----------
    stats : the latest LoadGenerator snapshot.
    queue_depth : the model's queue depth from the latest /metrics scrape (nan: none).
    """
    s = stats
    depth = "—" if np.isnan(queue_depth) else f"{queue_depth:.0f}"
    return [
        ("Throughput, last 3 s", f"{s.recent_throughput:.1f}/s", None),
        ("Throughput overall", f"{s.throughput:.1f}/s", None),
        ("Completed", f"{s.completed:,}", None),
        ("Rejected (503)", f"{s.rejected:,}", f"{s.errors} other errors"),
        ("p50 latency", _ms(s.p50_ms), None),
        ("p90 latency", _ms(s.p90_ms), None),
        ("p99 latency", _ms(s.p99_ms), None),
        ("Queue depth", depth, "requests waiting in the model's queue, from /metrics"),
    ]


def live_timeline(
    stats: Sequence[LiveStats], queue_depth: Sequence[float] | None = None
) -> go.Figure:
    """Throughput (last seconds and overall), p50/p99 latency so far and queue depth over time.

    Parameters
    ----------
    stats : LoadGenerator.snapshot() taken every half second or so, oldest first.
    queue_depth : the model's queue depth scraped from /metrics at each snapshot (optional).
    """
    rows = 3 if queue_depth is not None else 2
    titles = ("Throughput (ok answers/s)", "Latency so far (ms)", "Queue depth (waiting)")
    fig = make_subplots(
        rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=titles[:rows]
    )
    t = [s.elapsed_s for s in stats]
    fig.add_scatter(
        x=t,
        y=[s.recent_throughput for s in stats],
        name="last 3 s",
        mode="lines",
        line={"color": TRAIN_COLOR},
        row=1,
        col=1,
    )
    fig.add_scatter(
        x=t,
        y=[s.throughput for s in stats],
        name="overall",
        mode="lines",
        line={"color": TRAIN_COLOR, "dash": "dot"},
        row=1,
        col=1,
    )
    fig.add_scatter(
        x=t,
        y=_finite([s.p50_ms for s in stats]),
        name="p50",
        mode="lines",
        line={"color": SERIES_COLORS[2]},
        row=2,
        col=1,
    )
    fig.add_scatter(
        x=t,
        y=_finite([s.p90_ms for s in stats]),
        name="p90",
        mode="lines",
        line={"color": SERIES_COLORS[5]},
        row=2,
        col=1,
    )
    fig.add_scatter(
        x=t,
        y=_finite([s.p99_ms for s in stats]),
        name="p99",
        mode="lines",
        line={"color": TEST_COLOR},
        row=2,
        col=1,
    )
    if queue_depth is not None:
        fig.add_scatter(
            x=t[: len(queue_depth)],
            y=_finite(queue_depth),
            name="queue depth",
            mode="lines",
            line={"color": SERIES_COLORS[4], "shape": "hv"},
            row=3,
            col=1,
        )
    fig.update_xaxes(title_text="seconds since the load started", row=rows, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(**layout(height=180 + 130 * rows))
    return fig


def latency_timeline(result: LoadResult) -> go.Figure:
    """Every request's latency against when it was sent: ok answers, 503s and failures apart."""
    fig = go.Figure()
    groups = [
        ("ok (200)", result.status == 200, TRAIN_COLOR),
        ("rejected (503)", result.status == 503, REJECTED_COLOR),
        ("failed", (result.status != 200) & (result.status != 503), "#111827"),
    ]
    for name, mask, color in groups:
        if mask.any():
            fig.add_scattergl(
                x=result.started_s[mask],
                y=result.latencies_ms[mask],
                name=name,
                mode="markers",
                marker={"color": color, "size": 4, "opacity": 0.6},
                hovertemplate="sent at %{x:.2f} s: %{y:.1f} ms<extra></extra>",
            )
    for q, dash in ((50, "dot"), (99, "dash")):
        value = getattr(result, f"p{q}_ms")
        if np.isfinite(value):
            fig.add_hline(
                y=value,
                line={"color": "#64748b", "dash": dash},
                annotation_text=f"p{q} {value:.1f} ms",
            )
    fig.update_layout(
        **layout(height=360),
        title=f"Each request's latency ({result.requests:,} at concurrency {result.concurrency})",
    )
    fig.update_xaxes(title_text="sent at (s since the load started)")
    fig.update_yaxes(title_text="latency (ms)", rangemode="tozero")
    return fig
