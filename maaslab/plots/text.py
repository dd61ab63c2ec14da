"""Figures for text generation: how temperature, top-k and top-p reshape the next-token
distribution, one group of bars per candidate token.

Whitespace is drawn as a visible symbol (a space as ␣, a newline as ⏎), because a character
model's most likely next token is often exactly that, and a blank tick label says nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from maaslab.plots._style import SERIES_COLORS, layout

VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥"}  # whitespace -> a symbol a tick label can show


def token_label(token: str) -> str:
    """A token as a readable tick label: whitespace becomes ␣ ⏎ ⇥, the rest stays as it is."""
    return "".join(VISIBLE.get(ch, ch) for ch in token) or "∅"


def _probs(values: object, size: int, name: str) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, float)
    if arr.shape != (size,):
        raise ValueError(f"distribution {name!r} has shape {arr.shape}, expected ({size},)")
    return arr


def sampling_bars(
    distributions: Mapping[str, object],
    tokens: Sequence[str],
    *,
    top: int = 12,
    title: str = "Next-token probabilities",
) -> go.Figure:
    """Grouped bars: the probability of the likeliest next tokens under several sampling settings.

    Parameters
    ----------
    distributions : setting name (e.g. "T=0.5, top-k=5") -> (V,) probabilities, as returned by
        `maaslab.models.gpt.next_token_probs`; the first one picks and orders the tokens shown.
    tokens : the V token strings, id order (a CharTokenizer's `chars`).
    top : how many of the likeliest tokens to show.
    title : figure title.
    """
    if not distributions:
        raise ValueError("give at least one distribution to plot")
    arrays = {name: _probs(p, len(tokens), name) for name, p in distributions.items()}
    first = next(iter(arrays.values()))
    shown = np.argsort(-first, kind="stable")[:top]
    labels = [token_label(tokens[i]) for i in shown]
    fig = go.Figure()
    for i, (name, probs) in enumerate(arrays.items()):
        fig.add_bar(
            x=labels,
            y=probs[shown],
            name=name,
            marker_color=SERIES_COLORS[i % len(SERIES_COLORS)],
            hovertemplate=f"{name}<br>token %{{x}}: %{{y:.4f}}<extra></extra>",
        )
    fig.update_layout(**layout(height=380), title=title, barmode="group")
    fig.update_xaxes(title_text="next token", type="category")
    fig.update_yaxes(title_text="probability", range=[0, 1.05])
    return fig
