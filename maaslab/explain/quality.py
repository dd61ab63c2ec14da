"""How far to trust an explanation: faithfulness, agreement, stability and a sanity check.

- Faithfulness (deletion / insertion): remove the features an explanation ranks highest first
  and watch the predicted probability. A faithful ranking makes it fall fast (small area under
  the deletion curve) and, when features are added back in that order, rise fast (large area
  under the insertion curve) — compared with removing them in random order.
- Agreement: Spearman rank correlation between two explanations of the same input.
- Stability: the same method with different seeds; how much the answer moves.
- Sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): explain a copy of the
  model whose weights are random. A method that gives nearly the same map for both explains the
  input, not the model, and fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from maaslab.errors import MaaslabError
from maaslab.explain.core import Attribution, Explainable
from maaslab.explain.methods import explain

SANITY_THRESHOLD = 0.5  # rank similarity (|values|) above which a method fails the sanity check


@dataclass(frozen=True)
class Curve:
    """Probability of the explained class as features are removed (or added) step by step."""

    fractions: np.ndarray  # (S,) share of features removed/added, 0..1
    scores: np.ndarray  # (S,) probability of the target class at each step
    auc: float  # area under the curve (trapezoid over fractions 0..1)


@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion curves of an explanation, and of random orders for comparison."""

    deletion: Curve
    insertion: Curve
    random_deletion: Curve  # mean over random orders
    random_insertion: Curve

    @property
    def deletion_gain(self) -> float:
        """Random deletion AUC minus this explanation's: > 0 means better than chance."""
        return self.random_deletion.auc - self.deletion.auc

    @property
    def insertion_gain(self) -> float:
        """This explanation's insertion AUC minus random's: > 0 means better than chance."""
        return self.insertion.auc - self.random_insertion.auc


def _steps(n: int, max_steps: int) -> np.ndarray:
    return np.unique(np.linspace(0, n, min(n, max_steps) + 1).round().astype(int))


def _curves(
    model: Explainable,
    x: Any,
    orders: list[np.ndarray],
    target: int,
    insertion: bool,
    max_steps: int,
) -> list[Curve]:
    # Every step of every order in one batch: one model call instead of one per curve.
    n = len(orders[0])
    counts = _steps(n, max_steps)
    fill = np.zeros if insertion else np.ones
    keep = fill((len(orders), len(counts), n), dtype=bool)
    for o, order in enumerate(orders):
        for row, k in enumerate(counts):
            keep[o, row, order[:k]] = insertion  # insertion: first k present; deletion: absent
    scores = np.asarray(model.predict_fn(model.masked(x, keep.reshape(-1, n))))[:, target]
    scores = scores.reshape(len(orders), len(counts))
    fractions = counts / n
    return [Curve(fractions, s, float(np.trapezoid(s, fractions))) for s in scores]


def _ranking(attribution: Attribution) -> np.ndarray:
    # Most supportive of the explained class first (largest positive value).
    return np.argsort(-attribution.values, kind="stable")


def faithfulness(
    model: Explainable,
    x: Any,
    attribution: Attribution,
    *,
    random_orders: int = 10,
    seed: int = 0,
    max_steps: int = 32,
) -> Faithfulness:
    """Deletion and insertion curves of `attribution`, with the mean of random orders.

    Parameters
    ----------
    model, x : the model and the input that were explained.
    attribution : the explanation to test.
    random_orders : how many random orders the baseline averages.
    seed : seeds the random orders.
    max_steps : at most this many removal steps (features are removed in groups beyond it).
    """
    x = model.check_input(x)
    if len(attribution.values) != model.n_features(x):
        raise MaaslabError("the attribution does not belong to this input (feature counts differ)")
    order, target = _ranking(attribution), attribution.target
    rng = np.random.default_rng(seed)
    randoms = [rng.permutation(len(order)) for _ in range(random_orders)]
    curves = {}
    for insertion in (False, True):
        mine, *rand = _curves(model, x, [order, *randoms], target, insertion, max_steps)
        scores = np.mean([c.scores for c in rand], axis=0)
        mean = Curve(mine.fractions, scores, float(np.trapezoid(scores, mine.fractions)))
        curves[insertion] = (mine, mean)
    return Faithfulness(curves[False][0], curves[True][0], curves[False][1], curves[True][1])


def agreement(a: Attribution, b: Attribution) -> float:
    """Spearman rank correlation of two explanations of the same input (1 = same ranking)."""
    if a.features != b.features:
        raise MaaslabError("the two explanations are of different inputs or features")
    return _rank_correlation(a.values, b.values)


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    # Spearman; a constant explanation ranks nothing, so it correlates with nothing (0).
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


@dataclass(frozen=True)
class Stability:
    """The same explanation under several seeds."""

    attributions: tuple[Attribution, ...]
    rank_agreement: float  # mean pairwise Spearman correlation (1 = the same ranking every time)
    spread: float  # mean over features of the std across seeds, relative to the mean |value|


def stability(model: Explainable, x: Any, method: str, seeds=(0, 1, 2), **kwargs) -> Stability:
    """Explain `x` once per seed with `method`; how much do the answers differ?"""
    if len(seeds) < 2:
        raise MaaslabError("stability needs at least two seeds")
    runs = tuple(explain(model, x, method, seed=s, **kwargs) for s in seeds)
    pairs = [agreement(a, b) for a, b in combinations(runs, 2)]
    values = np.stack([r.values for r in runs])
    scale = np.abs(values).mean() or 1.0
    return Stability(runs, float(np.mean(pairs)), float(values.std(0).mean() / scale))


@dataclass(frozen=True)
class SanityCheck:
    """An explanation of the trained model next to one of the same model with random weights."""

    trained: Attribution
    randomized: Attribution
    similarity: float  # Spearman correlation of |values| between the two

    @property
    def passed(self) -> bool:
        """True when the explanation changed with the weights (similarity below the threshold)."""
        return self.similarity < SANITY_THRESHOLD


def sanity_check(
    model: Explainable, x: Any, method: str, *, seed: int = 0, **kwargs
) -> SanityCheck:
    """Explain `x` with the trained model and with a weight-randomized copy; compare."""
    trained = explain(model, x, method, seed=seed, **kwargs)
    random_model = model.randomized(seed)
    randomized = explain(random_model, x, method, seed=seed, target=trained.target, **kwargs)
    similarity = _rank_correlation(np.abs(trained.values), np.abs(randomized.values))
    return SanityCheck(trained, randomized, similarity)
