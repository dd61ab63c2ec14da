"""Figures of lessons 01-02: the loss surface with descent paths, loss curves, fitted lines, lrs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.data import Dataset
from maaslab.optimization.descent import GDResult
from maaslab.optimization.linreg import LossSurface, predict
from maaslab.optimization.minibatch import Schedule, schedule_curve
from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout

OPTIMUM_COLOR = "#111827"
EXCESS_FLOOR = 1e-12  # where J - J* is drawn when it rounds to 0 or below


def _color(i: int) -> str:
    return SERIES_COLORS[i % len(SERIES_COLORS)]


def _optimum_line(fig: go.Figure, optimum_loss: float | None, **where: int) -> None:
    # The least-squares loss J*, the floor every run is heading for.
    if optimum_loss is not None:
        fig.add_hline(
            y=optimum_loss,
            line={"color": OPTIMUM_COLOR, "dash": "dash", "width": 1},
            annotation_text=f"J* = {optimum_loss:.4g}",
            annotation_position="bottom right",
            **where,
        )


def loss_contour(
    surface: LossSurface, runs: Sequence[GDResult] = (), *, equal_axes: bool = False
) -> go.Figure:
    """Contours of J over two parameters (others at the optimum) with the runs' paths on top.

    Parameters
    ----------
    surface : from `maaslab.optimization.linreg.loss_surface`.
    runs : descents whose theta paths are drawn (projected on the two parameters); a path that
        leaves the grid is cut at its edge.
    equal_axes : one unit is as long on both axes, so a round bowl looks round.
    """
    i, j = surface.params
    fig = go.Figure()
    fig.add_contour(
        x=surface.a,
        y=surface.b,
        z=np.log10(surface.loss),  # log levels: the rim and the floor both get contour lines
        colorscale="Blues_r",
        ncontours=25,
        colorbar={"title": {"text": "log10 J"}},
        hovertemplate="%{x:.3g}, %{y:.3g}: log10 J = %{z:.3f}<extra></extra>",
        name="loss",
    )
    for k, run in enumerate(runs):
        path = run.thetas[:, [i, j]]
        fig.add_scatter(
            x=path[:, 0],
            y=path[:, 1],
            mode="lines+markers" if len(path) <= 60 else "lines",
            marker={"size": 5},
            line={"color": _color(k), "width": 2},
            name=run.label,
        )
        fig.add_scatter(
            x=path[:1, 0],
            y=path[:1, 1],
            mode="markers",
            marker={"color": _color(k), "size": 11, "symbol": "circle-open"},
            showlegend=False,
            hoverinfo="skip",
        )
    fig.add_scatter(
        x=[surface.optimum[i]],
        y=[surface.optimum[j]],
        mode="markers",
        marker={"symbol": "star", "size": 16, "color": TEST_COLOR},
        name="closed-form minimum",
    )
    fig.update_layout(
        title="Loss surface and descent paths",
        xaxis={"title": surface.names[0], "range": [surface.a[0], surface.a[-1]]},
        yaxis={"title": surface.names[1], "range": [surface.b[0], surface.b[-1]]},
        **layout(460),
    )
    if equal_axes:  # shrink the plot area rather than widen a range beyond the grid
        fig.update_xaxes(constrain="domain")
        fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def loss_vs_step(
    runs: Sequence[GDResult],
    *,
    optimum_loss: float | None = None,
    excess: bool = False,
    title: str = "Loss per update",
) -> go.Figure:
    """Full-data loss after each update, one line per run, on a log axis; J* dashed.

    Parameters
    ----------
    runs : e.g. the same descent with a learning rate too small, right and too large.
    optimum_loss : the closed-form minimum J*, drawn as the floor.
    excess : plot J - J* instead of J (needs optimum_loss): the distance left to the minimum,
        which separates runs that all look flat near J*.
    title : the figure title.
    """
    if excess and optimum_loss is None:
        raise ValueError("excess=True needs optimum_loss")
    fig = go.Figure()
    for k, run in enumerate(runs):
        # J - J* can round to 0 or a hair below; a log axis needs it positive.
        y = np.maximum(run.losses - optimum_loss, EXCESS_FLOOR) if excess else run.losses
        fig.add_scatter(
            x=np.arange(run.steps + 1),
            y=y,
            mode="lines",
            line={"color": _color(k), "width": 1.5},
            name=run.label + (" (diverged)" if run.diverged_at is not None else ""),
        )
    if not excess:
        _optimum_line(fig, optimum_loss)
    y_title = "J - J*" if excess else "loss J"
    fig.update_layout(
        title=title, xaxis_title="update", yaxis_title=y_title, yaxis_type="log", **layout()
    )
    return fig


def batch_size_comparison(
    runs: Sequence[GDResult], *, optimum_loss: float | None = None
) -> go.Figure:
    """Loss against epochs (data seen) and against updates (gradients computed), side by side.

    Parameters
    ----------
    runs : the same problem with different batch sizes (e.g. 1, 32 and n).
    optimum_loss : the closed-form minimum J*, drawn as the floor.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("per epoch (passes over the data)", "per update (gradients computed)"),
    )
    for k, run in enumerate(runs):
        style = {"mode": "lines", "line": {"color": _color(k), "width": 1.5}, "name": run.label}
        fig.add_scatter(x=run.epochs, y=run.losses, legendgroup=run.label, **style, row=1, col=1)
        fig.add_scatter(
            x=np.arange(1, run.steps + 1),  # from the first update: a log axis has no 0
            y=run.losses[1:],
            legendgroup=run.label,
            showlegend=False,
            **style,
            row=1,
            col=2,
        )
    for col in (1, 2):
        _optimum_line(fig, optimum_loss, row=1, col=col)
    fig.update_yaxes(type="log", title_text="loss J", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="update (log)", type="log", row=1, col=2)
    fig.update_layout(title="Batch size: noise, epochs and updates", **layout(420))
    fig.update_layout(margin={"t": 90})
    return fig


