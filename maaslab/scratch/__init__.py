"""A neural network in NumPy with backprop written by hand, and the tools that check it.

Lesson 04 builds it piece by piece: a linear layer, activations, two losses, the backward pass
that chains them, plain SGD (`network`); a gradient check against finite differences and a bridge
to PyTorch autograd (`gradcheck`). The classic backprop mistakes can be switched on (`bug=`, one
of BUGS) so the lesson can show each one failing, then fixed; the lesson's exercises are graded
in `maaslab.exercises.backprop_from_scratch`. Everything is re-exported here:
`from maaslab.scratch import ScratchMLP`.
"""

from maaslab.scratch.gradcheck import (
    GradCheckResult,
    bounded_relative_error,
    gradient_check,
    numerical_gradient,
    to_torch,
    torch_gradients,
)
from maaslab.scratch.network import (
    ACTIVATIONS,
    BUGS,
    LOSSES,
    FitResult,
    Params,
    ScratchConfig,
    ScratchMLP,
    accuracy,
    activation_backward,
    activation_forward,
    fit,
    init_params,
    linear_backward,
    linear_forward,
    mse_loss,
    relu_backward,
    sgd_step,
    softmax,
    softmax_cross_entropy,
)

__all__ = [
    "ACTIVATIONS",
    "BUGS",
    "LOSSES",
    "FitResult",
    "GradCheckResult",
    "Params",
    "ScratchConfig",
    "ScratchMLP",
    "accuracy",
    "activation_backward",
    "activation_forward",
    "bounded_relative_error",
    "fit",
    "gradient_check",
    "init_params",
    "linear_backward",
    "linear_forward",
    "mse_loss",
    "numerical_gradient",
    "relu_backward",
    "sgd_step",
    "softmax",
    "softmax_cross_entropy",
    "to_torch",
    "torch_gradients",
]
