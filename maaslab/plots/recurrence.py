"""Figures for recurrence beside attention: accuracy as a dependency grows longer, and the gradient
that reaches each position of a sequence.

Both take plain mappings from a model's name to its numbers (as a notebook collects them), so any
set of models can share a figure; each model keeps its colour in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from maaslab.plots._style import SERIES_COLORS, layout


def _series(values: object, name: str, n: int | None = None) -> np.ndarray:
    # One model's numbers as a 1-D float array, of length n when n is given.
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, float)
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        want = f"{n} numbers" if n is not None else "a 1-D sequence of numbers"
        raise ValueError(f"{name}: expected {want}, got shape {arr.shape}")
    return arr


def accuracy_by_distance(
    distances: Sequence[int],
    accuracy: Mapping[str, Sequence[float]],
    chance: float | None = None,
    title: str = "Test accuracy as the dependency grows longer",
) -> go.Figure:
    """Test accuracy of several models against the distance between dependent tokens.

    Parameters
    ----------
    distances: the distances measured (steps between the token to recall and the read-out).
    accuracy: model name -> its test accuracy at each distance, in the order of `distances`.
    chance: the accuracy of guessing (drawn as a dotted line), e.g. 1 / number of classes.
    title: figure title.
    """
    xs = [int(d) for d in distances]
    fig = go.Figure()
    for i, (name, values) in enumerate(accuracy.items()):
        fig.add_scatter(
            x=xs,
            y=_series(values, name, len(xs)),
            name=name,
            mode="lines+markers",
            line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]},
            hovertemplate=f"{name}<br>distance %{{x}}<br>accuracy %{{y:.3f}}<extra></extra>",
        )
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    fig.update_layout(
        title=title,
        xaxis_title="distance (steps from the token to recall to the read-out)",
        yaxis_title="test accuracy",
        yaxis_range=[0, 1.05],
        xaxis_type="log",
        xaxis={"tickmode": "array", "tickvals": xs},
        **layout(),
    )
    return fig


def gradient_by_position(
    norms: Mapping[str, Sequence[float]],
    title: str = "Gradient reaching each position",
) -> go.Figure:
    """The gradient norm that reaches each input position, one line per model, on a log scale.

    Parameters
    ----------
    norms: model name -> ‖∂loss/∂e_t‖ for every position t of the same sequences (as returned by
        maaslab.models.rnn.position_gradient_norms); all of one length T.
    title: figure title.
    """
    lengths = {len(v) for v in norms.values()}
    if len(lengths) > 1:
        raise ValueError(f"every model needs the same number of positions, got {sorted(lengths)}")
    fig = go.Figure()
    for i, (name, values) in enumerate(norms.items()):
        y = _series(values, name)
        fig.add_scatter(
            x=np.arange(len(y)),
            y=y,
            name=name,
            mode="lines+markers",
            line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]},
            hovertemplate=f"{name}<br>position %{{x}}<br>‖∂loss/∂e‖ %{{y:.2e}}<extra></extra>",
        )
    fig.update_layout(
        title=title,
        xaxis_title="input position t (the answer is read after the last one)",
        yaxis_title="‖∂loss/∂e_t‖",
        yaxis_type="log",
        yaxis_exponentformat="power",
        **layout(),
    )
    return fig
