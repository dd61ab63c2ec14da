"""Lesson 10's auto-checked exercises: exact Shapley values, additivity, rank agreement, LIME's fit.

Each check calls the learner's function on a fixed probe and compares the answer with a reference:
Shapley values enumerated over every coalition (tests compare them with shap's KernelExplainer),
`Attribution.additivity_gap`, scipy's Spearman correlation, and scikit-learn's `Ridge` with
`sample_weight` (the surrogate the lime library fits). When an answer matches a known mistake
(leave-one-out instead of Shapley, unweighted averages, np.argsort taken for ranks, the kernel
weights forgotten) the message names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from math import factorial

import numpy as np
from scipy.stats import pearsonr, spearmanr

from maaslab.exercises.grading import (
    CheckResult,
    call_answer,
    check_array,
    exercise,
    failed,
    first_mistake,
    matches,
    passed,
)
from maaslab.explain.core import Attribution, Explainable

LIME_ALPHA = 1.0  # lime fits Ridge(alpha=1, fit_intercept=True): its surrogate's penalty
LIME_WIDTH_FACTOR = 0.75  # lime's tabular kernel width is 0.75 * sqrt(number of features)

# --- a 3-feature toy model whose Shapley values can be found by hand ------------------------------

TOY_FEATURES = ("a", "b", "c")
TOY_X = np.array([1.0, 2.0, 3.0])  # the input explained
TOY_BASELINE = np.array([0.0, 0.0, 0.0])  # "absent" features take these values


def toy_function(X: np.ndarray) -> np.ndarray:
    """f(a, b, c) = 2a + bc + abc: one feature alone, a pair, and all three interacting."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    a, b, c = X[:, 0], X[:, 1], X[:, 2]
    return 2 * a + b * c + a * b * c


def coalition_value(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, baseline: np.ndarray
) -> Callable[[Sequence[int]], float]:
    """v(S): f at x with the features outside coalition S set to their baseline values."""

    def value(coalition: Sequence[int]) -> float:
        z = np.array(baseline, dtype=float)
        idx = list(coalition)
        z[idx] = np.asarray(x, dtype=float)[idx]
        return float(f(z[None, :])[0])

    return value


def toy_value(coalition: Sequence[int]) -> float:
    """v(S) of the toy model at TOY_X, absent features at TOY_BASELINE (S: present features)."""
    return coalition_value(toy_function, TOY_X, TOY_BASELINE)(coalition)


