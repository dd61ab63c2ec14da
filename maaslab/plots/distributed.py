"""Figures of lesson 13: 1 vs 2 processes, where a step's time goes, communication volume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.distributed.collective import parameter_server_bytes, ring_bytes_per_rank
from maaslab.distributed.launch import ScalingRow
from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout


def _label(row: ScalingRow) -> str:
    return f"{row.processes} proc x {row.threads_per_process} thr"


def scaling_bars(rows: Sequence[ScalingRow], title: str = "") -> go.Figure:
    """Steps per second of each setup (left) and one step's compute vs all-reduce time (right).

    Parameters
    ----------
    rows : from `maaslab.distributed.measure_scaling` (the same global batch in every setup).
    title : what was trained, shown above both panels.
    """
    labels = [_label(r) for r in rows]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("throughput (higher is better)", "one step: compute vs all-reduce"),
    )
    fig.add_bar(
        x=labels,
        y=[r.steps_per_second for r in rows],
        marker_color=[SERIES_COLORS[i % len(SERIES_COLORS)] for i in range(len(rows))],
        text=[f"{r.speedup:.2f}x" for r in rows],
        textposition="outside",
        hovertemplate="%{x}: %{y:.0f} steps/s<extra></extra>",
        showlegend=False,
        row=1,
        col=1,
    )
    fig.add_bar(
        x=labels,
        y=[r.compute_ms for r in rows],
        name="forward + backward",
        marker_color=TRAIN_COLOR,
        hovertemplate="%{x}: %{y:.2f} ms compute<extra></extra>",
        row=1,
        col=2,
    )
    fig.add_bar(
        x=labels,
        y=[r.allreduce_ms for r in rows],
        name="gradient all-reduce",
        marker_color=TEST_COLOR,
        hovertemplate="%{x}: %{y:.2f} ms all-reduce<extra></extra>",
        row=1,
        col=2,
    )
    fig.update_layout(barmode="stack", title=title or None, **layout(380))
    fig.update_yaxes(title_text="steps / s", row=1, col=1)
    fig.update_yaxes(title_text="ms per step", row=1, col=2)
    return fig


def communication_volume(n_params: int, world_sizes: Sequence[int] = range(2, 33)) -> go.Figure:
    """Bytes per step against the number of workers: ring all-reduce vs one parameter server.

    Parameters
    ----------
    n_params : gradient size (float32).
    world_sizes : numbers of workers to draw.
    """
    p = np.asarray(list(world_sizes))
    mb = 1e6
    ring = [ring_bytes_per_rank(n_params, int(k)) / mb for k in p]
    server = [parameter_server_bytes(n_params, int(k))["server"] / mb for k in p]
    worker = [parameter_server_bytes(n_params, int(k))["per_worker"] / mb for k in p]
    fig = go.Figure()
    for y, name, color, dash in (
        (server, "parameter server: the server's link", TEST_COLOR, "solid"),
        (worker, "parameter server: each worker", TEST_COLOR, "dot"),
        (ring, "ring all-reduce: each rank", TRAIN_COLOR, "solid"),
    ):
        fig.add_scatter(
            x=p,
            y=y,
            name=name,
            mode="lines+markers",
            line={"color": color, "dash": dash},
            hovertemplate="%{x} workers: %{y:.3g} MB<extra></extra>",
        )
    fig.update_layout(
        title=f"Bytes sent per step for {n_params:,} float32 gradients",
        xaxis_title="workers (ranks)",
        yaxis_title="MB per step",
        yaxis_type="log",
        **layout(),
    )
    return fig


def loss_match(ddp_loss: Sequence[float], reference_loss: Sequence[float]) -> go.Figure:
    """Loss per step of a DDP run and of one process on the same global batches (they overlap)."""
    fig = go.Figure()
    fig.add_scatter(
        y=list(reference_loss),
        name="one process, global batch",
        mode="lines",
        line={"color": TRAIN_COLOR, "width": 5},
        opacity=0.45,
    )
    fig.add_scatter(
        y=list(ddp_loss),
        name="DDP, mean over ranks",
        mode="lines",
        line={"color": TEST_COLOR, "dash": "dot"},
    )
    gap = max((abs(a - b) for a, b in zip(ddp_loss, reference_loss, strict=False)), default=0.0)
    fig.update_layout(
        title=f"Same steps, same losses (largest gap {gap:.1e})",
        xaxis_title="optimizer step",
        yaxis_title="training loss",
        **layout(),
    )
    return fig
