"""Explanation figures: each draws what the Attribution holds, in the shared colours."""

import numpy as np
import pytest

from maaslab import plots
from maaslab.explain import Attribution
from maaslab.explain.quality import Curve, Faithfulness


def _attr(kind, values, features, shape=()):
    return Attribution(
        np.asarray(values, float),
        0.2,
        0.9,
        1,
        "positive",
        "kernel_shap",
        tuple(features),
        kind,
        100,
        0.5,
        0,
        shape,
    )


def test_bars_show_the_largest_values_first_with_signs_as_colours():
    attr = _attr("tabular", [0.1, -0.4, 0.05, 0.3], ["a", "b", "c", "d"])
    fig = plots.attribution_bars(attr, top=3)
    bar = fig.data[0]
    assert list(bar.y) == ["a", "d", "b"]  # |value| order, largest drawn at the top
    assert list(bar.x) == [0.1, 0.3, -0.4] and bar.marker.color[-1] == plots.explain.DOWN
    assert "KernelSHAP" in fig.layout.title.text and "p = 0.90" in fig.layout.title.text


def test_waterfall_runs_from_base_value_to_the_explanations_total():
    attr = _attr("tabular", [0.1, -0.4, 0.05, 0.3], ["a", "b", "c", "d"])
    fig = plots.waterfall(attr, top=2)
    w = fig.data[0]
    assert list(w.measure) == ["absolute", "relative", "relative", "relative", "total"]
    assert w.x[0] == 0.2 and w.x[-1] == pytest.approx(0.2 + 0.05)
    assert w.y[3] == "2 other features" and w.x[3] == pytest.approx(0.15)


def test_image_and_tokens_keep_positions():
    img = _attr("image", np.arange(64) - 32.0, [f"p{i}" for i in range(64)], (8, 8))
    heat = plots.image_attribution(img, np.ones(64)).data[0]
    assert np.asarray(heat.z).shape == (8, 8) and heat.zmax == 32 and heat.zmin == -32
    words = _attr("text", [0.5, -0.2, 0.1], ["not", "bad", "here"])
    fig = plots.token_attribution(words, per_line=2)
    assert np.asarray(fig.data[0].text).tolist() == [["not", "bad"], ["here", ""]]
    assert plots.attribution_figure(words).data[0].type == "heatmap"


def test_deletion_curves_draw_each_method_and_one_random_line():
    c = Curve(np.array([0, 0.5, 1.0]), np.array([0.9, 0.2, 0.1]), 0.35)
    r = Curve(np.array([0, 0.5, 1.0]), np.array([0.9, 0.6, 0.1]), 0.55)
    f = Faithfulness(c, c, r, r)
    fig = plots.deletion_curves({"SHAP": f, "LIME": f})
    names = [t.name for t in fig.data]
    assert names == ["SHAP (AUC 0.350)", "random order (AUC 0.550)", "LIME (AUC 0.350)"]


def test_summary_orders_features_by_mean_absolute_value():
    values = np.array([[0.1, -1.0], [0.2, 1.0]])
    fig = plots.summary_dots(values, np.array([[1, 2], [3, 4]]), ["small", "big"])
    assert list(fig.layout.yaxis.ticktext) == ["small", "big"]  # largest at the top