def exact_shapley(value: Callable[[Sequence[int]], float], n: int) -> np.ndarray:
    """Shapley values of n players by enumerating every coalition (2^n calls of `value`)."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for s in combinations(others, size):
                phi[i] += weight * (value((*s, i)) - value(s))
    return phi


def toy_explainable() -> Explainable:
    """The toy model as an Explainable with one background row, so KernelSHAP is exact."""
    return Explainable(
        "tabular",
        lambda X: toy_function(X)[:, None],  # one "class": the function's value itself
        ("f",),
        name="toy f(a, b, c)",
        feature_names=TOY_FEATURES,
        background=TOY_BASELINE[None, :],
    )


# --- exercise 1: exact Shapley values ------------------------------------------------------------


def _second_game() -> Callable[[Sequence[int]], float]:
    # Another 3-feature model (a negative pair term, a non-zero baseline) so a function that
    # only reproduces the toy's numbers is caught.
    def f(X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        return 1.5 * X[:, 1] - X[:, 0] * X[:, 2] + 0.5 * X[:, 0] * X[:, 1] * X[:, 2]

    return coalition_value(f, np.array([2.0, -1.0, 0.5]), np.array([0.5, 1.0, -1.0]))


@exercise
def check_shapley(fn: Callable) -> CheckResult:
    """Check `fn(value, n) -> (n,)` Shapley values; `value(S)` is the model with only S present.

    Parameters
    ----------
    fn : takes `value` (a function of a tuple of feature indices, the coalition) and the number
        of features `n`; returns one Shapley value per feature.
    """
    name = "exact Shapley values by enumerating coalitions"
    for label, value in (
        ("the toy model", toy_value),
        ("a second 3-feature model", _second_game()),
    ):
        got, bad = call_answer(name, fn, value, 3)
        if bad is not None:  # a CheckResult is falsy when it fails
            return bad
        try:
            got = np.asarray(got, dtype=float)
        except (TypeError, ValueError):
            return failed(name, f"expected 3 numbers, got {type(got).__name__}")
        expected = exact_shapley(value, 3)
        full, empty = value((0, 1, 2)), value(())
        result = check_array(name, got, expected, rtol=1e-6, atol=1e-9)
        if result.passed:
            continue
        singles = [value((i,)) - empty for i in range(3)]
        leave_one_out = [full - value(tuple(j for j in range(3) if j != i)) for i in range(3)]
        unweighted = [
            np.mean(
                [
                    value((*s, i)) - value(s)
                    for k in range(3)
                    for s in combinations([j for j in range(3) if j != i], k)
                ]
            )
            for i in range(3)
        ]
        mistakes = [
            (
                singles,
                "each value is v({i}) - v({}): the feature added to an empty coalition "
                "only. Shapley averages its contribution over every coalition of the others",
            ),
            (
                leave_one_out,
                "each value is v(all) - v(all but i): the feature removed last only "
                "(leave-one-out). Average over every coalition of the others",
            ),
            (
                unweighted,
                "you averaged the marginal contributions over subsets with equal "
                "weights. Weight a subset S of the others by |S|! (n - |S| - 1)! / n!, so every "
                "coalition size counts the same",
            ),
            (
                expected * factorial(3),
                "your values are n! = 6 times too large: divide the "
                "weights |S|! (n - |S| - 1)! by n!",
            ),
        ]
        why = first_mistake(got, mistakes, rtol=1e-6, atol=1e-9)
        if why:
            return failed(name, f"on {label}: {why}.")
        gap = got.sum() - (full - empty)
        extra = (
            f" They add up to {got.sum():.4g}, but Shapley values add up to "
            f"v(all) - v(none) = {full - empty:.4g}."
            if abs(gap) > 1e-9
            else ""
        )
        return failed(name, f"on {label}: {result.message}{extra}")
    return passed(name, "matches the enumeration over all 8 coalitions on both models")


# --- exercise 2: additivity of an Attribution ----------------------------------------------------


def _additivity_probes() -> list[Attribution]:
    # A SHAP-like explanation that adds up and LIME-like ones that do not.
    common = dict(
        target=1,
        target_name="benign",
        features=("u", "v", "w", "z"),
        kind="tabular",
        evaluations=0,
        seconds=0.0,
        seed=0,
    )
    return [
        Attribution(np.array([0.12, -0.05, 0.03, 0.02]), 0.6, 0.72, method="kernel_shap", **common),
        # Gaps of both signs: +0.12 first, so a flipped sign and |gap| are told apart.
        Attribution(np.array([0.2, -0.1, 0.15, -0.02]), 0.5, 0.61, method="lime", **common),
        Attribution(np.array([0.2, -0.1, 0.15, -0.02]), 0.45, 0.81, method="lime", **common),
    ]


@exercise
def check_additivity(fn: Callable) -> CheckResult:
    """Check `fn(attribution) -> float`: base value + sum of the values - the prediction.

    Parameters
    ----------
    fn : takes an Attribution and returns its additivity gap (0 when it adds up exactly).
    """
    name = "additivity gap of an explanation"
    for attr in _additivity_probes():
        got, bad = call_answer(name, fn, attr)
        if bad is not None:
            return bad
        try:
            got = float(np.asarray(got, dtype=float))
        except (TypeError, ValueError):
            return failed(name, f"expected one number, got {type(got).__name__}")
        expected = attr.additivity_gap
        if abs(got - expected) <= 1e-9:
            continue
        v, b, p = attr.values, attr.base_value, attr.prediction
        mistakes = [
            (
                v.sum() - p,
                "you left out the base value (the expected output with every feature "
                "absent): the explanation starts there",
            ),
            (
                b + np.abs(v).sum() - p,
                "you summed |values|: negative values pull the "
                "prediction down, so sum them with their signs",
            ),
            (
                abs(expected),
                "you returned |gap|: keep the sign, it says whether the explanation "
                "over- or undershoots",
            ),
            (p - b - v.sum(), "the sign is flipped: compute base + sum(values) - prediction"),
            (
                b + v.sum(),
                "this is the explanation's total, base + sum(values): subtract the "
                "model's prediction to get the gap",
            ),
        ]
        why = first_mistake(got, mistakes, rtol=0, atol=1e-9)
        if why:
            return failed(name, f"on a {attr.method} explanation: {why}.")
        return failed(
            name,
            f"on a {attr.method} explanation you returned {got:.4g}, "
            f"expected {expected:.4g} (base {b} + sum {v.sum():.4g} - prediction "
            f"{p}).",
        )
    return passed(name, "0 for the SHAP explanation, and LIME's gap with its sign")


# --- exercise 3: Spearman agreement ---------------------------------------------------------------


def _spearman_probes() -> list[tuple[np.ndarray, np.ndarray]]:
    # No ties (ranks are unambiguous); signs mixed so |values| rank differently from values,
    # and one large value so Pearson on the raw numbers differs from the rank correlation.
    return [
        (
            np.array([0.30, -0.12, 0.05, 0.01, -0.02, 0.08, -0.20, 0.0]),
            np.array([0.90, -0.05, 0.07, -0.01, 0.02, 0.03, -0.30, 0.04]),
        ),
        (np.array([-0.4, 0.1, 0.25, -0.05, 0.02]), np.array([0.2, 0.15, 0.3, -0.1, 0.01])),
    ]


@exercise
def check_spearman(fn: Callable) -> CheckResult:
    """Check `fn(a, b) -> float`: Spearman rank correlation of two explanations' values.

    Parameters
    ----------
    fn : takes two arrays of attribution values (same features) and returns the Pearson
        correlation of their ranks.
    """
    name = "Spearman agreement of two explanations"
    for a, b in _spearman_probes():
        got, bad = call_answer(name, fn, a, b)
        if bad is not None:
            return bad
        try:
            got = float(np.asarray(got, dtype=float))
        except (TypeError, ValueError):
            return failed(name, f"expected one number, got {type(got).__name__}")
        expected = float(spearmanr(a, b).statistic)
        if abs(got - expected) <= 1e-9:
            continue
        mistakes = [
            (
                pearsonr(a, b).statistic,
                "this is Pearson's correlation of the values: rank "
                "each array first (Spearman compares orders, not sizes)",
            ),
            (
                np.corrcoef(np.argsort(a), np.argsort(b))[0, 1],
                "np.argsort(a) lists the indices in sorted order, it is not each value's rank: "
                "the rank is np.argsort(np.argsort(a)) (or scipy.stats.rankdata)",
            ),
            (
                spearmanr(np.abs(a), np.abs(b)).statistic,
                "you ranked |values|: agreement here "
                "ranks the signed values, so a feature pushing up and one pushing down differ",
            ),
            (-expected, "the sign is flipped"),
        ]
        why = first_mistake(got, mistakes, rtol=0, atol=1e-9)
        if why:
            return failed(name, f"{why}.")
        return failed(
            name,
            f"you returned {got:.4g}, expected {expected:.4g}: correlate the "
            "ranks of a with the ranks of b.",
        )
    return passed(name, "matches scipy.stats.spearmanr on both probes")


# --- exercise 4: LIME's weighted linear surrogate ------------------------------------------------


def lime_kernel(distances: np.ndarray, width: float) -> np.ndarray:
    """lime's sample weights: sqrt(exp(-d^2 / width^2)), 1 at the input, falling with distance."""
    return np.sqrt(np.exp(-(np.asarray(distances, dtype=float) ** 2) / width**2))


