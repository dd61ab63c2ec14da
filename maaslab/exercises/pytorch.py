"""Lesson 05's auto-checked exercises: a gradient by hand against autograd, a model's parameter
count, and the overfitting gap of a training history. Lesson 06 counts a conv layer's
parameters with `check_model_param_count` too."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from maaslab.evaluation import count_parameters, overfitting_gap
from maaslab.exercises.grading import CheckResult, check_array, exercise, failed, passed
from maaslab.train import History


@exercise
def check_gradient_by_hand(
    answer: object, fn: Callable[[torch.Tensor], torch.Tensor], at: object
) -> CheckResult:
    """Check a gradient worked out by hand against autograd's gradient of `fn` at `at`."""
    x = torch.as_tensor(np.asarray(at, dtype=np.float64)).clone().requires_grad_(True)
    fn(x).backward()
    return check_array(
        "gradient by hand",
        answer,
        x.grad.numpy(),
        rtol=1e-4,
        atol=1e-6,
        hint="Differentiate term by term with the chain rule; d/dx of x**2 is 2*x.",
    )


@exercise
def check_model_param_count(answer: object, model: nn.Module) -> CheckResult:
    """Check the number of trainable parameters of `model` counted by hand."""
    name = f"parameters of the {type(model).__name__}"
    expected = count_parameters(model)
    try:
        got = int(answer)
    except (TypeError, ValueError):
        return failed(name, f"expected a whole number, got {answer!r}")
    if got == expected:
        return passed(name, f"{expected:,} parameters")
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    hint = "Each Linear(n_in, n_out) has n_in*n_out weights and n_out biases; "
    hint += "a Conv2d(c_in, c_out, k) has c_out*c_in*k*k weights and c_out biases."
    if got == expected - biases:
        hint = f"You counted the weights but not the {biases:,} biases."
    return failed(name, f"you said {got:,}, the model has {expected:,}. {hint}")


@exercise
def check_overfitting_gap(answer: object, history: History) -> CheckResult:
    """Check the train-minus-validation accuracy gap after the last epoch of `history`."""
    return check_array(
        "overfitting gap",
        answer,
        overfitting_gap(history),
        rtol=0,
        atol=1e-6,
        hint="Subtract the last epoch's validation accuracy from its train accuracy "
        "(history.last).",
    )
