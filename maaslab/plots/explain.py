"""Figures of explanations: bars for table rows, maps over digits, coloured words for text,
waterfalls, deletion/insertion curves, and a global summary over many rows.

Positive values (pushing the probability of the explained class up) are orange, negative ones
blue, everywhere, so SHAP and LIME read alike side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from maaslab.explain.core import Attribution
from maaslab.explain.quality import Faithfulness
from maaslab.plots._style import SERIES_COLORS, layout

UP, DOWN = "#f97316", "#2563eb"  # pushes the explained class up / down
DIVERGING = [[0.0, DOWN], [0.5, "#ffffff"], [1.0, UP]]


def _title(attr: Attribution, what: str = "") -> str:
    label = {
        "kernel_shap": "KernelSHAP",
        "permutation_shap": "Permutation SHAP",
        "partition_shap": "Partition SHAP",
        "deep_shap": "DeepSHAP",
        "gradient_shap": "GradientSHAP",
        "lime": "LIME",
    }.get(attr.method, attr.method)
    return (
        f"{label}{what}: why {attr.target_name} (p = {attr.prediction:.2f}) · "
        f"{attr.evaluations:,} evaluations, {attr.seconds:.2f} s"
    )


def attribution_bars(attr: Attribution, top: int = 12) -> go.Figure:
    """The `top` features with the largest |value|, as horizontal bars (largest at the top)."""
    order = np.argsort(-np.abs(attr.values), kind="stable")[:top][::-1]
    values = attr.values[order]
    names = [attr.features[i] for i in order]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=[UP if v > 0 else DOWN for v in values],
            hovertemplate="%{y}: %{x:+.4f}<extra></extra>",
        )
    )
    fig.update_layout(**layout(height=120 + 24 * len(names)), title=_title(attr))
    fig.update_xaxes(title_text=f"change in P({attr.target_name})", zeroline=True)
    fig.update_yaxes(type="category")
    return fig


def waterfall(attr: Attribution, top: int = 10) -> go.Figure:
    """From the base value to the prediction, one step per feature (the rest grouped)."""
    order = np.argsort(-np.abs(attr.values), kind="stable")
    shown, rest = order[:top], order[top:]
    labels = [attr.features[i] for i in shown] + (
        [f"{len(rest)} other features"] if len(rest) else []
    )
    steps = list(attr.values[shown]) + ([float(attr.values[rest].sum())] if len(rest) else [])
    end = attr.base_value + sum(steps)
    fig = go.Figure(
        go.Waterfall(
            orientation="h",
            measure=["absolute", *["relative"] * len(steps), "total"],
            y=["base value", *labels, "explanation's total"],
            x=[attr.base_value, *steps, end],
            increasing={"marker": {"color": UP}},
            decreasing={"marker": {"color": DOWN}},
            totals={"marker": {"color": "#64748b"}},
            connector={"line": {"color": "#cbd5e1"}},
        )
    )
    fig.update_layout(
        **layout(height=160 + 26 * (len(steps) + 2)), title=_title(attr, " waterfall")
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text=f"P({attr.target_name}); model says {attr.prediction:.3f}")
    return fig


def image_attribution(attr: Attribution, image: np.ndarray | None = None) -> go.Figure:
    """Pixel attributions as a diverging heatmap, with the digit's strokes outlined on top."""
    h, w = attr.shape or (8, 8)
    values = attr.values.reshape(h, w)
    limit = float(np.abs(values).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values,
            zmin=-limit,
            zmax=limit,
            colorscale=DIVERGING,
            colorbar={"title": "value"},
            hovertemplate="row %{y}, col %{x}: %{z:+.4f}<extra></extra>",
        )
    )
    if image is not None:
        fig.add_trace(
            go.Contour(
                z=np.asarray(image, dtype=float).reshape(h, w),
                showscale=False,
                contours={"coloring": "none", "start": 0.5, "end": 0.5, "size": 1},
                line={"color": "#111827", "width": 1.5},
                hoverinfo="skip",
            )
        )
    fig.update_layout(**layout(height=380), title=_title(attr))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return fig


