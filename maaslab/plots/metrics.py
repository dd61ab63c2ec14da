"""Figures for the scores of `maaslab.metrics`: precision, recall and F1 per class, and the
reliability diagram of a classifier's confidence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.metrics import Calibration, ClassificationReport
from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout

METRIC_COLORS = {"precision": SERIES_COLORS[0], "recall": SERIES_COLORS[1], "F1": SERIES_COLORS[2]}


def class_metric_bars(
    report: ClassificationReport, class_names: Sequence[str] | None = None, *, title: str = ""
) -> go.Figure:
    """Precision, recall and F1 of every class as grouped bars, the macro F1 as a dashed line.

    Parameters
    ----------
    report : from `maaslab.metrics.precision_recall_f1` (or `score_classifier(...).report`).
    class_names : x-axis labels (default 0..C-1).
    title : figure title (default names the macro F1).
    """
    names = [str(c) for c in (class_names if class_names is not None else range(len(report.f1)))]
    if len(names) != len(report.f1):
        raise ValueError(f"{len(names)} class names for {len(report.f1)} classes")
    fig = go.Figure()
    for metric, values in (
        ("precision", report.precision),
        ("recall", report.recall),
        ("F1", report.f1),
    ):
        fig.add_bar(
            x=names,
            y=values,
            name=metric,
            marker_color=METRIC_COLORS[metric],
            customdata=np.stack([report.support, report.predicted], axis=1),
            hovertemplate=f"class %{{x}} · {metric} %{{y:.3f}}<br>"
            "%{customdata[0]} examples · %{customdata[1]} predicted<extra></extra>",
        )
    fig.add_scatter(
        x=names,
        y=[report.macro_f1] * len(names),
        mode="lines",
        name=f"macro F1 {report.macro_f1:.3f}",
        line={"dash": "dash", "color": METRIC_COLORS["F1"]},
        hoverinfo="skip",
    )
    # Scores of a good model crowd near 1: the axis starts a step of 0.1 below the lowest one, so
    # the differences between classes stay visible (its ticks say where it starts).
    values = np.concatenate([report.precision, report.recall, report.f1])
    values = values[~np.isnan(values)]
    low = max(0.0, np.floor(values.min() * 10 - 1) / 10) if values.size else 0.0
    fig.update_layout(
        **layout(height=380),
        barmode="group",
        title=title
        or f"Per class · macro F1 {report.macro_f1:.3f} · accuracy {report.accuracy:.3f}",
    )
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="score", range=[low, 1.02])
    return fig


def reliability_diagram(calibration: Calibration, *, title: str = "") -> go.Figure:
    """Accuracy against confidence per bin (bars) over the diagonal of perfect calibration, the
    gap of each bin shaded, and below it how many examples each bin holds.

    Parameters
    ----------
    calibration : from `maaslab.metrics.calibration` or `reliability`.
    title : figure title (default names the expected calibration error).
    """
    cal = calibration
    left, right = cal.edges[:-1], cal.edges[1:]
    centers, width = (left + right) / 2, right - left
    filled = cal.count > 0
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06
    )
    fig.add_bar(
        x=centers[filled],
        y=cal.accuracy[filled],
        width=width[filled],
        name="accuracy in the bin",
        marker={"color": TRAIN_COLOR, "line": {"color": "white", "width": 1}},
        customdata=np.stack([left, right, cal.confidence, cal.count], axis=1)[filled],
        hovertemplate="confidence %{customdata[0]:.2f}–%{customdata[1]:.2f}<br>"
        "accuracy %{y:.3f} · mean confidence %{customdata[2]:.3f}<br>"
        "%{customdata[3]:.0f} examples<extra></extra>",
        row=1,
        col=1,
    )
    # The gap: from each bin's accuracy to its mean confidence (red above a bar = overconfident).
    fig.add_bar(
        x=centers[filled],
        y=(cal.confidence - cal.accuracy)[filled],
        base=cal.accuracy[filled],
        width=width[filled] * 0.5,
        name="gap to the mean confidence",
        marker={"color": "rgba(220, 38, 38, 0.35)", "line": {"color": "#dc2626", "width": 1}},
        hoverinfo="skip",
        row=1,
        col=1,
    )
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        name="perfect calibration",
        line={"dash": "dash", "color": "#6b7280"},
        hoverinfo="skip",
        row=1,
        col=1,
    )
    fig.add_bar(
        x=centers,
        y=cal.count,
        width=width,
        name="examples",
        marker={"color": TEST_COLOR},
        text=[str(c) if c else "" for c in cal.count],  # a bin of 3 next to one of 400 shows
        textposition="outside",
        cliponaxis=False,
        showlegend=False,
        hovertemplate="%{y} examples<extra></extra>",
        row=2,
        col=1,
    )
    fig.update_layout(
        **layout(height=480),
        barmode="overlay",
        title=title or f"Reliability · expected calibration error {cal.ece:.3f}",
    )
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(range=[0, 1], title_text="confidence (predicted probability)", row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="examples", row=2, col=1)
    return fig
