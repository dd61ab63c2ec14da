"""Mini-batch and stochastic gradient descent with learning-rate schedules, on linear regression.

Each update uses the gradient of the loss on a batch of B examples instead of all n: B = 1 is
stochastic gradient descent (SGD), B = n is full-batch descent again. An epoch is one pass over
the shuffled data, ceil(n / B) updates. Smaller batches make more, cheaper and noisier updates per
epoch; a schedule that lowers the learning rate over time quiets the noise near the minimum.

Schedules read the time t in epochs, fractional inside an epoch (update i of S in epoch e runs at
t = e + i / S), so runs with different batch sizes share one schedule.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from maaslab.checks import CheckResult, check_array, failed, passed
from maaslab.descent import GDResult, check_lr, describe_run, exploded, start_theta
from maaslab.errors import MaaslabError
from maaslab.linreg import as_problem, closed_form, diabetes, mse_gradient, mse_loss

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


# --- exercise checks -----------------------------------------------------------------------------


def check_minibatches(fn: Callable[[int, int, np.random.Generator], object]) -> CheckResult:
    """Check a hand-written epoch of batches: fn(n, batch_size, rng) -> list of index arrays.

    Parameters
    ----------
    fn : your batcher; every index 0..n-1 must appear exactly once, in batches of batch_size
        (the last may be shorter), in an order drawn from `rng`.
    """
    name = "one epoch of mini-batches"
    n, size = 10, 3
    try:
        runs = [
            [np.asarray(b, dtype=int).ravel() for b in fn(n, size, np.random.default_rng(s))]
            for s in (0, 0, 1)
        ]
    except Exception as err:  # the learner's code may raise anything; show it as a verdict
        return failed(name, f"calling fn(n, batch_size, rng) raised {type(err).__name__}: {err}")
    batches = runs[0]
    seen = np.concatenate(batches) if batches else np.array([], dtype=int)
    sizes = [len(b) for b in batches]
    if len(np.unique(seen)) < len(seen):
        return failed(
            name,
            "some examples appear twice in one epoch: draw the order without "
            "replacement, e.g. rng.permutation(n)",
        )
    missing = sorted(set(range(n)) - set(seen.tolist()))
    if missing:
        why = "the short last batch was dropped" if len(missing) == n % size else "they are lost"
        return failed(name, f"examples {missing} are never used ({why}); keep every index")
    if seen.min() < 0 or seen.max() >= n:
        return failed(name, f"indices must lie in 0..{n - 1}")
    if sizes[:-1] != [size] * (len(sizes) - 1) or sizes[-1] > size:
        return failed(
            name,
            f"batch sizes {sizes} for n={n}, batch_size={size}: cut the "
            "shuffled order into runs of batch_size, the last one shorter",
        )
    if np.array_equal(seen, np.arange(n)) or all(
        np.array_equal(a, b) for a, b in zip(runs[0], runs[2], strict=False)
    ):
        return failed(name, "the order is not shuffled by rng: use rng.permutation(n)")
    if len(runs[0]) != len(runs[1]) or not all(map(np.array_equal, runs[0], runs[1])):
        return failed(
            name,
            "the same seed gave different batches: draw from the rng you are given, not np.random",
        )
    return passed(name, f"{len(sizes)} batches of sizes {sizes}, every example once, shuffled")


def check_schedule(
    fn: Callable[[float], float], schedule: Schedule | str, *, lr: float = 0.1, epochs: int = 20
) -> CheckResult:
    """Check a hand-written schedule fn(t) -> alpha_t against `learning_rate` at t = 0..epochs.

    Parameters
    ----------
    fn : your schedule, a function of the epoch t (the start lr and knobs fixed inside it).
    schedule : the schedule it should follow (a Schedule, or a kind with default knobs).
    lr : the start learning rate your fn uses.
    epochs : the run length your fn uses (cosine needs it).
    """
    schedule = Schedule(schedule) if isinstance(schedule, str) else schedule
    name = f"the {schedule.label} schedule"
    t = np.arange(epochs + 1)
    expected = np.array([learning_rate(schedule, lr, float(s), epochs) for s in t])
    try:
        got = np.array([float(fn(float(s))) for s in t])
    except Exception as err:  # the learner's code may raise anything; show it as a verdict
        return failed(name, f"calling fn(t) raised {type(err).__name__}: {err}")
    close = functools.partial(np.allclose, rtol=1e-6, atol=1e-12)
    if close(got, expected):
        return passed(name, f"matches at t = 0..{epochs}")
    if not math.isclose(got[0], lr, rel_tol=1e-6):
        return failed(name, f"at t = 0 it gives {got[0]:.6g}; a schedule starts at lr = {lr:g}")
    if close(got, got[0]) and not close(expected, lr):
        return failed(name, "it never changes: the factor must depend on t")
    if close(got[1:], expected[:-1]):
        return failed(name, "it is one epoch late: at t it gives the value for t - 1")
    if close(got[:-1], expected[1:]):
        return failed(name, "it is one epoch early: at t it gives the value for t + 1")
    return check_array(name, got, expected, rtol=1e-6, hint="compare with the formula in the guide")


@functools.cache
def _sgd_problem() -> tuple[np.ndarray, np.ndarray, float]:
    data = diabetes()
    X, y = as_problem(data.X_train, data.y_train)
    return X, y, mse_loss(closed_form(X, y), X, y)


def check_sgd_config(
    cfg: SGDConfig, *, tol: float = 0.01, seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
) -> CheckResult:
    """Check an SGD run on diabetes: batch 1, at most 10 epochs, ending within 1% of the minimum.

    The run is repeated for several shuffling seeds (cfg.seed is ignored) and must land within
    `tol` of the least-squares loss for every one: luck with one order does not count.

    Parameters
    ----------
    cfg : your SGDConfig (lr and schedule are yours to pick; batch_size=1, epochs <= 10).
    tol : allowed final loss above the minimum, relative to it.
    seeds : the shuffling seeds tried.
    """
    name = "an SGD run that ends near the minimum"
    if cfg.batch_size != 1 or cfg.epochs > 10:
        return failed(name, "keep batch_size=1 and epochs at most 10: the task is plain SGD")
    X, y, best = _sgd_problem()
    runs = [minibatch_gd(X, y, dataclasses.replace(cfg, seed=s)) for s in seeds]
    gaps = np.array([r.final_loss / best - 1 for r in runs])
    worst = float(np.max(gaps))
    if worst <= tol:
        return passed(name, f"every seed ends within {worst:.2%} of the minimum loss")
    if any(r.diverged_at is not None for r in runs):
        return failed(name, f"lr {cfg.lr:g} makes SGD diverge on some seed: start smaller")
    if cfg.schedule.kind == "constant":
        hint = (
            "with a constant lr SGD keeps bouncing around the minimum (the noise floor grows "
            "with lr): start larger and decay it with a schedule"
        )
    elif np.min([r.lrs[-1] for r in runs]) / cfg.lr > 0.2:
        hint = "the lr is still high at the end, so the last steps are noisy: decay it further"
    else:
        hint = "the steps shrink before SGD gets close: start with a larger lr or decay slower"
    return failed(
        name, f"the worst seed ends {worst:.2%} above the minimum (want <= {tol:.0%}); " + hint
    )
