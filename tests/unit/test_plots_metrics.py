import numpy as np
import pytest

from maaslab import metrics, plots


def test_class_metric_bars_draw_each_metric_per_class_and_the_macro_f1():
    report = metrics.precision_recall_f1([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0])
    fig = plots.class_metric_bars(report, ["a", "b", "c"])
    bars, macro = fig.data[:3], fig.data[3]
    assert [t.name for t in bars] == ["precision", "recall", "F1"]
    for trace, values in zip(bars, (report.precision, report.recall, report.f1), strict=True):
        assert list(trace.x) == ["a", "b", "c"]
        np.testing.assert_allclose(trace.y, values)
    np.testing.assert_allclose(macro.y, [report.macro_f1] * 3)
    assert macro.name == f"macro F1 {report.macro_f1:.3f}"
    assert fig.layout.yaxis.range[0] == pytest.approx(0.4)  # the lowest score 0.5, less 0.1
    good = metrics.precision_recall_f1([0, 0, 1, 1], [0, 0, 1, 1])  # all 1: the axis from 0.9
    assert plots.class_metric_bars(good).layout.yaxis.range[0] == pytest.approx(0.9)
    assert f"macro F1 {report.macro_f1:.3f}" in fig.layout.title.text
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        plots.class_metric_bars(report, ["a", "b"])


def test_reliability_diagram_draws_filled_bins_the_gaps_and_the_counts():
    conf = np.array([0.05, 0.55, 0.58, 0.95, 0.97, 0.99])
    right = np.array([0, 1, 0, 1, 1, 0])
    cal = metrics.reliability(conf, right, n_bins=5)
    fig = plots.reliability_diagram(cal)
    accuracy, gap, diagonal, counts = fig.data
    np.testing.assert_allclose(accuracy.x, [0.1, 0.5, 0.9])  # the empty bins are not drawn
    np.testing.assert_allclose(accuracy.y, [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(np.asarray(gap.base, dtype=float) + gap.y, [0.05, 0.565, 0.97])
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    assert list(counts.y) == [1, 0, 2, 0, 3] and counts.yaxis == "y2"
    assert list(counts.text) == ["1", "", "2", "", "3"]  # empty bins are not labelled
    assert f"expected calibration error {cal.ece:.3f}" in fig.layout.title.text