def fitted_lines(data: Dataset, thetas: Mapping[str, np.ndarray]) -> go.Figure:
    """The one-feature data (train and test) with the line y_hat = w x + b for each theta.

    Parameters
    ----------
    data : a one-feature dataset, e.g. `maaslab.optimization.linreg.diabetes("bmi")`.
    thetas : lines to draw by label, each theta = (w, b).
    """
    if data.n_features != 1:
        raise ValueError(f"fitted_lines needs one feature, got {data.n_features}")
    fig = go.Figure()
    for X, y, name, color in (
        (data.X_train, data.y_train, "train", TRAIN_COLOR),
        (data.X_test, data.y_test, "test", TEST_COLOR),
    ):
        fig.add_scatter(
            x=X[:, 0], y=y, mode="markers", name=name, marker={"color": color, "size": 5}
        )
    lo = min(data.X_train.min(), data.X_test.min())
    hi = max(data.X_train.max(), data.X_test.max())
    grid = np.linspace(lo, hi, 2)[:, None]
    for k, (label, theta) in enumerate(thetas.items()):
        fig.add_scatter(
            x=grid[:, 0],
            y=predict(np.asarray(theta, dtype=float), grid),
            mode="lines",
            name=label,
            line={"color": SERIES_COLORS[(k + 2) % len(SERIES_COLORS)], "width": 3},
        )
    fig.update_layout(
        title="Fitted lines", xaxis_title=data.feature_names[0], yaxis_title="target", **layout()
    )
    return fig


def schedule_plot(schedules: Sequence[Schedule], *, lr: float, epochs: int) -> go.Figure:
    """The learning rate against the epoch for each schedule, from the same start lr.

    Parameters
    ----------
    schedules : the schedules to compare.
    lr : the start learning rate alpha_0.
    epochs : the run length (cosine reaches its floor there).
    """
    fig = go.Figure()
    for k, schedule in enumerate(schedules):
        t, values = schedule_curve(schedule, lr, epochs)
        shape = "hv" if schedule.kind == "step" else "linear"  # step decay drops at once
        line = {"color": _color(k), "shape": shape}
        fig.add_scatter(x=t, y=values, mode="lines", name=schedule.label, line=line)
    fig.update_layout(
        title="Learning-rate schedules",
        xaxis_title="epoch t",
        yaxis_title="learning rate",
        **layout(),
    )
    return fig