def token_attribution(attr: Attribution, per_line: int = 10) -> go.Figure:
    """The words of a text in reading order, each coloured by its value."""
    n = len(attr.values)
    rows = (n + per_line - 1) // per_line
    z = np.full((rows, per_line), np.nan)
    text = np.full((rows, per_line), "", dtype=object)
    for i, (word, value) in enumerate(zip(attr.features, attr.values, strict=True)):
        z[i // per_line, i % per_line] = value
        text[i // per_line, i % per_line] = word
    limit = float(np.nanmax(np.abs(z))) if n else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=text,
            texttemplate="%{text}",
            zmin=-limit,
            zmax=limit or 1.0,
            colorscale=DIVERGING,
            xgap=3,
            ygap=3,
            colorbar={"title": "value"},
            hovertemplate="%{text}: %{z:+.4f}<extra></extra>",
        )
    )
    fig.update_layout(**layout(height=110 + 48 * rows), title=_title(attr))
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    return fig


def attribution_figure(attr: Attribution, x: object = None) -> go.Figure:
    """The figure that suits the input kind: bars (table), heatmap (image), words (text)."""
    if attr.kind == "image":
        return image_attribution(attr, x)
    if attr.kind == "text":
        return token_attribution(attr)
    return attribution_bars(attr)


def deletion_curves(results: Mapping[str, Faithfulness], insertion: bool = False) -> go.Figure:
    """Probability of the explained class as the top-ranked features are removed (or added)."""
    fig = go.Figure()
    random_drawn = False
    for k, (name, f) in enumerate(results.items()):
        curve, rand = (
            (f.insertion, f.random_insertion) if insertion else (f.deletion, f.random_deletion)
        )
        fig.add_scatter(
            x=curve.fractions,
            y=curve.scores,
            mode="lines+markers",
            name=f"{name} (AUC {curve.auc:.3f})",
            line={"color": SERIES_COLORS[k % len(SERIES_COLORS)]},
        )
        if not random_drawn:
            fig.add_scatter(
                x=rand.fractions,
                y=rand.scores,
                mode="lines",
                name=f"random order (AUC {rand.auc:.3f})",
                line={"color": "#94a3b8", "dash": "dash"},
            )
            random_drawn = True
    what = (
        "Insertion: most important added first"
        if insertion
        else "Deletion: most important removed first"
    )
    fig.update_layout(
        **layout(height=360),
        title=f"{what} (lower AUC is better)"
        if not insertion
        else f"{what} (higher AUC is better)",
    )
    fig.update_xaxes(
        title_text="share of features " + ("added" if insertion else "removed"), range=[0, 1]
    )
    fig.update_yaxes(title_text="probability of the explained class", range=[0, 1.02])
    return fig


def summary_dots(
    values: np.ndarray,
    X: np.ndarray,
    feature_names: Sequence[str],
    top: int = 12,
    title: str = "SHAP values over many rows",
) -> go.Figure:
    """A global view (SHAP's beeswarm): one dot per row and feature, coloured by feature value."""
    values, X = np.asarray(values, dtype=float), np.asarray(X, dtype=float)
    order = np.argsort(-np.abs(values).mean(0), kind="stable")[:top][::-1]
    rng = np.random.default_rng(0)
    fig = go.Figure()
    for row, j in enumerate(order):
        spread = (X[:, j] - X[:, j].min()) / (np.ptp(X[:, j]) or 1.0)
        fig.add_scatter(
            x=values[:, j],
            y=row + rng.uniform(-0.25, 0.25, len(values)),
            mode="markers",
            marker={
                "color": spread,
                "colorscale": [[0, DOWN], [1, UP]],
                "size": 5,
                "showscale": row == len(order) - 1,
                "colorbar": {
                    "title": "feature value",
                    "tickvals": [0, 1],
                    "ticktext": ["low", "high"],
                },
            },
            name=feature_names[j],
            showlegend=False,
            hovertemplate=f"{feature_names[j]}: %{{x:+.4f}}<extra></extra>",
        )
    fig.update_layout(**layout(height=120 + 30 * len(order)), title=title)
    fig.update_yaxes(tickvals=list(range(len(order))), ticktext=[feature_names[j] for j in order])
    fig.update_xaxes(title_text="SHAP value (change in probability)", zeroline=True)
    return fig
