"""Figures of lesson 04: gradient-check errors per parameter, and loss curves side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from maaslab.plots._style import SERIES_COLORS, layout
from maaslab.scratch import GradCheckResult

ERROR_FLOOR = 1e-16  # a perfect agreement (error 0) still needs a bar on a log axis
TOLERANCE_COLOR = "#6b7280"  # neutral grey: the threshold is not one of the compared series


def gradcheck_bars(results: GradCheckResult | Mapping[str, GradCheckResult]) -> go.Figure:
    """Relative error of each parameter's gradient as bars on a log axis, tolerance dashed.

    Parameters
    ----------
    results : one GradCheckResult, or several by label (e.g. {"correct": ..., "wrong_sign": ...})
        to compare them parameter by parameter.
    """
    if isinstance(results, GradCheckResult):
        results = {"backprop": results}
    if not results:
        raise ValueError("gradcheck_bars needs at least one GradCheckResult")
    fig = go.Figure()
    for i, (label, result) in enumerate(results.items()):
        fig.add_bar(
            x=list(result.errors),
            y=[max(e, ERROR_FLOOR) for e in result.errors.values()],
            name=label,
            marker_color=SERIES_COLORS[i % len(SERIES_COLORS)],
            hovertemplate="%{x}: %{y:.2e}<extra>" + label + "</extra>",
        )
    tolerance = next(iter(results.values())).tolerance
    fig.add_hline(y=tolerance, line={"color": TOLERANCE_COLOR, "dash": "dash"})
    # On a log axis a shape takes the value itself but an annotation takes its log10.
    fig.add_annotation(
        x=0,
        xref="paper",
        xanchor="left",
        y=float(np.log10(tolerance)),
        yshift=10,
        text=f"tolerance {tolerance:g}",
        showarrow=False,
    )
    fig.update_layout(
        title="Gradient check: backprop vs finite differences",
        xaxis_title="parameter",
        yaxis_title="relative error",
        yaxis_type="log",
        barmode="group",
        **layout(),
    )
    return fig


def loss_comparison(
    curves: Mapping[str, Sequence[float]],
    *,
    title: str = "Training loss",
    log_y: bool = False,
    y_max: float | None = None,
) -> go.Figure:
    """One line of per-epoch loss per run, e.g. a correct and a buggy training, or two libraries.

    Parameters
    ----------
    curves : label -> loss of each epoch (FitResult.loss, History.column("train_loss"), ...).
        NaN or inf (a diverged run) is drawn as a gap.
    title : the figure title.
    log_y : a log loss axis, to see runs whose losses differ by orders of magnitude.
    y_max : top of the loss axis, so a run that blows up leaves the frame instead of squashing
        the others flat; None fits every value.
    """
    fig = go.Figure()
    for i, (label, losses) in enumerate(curves.items()):
        fig.add_scatter(
            x=list(range(1, len(losses) + 1)),
            y=[v if np.isfinite(v) else None for v in losses],
            name=label,
            mode="lines" if len(losses) > 10 else "lines+markers",  # a run cut short stays visible
            line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]},
        )
    fig.update_layout(
        title=title,
        xaxis_title="epoch",
        yaxis_title="loss",
        yaxis_type="log" if log_y else "linear",
        **layout(),
    )
    if y_max is not None:
        if not log_y:
            fig.update_yaxes(range=[0.0, y_max])
        else:  # a log axis takes its range in log10 units
            shown = [v for c in curves.values() for v in c if np.isfinite(v) and 0 < v <= y_max]
            low = min(shown, default=y_max / 10)
            fig.update_yaxes(range=[np.log10(low) - 0.1, np.log10(y_max)])
    return fig
