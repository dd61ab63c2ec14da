"""Figures of lesson 12: the variants of a model on latency vs accuracy, and their speed-ups."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout

MIN_MARKER, MAX_MARKER = 14, 60  # px diameter of the smallest and the largest variant on disk


def _measured(comparison) -> list:
    # Rows with both numbers a point needs; failed variants have None and are left out.
    return [
        r
        for r in comparison.rows
        if r.error is None and r.latency_ms_1 is not None and r.accuracy is not None
    ]


def variant_scatter(comparison, goal: float = 2.0) -> go.Figure:
    """Latency at batch 1 (x) vs accuracy (y), one labelled point per variant, area ~ size on disk.

    Parameters
    ----------
    comparison : a `maaslab.compress.Comparison` (from `compare`).
    goal : the batch-1 speed-up asked for; a dotted line marks fp32's latency divided by it.
    """
    rows = _measured(comparison)
    fig = go.Figure()
    largest = max((r.size_mb or 0.0 for r in rows), default=0.0) or 1.0
    # labels alternate above and below in order of latency, so neighbours' names do not overlap
    rank = {r.name: k for k, r in enumerate(sorted(rows, key=lambda r: r.latency_ms_1))}
    for i, r in enumerate(rows):
        size = r.size_mb or 0.0
        # marker area (not diameter) proportional to the bytes, so a 4x smaller file looks 4x
        # smaller; a floor keeps tiny files visible
        diameter = max(MIN_MARKER, MAX_MARKER * math.sqrt(size / largest))
        fig.add_scatter(
            x=[r.latency_ms_1],
            y=[r.accuracy * 100],
            mode="markers+text",
            name=r.name,
            text=[r.name],
            textposition="top center" if rank[r.name] % 2 == 0 else "bottom center",
            marker={
                "size": diameter,
                "color": SERIES_COLORS[i % len(SERIES_COLORS)],
                "opacity": 0.75,
                "line": {"width": 1, "color": "white"},
            },
            customdata=[[size, r.speedup_1 or float("nan"), r.accuracy_drop or 0.0]],
            hovertemplate=(
                f"<b>{r.name}</b><br>%{{x:.3g}} ms at batch 1 (%{{customdata[1]:.2f}}x)<br>"
                "accuracy %{y:.1f} % (drop %{customdata[2]:.1f} points)<br>"
                "%{customdata[0]:.2f} MB on disk<extra></extra>"
            ),
        )
    reference = next((r for r in rows if r.name == "fp32"), None)
    if reference is not None and goal > 0:
        fig.add_vline(
            x=reference.latency_ms_1 / goal,
            line={"dash": "dot", "color": TEST_COLOR},
            annotation_text=f"{goal:g}x faster than fp32",
            annotation_position="top left",
        )
        fig.add_hline(
            y=reference.accuracy * 100 - 1.0,
            line={"dash": "dot", "color": TRAIN_COLOR},
            annotation_text="1 point below fp32",
            annotation_position="bottom right",
        )
    latencies = [r.latency_ms_1 for r in rows if r.latency_ms_1 and r.latency_ms_1 > 0]
    # ONNX Runtime can be 100x faster than eager torch on a small model: a log axis keeps
    # every point readable when the latencies span more than a factor of 10
    spread = max(latencies) / min(latencies) if latencies else 1.0
    fig.update_layout(
        title=f"{comparison.model}: latency vs accuracy (marker area = size on disk)",
        xaxis_title="latency at batch 1 (ms, median; left is faster)",
        yaxis_title=f"accuracy on the {comparison.split} split (%)",
        showlegend=False,
        **layout(440),
    )
    fig.update_xaxes(type="log" if spread > 10 else "linear")
    return fig


def speedup_bars(comparison, goal: float = 2.0) -> go.Figure:
    """Speed-up over fp32 at batch 1 and batch 32 for each measured variant, with the goal line.

    Parameters
    ----------
    comparison : a `maaslab.compress.Comparison`.
    goal : the speed-up asked for (P5: 2x at batch 1), drawn as a dashed line.
    """
    rows = [r for r in comparison.rows if r.error is None and r.speedup_1 is not None]
    names = [r.name for r in rows]
    fig = go.Figure()
    for batch, color in ((1, TRAIN_COLOR), (32, TEST_COLOR)):
        values = [getattr(r, f"speedup_{batch}") for r in rows]
        fig.add_bar(
            x=names,
            y=values,
            name=f"batch {batch}",
            marker_color=color,
            text=[f"{v:.2f}x" if v is not None else "" for v in values],
            textposition="outside",
            hovertemplate=f"%{{x}}: %{{y:.2f}}x at batch {batch}<extra></extra>",
        )
    fig.add_hline(
        y=goal,
        line={"dash": "dash", "color": "#6b7280"},
        annotation_text=f"goal {goal:g}x",
        annotation_position="top left",
    )
    fig.update_layout(
        barmode="group",
        title=f"{comparison.model}: speed-up over fp32 (higher is faster)",
        yaxis_title="fp32 latency / variant latency",
        **layout(380),
    )
    values = [r.speedup_1 for r in rows] + [r.speedup_32 for r in rows]
    values = [v for v in values if v]
    if values and max(values) / max(min(values), 1e-9) > 20:
        fig.update_yaxes(type="log")
    return fig
