"""Mini-batch and stochastic gradient descent with learning-rate schedules, on linear regression.

Each update uses the gradient of the loss on a batch of B examples instead of all n: B = 1 is
stochastic gradient descent (SGD), B = n is full-batch descent again. An epoch is one pass over
the shuffled data, ceil(n / B) updates. Smaller batches make more, cheaper and noisier updates per
epoch; a schedule that lowers the learning rate over time quiets the noise near the minimum.

Schedules read the time t in epochs, fractional inside an epoch (update i of S in epoch e runs at
t = e + i / S), so runs with different batch sizes share one schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from maaslab.errors import MaaslabError
from maaslab.optimization.descent import GDResult, check_lr, describe_run, exploded, start_theta
from maaslab.optimization.linreg import as_problem, mse_gradient, mse_loss

SCHEDULES = ("constant", "step", "exponential", "inverse_time", "cosine")


@dataclass(frozen=True)
class Schedule:
    """How the learning rate changes with the epoch t: alpha_t = alpha * factor(t)."""

    kind: str = "constant"  # one of SCHEDULES
    gamma: float = 0.5  # step, exponential: the lr is multiplied by gamma every `every` epochs
    every: float = 5.0  # step, exponential: epochs per factor gamma (step drops all at once)
    decay: float = 0.5  # inverse_time: alpha / (1 + decay * t)
    min_fraction: float = 0.0  # cosine: the lr it anneals to at the last epoch, times alpha

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise MaaslabError(f"unknown schedule {self.kind!r}: choose one of {SCHEDULES}")
        if not 0 < self.gamma <= 1 or not self.every > 0:
            raise MaaslabError("gamma must be in (0, 1] and every above 0")
        if not self.decay >= 0 or not 0 <= self.min_fraction <= 1:
            raise MaaslabError("decay must be at least 0 and min_fraction in [0, 1]")

    @property
    def label(self) -> str:
        """Legend text, e.g. "step ×0.5 every 5 epochs"."""
        floor = "0" if self.min_fraction == 0 else f"{self.min_fraction:g}×lr"
        return {
            "constant": "constant",
            "step": f"step ×{self.gamma:g} every {self.every:g} epochs",
            "exponential": f"exponential ×{self.gamma:g} per {self.every:g} epochs",
            "inverse_time": f"1/t, decay {self.decay:g}",
            "cosine": f"cosine to {floor}",
        }[self.kind]


def learning_rate(schedule: Schedule, lr: float, t: float, epochs: int) -> float:
    """The learning rate at epoch t (fractional) of a run of `epochs` epochs starting at lr.

    Parameters
    ----------
    schedule : the schedule's kind and knobs.
    lr : alpha_0, the rate at t = 0.
    t : the time in epochs, 0 <= t <= epochs.
    epochs : the run's length; only cosine uses it (it reaches its floor at t = epochs).
    """
    kind = schedule.kind
    if kind == "constant":
        return lr
    if kind == "step":
        return lr * schedule.gamma ** math.floor(t / schedule.every)
    if kind == "exponential":
        return lr * schedule.gamma ** (t / schedule.every)
    if kind == "inverse_time":
        return lr / (1 + schedule.decay * t)
    floor = schedule.min_fraction * lr
    return floor + (lr - floor) * (1 + math.cos(math.pi * t / epochs)) / 2


def schedule_curve(
    schedule: Schedule, lr: float, epochs: int, points_per_epoch: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """(t, alpha_t) sampled from t = 0 to t = epochs, for a figure."""
    t = np.linspace(0, epochs, epochs * points_per_epoch + 1)
    return t, np.array([learning_rate(schedule, lr, float(s), epochs) for s in t])


def minibatch_indices(
    n: int, batch_size: int, rng: np.random.Generator, *, shuffle: bool = True
) -> list[np.ndarray]:
    """One epoch of batches: a permutation of 0..n-1 cut into runs of batch_size (the last shorter).

    Parameters
    ----------
    n : number of examples.
    batch_size : examples per batch, 1..n.
    rng : the seeded generator that draws the order, so the same seed gives the same batches.
    shuffle : False keeps the order 0..n-1 (to see why shuffling matters).
    """
    if not 1 <= batch_size <= n:
        raise MaaslabError(f"batch_size must be between 1 and n = {n}, got {batch_size}")
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


@dataclass(frozen=True)
class SGDConfig:
    """A mini-batch run: step size, batch size, epochs, schedule and seed."""

    lr: float = 0.05  # alpha_0, the learning rate at the start (> 0)
    batch_size: int = 32  # examples per update: 1 = SGD, n = full batch
    epochs: int = 20  # passes over the data
    schedule: Schedule = field(default_factory=Schedule)  # constant unless told otherwise
    shuffle: bool = True  # a new random order every epoch
    seed: int = 0  # seeds the numpy Generator that shuffles

    def __post_init__(self) -> None:
        check_lr(self.lr)
        if self.batch_size < 1:
            raise MaaslabError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.epochs < 1:
            raise MaaslabError(f"epochs must be at least 1, got {self.epochs}")


def minibatch_gd(
    X: np.ndarray,
    y: np.ndarray,
    cfg: SGDConfig,
    *,
    theta0: np.ndarray | None = None,
    label: str | None = None,
) -> GDResult:
    """Mini-batch gradient descent: per batch, theta <- theta - alpha_t * grad J_batch(theta).

    Parameters
    ----------
    X, y : the data, (n, d) and (n,).
    cfg : lr, batch size (1..n), epochs, schedule, shuffling and seed.
    theta0 : where to start; zeros by default.
    label : legend text; "batch <B>" by default.
    """
    X, y = as_problem(X, y)
    n = len(y)
    if cfg.batch_size > n:
        raise MaaslabError(f"batch_size must be between 1 and n = {n}, got {cfg.batch_size}")
    rng = np.random.default_rng(cfg.seed)
    per_epoch = math.ceil(n / cfg.batch_size)
    theta = start_theta(theta0, X.shape[1])
    thetas, losses, lrs = [theta], [mse_loss(theta, X, y)], []
    reference = max(losses[0], float(np.var(y)), 1e-12)
    diverged_at = None
    with np.errstate(over="ignore", invalid="ignore"):  # an explosion is reported, not warned
        for epoch in range(cfg.epochs):
            # One batch of all n is the full gradient; shuffling it would only reorder a sum.
            batches = (
                [slice(None)]
                if cfg.batch_size == n
                else minibatch_indices(n, cfg.batch_size, rng, shuffle=cfg.shuffle)
            )
            for i, batch in enumerate(batches):
                lr = learning_rate(cfg.schedule, cfg.lr, epoch + i / per_epoch, cfg.epochs)
                theta = theta - lr * mse_gradient(theta, X[batch], y[batch])
                thetas.append(theta)
                lrs.append(lr)
                losses.append(mse_loss(theta, X, y))
                if exploded(losses[-1], reference):
                    diverged_at = len(lrs)
                    break
            if diverged_at is not None:
                break
    loss_array = np.array(losses)
    return GDResult(
        label=label or f"batch {cfg.batch_size}",
        thetas=np.array(thetas),
        losses=loss_array,
        lrs=np.array(lrs),
        batch_size=cfg.batch_size,
        steps_per_epoch=per_epoch,
        diverged_at=diverged_at,
        message=describe_run(loss_array, diverged_at),
    )
