"""Figures for image classifiers: digit grids, confusion matrices, filters, feature maps, mistakes.

Small images are tiled into one heatmap (with a gap of empty pixels between tiles and a title
above each) rather than one subplot per image: a grid of 64 digits stays one trace and draws fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.evaluation import Mistake
from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout
from maaslab.train import History

TILE_PX = 64  # height in pixels of one tile (the figure's height follows from it)
TITLE_PX = 30  # room above each tile for a title of up to two lines


def _as_images(images: object) -> np.ndarray:
    # (N, H*W) flat rows, (N, H, W) or (N, 1, H, W) -> (N, H, W).
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        side = round(float(np.sqrt(arr.shape[1])))
        if side * side != arr.shape[1]:
            raise ValueError(f"rows of {arr.shape[1]} pixels are not square images")
        arr = arr.reshape(len(arr), side, side)
    if arr.ndim != 3:
        raise ValueError(f"expected images (N, H, W) or flat rows (N, H*W), got shape {arr.shape}")
    return arr


def _tiled(
    images: np.ndarray,
    titles: Sequence[str] | None,
    *,
    cols: int,
    colorscale: str,
    zrange: tuple[float, float],
    title: str,
    hover: str = "value",
) -> go.Figure:
    # One heatmap holding every image, NaN gaps between tiles, titles as annotations.
    n, h, w = images.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    unit = TILE_PX / h  # screen pixels per image pixel
    gap = max(1, round(6 / unit))  # about 6 px between columns
    head = round(TITLE_PX / unit) if titles is not None else gap
    canvas = np.full((rows * (h + head), cols * (w + gap) - gap), np.nan)
    annotations = []
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        top, left = r * (h + head) + head, c * (w + gap)
        canvas[top : top + h, left : left + w] = image
        if titles is not None:
            annotations.append(
                {
                    "x": left + (w - 1) / 2,
                    "y": top - 0.6,
                    "text": titles[k],
                    "showarrow": False,
                    "yanchor": "bottom",
                    "font": {"size": 10},
                }
            )
    fig = go.Figure(
        go.Heatmap(
            z=canvas,
            colorscale=colorscale,
            zmin=zrange[0],
            zmax=zrange[1],
            showscale=False,
            hoverongaps=False,
            hovertemplate=f"{hover} %{{z:.3f}}<extra></extra>",
        )
    )
    height = 100 + round(rows * (h + head) * unit)  # margins + tiles, so tiles come out square
    fig.update_layout(**layout(height=height), title=title, annotations=annotations)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    return fig


def digit_grid(
    images: object, titles: Sequence[str] | None = None, *, cols: int = 8, title: str = "Digits"
) -> go.Figure:
    """Small grey-scale images in a grid, each with an optional title (e.g. its label).

    Parameters
    ----------
    images : (N, 64) flat pixel rows as the digits dataset stores them, or (N, H, W) images.
    titles : one short text per image, shown above it.
    cols : images per row.
    """
    arr = _as_images(images)
    if titles is not None and len(titles) != len(arr):
        raise ValueError(f"{len(titles)} titles for {len(arr)} images")
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    return _tiled(
        arr, titles, cols=cols, colorscale="Greys", zrange=(lo, hi), title=title, hover="pixel"
    )


def confusion_matrix_heatmap(
    cm: np.ndarray, class_names: Sequence[str] | None = None, *, normalize: bool = False
) -> go.Figure:
    """Confusion matrix as a heatmap with the count (or row share) written in every cell.

    Parameters
    ----------
    cm : counts (C, C) from `maaslab.evaluation.confusion_matrix`, rows = true classes.
    class_names : axis labels (default 0..C-1).
    normalize : show each row as shares of its true class instead of counts.
    """
    cm = np.asarray(cm, dtype=float)
    names = [str(c) for c in (class_names or range(len(cm)))]
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            cm = cm / cm.sum(axis=1, keepdims=True)
    fig = go.Figure(
        go.Heatmap(
            z=cm,
            x=names,
            y=names,
            colorscale="Blues",
            texttemplate="%{z:.2f}" if normalize else "%{z:.0f}",
            hovertemplate="true %{y} · predicted %{x}: %{z}<extra></extra>",
            colorbar={"title": {"text": "share" if normalize else "count"}},
        )
    )
    fig.update_layout(**layout(height=460), title="Confusion matrix")
    fig.update_xaxes(title_text="predicted", type="category", showgrid=False, constrain="domain")
    fig.update_yaxes(
        title_text="true",
        type="category",
        autorange="reversed",
        showgrid=False,
        scaleanchor="x",
        constrain="domain",
    )
    return fig


def conv_filter_grid(
    weight: object, *, in_channel: int = 0, cols: int = 8, title: str = "Filters"
) -> go.Figure:
    """The kernels of a conv layer, one heatmap each (red positive, blue negative).

    Parameters
    ----------
    weight : the layer's weight (out_channels, in_channels, k, k), e.g. model.layers.conv1.weight.
    in_channel : which input channel's slice of each kernel to draw.
    cols : filters per row.
    """
    w = np.asarray(weight.detach().cpu() if hasattr(weight, "detach") else weight, dtype=float)
    if w.ndim != 4:
        raise ValueError(f"expected a conv weight (out, in, k, k), got shape {w.shape}")
    kernels = w[:, in_channel]
    # Each kernel scaled by its own largest magnitude, so weak filters still show their pattern.
    scale = np.abs(kernels).reshape(len(kernels), -1).max(axis=1)[:, None, None]
    titles = [f"filter {k}" for k in range(len(kernels))]
    kernels = kernels / np.where(scale > 0, scale, 1.0)
    return _tiled(
        kernels,
        titles,
        cols=cols,
        colorscale="RdBu_r",
        zrange=(-1.0, 1.0),
        title=title,
        hover="weight / max",
    )


def feature_map_grid(
    maps: object,
    *,
    titles: Sequence[str] | None = None,
    cols: int = 8,
    limit: int | None = None,
    title: str = "Feature maps",
) -> go.Figure:
    """The output maps of a conv layer for one input, one heatmap per channel.

    Parameters
    ----------
    maps : (C, H, W) activations, e.g. `maaslab.evaluation.feature_maps(model, x)["act1"]`.
        Maps after a ReLU are drawn from 0 to their peak; maps with negative values (a conv
        before its activation) in red and blue around 0.
    titles : one text per map (default "channel k").
    cols : maps per row.
    limit : draw only the first `limit` channels.
    """
    arr = _as_images(maps)[:limit]
    signed = bool(np.nanmin(arr) < 0)
    # Each map scaled to its own peak: the pattern matters here, not the absolute level.
    peak = np.abs(arr).reshape(len(arr), -1).max(axis=1)[:, None, None]
    arr = arr / np.where(peak > 0, peak, 1.0)
    titles = list(titles) if titles is not None else [f"channel {k}" for k in range(len(arr))]
    if len(titles) < len(arr):
        raise ValueError(f"{len(titles)} titles for {len(arr)} maps")
    return _tiled(
        arr,
        titles[: len(arr)],
        cols=cols,
        title=title,
        hover="activation / peak",
        colorscale="RdBu_r" if signed else "Viridis",
        zrange=(-1.0, 1.0) if signed else (0.0, 1.0),
    )


def misclassified_grid(
    X: np.ndarray,
    mistakes: Sequence[Mistake],
    class_names: Sequence[str] | None = None,
    *,
    cols: int = 8,
    title: str = "Most confident mistakes",
) -> go.Figure:
    """The misclassified images, each titled "true → predicted (confidence)".

    Parameters
    ----------
    X : the evaluated inputs (rows of pixels); mistakes index into it.
    mistakes : from `maaslab.evaluation.misclassified`, most confident first.
    class_names : label texts (default the class numbers).
    """
    if not mistakes:
        return _empty(title, "no misclassified examples")
    name = (lambda k: str(class_names[k])) if class_names else str
    titles = [f"{name(m.true)} → {name(m.predicted)}<br>({m.confidence:.2f})" for m in mistakes]
    return digit_grid(np.asarray(X)[[m.index for m in mistakes]], titles, cols=cols, title=title)


def probability_bars(
    proba: np.ndarray, class_names: Sequence[str] | None = None, *, true_label: int | None = None
) -> go.Figure:
    """The predicted probability of every class for one input; the true class in another colour.

    Parameters
    ----------
    proba : (C,) probabilities of one example, a row of `predict_proba`.
    class_names : bar labels (default 0..C-1).
    true_label : the example's label, highlighted when given.
    """
    proba = np.asarray(proba, dtype=float).ravel()
    names = [str(c) for c in (class_names or range(len(proba)))]
    colors = [TEST_COLOR if k == true_label else TRAIN_COLOR for k in range(len(proba))]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=proba,
            marker_color=colors,
            texttemplate="%{y:.2f}",
            textposition="outside",
            hovertemplate="class %{x}: %{y:.4f}<extra></extra>",
        )
    )
    label = f" (true class {names[true_label]} in orange)" if true_label is not None else ""
    fig.update_layout(**layout(height=320), title=f"Predicted probabilities{label}")
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="probability", range=[0, 1.12])
    return fig


def run_comparison(histories: Mapping[str, History]) -> go.Figure:
    """Loss and accuracy of several runs: one colour per run, solid train, dashed validation.

    Parameters
    ----------
    histories : run name -> History, e.g. from `maaslab.evaluation.regularization_experiment`.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for i, (name, history) in enumerate(histories.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        for col, metric in ((1, "loss"), (2, "accuracy")):
            for split, dash in (("train", "solid"), ("val", "dash")):
                values = history.column(f"{split}_{metric}")
                fig.add_scatter(
                    x=history.column("epoch"),
                    y=[v if v is not None and np.isfinite(v) else None for v in values],
                    name=f"{name} · {'validation' if split == 'val' else split}",
                    legendgroup=name,
                    showlegend=col == 1,
                    mode="lines",
                    line={"color": color, "dash": dash},
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="loss", type="log", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)
    fig.update_layout(**layout(height=420))
    return fig


def _empty(title: str, text: str) -> go.Figure:
    # A figure that says why it is empty instead of showing blank axes.
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**layout(height=200), title=title)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def digit_canvas(pixels: object, *, title: str = "Click cells to draw") -> go.Figure:
    """One 8x8 digit (64 pixels, 0-16) as a large heatmap that can be clicked cell by cell.

    A heatmap cannot be selected, so an invisible marker sits on every cell; a page reads the
    clicked marker's `customdata` (the pixel index 0-63, row by row).
    """
    image = np.asarray(pixels, dtype=float).reshape(8, 8)
    rows, cols = np.divmod(np.arange(64), 8)
    fig = go.Figure(
        go.Heatmap(
            z=image,
            colorscale="Greys",
            zmin=0,
            zmax=16,
            showscale=False,
            hoverinfo="skip",
            xgap=1,
            ygap=1,
        )  # the gaps draw the cell grid
    )
    fig.add_scatter(
        x=cols,
        y=rows,
        customdata=np.arange(64),
        mode="markers",
        showlegend=False,
        marker={"size": 30, "opacity": 0, "symbol": "square"},
        hovertemplate="row %{y}, column %{x}<extra></extra>",
    )
    fig.update_layout(**layout(height=340), title=title, dragmode=False, plot_bgcolor="#cbd5e1")
    fig.update_xaxes(visible=False, range=[-0.5, 7.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[7.5, -0.5], scaleanchor="x", constrain="domain")
    return fig
