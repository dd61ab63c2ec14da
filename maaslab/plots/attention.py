"""Figures for attention: one head's weights as a heatmap, and every head of a layer side by side.

Rows are queries (the token that looks), columns are keys (the tokens it looks at), so each row
sums to 1. Axes are numeric with the tokens as tick labels: a sentence may repeat a word, and a
categorical axis would merge the repeats into one row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.plots._style import layout

COLORSCALE = "Blues"  # weights are in [0, 1]: white is 0, dark blue is all attention


def _weights(weights: object, ndim: int) -> np.ndarray:
    # Tensors and nested lists -> float array of the expected rank, square in the last two dims.
    arr = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, float)
    if arr.ndim != ndim or arr.shape[-1] != arr.shape[-2]:
        want = "(T, T)" if ndim == 2 else "(H, T, T)"
        raise ValueError(f"expected attention weights of shape {want}, got {arr.shape}")
    return arr


def _labels(tokens: Sequence[str] | None, T: int) -> list[str]:
    if tokens is None:
        return [str(t) for t in range(T)]
    if len(tokens) != T:
        raise ValueError(f"{len(tokens)} tokens for attention weights over {T} positions")
    return [str(t) for t in tokens]


def _heatmap(w: np.ndarray, labels: list[str], **kwargs: object) -> go.Heatmap:
    idx = list(range(len(labels)))
    return go.Heatmap(
        z=w,
        x=idx,
        y=idx,
        customdata=np.array([[(q, k) for k in labels] for q in labels], dtype=object),
        colorscale=COLORSCALE,
        zmin=0.0,
        zmax=1.0,
        hovertemplate="query %{customdata[0]} → key %{customdata[1]}<br>"
        "weight %{z:.3f}<extra></extra>",
        **kwargs,
    )


def _token_axes(fig: go.Figure, labels: list[str], **where: int) -> None:
    idx = list(range(len(labels)))
    ticks = {"tickmode": "array", "tickvals": idx, "ticktext": labels}
    fig.update_xaxes(ticks, tickangle=-45, **where)
    fig.update_yaxes(ticks, autorange="reversed", **where)  # the first query on top


def attention_heatmap(
    weights: object, tokens: Sequence[str] | None = None, title: str = "Attention weights"
) -> go.Figure:
    """One head's attention weights as a heatmap: query tokens down, key tokens across.

    Parameters
    ----------
    weights: (T, T) array or tensor; row t holds how much query t attends to every key.
    tokens: the T tokens, used as axis labels (positions 0..T-1 when None).
    title: figure title.
    """
    w = _weights(weights, 2)
    labels = _labels(tokens, w.shape[0])
    fig = go.Figure(_heatmap(w, labels, colorbar={"title": "weight"}))
    _token_axes(fig, labels)
    size = 260 + 22 * len(labels)
    fig.update_layout(**layout(height=size), title=title)
    fig.update_layout(xaxis_title="key (attended to)", yaxis_title="query (attending)")
    return fig


def heads_grid(
    weights: object,
    tokens: Sequence[str] | None = None,
    title: str = "Attention heads",
    cols: int = 4,
) -> go.Figure:
    """Every head of one layer side by side, on a shared 0–1 colour scale.

    Parameters
    ----------
    weights: (H, T, T) array or tensor, e.g. `weights[0]` of a (B, H, T, T) result.
    tokens: the T tokens, used as axis labels (positions 0..T-1 when None).
    title: figure title.
    cols: heads per row of the grid.
    """
    w = _weights(weights, 3)
    H, T, _ = w.shape
    labels = _labels(tokens, T)
    cols = max(1, min(cols, H))
    rows = -(-H // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"head {h}" for h in range(H)],
        horizontal_spacing=0.06,
        vertical_spacing=0.12 if rows > 1 else 0.0,
    )
    for h in range(H):
        r, c = divmod(h, cols)
        fig.add_trace(_heatmap(w[h], labels, showscale=h == 0), row=r + 1, col=c + 1)
        _token_axes(fig, labels, row=r + 1, col=c + 1)
    fig.update_layout(**layout(height=90 + rows * (120 + 14 * T)), title=title)
    return fig
