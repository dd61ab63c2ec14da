"""Lesson 06's auto-checked exercises: the output shape of a conv stack and a confusion matrix
counted by hand. (The conv layer's parameter count is `maaslab.exercises.pytorch`'s.)"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from maaslab.evaluation import confusion_matrix
from maaslab.exercises.grading import CheckResult, check_array, exercise, failed, passed


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
