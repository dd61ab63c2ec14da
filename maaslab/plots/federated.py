"""Figures of lesson 18: who holds which labels, the rounds of a federation, the clients' drift."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from maaslab.federated.fedavg import FederatedResult
from maaslab.federated.partition import Partition
from maaslab.plots._style import SERIES_COLORS, VAL_COLOR, layout


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
