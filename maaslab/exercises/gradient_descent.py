"""Lesson 01's auto-checked exercises: the MSE gradient, one descent step, a learning rate.

The gradient and the step are called on a small random problem (`exercise_problem`) and compared
with `maaslab.optimization.linreg`'s analytic gradient; a wrong answer is matched against the
classic slips (sign, a missing 2 or 1/n, the bias left out, uphill, lr ignored) so the message
names the one made. The learning rate is run on diabetes against the 2 / lambda_max edge.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from maaslab.exercises.grading import CheckResult, exercise, failed, first_mistake, passed
from maaslab.optimization.descent import gradient_descent, hessian_eigenvalues, steps_to_reach
from maaslab.optimization.linreg import (
    as_problem,
    closed_form,
    diabetes,
    mse_gradient,
    mse_loss,
    relative_error,
)

# Two gradients whose relative error is below this agree (float64 round-off is ~1e-12 here).
GRAD_TOL = 1e-6


def exercise_problem(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small random (X, y, theta) for checks: n = 12, d = 3, so 2, n and 2/n differ."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(12, 3))
    return X, X @ rng.normal(size=3) + rng.normal(size=12) + 1.5, rng.normal(size=4)


def _factor_hint(ratio: float, n: int) -> str:
    # Common slips change the gradient by a constant factor; name the one that fits.
    factors = [
        (
            -1.0,
            "Every entry has the wrong sign: the residual is r = y_hat - y (prediction minus "
            "target); with y - y_hat you must negate the result",
        ),
        (0.5, "It is half the right size: the derivative of r^2 is 2 r, so a factor 2 is missing"),
        (n, "It is n times too large: J is a mean, so divide the sum by n"),
        (n / 2, "The factor 2/n is missing: J = (1/n) sum r^2 gives (2/n) X^T r"),
        (1 / n, "It is n times too small: divide by n once, not twice"),
        (2.0, "It is twice too large: the 2 from r^2 appears only once"),
    ]
    why = first_mistake(ratio, factors, rtol=1e-6, atol=0)
    return why or f"It is {ratio:.4g} times the right gradient: check the constant in front"


def _diagnose_gradient(got: np.ndarray, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> str:
    # Name the slip that explains a wrong gradient: bias left out, sign or a constant factor.
    expected = mse_gradient(theta, X, y)

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return relative_error(a, b) < GRAD_TOL

    if close(got[:-1], expected[:-1]):
        if got[-1] == 0:
            return "The weights are right but dJ/db is 0: the bias gets (2/n) sum_i r_i too"
        return f"Weights right, but dJ/db is {got[-1]:.6g}, not (2/n) sum r = {expected[-1]:.6g}"
    if close(got[-1:], expected[-1:]):
        return "The bias entry is right but the weights are not: dJ/dw = (2/n) X^T r"
    if close(got, mse_gradient(np.append(theta[:-1], 0.0), X, y)):
        return "The prediction leaves out the bias: use y_hat = X w + b with b = theta[-1]"
    ratio = float(got @ expected / (expected @ expected))
    if close(got, ratio * expected):
        return _factor_hint(ratio, len(y))
    return "Compute r = X w + b - y, then (2/n) X^T r for the weights and (2/n) sum r for b"


@exercise
def check_mse_gradient(fn: Callable[[np.ndarray, np.ndarray, np.ndarray], object]) -> CheckResult:
    """Check a hand-written gradient of the MSE against the analytic one on a random problem.

    Parameters
    ----------
    fn : your gradient, called as fn(theta, X, y) with theta = (w_1, ..., w_d, b); it must
        return the d + 1 partial derivatives dJ/dw_1, ..., dJ/dw_d, dJ/db.
    """
    name = "gradient of the MSE loss"
    X, y, theta = exercise_problem()
    d = X.shape[1]
    try:
        got = np.asarray(fn(theta.copy(), X.copy(), y.copy()), dtype=float)
    except Exception as err:  # the learner's code may raise anything; show it as a verdict
        return failed(name, f"calling fn(theta, X, y) raised {type(err).__name__}: {err}")
    if got.shape == (d,):
        return failed(name, "it returned only the d weight entries: append dJ/db = (2/n) sum r")
    if got.shape != (d + 1,):
        return failed(
            name, f"it returned shape {got.shape}, expected ({d + 1},): d weights, then b"
        )
    if not np.all(np.isfinite(got)):
        return failed(name, "it returned NaN or inf")
    error = relative_error(got, mse_gradient(theta, X, y))
    if error < GRAD_TOL:
        return passed(name, f"relative error {error:.1e} against the analytic gradient")
    hint = _diagnose_gradient(got, theta, X, y)
    return failed(name, f"relative error {error:.2g} (want < {GRAD_TOL:g}). {hint}")


@exercise
def check_gd_step(fn: Callable[[np.ndarray, np.ndarray, np.ndarray, float], object]) -> CheckResult:
    """Check a hand-written update: fn(theta, X, y, lr) must return theta - lr * grad J(theta).

    Parameters
    ----------
    fn : your step, called with theta = (w_1, ..., w_d, b), the data and a learning rate.
    """
    name = "one gradient-descent step"
    X, y, theta = exercise_problem()
    lr = 0.05
    grad = mse_gradient(theta, X, y)
    try:
        got = np.asarray(fn(theta.copy(), X.copy(), y.copy(), lr), dtype=float)
    except Exception as err:  # the learner's code may raise anything; show it as a verdict
        return failed(name, f"calling fn(theta, X, y, lr) raised {type(err).__name__}: {err}")
    if got.shape != theta.shape:
        return failed(name, f"it returned shape {got.shape}; the new theta has {theta.shape}")
    if relative_error(got, theta - lr * grad) < 1e-9:
        return passed(name, "it returns theta - lr * grad J(theta)")
    slips = [
        (theta + lr * grad, "It moved uphill: subtract the gradient, theta - lr * grad"),
        (theta - grad, "The step ignores lr: multiply the gradient by the learning rate"),
        (-lr * grad, "It returned the change, not the new theta: return theta - lr * grad"),
        (theta, "theta did not change: apply the update and return the new theta"),
    ]
    hint = first_mistake(got, slips, rtol=1e-9, atol=1e-12)
    return failed(name, hint or "expected theta - lr * grad J(theta); compare your formula")


@functools.cache
def _lr_problem(steps: int, tol: float) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    # Diabetes, all 10 standardized features; the target loss, the edge 2 / lambda_max, and the
    # fastest lr on a fine grid (the boundary between "too small" and "overshooting").
    data = diabetes()
    X, y = as_problem(data.X_train, data.y_train)
    target = mse_loss(closed_form(X, y), X, y) * (1 + tol)
    edge = 2 / hessian_eigenvalues(X)[-1]
    grid = np.linspace(edge / 100, edge, 100, endpoint=False)
    needed = [steps_to_reach(gradient_descent(X, y, lr=a, steps=steps * 4), target) for a in grid]
    best = grid[int(np.argmin([n if n is not None else np.inf for n in needed]))]
    return X, y, target, edge, float(best)


@exercise
def check_learning_rate(lr: float, *, steps: int = 10, tol: float = 0.01) -> CheckResult:
    """Check a learning rate for full-batch GD on diabetes (10 features) from theta = 0.

    The task: reach a loss within `tol` (1%) of the least-squares minimum in at most `steps`
    updates. Too small crawls, too large overshoots, and beyond 2 / lambda_max it diverges.

    Parameters
    ----------
    lr : your learning rate.
    steps : the update budget.
    tol : how close to the minimum counts as there, relative to the minimum loss.
    """
    name = f"a learning rate that converges within {steps} updates"
    if not isinstance(lr, int | float) or not np.isfinite(lr) or lr <= 0:
        return failed(name, f"lr must be a number above 0, got {lr!r}")
    X, y, target, edge, best = _lr_problem(steps, tol)
    run = gradient_descent(X, y, lr=lr, steps=max(steps, 400))
    needed = steps_to_reach(run, target)
    if needed is not None and needed <= steps:
        return passed(name, f"within {tol:.0%} of the minimum after {needed} updates")
    if run.diverged_at is not None or (needed is None and run.final_loss > run.losses[0]):
        why = f"above 2 / lambda_max = {edge:.3g} every step overshoots more than the last"
        return failed(name, f"lr {lr:g} diverges: {why}. Try a smaller lr")
    count = f"it needs {needed} updates" if needed else f"it is not there after {run.steps}"
    if lr > best:
        why = "it bounces across the valley along the steepest direction"
        return failed(name, f"{count}: lr {lr:g} overshoots ({why}). Try a bit smaller")
    why = f"try a larger lr, below 2 / lambda_max = {edge:.3g}"
    return failed(name, f"{count}: lr {lr:g} takes steps that are too small; {why}")
