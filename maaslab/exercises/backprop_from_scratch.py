"""Auto-checked exercises of lesson 04: the learner's backward pieces against the reference.

Each check runs the learner's function on fixed random inputs (non-square, so a transposed
gradient cannot pass by accident) and names the classic mistake when it recognises one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maaslab.exercises.grading import (
    CheckResult,
    check_array,
    exercise,
    failed,
    first_mistake,
    matches,
    passed,
    right_or_first_mistake,
)
from maaslab.scratch.gradcheck import GradCheckResult
from maaslab.scratch.network import linear_backward, relu_backward, softmax_cross_entropy


def _call(name: str, fn: Callable, *args: np.ndarray) -> tuple[object, CheckResult | None]:
    # Copies, so an answer that modifies its inputs in place cannot corrupt the reference.
    try:
        with np.errstate(all="ignore"):  # an unstable answer is reported by the check, not numpy
            return fn(*(a.copy() for a in args)), None
    except Exception as err:  # the learner's code may raise anything; report it, don't crash
        return None, failed(name, f"your function raised {type(err).__name__}: {err}")


def _close(got: object, expected: np.ndarray) -> bool:
    # np.allclose's tolerances, as the reference answers here are computed the same way.
    return matches(got, expected, rtol=1e-5, atol=1e-8)


@exercise
def check_relu_backward(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> CheckResult:
    """Check a ReLU backward against the reference on random inputs.

    Parameters
    ----------
    fn : your function `fn(dout, x) -> dx`, all arrays of shape (N, D).
    """
    name = "ReLU backward"
    rng = np.random.default_rng(4)
    x, dout = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    got, error = _call(name, fn, dout, x)
    if error is not None:
        return error
    mistakes = [
        (dout, "you returned dout unchanged: zero it where the input x was <= 0."),
        ((x > 0).astype(float), "you returned the mask (x > 0) alone: multiply it by dout."),
        (dout * (x <= 0), "the mask is inverted: keep dout where x > 0, not where x <= 0."),
    ]
    return right_or_first_mistake(
        name,
        got,
        relu_backward(dout, x),
        mistakes,
        rtol=1e-5,
        atol=1e-8,
        hint="dx = dout * (x > 0).",
    )


@exercise
def check_linear_backward(fn: Callable[..., tuple[np.ndarray, ...]]) -> CheckResult:
    """Check a linear-layer backward on non-square shapes, so a transposed gradient shows.

    Parameters
    ----------
    fn : your function `fn(dout, x, W) -> (dx, dW, db)` with x (N, D), W (D, M), dout (N, M).
    """
    name = "linear layer backward"
    rng = np.random.default_rng(5)
    x, W, dout = rng.normal(size=(5, 3)), rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    got, error = _call(name, fn, dout, x, W)
    if error is not None:
        return error
    if not isinstance(got, tuple | list) or len(got) != 3:
        return failed(name, "return three arrays: (dx, dW, db).")
    (dx, dW, db), (ex, eW, eb) = got, linear_backward(dout, x, W)
    if np.shape(dW) == eW.T.shape and _close(np.transpose(dW), eW):
        return failed(name, "dW is transposed: it must have W's shape (D, M), so x.T @ dout.")
    if np.shape(db) == dout.shape:
        return failed(name, "db has one row per example: sum dout over the batch axis (axis=0).")
    if _close(db, dout.mean(axis=0)):
        return failed(name, "db is averaged over the batch: sum it; the loss already divides by N.")
    if _close(dW, eW / len(x)):
        return failed(name, "dW is divided by the batch size: the 1/N belongs to the loss only.")
    if np.shape(dx) == ex.T.shape:
        return failed(name, "dx must have x's shape (N, D): dx = dout @ W.T.")
    for part, value, ref, hint in (
        ("dx", dx, ex, "dx = dout @ W.T."),
        ("dW", dW, eW, "dW = x.T @ dout."),
        ("db", db, eb, "db = dout.sum(axis=0)."),
    ):
        result = check_array(f"{name}: {part}", value, ref, hint=hint)
        if not result:
            return result
    return passed(name, "dx, dW and db all match the reference.")


@exercise
def check_softmax_xent_grad(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> CheckResult:
    """Check the gradient of the mean softmax cross-entropy, on large logits too.

    Parameters
    ----------
    fn : your function `fn(logits, y) -> dlogits`, logits (N, C), integer labels y (N,).
    """
    name = "softmax cross-entropy gradient"
    rng = np.random.default_rng(6)
    logits, y = rng.normal(size=(8, 3)) * 2.0, rng.integers(0, 3, size=8)
    got, error = _call(name, fn, logits, y)
    if error is not None:
        return error
    expected = softmax_cross_entropy(logits, y)[1]
    one_hot = np.eye(3)[y]
    raw = "use the softmax probabilities p, not the raw logits: (p - y) / N."
    mistakes = [
        (expected * len(y), "the gradient is N times too large: divide by the batch size N."),
        ((logits - one_hot) / len(y), raw),
        (logits - one_hot, raw),
    ]
    why = first_mistake(got, mistakes, rtol=1e-5, atol=1e-8)
    if why:
        return failed(name, why)
    result = check_array(name, got, expected, hint="dlogits = (softmax(logits) - one_hot(y)) / N.")
    if not result:
        return result
    big = logits + 1000.0  # softmax is shift-invariant, so the gradient must not change
    got, error = _call(name, fn, big, y)
    if error is not None or not np.all(np.isfinite(np.asarray(got, dtype=float))):
        return failed(name, "logits near 1000 give NaN or inf: subtract each row's max before exp.")
    return check_array(name, got, expected, hint="subtract each row's max before exp.")


@exercise
def check_gradient_check_result(result: GradCheckResult) -> CheckResult:
    """Check that a gradient check passed with a strict tolerance; diagnose it when it did not.

    Parameters
    ----------
    result : what `gradient_check(model, X, y, ...)` returned for your backward pass.
    """
    name = "gradient check"
    if not isinstance(result, GradCheckResult):
        return failed(name, f"expected the GradCheckResult of gradient_check(...), got {result!r}")
    if result.tolerance > 1e-4:
        return failed(name, f"tolerance {result.tolerance:g} is too loose; keep it at 1e-6.")
    if result.passed:
        return passed(
            name,
            f"largest relative error {result.max_error:.1e} ({result.worst}) over "
            f"{result.checked} entries: backprop agrees with finite differences.",
        )
    bad = [k for k, e in result.errors.items() if e > result.tolerance]
    if all(k.startswith("b") for k in bad):
        hint = "only the biases disagree: db = dout.sum(axis=0) in every layer."
    elif len(bad) == len(result.errors):
        hint = "every parameter disagrees: check the loss gradient's sign (p - y) and its 1/N."
    else:
        top = max(int(k[1:]) for k in bad)  # the last layer whose gradients are wrong
        hint = (
            f"layers above {top} agree, so the mistake is on the way back into layer {top}: "
            f"the activation's derivative after it, or its own linear backward."
        )
    return failed(
        name, f"relative error {result.max_error:.2g} at {result.worst}; wrong: {bad}. {hint}"
    )
