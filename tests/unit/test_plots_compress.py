"""Lesson 12 figures: one labelled point per measured variant, sized by bytes; failures out."""

import math

import plotly.graph_objects as go
import pytest

from maaslab import plots
from maaslab.compress import Comparison, VariantRow
from maaslab.plots.compress import MAX_MARKER, MIN_MARKER


def comparison() -> Comparison:
    rows = [
        VariantRow("fp32", "reference", 0.95, 0.0, 10.0, 40.0, 1.0, 1.0, 4.0, 0.0, 0.1),
        VariantRow("int8-dynamic", "int8", 0.94, 1.0, 5.0, 10.0, 2.0, 4.0, 1.0, 0.05, 0.2),
        VariantRow("onnx-fp32", "onnx", 0.95, 0.0, 0.1, 2.0, 100.0, 20.0, 4.1, 0.0, 5.0),
        VariantRow("onnx-int8", "broken", error="ONNX export failed: no"),
    ]
    return Comparison("digits-cnn", rows, repeats=3, examples=100, shap_inputs=1, threads=1)


def test_scatter_has_one_labelled_point_per_measured_variant():
    fig = plots.variant_scatter(comparison())
    assert isinstance(fig, go.Figure)
    points = [t for t in fig.data if t.type == "scatter"]
    assert [t.name for t in points] == ["fp32", "int8-dynamic", "onnx-fp32"]  # failed row out
    assert [t.text[0] for t in points] == ["fp32", "int8-dynamic", "onnx-fp32"]
    assert [t.x[0] for t in points] == [10.0, 5.0, 0.1]
    assert [t.y[0] for t in points] == pytest.approx([95.0, 94.0, 95.0])


def test_marker_area_follows_size_on_disk():
    sizes = {t.name: t.marker.size for t in plots.variant_scatter(comparison()).data}
    assert sizes["onnx-fp32"] == MAX_MARKER  # the largest file
    # area proportional to bytes: a 4x smaller file gets half the diameter (floored)
    assert sizes["fp32"] == pytest.approx(MAX_MARKER * math.sqrt(4.0 / 4.1))
    assert sizes["int8-dynamic"] == pytest.approx(max(MIN_MARKER, MAX_MARKER * math.sqrt(1 / 4.1)))


def test_goal_lines_and_log_axis_for_wide_latency_spread():
    fig = plots.variant_scatter(comparison(), goal=2.0)
    assert fig.layout.xaxis.type == "log"  # 0.1 ms to 10 ms
    xs = [s.x0 for s in fig.layout.shapes if s.x0 is not None and s.x0 == s.x1]
    assert xs == [pytest.approx(5.0)]  # fp32's 10 ms / 2
    ys = [s.y0 for s in fig.layout.shapes if s.y0 is not None and s.y0 == s.y1]
    assert ys == [pytest.approx(94.0)]  # 1 point below fp32's 95 %
    narrow = comparison()
    narrow.rows = narrow.rows[:2]
    assert plots.variant_scatter(narrow).layout.xaxis.type == "linear"


def test_speedup_bars_two_batches_and_goal():
    fig = plots.speedup_bars(comparison(), goal=2.0)
    assert [t.name for t in fig.data] == ["batch 1", "batch 32"]
    assert list(fig.data[0].x) == ["fp32", "int8-dynamic", "onnx-fp32"]
    assert list(fig.data[0].y) == [1.0, 2.0, 100.0]
    assert list(fig.data[1].text) == ["1.00x", "4.00x", "20.00x"]
    assert [s.y0 for s in fig.layout.shapes] == [2.0]


def test_a_comparison_where_everything_failed_still_draws():
    failed = Comparison("digits-cnn", [VariantRow("fp32", "x", error="boom")], 3, 100, 1, 1)
    assert len(plots.variant_scatter(failed).data) == 0
    assert len(plots.speedup_bars(failed).data) == 2
