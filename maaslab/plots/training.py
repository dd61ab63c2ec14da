"""Figures of a training run: loss, accuracy and gradient-norm curves, and 2-D datasets."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.data import Dataset
from maaslab.jobs import Weights
from maaslab.plots._style import CLASS_COLORS, STEP_COLOR, TRAIN_COLOR, VAL_COLOR, layout
from maaslab.studio import BoundaryGrid
from maaslab.train import History


def _step_x(history: History) -> np.ndarray:
    # Steps placed on the epoch axis: step i of an epoch with S steps sits at epoch + i / S.
    per_epoch = max(history.steps_per_epoch, 1)
    return np.arange(1, len(history.step_loss) + 1) / per_epoch


def _finite(values: list) -> list:
    # Plotly draws NaN/inf as gaps only if they are None.
    return [v if v is not None and np.isfinite(v) else None for v in values]


def _train_val_lines(fig: go.Figure, history: History, metric: str) -> None:
    # One line per split for an epoch metric ("loss" or "accuracy"). Training never reads the
    # test split, so the held-out line is validation.
    for split, name, color in (("train", "train", TRAIN_COLOR), ("val", "validation", VAL_COLOR)):
        fig.add_scatter(
            x=history.column("epoch"),
            y=_finite(history.column(f"{split}_{metric}")),
            name=name,
            mode="lines+markers",
            line={"color": color},
        )


def loss_curve(history: History, *, show_steps: bool = True) -> go.Figure:
    """Train and validation loss per epoch, with the per-step training loss faintly behind."""
    fig = go.Figure()
    if show_steps and history.step_loss:
        fig.add_scatter(
            x=_step_x(history),
            y=_finite(history.step_loss),
            name="train (per step)",
            mode="lines",
            line={"color": STEP_COLOR, "width": 1},
        )
    _train_val_lines(fig, history, "loss")
    fig.update_layout(title="Loss", xaxis_title="epoch", yaxis_title="loss", **layout())
    return fig


def accuracy_curve(history: History) -> go.Figure:
    """Train and validation accuracy per epoch (empty axes for regression)."""
    fig = go.Figure()
    if history.task == "classification":
        _train_val_lines(fig, history, "accuracy")
    fig.update_layout(
        title="Accuracy",
        xaxis_title="epoch",
        yaxis_title="accuracy",
        yaxis_range=[0, 1.02],
        **layout(),
    )
    return fig


def training_curves(history: History) -> go.Figure:
    """Loss and accuracy side by side: the figure a training run ends with."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for trace in loss_curve(history).data:
        fig.add_trace(trace, row=1, col=1)
    for trace in accuracy_curve(history).data:
        fig.add_trace(trace.update(showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=2)
    fig.update_layout(**layout())
    return fig


def grad_norm_curve(history: History) -> go.Figure:
    """Mean gradient L2 norm per layer and epoch (log scale): vanishing or exploding gradients."""
    fig = go.Figure()
    layers = list(history.epochs[-1].grad_norms) if history.epochs else []
    for layer in layers:
        fig.add_scatter(
            x=history.column("epoch"),
            y=[e.grad_norms.get(layer) for e in history.epochs],
            name=layer,
            mode="lines+markers",
        )
    fig.update_layout(
        title="Gradient norm per layer",
        xaxis_title="epoch",
        yaxis_title="‖∇‖",
        yaxis_type="log",
        **layout(),
    )
    return fig


def dataset_scatter(data: Dataset) -> go.Figure:
    """The points of a 2-D dataset, train as circles and validation as crosses, by class.

    The test points are left out: they are kept for the one measurement at the end.
    """
    if data.n_features != 2:
        raise ValueError(f"dataset_scatter needs 2-D data; {data.name} has {data.n_features}")
    fig = go.Figure()
    for split, X, y, symbol in (
        ("train", data.X_train, data.y_train, "circle"),
        ("validation", data.X_val, data.y_val, "x"),
    ):
        for k, name in enumerate(data.class_names):
            mask = y == k
            fig.add_scatter(
                x=X[mask, 0],
                y=X[mask, 1],
                mode="markers",
                name=f"{split} · class {name}",
                marker={"color": CLASS_COLORS[k % len(CLASS_COLORS)], "symbol": symbol, "size": 6},
            )
    fig.update_layout(
        title=data.description,
        xaxis_title="x1",
        yaxis_title="x2",
        **layout(),
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def decision_boundary(grid: BoundaryGrid, data: Dataset) -> go.Figure:
    """The model's predicted class over the plane (shaded by confidence) under the data points.

    For two classes the shading is P(class 1) on a two-colour scale, as TensorFlow Playground
    draws it; for more classes each cell takes its predicted class's colour.
    """
    k = grid.proba.shape[-1]
    colors = [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(k)]
    if k == 2:
        z = grid.proba[..., 1]
        colorscale = [[0.0, colors[0]], [0.5, "#ffffff"], [1.0, colors[1]]]
        zmin, zmax = 0.0, 1.0
    else:
        z = grid.proba.argmax(-1).astype(float)
        colorscale = [[i / max(k - 1, 1), c] for i, c in enumerate(colors)]
        zmin, zmax = 0.0, k - 1.0
    fig = dataset_scatter(data)
    fig.add_heatmap(
        x=grid.xs,
        y=grid.ys,
        z=z,
        colorscale=colorscale,
        zmin=zmin,
        zmax=zmax,
        opacity=0.45,
        showscale=False,
        hoverinfo="skip",
        zsmooth="best",
    )
    fig.data = (fig.data[-1], *fig.data[:-1])  # the shading goes under the points
    fig.update_layout(title="Decision boundary", uirevision="boundary")
    fig.update_xaxes(range=[grid.xs[0], grid.xs[-1]])
    fig.update_yaxes(range=[grid.ys[0], grid.ys[-1]])
    return fig


def weight_histograms(
    weights: Weights, initial: Weights | None = None, bins: int = 30
) -> go.Figure:
    """One histogram per layer of its weights (biases left out), the initial ones as an outline."""
    layers = [name for name in weights if name.endswith("weight")]
    titles = [name.removesuffix(".weight").removeprefix("layers.") for name in layers]
    fig = make_subplots(rows=1, cols=max(len(layers), 1), subplot_titles=titles or None)
    for col, name in enumerate(layers, start=1):
        now = weights[name].flatten().float().numpy()
        before = initial[name].flatten().float().numpy() if initial and name in initial else None
        values = now if before is None else np.concatenate([now, before])
        values = values[np.isfinite(values)]
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        # Shared bins, so the initial outline and today's bars compare bin for bin.
        xbins = {"start": low, "end": high, "size": (high - low) / bins or 1.0}
        if before is not None:
            fig.add_histogram(
                x=before,
                xbins=xbins,
                name="initial",
                legendgroup="initial",
                marker={"color": "rgba(0,0,0,0)", "line": {"color": "#64748b", "width": 1}},
                showlegend=col == 1,
                row=1,
                col=col,
            )
        fig.add_histogram(
            x=now,
            xbins=xbins,
            name="now",
            marker={"color": TRAIN_COLOR},
            opacity=0.7,
            showlegend=col == 1,
            row=1,
            col=col,
            legendgroup="now",
        )
    fig.update_layout(title="Weights per layer", barmode="overlay", **layout())
    return fig
