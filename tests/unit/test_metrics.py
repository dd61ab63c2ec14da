"""maaslab.metrics against scikit-learn (precision_recall_fscore_support, f1_score,
calibration_curve), and the expected calibration error against a computation written apart and
on cases whose answer is known."""

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import f1_score, precision_recall_fscore_support

from maaslab import MaaslabError
from maaslab import metrics as m


def _labels(rng, n, c, skip=()):
    """n labels among c classes, leaving out the classes in `skip`."""
    allowed = [k for k in range(c) if k not in skip]
    return rng.choice(allowed, size=n)


@pytest.mark.parametrize("zero_division", [0.0, 1.0, math.nan], ids=["0", "1", "nan"])
@pytest.mark.parametrize("seed", range(6))
def test_precision_recall_f1_equal_sklearns(seed, zero_division):
    rng = np.random.default_rng(seed)
    c, n = int(rng.integers(2, 11)), int(rng.integers(5, 300))
    # Some seeds leave a class unpredicted or without examples: the undefined cases.
    y = _labels(rng, n, c, skip=(c - 1,) if seed % 2 else ())
    y_hat = np.where(
        rng.uniform(size=n) < 0.6, y, _labels(rng, n, c, skip=(0,) if seed % 3 else ())
    )
    report = m.precision_recall_f1(y, y_hat, c, zero_division=zero_division)
    labels = list(range(c))
    p, r, f, s = precision_recall_fscore_support(
        y, y_hat, labels=labels, zero_division=zero_division
    )
    np.testing.assert_allclose(report.precision, p)
    np.testing.assert_allclose(report.recall, r)
    np.testing.assert_allclose(report.f1, f)
    np.testing.assert_array_equal(report.support, s)
    macro = precision_recall_fscore_support(
        y, y_hat, labels=labels, average="macro", zero_division=zero_division
    )
    assert report.macro_precision == pytest.approx(macro[0])
    assert report.macro_recall == pytest.approx(macro[1])
    assert report.macro_f1 == pytest.approx(macro[2])
    assert report.macro_f1 == pytest.approx(
        f1_score(y, y_hat, labels=labels, average="macro", zero_division=zero_division)
    )
    assert report.accuracy == pytest.approx(np.mean(y == y_hat))


def test_a_class_never_predicted_gets_zero_division_and_is_named():
    y = np.array([0, 0, 1, 1, 2])
    y_hat = np.array([0, 0, 0, 1, 1])  # class 2 is never predicted; class 3 has no example
    report = m.precision_recall_f1(y, y_hat, n_classes=4)
    assert report.never_predicted == [2, 3] and report.without_examples == [3]
    assert report.precision[2] == 0.0 and report.f1[3] == 0.0  # the default, sklearn's value
    assert m.precision_recall_f1(y, y_hat, 4, zero_division=1.0).precision[2] == 1.0
    as_nan = m.precision_recall_f1(y, y_hat, 4, zero_division=math.nan)
    assert np.isnan(as_nan.precision[2]) and not np.isnan(as_nan.f1[2])  # 2TP/(2TP+FN) = 0
    assert as_nan.f1[2] == 0.0
    # NaN entries are left out of the macro means: F1 over classes 0, 1, 2 only.
    assert as_nan.macro_f1 == pytest.approx((0.8 + 0.5 + 0.0) / 3)


def test_report_frame_has_a_row_per_class_and_the_macro_row():
    report = m.precision_recall_f1([0, 1, 1, 2], [0, 1, 2, 2])
    frame = m.report_frame(report, ["cat", "dog", "owl"])
    assert list(frame.index) == ["cat", "dog", "owl", "macro average"]
    assert frame.loc["dog", "recall"] == 0.5 and frame.loc["owl", "precision"] == 0.5
    assert frame.loc["macro average", "F1"] == pytest.approx(report.macro_f1)
    assert frame["examples"].tolist() == [1, 2, 1, 4]
    with pytest.raises(MaaslabError, match="2 class names for 3 classes"):
        m.report_frame(report, ["cat", "dog"])


