"""Figures for sentence embeddings and text classifiers built on them.

A cosine-similarity matrix between a few sentences, a 2-D projection of many embeddings coloured
by label, and accuracy per phenomenon (negation, sarcasm, …) for several models side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from maaslab.plots._style import CLASS_COLORS, SERIES_COLORS, layout


def _array(values: object, ndim: int, what: str) -> np.ndarray:
    # Tensors and nested lists -> float array of the expected rank.
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, float)
    if arr.ndim != ndim:
        raise ValueError(f"expected {what} with {ndim} dimensions, got shape {arr.shape}")
    return arr


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def similarity_matrix(
    similarities: object, texts: Sequence[str], title: str = "Cosine similarity"
) -> go.Figure:
    """Pairwise cosine similarities of a few texts as a heatmap (-1 red, 0 white, 1 blue).

    Parameters
    ----------
    similarities: (N, N) array or tensor, e.g. E @ E.T for unit-length embeddings E.
    texts: the N texts, shortened for the axis labels (in full on hover).
    title: figure title.
    """
    s = _array(similarities, 2, "similarities")
    if s.shape[0] != s.shape[1] or s.shape[0] != len(texts):
        raise ValueError(f"{len(texts)} texts for a similarity matrix of shape {s.shape}")
    idx = list(range(len(texts)))
    labels = [_short(t, 28) for t in texts]
    fig = go.Figure(
        go.Heatmap(
            z=s,
            x=idx,
            y=idx,
            zmin=-1.0,
            zmax=1.0,
            colorscale="RdBu",
            text=np.round(s, 2),
            texttemplate="%{text}",
            customdata=np.array([[(a, b) for b in texts] for a in texts], dtype=object),
            hovertemplate="%{customdata[0]}<br>vs %{customdata[1]}<br>cosine %{z:.3f}"
            "<extra></extra>",
            colorbar={"title": "cosine"},
        )
    )
    ticks = {"tickmode": "array", "tickvals": idx, "ticktext": labels}
    fig.update_xaxes(ticks, tickangle=-35)
    fig.update_yaxes(ticks, autorange="reversed")  # the first text on top, as in a table
    fig.update_layout(**layout(height=300 + 30 * len(texts)), title=title)
    return fig


def _project_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) coordinates on the two principal components, and the variance share of each."""
    x = embeddings - embeddings.mean(0)
    # SVD of the centred data: the right singular vectors are the principal directions.
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-12)
    return x @ vt[:2].T, share[:2]


def embedding_scatter(
    embeddings: object,
    labels: Sequence[int],
    class_names: Sequence[str],
    texts: Sequence[str] | None = None,
    title: str = "Embeddings, first two principal components",
) -> go.Figure:
    """Embeddings projected to 2-D (PCA), one colour per class; hover shows the text.

    Parameters
    ----------
    embeddings: (N, C) array or tensor.
    labels: (N,) integer class of each row, an index into `class_names`.
    class_names: name of each class, for the legend.
    texts: the N texts, shown on hover (row numbers when None).
    title: figure title.
    """
    e = _array(embeddings, 2, "embeddings")
    y = np.asarray(labels, dtype=int)
    if len(y) != len(e) or (texts is not None and len(texts) != len(e)):
        n_texts = len(texts) if texts is not None else len(e)
        raise ValueError(f"{len(e)} embeddings, {len(y)} labels and {n_texts} texts must agree")
    if len(e) < 2:
        raise ValueError("a projection needs at least 2 embeddings")
    xy, share = _project_2d(e)
    hover = [_short(t, 90) for t in texts] if texts is not None else [str(i) for i in range(len(e))]
    fig = go.Figure()
    for c, name in enumerate(class_names):
        keep = np.flatnonzero(y == c)
        fig.add_trace(
            go.Scatter(
                x=xy[keep, 0],
                y=xy[keep, 1],
                mode="markers",
                name=str(name),
                marker={"color": CLASS_COLORS[c % len(CLASS_COLORS)], "size": 7, "opacity": 0.75},
                text=[hover[i] for i in keep],
                hovertemplate="%{text}<extra>" + str(name) + "</extra>",
            )
        )
    fig.update_layout(**layout(height=440), title=title)
    fig.update_xaxes(title=f"PC 1 ({share[0]:.0%} of variance)")
    fig.update_yaxes(title=f"PC 2 ({share[1]:.0%} of variance)")
    return fig


def phenomenon_accuracy_bars(
    results: Mapping[str, Mapping[str, float]], title: str = "Test accuracy per phenomenon"
) -> go.Figure:
    """Grouped bars: one group per phenomenon (and "overall"), one bar per model.

    Parameters
    ----------
    results: model name -> {phenomenon: accuracy in [0, 1]}; groups appear in the order their
        names first appear, and a phenomenon a model lacks is left empty.
    title: figure title.
    """
    if not results:
        raise ValueError("give at least one model's accuracies")
    groups = list(dict.fromkeys(k for scores in results.values() for k in scores))
    fig = go.Figure()
    for i, (model, scores) in enumerate(results.items()):
        values = [scores.get(g) for g in groups]
        fig.add_trace(
            go.Bar(
                x=groups,
                y=values,
                name=model,
                marker_color=SERIES_COLORS[i % len(SERIES_COLORS)],
                text=[f"{v:.2f}" if v is not None else "" for v in values],
                textposition="outside",
                hovertemplate=model + "<br>%{x}: %{y:.3f}<extra></extra>",
            )
        )
    fig.update_layout(**layout(height=400), title=title, barmode="group")
    fig.update_yaxes(title="accuracy", range=[0, 1.08])
    return fig
