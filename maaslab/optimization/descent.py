"""Full-batch gradient descent on linear regression, theta <- theta - alpha * grad J(theta).

A run records every theta it visits and the loss there (`GDResult`), and stops when the loss
explodes, saying so in the result instead of filling the path with inf and NaN. Lesson 01 uses
it (its exercises are graded in `maaslab.exercises.gradient_descent`);
`maaslab.optimization.minibatch` adds mini-batches and learning-rate schedules and returns the
same result type, so the figures in `maaslab.plots` draw both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maaslab.errors import MaaslabError
from maaslab.optimization.linreg import as_problem, mse_gradient, mse_loss

# A loss this many times above the start (or the variance of y) counts as exploded.
DIVERGE_FACTOR = 1e6


@dataclass(frozen=True)
class GDResult:
    """A descent: every theta visited, the full-data loss there, and how the run ended."""

    label: str  # legend text, e.g. "lr 0.1" or "batch 32"
    thetas: np.ndarray  # (steps + 1, d + 1): the start, then theta after every update
    losses: np.ndarray  # (steps + 1,): J on all the data at each theta
    lrs: np.ndarray  # (steps,): the learning rate each update used
    batch_size: int  # examples per gradient; n for full-batch descent
    steps_per_epoch: int  # updates per pass over the data; 1 for full batch
    diverged_at: int | None  # the update after which the loss exploded; the path ends there
    message: str  # one sentence on how the run ended

    @property
    def theta(self) -> np.ndarray:
        """The last theta reached."""
        return self.thetas[-1]

    @property
    def final_loss(self) -> float:
        """The loss at the last theta."""
        return float(self.losses[-1])

    @property
    def steps(self) -> int:
        """Number of updates made (each one computed one gradient)."""
        return len(self.lrs)

    @property
    def epochs(self) -> np.ndarray:
        """The path's x axis in passes over the data: update k happened at k / steps_per_epoch."""
        return np.arange(self.steps + 1) / self.steps_per_epoch


def check_lr(lr: float) -> float:
    """A learning rate as a float, or MaaslabError when it is not a finite number above 0."""
    if not np.isfinite(lr) or lr <= 0:
        raise MaaslabError(f"the learning rate must be a finite number above 0, got {lr}")
    return float(lr)


def start_theta(theta0: object, d: int) -> np.ndarray:
    """The starting theta (zeros when None) as float64, or MaaslabError for a bad shape or NaN."""
    theta = np.zeros(d + 1) if theta0 is None else np.asarray(theta0, dtype=float)
    if theta.shape != (d + 1,) or not np.all(np.isfinite(theta)):
        raise MaaslabError(f"theta0 must be {d + 1} finite numbers (d weights, then b)")
    return theta.copy()


def exploded(loss: float, reference: float) -> bool:
    """True when a loss is NaN/inf or DIVERGE_FACTOR times above the reference loss."""
    return not np.isfinite(loss) or loss > DIVERGE_FACTOR * reference


def describe_run(losses: np.ndarray, diverged_at: int | None) -> str:
    """One sentence on how a descent ended, for GDResult.message."""
    start, end = float(losses[0]), float(losses[-1])
    if diverged_at is not None:
        return (
            f"diverged: the loss exploded at update {diverged_at} (it started at {start:.4g}); "
            "the learning rate is too large"
        )
    if end > start:
        return f"diverging: the loss grew from {start:.4g} to {end:.4g}; lower the learning rate"
    if end > 0.99 * start:
        return f"stuck: the loss barely moved ({start:.4g} to {end:.4g}); too small, or bouncing"
    return f"the loss fell from {start:.4g} to {end:.4g} in {len(losses) - 1} updates"


def gradient_descent(
    X: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    steps: int,
    theta0: np.ndarray | None = None,
    free: Sequence[int] | None = None,
    label: str | None = None,
) -> GDResult:
    """Full-batch gradient descent theta <- theta - lr * grad J(theta), stopping if it explodes.

    Parameters
    ----------
    X, y : the data, (n, d) and (n,).
    lr : the step size alpha (> 0).
    steps : number of updates; each uses the gradient on all n examples.
    theta0 : where to start; zeros by default.
    free : indices of the entries of theta that move (-1 is b); the others keep their theta0
        values. Freeing two entries with the rest at the optimum makes the descent live exactly
        on the surface `loss_surface` draws. None moves them all.
    label : legend text; "lr <lr>" by default.
    """
    X, y = as_problem(X, y)
    lr = check_lr(lr)
    if steps < 1:
        raise MaaslabError(f"steps must be at least 1, got {steps}")
    theta = start_theta(theta0, X.shape[1])
    mask = np.ones_like(theta)
    if free is not None:
        if not free or any(not -len(theta) <= k < len(theta) for k in free):
            raise MaaslabError(f"free must list entries of theta, 0..{len(theta) - 1} or -1")
        mask = np.zeros_like(theta)
        mask[list(free)] = 1.0
    thetas, losses = [theta], [mse_loss(theta, X, y)]
    reference = max(losses[0], float(np.var(y)), 1e-12)
    diverged_at = None
    with np.errstate(over="ignore", invalid="ignore"):  # an explosion is reported, not warned
        for step in range(1, steps + 1):
            theta = theta - lr * mask * mse_gradient(theta, X, y)
            thetas.append(theta)
            losses.append(mse_loss(theta, X, y))
            if exploded(losses[-1], reference):
                diverged_at = step
                break
    loss_array = np.array(losses)
    return GDResult(
        label=label or f"lr {lr:g}",
        thetas=np.array(thetas),
        losses=loss_array,
        lrs=np.full(len(thetas) - 1, lr),
        batch_size=len(y),
        steps_per_epoch=1,
        diverged_at=diverged_at,
        message=describe_run(loss_array, diverged_at),
    )


def hessian_eigenvalues(X: np.ndarray) -> np.ndarray:
    """Eigenvalues of J's Hessian (2/n) [X 1]^T [X 1], ascending; lr < 2 / max converges."""
    X = np.asarray(X, dtype=float)
    design = np.column_stack([X, np.ones(len(X))])
    return np.linalg.eigvalsh(2.0 / len(X) * design.T @ design)


def steps_to_reach(result: GDResult, target: float) -> int | None:
    """The first update at which the loss is at or below `target`, or None if it never is."""
    hits = np.flatnonzero(result.losses <= target)
    return int(hits[0]) if hits.size else None