@pytest.mark.parametrize(
    ("y", "y_hat", "kwargs", "message"),
    [
        ([0, 1, 1], [0, 1], {}, "3 labels but 2 predictions"),
        ([], [], {}, "non-empty"),
        ([0, -1], [0, 1], {}, "class indices"),
        ([0.5, 1], [0, 1], {}, "class indices"),
        ([0, 3], [0, 1], {"n_classes": 3}, "class index 3 found, but n_classes is 3"),
        ([0, 1], [0, 1], {"zero_division": "warn"}, "zero_division must be"),
        ([0, 1], [0, 1], {"zero_division": 0.5}, "zero_division must be"),
    ],
)
def test_bad_labels_are_refused_with_a_message(y, y_hat, kwargs, message):
    with pytest.raises(MaaslabError, match=message):
        m.precision_recall_f1(y, y_hat, **kwargs)


# --- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bins", [2, 5, 10, 15])
@pytest.mark.parametrize("seed", range(4))
def test_reliability_bins_equal_sklearns_calibration_curve(seed, n_bins):
    rng = np.random.default_rng(seed)
    prob = rng.uniform(size=400) ** 2
    prob[:40] = np.round(prob[:40] * n_bins) / n_bins  # values exactly on bin edges, 0 and 1
    outcome = rng.uniform(size=400) < prob * 0.8 + 0.1
    cal = m.reliability(prob, outcome, n_bins)
    prob_true, prob_pred = calibration_curve(
        outcome, prob, n_bins=n_bins, strategy="uniform", pos_label=True
    )
    filled = cal.count > 0
    np.testing.assert_allclose(cal.accuracy[filled], prob_true)
    np.testing.assert_allclose(cal.confidence[filled], prob_pred)
    assert cal.count.sum() == 400 and np.all(np.isnan(cal.accuracy[~filled]))
    np.testing.assert_allclose(cal.edges, np.linspace(0, 1, n_bins + 1))


def _ece_by_hand(confidence, correct, n_bins):
    """ECE written apart: each value's bin by ceil(p * B) (right-closed, 0 in the first bin),
    sums kept per bin in a loop."""
    total, right, sure = [0] * n_bins, [0.0] * n_bins, [0.0] * n_bins
    for p, hit in zip(confidence, correct, strict=True):
        b = max(math.ceil(p * n_bins) - 1, 0)
        total[b] += 1
        right[b] += float(hit)
        sure[b] += p
    n = len(confidence)
    return sum(abs(right[b] - sure[b]) / n for b in range(n_bins) if total[b])


@pytest.mark.parametrize("n_bins", [3, 10, 20])
@pytest.mark.parametrize("seed", range(3))
def test_top_label_calibration_and_ece_against_a_separate_computation(seed, n_bins):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(500, 4))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.where(rng.uniform(size=500) < 0.7, proba.argmax(axis=1), rng.integers(0, 4, 500))
    cal = m.calibration(proba, y, n_bins)
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == y
    assert cal.ece == pytest.approx(_ece_by_hand(confidence, correct, n_bins), abs=1e-12)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=n_bins, pos_label=True)
    np.testing.assert_allclose(cal.accuracy[cal.count > 0], prob_true)
    np.testing.assert_allclose(cal.confidence[cal.count > 0], prob_pred)
    # ECE is the count-weighted mean |gap| of sklearn's bins too.
    weights = cal.count[cal.count > 0] / len(y)
    assert cal.ece == pytest.approx(np.sum(weights * np.abs(prob_true - prob_pred)))


