"""Lesson 02's auto-checked exercises: an epoch of mini-batches, a learning-rate schedule, and
an SGD run that ends near the minimum on every shuffling seed.

The batcher and the schedule are called on fixed inputs and compared with
`maaslab.optimization.minibatch`; a wrong answer is matched against the classic slips
(an example used twice, the short last batch dropped, no shuffling, off by one epoch).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from maaslab.exercises.grading import CheckResult, check_array, exercise, failed, passed
from maaslab.optimization.linreg import as_problem, closed_form, diabetes, mse_loss
from maaslab.optimization.minibatch import Schedule, SGDConfig, learning_rate, minibatch_gd


@exercise
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


@exercise
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


@exercise
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
