"""Gradient descent by hand on linear regression: the loss, its gradient, the descent, the oracle.

The model is y_hat = X w + b. Its parameters live in one vector theta = (w_1, ..., w_d, b), bias
last, and the loss is the mean squared error

    J(theta) = (1/n) * sum_i (x_i . w + b - y_i)^2.

With the residuals r = X w + b - y the gradient is

    dJ/dw = (2/n) X^T r        dJ/db = (2/n) sum_i r_i.

Everything is plain NumPy in float64. Least squares has a closed-form minimum (`closed_form`),
the oracle every descent is measured against. The descent itself (full batch, mini-batches,
learning-rate schedules) lives in `maaslab.optimization.descent`; lessons 01 and 02 use both
modules, and their exercises are graded in `maaslab.exercises.gradient_descent`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from maaslab.data import Dataset, load_dataset
from maaslab.errors import MaaslabError


def diabetes(feature: str | None = None, *, standardize: bool = True, seed: int = 0) -> Dataset:
    """The diabetes regression set, all 10 features or just one (e.g. "bmi").

    Parameters
    ----------
    feature : keep only this column, so (w, b) has two numbers and its loss surface can be drawn.
    standardize : z-score the features with the training split's mean and std (the default);
        False keeps scikit-learn's scale, where every column has a tiny spread.
    seed : seeds the train/test split.
    """
    # Least squares chooses nothing on held-out data, so no validation split: the fit sees every
    # example outside the test split.
    data = load_dataset("diabetes", standardize=standardize, seed=seed, val_fraction=0.0)
    if feature is None:
        return data
    if feature not in data.feature_names:
        names = ", ".join(data.feature_names)
        raise MaaslabError(f"unknown diabetes feature {feature!r}: choose one of {names}")
    col = [data.feature_names.index(feature)]
    return dataclasses.replace(
        data,
        X_train=data.X_train[:, col],
        X_val=data.X_val[:, col],
        X_test=data.X_test[:, col],
        feature_names=(feature,),
        input_shape=(1,),
        description=f"{data.description}; only the feature {feature!r}",
    )


def param_names(feature_names: Sequence[str]) -> tuple[str, ...]:
    """Names of the entries of theta: one weight per feature, then the bias."""
    return (*(f"w[{name}]" for name in feature_names), "b")


# --- the model, its loss and gradient ------------------------------------------------------------


def as_problem(X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """X as a float64 (n, d) matrix and y as a float64 (n,) vector, or MaaslabError saying why."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(y) == 0:
        raise MaaslabError(f"X must be (n, d) and y (n,) with n > 0; got {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise MaaslabError("X or y contains NaN or inf: clean or drop those rows first")
    return X, y


def _theta(theta: object, d: int) -> np.ndarray:
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (d + 1,):
        raise MaaslabError(
            f"theta must hold {d} weights and a bias, shape ({d + 1},); got {theta.shape}"
        )
    if not np.all(np.isfinite(theta)):
        raise MaaslabError("theta contains NaN or inf")
    return theta


def predict(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """y_hat = X w + b for theta = (w, b)."""
    return X @ theta[:-1] + theta[-1]


def mse_loss(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """J(theta) = mean((X w + b - y)^2)."""
    r = predict(theta, X) - y
    return float(r @ r / len(y))


def mse_gradient(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The analytic gradient: ((2/n) X^T r, (2/n) sum r) with r = X w + b - y."""
    r = predict(theta, X) - y  # (n,)
    scale = 2.0 / len(y)
    return np.append(scale * (X.T @ r), scale * r.sum())  # (d + 1,)


def numerical_gradient(
    fn: Callable[[np.ndarray], float], theta: np.ndarray, eps: float = 1e-5
) -> np.ndarray:
    """Central differences: (J(theta + eps e_k) - J(theta - eps e_k)) / (2 eps) for every k."""
    theta = np.asarray(theta, dtype=float)
    grad = np.empty_like(theta)
    for k in range(theta.size):
        step = np.zeros_like(theta)
        step[k] = eps
        grad[k] = (fn(theta + step) - fn(theta - step)) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||): about 1e-7 or less means two gradients agree.

    Lesson 01's measure. Lesson 04's `maaslab.scratch.bounded_relative_error` divides by
    ||a|| + ||b|| instead, so it stays between 0 and 1 (half of this near agreement).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-300)
    return float(np.linalg.norm(a - b)) / scale


def closed_form(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least-squares minimum theta* (np.linalg.lstsq on [X, 1]): the oracle for descent."""
    X, y = as_problem(X, y)
    design = np.column_stack([X, np.ones(len(y))])
    return np.linalg.lstsq(design, y, rcond=None)[0]


# --- the loss surface over two parameters ------------------------------------------------------


@dataclass(frozen=True)
class LossSurface:
    """J on a grid over two entries of theta, the others held at the optimum theta*."""

    params: tuple[int, int]  # which entries of theta vary (indices, bias = d)
    names: tuple[str, str]  # their names, e.g. ("w[bmi]", "b")
    a: np.ndarray  # (A,) values of the first parameter (x axis)
    b: np.ndarray  # (B,) values of the second parameter (y axis)
    loss: np.ndarray  # (B, A): loss[j, i] is J at (a[i], b[j]), the layout plotly contours use
    optimum: np.ndarray  # theta*, the closed-form minimum
    optimum_loss: float  # J(theta*)


def loss_surface(
    X: np.ndarray,
    y: np.ndarray,
    params: tuple[int, int] = (0, -1),
    *,
    include: Sequence[np.ndarray] = (),
    margin: float = 0.25,
    resolution: int = 81,
    square: bool = False,
    feature_names: Sequence[str] | None = None,
) -> LossSurface:
    """The loss over a grid of two parameters, the rest fixed at the optimum, for a contour.

    Parameters
    ----------
    X, y : the data.
    params : indices into theta of the two parameters to vary (-1 is the bias).
    include : thetas (or paths of thetas) the grid must cover besides the optimum, e.g. a start.
    margin : extra room around the covered points, as a fraction of the span.
    resolution : grid points per axis.
    square : give both axes the same span, so a figure with equal axes fills a square.
    feature_names : names for the axis titles; "x0", "x1", ... by default.
    """
    X, y = as_problem(X, y)
    d = X.shape[1]
    idx = tuple(int(p) % (d + 1) for p in params)
    if len(idx) != 2 or idx[0] == idx[1] or any(not -d - 1 <= p <= d for p in params):
        raise MaaslabError(
            f"params must name two different entries of theta (0..{d}), got {params}"
        )
    optimum = closed_form(X, y)
    points = [optimum[list(idx)]]
    for path in include:
        path = np.atleast_2d(np.asarray(path, dtype=float))
        points.extend(row[list(idx)] for row in path if np.all(np.isfinite(row)))
    pts = np.array(points)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    half = (hi - lo) / 2 + margin * np.maximum(hi - lo, np.maximum(np.abs(pts).max(axis=0), 1.0))
    if square:
        half[:] = half.max()
    mid = (lo + hi) / 2
    axes = [np.linspace(mid[k] - half[k], mid[k] + half[k], resolution) for k in range(2)]
    grid_a, grid_b = np.meshgrid(*axes)  # (B, A) each
    # Residuals are linear in the two free parameters: r = r* + da * column_a + db * column_b.
    design = np.column_stack([X, np.ones(len(y))])
    r_opt = design @ optimum - y
    da = (grid_a - optimum[idx[0]])[..., None]
    db = (grid_b - optimum[idx[1]])[..., None]
    r = r_opt + da * design[:, idx[0]] + db * design[:, idx[1]]  # (B, A, n)
    names = param_names(feature_names or [f"x{k}" for k in range(d)])
    return LossSurface(
        params=idx,  # type: ignore[arg-type]
        names=(names[idx[0]], names[idx[1]]),
        a=axes[0],
        b=axes[1],
        loss=np.mean(r**2, axis=-1),
        optimum=optimum,
        optimum_loss=mse_loss(optimum, X, y),
    )