def test_ece_of_known_cases():
    # Perfectly calibrated: in each bin the share right equals the confidence given.
    conf = np.repeat([0.15, 0.35, 0.55, 0.75, 0.95], 20)
    right = np.concatenate([np.arange(20) < round(c * 20) for c in (0.15, 0.35, 0.55, 0.75, 0.95)])
    assert m.reliability(conf, right).ece == pytest.approx(0.0, abs=1e-12)
    # Always sure and always wrong: confidence 1, accuracy 0.
    y = np.array([0, 1, 2, 0, 1])
    wrong = np.eye(3)[(y + 1) % 3]
    cal = m.calibration(wrong, y)
    assert cal.ece == pytest.approx(1.0) and cal.count[-1] == 5 and cal.accuracy[-1] == 0.0
    # Always sure and always right: 0; sure at 0.9 and right half the time: 0.4.
    assert m.calibration(np.eye(3)[y], y).ece == pytest.approx(0.0)
    assert m.reliability(np.full(10, 0.9), np.arange(10) % 2).ece == pytest.approx(0.4)
    half = m.reliability(np.full(10, 0.9), np.arange(10) % 2)
    # 0.9 lies on an edge: it belongs to the bin (0.8, 0.9], as in sklearn; the last is empty.
    assert half.count[8] == 10 and half.gap[8] == pytest.approx(-0.4) and np.isnan(half.gap[9])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: m.reliability([0.2, 1.2], [0, 1]), r"probabilities in \[0, 1\]"),
        (lambda: m.reliability([0.2, np.nan], [0, 1]), r"probabilities in \[0, 1\]"),
        (lambda: m.reliability([0.2, 0.4], [0, 2]), "outcome must hold 0 or 1"),
        (lambda: m.reliability([0.2, 0.4], [0]), "one length"),
        (lambda: m.reliability([], []), "one length"),
        (lambda: m.reliability([0.2], [1], n_bins=1), "between 2 and 50, got 1"),
        (lambda: m.reliability([0.2], [1], n_bins=2.5), "whole number"),
        (lambda: m.calibration([[2.0, -1.0]], [0]), "not logits"),  # sums to 1, yet < 0
        (lambda: m.calibration([[2.0, 0.5]], [0]), "not logits"),
        (lambda: m.calibration([[0.5, 0.5]], [2]), "label 2 but proba has only 2 columns"),
        (lambda: m.calibration([0.5, 0.5], [0, 1]), r"proba must be \(N, C\)"),
    ],
)
def test_bad_calibration_input_is_refused_with_a_message(call, message):
    with pytest.raises(MaaslabError, match=message):
        call()


def test_score_classifier_scores_the_argmax_and_its_confidence():
    rng = np.random.default_rng(7)
    proba = rng.dirichlet(np.ones(3), size=60)
    y = rng.integers(0, 3, 60)
    scores = m.score_classifier(proba, y, n_bins=5)
    assert scores.n == 60
    expected = precision_recall_fscore_support(y, proba.argmax(1), labels=[0, 1, 2])
    np.testing.assert_allclose(scores.report.f1, expected[2])
    assert scores.calibration.ece == m.calibration(proba, y, 5).ece
    # A class the model never predicts does not crash the scores: its precision is 0.
    never_two = proba * [1, 1, 0]
    never_two /= never_two.sum(axis=1, keepdims=True)
    scores = m.score_classifier(never_two, y)
    assert scores.report.never_predicted == [2] and scores.report.precision[2] == 0.0


def test_the_undefined_note_names_the_classes_and_the_value_given():
    report = m.precision_recall_f1([0, 0, 1, 1, 2], [0, 0, 0, 1, 1], n_classes=4)
    note = m.undefined_note(report, ["cat", "dog", "owl", "emu"])
    assert note == (
        "Never predicted: owl, emu, so their precision is undefined (0 of 0 right). "
        "No example of emu, so its recall is undefined. "
        "Undefined values are shown as 0 (sklearn's zero_division)."
    )
    as_nan = m.precision_recall_f1([0, 0, 1, 1, 2], [0, 0, 0, 1, 1], 3, zero_division=math.nan)
    assert m.undefined_note(as_nan) == (
        "Never predicted: 2, so its precision is undefined (0 of 0 right). "
        "Undefined values are shown as NaN, left out of the macro means (sklearn's zero_division)."
    )
    assert m.undefined_note(m.precision_recall_f1([0, 1], [1, 0])) is None  # all wrong, defined
