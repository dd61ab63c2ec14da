"""Lesson 06's expected-calibration-error check passes right answers, names the usual slips and
says "not attempted" for the student edition's stub. (The conv-shape and confusion-matrix checks:
test_evaluation.py.)"""

import numpy as np
import pytest

from maaslab.exercises.cnn import check_ece
from maaslab.exercises.unanswered import NotAttempted


def ece_searchsorted(confidence, correct, n_bins):
    # The notebook's solution.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence)
    ece = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return ece


def ece_with(bin_of, combine):
    """An ECE written with another binning or another way of adding up the bins."""

    def ece(confidence, correct, n_bins):
        bins = bin_of(confidence, n_bins)
        rows = [
            ((bins == b).mean(), correct[bins == b].mean() - confidence[bins == b].mean())
            for b in np.unique(bins)
        ]
        return combine(rows, n_bins)

    return ece


def weighted_abs(rows, n_bins):
    return sum(w * abs(g) for w, g in rows)


def right_closed(confidence, n_bins):
    return np.maximum(np.ceil(confidence * n_bins).astype(int) - 1, 0)


def left_closed(confidence, n_bins):
    return np.minimum(np.floor(confidence * n_bins).astype(int), n_bins - 1)


def test_right_answers_pass():
    assert check_ece(ece_searchsorted).passed
    # The same bins written another way (ceil is exact on these probes' edges).
    assert check_ece(ece_with(right_closed, weighted_abs)).passed


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (ece_with(right_closed, lambda rows, n: sum(w * g for w, g in rows)), "absolute value"),
        (ece_with(right_closed, lambda rows, n: np.mean([abs(g) for _, g in rows])), "share of"),
        (ece_with(right_closed, lambda rows, n: sum(abs(g) for _, g in rows) / n), "weight 0"),
        (ece_with(left_closed, weighted_abs), "belongs to the lower bin"),
        (lambda c, r, n: abs(r.mean() - c.mean()) + 0.5, "examples in the bin / N"),
        (lambda c, r, n: float("nan"), "an empty bin has no accuracy"),
        (lambda c, r, n: "0.1", "you got 0.1000"),  # a string that float() reads is a number
        (lambda c, r, n: [0.1, 0.2], "expected one number"),
        (lambda c, r, n: c[n * 1000], "IndexError"),
    ],
)
def test_wrong_answers_fail_with_the_slip_named(answer, message):
    verdict = check_ece(answer)
    assert not verdict.passed and verdict.status == "failed"
    assert message in verdict.message, verdict.message


def test_the_stub_is_not_attempted():
    def stub(confidence, correct, n_bins):
        raise NotAttempted("my_ece")

    assert check_ece(stub).status == "not attempted"
