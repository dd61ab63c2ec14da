"""Figures of lesson 18: who holds which labels, the rounds of a federation, the clients' drift,
what the server sees of an update, and privacy against utility."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.federated.aggregation import Aggregation
from maaslab.federated.fedavg import FederatedResult
from maaslab.federated.partition import Partition
from maaslab.federated.tradeoff import TradeoffResult
from maaslab.plots._style import SERIES_COLORS, TRAIN_COLOR, VAL_COLOR, layout


def label_mix(partition: Partition, class_names: Sequence[str] = ()) -> go.Figure:
    """Each client's examples split by class, as stacked horizontal bars (one bar per client).

    With IID clients every bar has the same proportions; a small Dirichlet alpha gives each client
    a few classes only.
    """
    counts = partition.label_counts
    names = list(class_names) or [str(c) for c in range(counts.shape[1])]
    clients = [f"client {k}" for k in range(partition.n_clients)]
    fig = go.Figure()
    for c, name in enumerate(names):
        fig.add_bar(
            y=clients,
            x=counts[:, c],
            name=name,
            orientation="h",
            marker_color=SERIES_COLORS[c % len(SERIES_COLORS)] if len(names) <= 7 else None,
            hovertemplate=f"%{{y}}: %{{x}} examples of {name}<extra></extra>",
        )
    split = "IID" if partition.alpha is None else f"Dirichlet alpha = {partition.alpha:g}"
    fig.update_layout(
        **layout(max(240, 40 + 28 * partition.n_clients)),
        barmode="stack",
        title=f"Who holds what ({split})",
        xaxis_title="training examples",
        yaxis={"autorange": "reversed"},
    )
    fig.update_layout(legend={"y": -0.35})  # below the axis title
    return fig


def rounds_curve(result: FederatedResult, title: str = "") -> go.Figure:
    """The global model's validation accuracy per round, and each client's local model's.

    The clients' dots sit where their own weights, trained on their own rows only, score on the
    same validation split before the server averages them.
    """
    rounds = result.column("round")
    fig = go.Figure()
    table = result.client_table("val_accuracy")
    for k in range(table.shape[1]):
        seen = ~np.isnan(table[:, k])
        fig.add_scatter(
            x=np.asarray(rounds)[seen],
            y=table[seen, k],
            mode="markers",
            name=f"client {k} (local)",
            marker={"size": 6, "opacity": 0.6, "color": SERIES_COLORS[k % len(SERIES_COLORS)]},
            hovertemplate=f"round %{{x}}: client {k}'s local model %{{y:.3f}}<extra></extra>",
        )
    fig.add_scatter(
        x=rounds,
        y=result.column("val_accuracy"),
        mode="lines+markers",
        name="global model",
        line={"color": VAL_COLOR, "width": 3},
        hovertemplate="round %{x}: global model %{y:.3f}<extra></extra>",
    )
    fig.update_layout(
        **layout(),
        title=title or "Validation accuracy per round",
        xaxis_title="round",
        yaxis={"title": "validation accuracy", "range": [0, 1.02]},
    )
    return fig


def drift_curve(result: FederatedResult) -> go.Figure:
    """Each client's drift ||w_client - w_global|| per round: how far local training pulled it."""
    rounds = np.asarray(result.column("round"))
    table = result.client_table("drift")
    fig = go.Figure()
    for k in range(table.shape[1]):
        seen = ~np.isnan(table[:, k])
        fig.add_scatter(
            x=rounds[seen],
            y=table[seen, k],
            mode="lines+markers",
            name=f"client {k}",
            line={"color": SERIES_COLORS[k % len(SERIES_COLORS)]},
            hovertemplate=f"round %{{x}}: client {k} moved %{{y:.3f}}<extra></extra>",
        )
    fig.update_layout(
        **layout(),
        title="Client drift per round",
        xaxis_title="round",
        yaxis_title="||w_client - w_global||",
    )
    return fig


def server_view(aggregation: Aggregation, client: int = 0, numbers: int = 120) -> go.Figure:
    """What the server received from one client next to that client's true update.

    Plain: the same numbers. Masked: noise spanning the whole fixed-point ring, whose sum over
    the clients is still the true sum. CKKS: ciphertext bytes (shown as numbers 0-255).
    """
    true = aggregation.updates[client][:-1][:numbers]  # the last coordinate is the count n_k
    seen = np.asarray(aggregation.seen[client], dtype=np.float64)
    seen = seen[:-1][:numbers] if aggregation.method != "ckks" else seen[:numbers]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=(
            f"client {client}'s update (n_k x weights)",
            {
                "plain": "received: the same numbers",
                "masked": "received: update + pairwise masks",
                "ckks": "received: CKKS ciphertext bytes",
            }[aggregation.method],
        ),
    )
    fig.add_bar(y=true, marker_color=TRAIN_COLOR, name="true update", row=1, col=1)
    fig.add_bar(y=seen, marker_color=VAL_COLOR, name="received", row=2, col=1)
    fig.update_layout(
        **layout(420),
        title=f"What the server sees: {aggregation.bytes_per_client / 1e3:.1f} KB a client",
        showlegend=False,
    )
    fig.update_xaxes(title_text="position in the update", row=2, col=1)
    return fig


def privacy_utility_chart(result: TradeoffResult) -> go.Figure:
    """Test accuracy and the membership attack's advantage against epsilon, one point per noise
    level, with the most advantage (epsilon, delta)-DP allows any attack."""
    points = sorted(result.points, key=lambda p: p.epsilon)
    private = [p for p in points if math.isfinite(p.epsilon)]
    plain = [p for p in points if not math.isfinite(p.epsilon)]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("utility: test accuracy", "privacy: attack advantage (TPR - FPR)"),
    )
    eps = [p.epsilon for p in private]
    labels = [f"sigma {p.noise_multiplier:g}" for p in private]
    fig.add_scatter(
        x=eps,
        y=[p.test_accuracy for p in private],
        text=labels,
        mode="lines+markers",
        name="DP-SGD",
        line={"color": TRAIN_COLOR},
        hovertemplate="%{text}: epsilon %{x:.3g}, accuracy %{y:.3f}<extra></extra>",
        row=1,
        col=1,
    )
    fig.add_scatter(
        x=eps,
        y=[p.attack.advantage for p in private],
        text=labels,
        mode="lines+markers",
        name="measured attack",
        line={"color": VAL_COLOR},
        hovertemplate="%{text}: epsilon %{x:.3g}, advantage %{y:.3f}<extra></extra>",
        row=1,
        col=2,
    )
    fig.add_scatter(
        x=eps,
        y=[p.advantage_bound for p in private],
        mode="lines",
        name="DP's bound on any attack",
        line={"color": SERIES_COLORS[2], "dash": "dash"},
        hovertemplate="epsilon %{x:.3g}: no attack beats %{y:.3f}<extra></extra>",
        row=1,
        col=2,
    )
    for p in plain:  # the plain model: no guarantee, drawn as a line across each panel
        for col, value in ((1, p.test_accuracy), (2, p.attack.advantage)):
            fig.add_hline(
                y=value,
                line={"color": "gray", "dash": "dot"},
                annotation_text=f"no DP: {value:.2f}",
                row=1,
                col=col,
            )
    ticks = (0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000)
    fig.update_xaxes(
        type="log",
        tickvals=ticks,
        ticktext=[f"{t:g}" for t in ticks],
        title_text="epsilon (log scale; smaller is more private)",
    )
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(**layout(380), title="Privacy against utility")
    return fig