def _surrogate_probe() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Perturbations around an input at the origin of a standardized 4-feature space, a model
    # that is not linear (so the weights change the fit), and lime's kernel weights.
    rng = np.random.default_rng(10)
    Z = rng.normal(size=(300, 4))
    x = np.array([0.8, -0.5, 0.3, 1.2])
    Z[0] = x  # lime's first sample is the input itself
    y = 1 / (1 + np.exp(-(1.5 * Z[:, 0] - Z[:, 1] + 0.5 * Z[:, 2] * Z[:, 3])))
    d = np.linalg.norm(Z - x, axis=1)
    return Z, y, lime_kernel(d, 1.5)  # narrower than lime's 0.75 * sqrt(4): weights vary more


def _ridge(
    Z: np.ndarray, y: np.ndarray, w: np.ndarray | None, alpha: float, intercept: bool = True
) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=alpha, fit_intercept=intercept).fit(Z, y, sample_weight=w)
    return model.coef_, float(model.intercept_)


@exercise
def check_lime_surrogate(fn: Callable) -> CheckResult:
    """Check `fn(Z, y, weights) -> (coef, intercept)`: lime's weighted ridge fit, alpha = 1.

    Parameters
    ----------
    fn : takes perturbations Z (N, F), the model's outputs y (N,) and sample weights (N,);
        returns the coefficients (F,) and the intercept of the ridge regression minimising
        sum_i w_i (y_i - b - Z_i . coef)^2 + alpha |coef|^2 (the intercept is not penalised).
    """
    name = "LIME's weighted linear surrogate"
    Z, y, w = _surrogate_probe()
    got, bad = call_answer(name, fn, Z, y, w)
    if bad is not None:
        return bad
    if not (isinstance(got, tuple | list) and len(got) == 2):
        return failed(name, "return a pair (coef, intercept): the F coefficients and one number")
    try:
        coef, intercept = np.asarray(got[0], dtype=float).reshape(-1), float(np.asarray(got[1]))
    except (TypeError, ValueError):
        return failed(name, "coef must be numbers and intercept one number")
    ref_coef, ref_b = _ridge(Z, y, w, LIME_ALPHA)
    if (
        coef.shape == ref_coef.shape
        and np.allclose(coef, ref_coef, atol=1e-6)
        and (abs(intercept - ref_b) <= 1e-6)
    ):
        return passed(name, "matches sklearn Ridge(alpha=1).fit(Z, y, sample_weight=weights)")
    mistakes = [
        (
            _ridge(Z, y, None, LIME_ALPHA),
            "you ignored the weights: every perturbation counted "
            "the same, so this is a global fit, not a local one. Weight each squared error by w_i",
        ),
        (
            _ridge(Z, y, w, 0.0),
            "this is weighted least squares without the penalty: lime's "
            "Ridge adds alpha |coef|^2 with alpha = 1 (add alpha to the diagonal of Z^T W Z)",
        ),
        (
            _ridge(Z, y, w, LIME_ALPHA, intercept=False),
            "you fitted without an intercept: centre "
            "Z and y on their weighted means first, then b = mean(y) - mean(Z) . coef",
        ),
        (
            _ridge(Z, y, None, 0.0),
            "this is plain least squares: weight the samples by w_i and "
            "add the ridge penalty alpha = 1",
        ),
    ]
    for (wrong_coef, wrong_b), why in mistakes:
        if matches(coef, wrong_coef, rtol=1e-5, atol=1e-9) and abs(intercept - wrong_b) <= 1e-5:
            return failed(name, f"{why}.")
    if coef.shape != ref_coef.shape:
        return failed(name, f"coef has shape {coef.shape}, expected {ref_coef.shape}")
    worst = int(np.argmax(np.abs(coef - ref_coef)))
    return failed(
        name,
        f"coef[{worst}] = {coef[worst]:.5g}, expected {ref_coef[worst]:.5g}; "
        f"intercept {intercept:.5g}, expected {ref_b:.5g}. Is the intercept left out "
        "of the penalty, and are the means weighted?",
    )
