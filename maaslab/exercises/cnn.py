"""Lesson 06's auto-checked exercises: the output shape of a conv stack, a confusion matrix
counted by hand and an expected calibration error computed by hand. (The conv layer's parameter
count is `maaslab.exercises.pytorch`'s.)"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from maaslab.evaluation import confusion_matrix
from maaslab.exercises.grading import (
    CheckResult,
    answer_number,
    call_answer,
    check_array,
    exercise,
    failed,
    first_mistake,
    passed,
)
from maaslab.metrics import reliability


@exercise
def check_conv_output_shape(
    answer: object, layer: nn.Module, input_shape: Sequence[int]
) -> CheckResult:
    """Check the output shape of `layer` (a conv, a pooling, a stack) for an input of that shape."""
    name = f"output shape for input {tuple(input_shape)}"
    param = next(layer.parameters(), None)  # a parameter-free layer runs on the CPU
    device = param.device if param is not None else torch.device("cpu")
    with torch.no_grad():
        expected = tuple(layer(torch.zeros(*input_shape, device=device)).shape)
    try:
        got = tuple(int(d) for d in answer)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return failed(name, f"expected a tuple of ints like (1, 16, 8, 8), got {answer!r}")
    if got == expected:
        return passed(name, f"{expected}")
    if len(got) != len(expected):
        return failed(name, f"{got} has {len(got)} dimensions; the output has {len(expected)}")
    hint = "Channels become the conv's out_channels; each side becomes "
    hint += "(size + 2*padding - kernel) // stride + 1; a 2x2 max pooling halves it."
    return failed(name, f"you said {got}, the layer gives {expected}. {hint}")


@exercise
def check_confusion_matrix(answer: object, y_true: np.ndarray, y_pred: np.ndarray) -> CheckResult:
    """Check a confusion matrix computed by hand (rows true classes, columns predictions)."""
    expected = confusion_matrix(y_true, y_pred)
    got = np.asarray(answer)
    if got.shape == expected.shape and np.array_equal(got, expected.T):
        return failed(
            "confusion matrix",
            "this is the transpose: row i should be true class i, column j predicted class j.",
        )
    return check_array(
        "confusion matrix",
        answer,
        expected,
        rtol=0,
        atol=0,
        hint="Cell (i, j) counts the examples whose label is i and whose prediction is j.",
    )


# --- expected calibration error ----------------------------------------------------------------


def _ece_probes() -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(what it is, confidence, correct, n_bins): a seeded model (under-, then overconfident),
    known cases, and confidences on bin edges (they belong to the lower bin)."""
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 300)
    correct = rng.uniform(size=300) < 0.3 + 0.6 * confidence  # under-, then overconfident
    perfect = np.repeat([0.25, 0.75], 8)
    # 2 of 8 right at confidence 0.25, 6 of 8 at 0.75
    perfect_right = np.array([1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    edges = np.array([0.2, 0.2, 0.4, 0.4, 0.4, 1.0, 1.0, 0.0])
    edge_right = np.array([0, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    return [
        ("a seeded model, 10 bins", confidence, correct, 10),
        ("the same model, 4 bins", confidence, correct, 4),
        ("a perfectly calibrated model (ECE 0)", perfect, perfect_right, 10),
        ("a model always sure and always wrong (ECE 1)", np.ones(8), np.zeros(8, bool), 10),
        ("confidences on bin edges, 5 bins", edges, edge_right, 5),
    ]


def _ece_mistakes(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> list:
    cal = reliability(confidence, correct, n_bins)
    filled = cal.count > 0
    gap = (cal.accuracy - cal.confidence)[filled]
    weight = cal.count[filled] / len(confidence)
    # np.histogram's bins hold their left edge ([a, b)); the lesson's hold their right edge.
    left = np.minimum(np.floor(confidence * n_bins).astype(int), n_bins - 1)
    left_ece = sum(
        (left == b).mean() * abs(correct[left == b].mean() - confidence[left == b].mean())
        for b in np.unique(left)
    )
    return [
        (
            np.sum(weight * gap),
            "the gaps need their absolute value: over- and underconfident "
            "bins cancel out (signed, they add up to overall accuracy minus overall confidence)",
        ),
        (
            np.mean(np.abs(gap)),
            "each bin must count by its share of the examples (n_b / N), "
            "not equally: a bin of 2 examples would weigh as much as one of 400",
        ),
        (
            np.sum(np.abs(gap)) / n_bins,
            "empty bins count with weight 0, and the others by their "
            "share of the examples (n_b / N), not 1 / n_bins",
        ),
        (
            abs(correct.mean() - confidence.mean()),
            "this is the gap of all examples in one bin: "
            "take |accuracy - confidence| inside each bin, then weight it by n_b / N",
        ),
        (
            left_ece,
            "a confidence on an edge belongs to the lower bin, (a, b], as in scikit-learn's "
            "calibration_curve: np.searchsorted(edges[1:-1], confidence), not floor(p * n_bins)",
        ),
    ]


@exercise
def check_ece(fn: Callable) -> CheckResult:
    """Check `fn(confidence, correct, n_bins) -> float`, an expected calibration error by hand,
    against `maaslab.metrics.reliability` on seeded probes and known cases."""
    name = "expected calibration error"
    for what, confidence, correct, n_bins in _ece_probes():
        got, bad = call_answer(name, fn, confidence, correct, n_bins)
        if bad is not None:  # a CheckResult is falsy when it fails
            return bad
        value, bad = answer_number(name, got, what)
        if bad is not None:
            return bad
        expected = reliability(confidence, correct, n_bins).ece
        if np.isnan(value):
            return failed(
                name,
                f"NaN on {what}: an empty bin has no accuracy; leave it out (its weight is 0)",
            )
        if abs(value - expected) > 1e-9:
            why = first_mistake(value, _ece_mistakes(confidence, correct, n_bins), rtol=1e-9)
            hint = why or "sum over bins of (examples in the bin / N) * |accuracy - confidence|"
            return failed(name, f"on {what} you got {value:.4f}, expected {expected:.4f}: {hint}")
    return passed(name, "equal to maaslab.metrics.reliability on every probe, edges included")
