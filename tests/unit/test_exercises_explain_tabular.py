"""Lesson 10's exercise checks pass right answers and name the mistake in wrong ones."""

from itertools import combinations
from math import factorial

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.linear_model import Ridge

from maaslab.exercises.explain_tabular import (
    TOY_BASELINE,
    TOY_X,
    _additivity_probes,
    _surrogate_probe,
    check_additivity,
    check_lime_surrogate,
    check_shapley,
    check_spearman,
    coalition_value,
    exact_shapley,
    lime_kernel,
    toy_explainable,
    toy_function,
    toy_value,
)
from maaslab.explain import explain

# --- the notebook's solutions (they must agree with the libraries) ------------------------------


def hand_shapley(value, n):
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k in range(n):
            for s in combinations(others, k):
                weight = factorial(k) * factorial(n - k - 1) / factorial(n)
                phi[i] += weight * (value((*s, i)) - value(s))
    return phi


def hand_gap(attr):
    return attr.base_value + attr.values.sum() - attr.prediction


def hand_spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return np.corrcoef(ra, rb)[0, 1]


def hand_surrogate(Z, y, w, alpha=1.0):
    zbar, ybar = w @ Z / w.sum(), w @ y / w.sum()
    Zc, yc = Z - zbar, y - ybar
    coef = np.linalg.solve(Zc.T @ (w[:, None] * Zc) + alpha * np.eye(Z.shape[1]), Zc.T @ (w * yc))
    return coef, ybar - zbar @ coef


# --- exact Shapley values ----------------------------------------------------------------------


def test_toy_shapley_values_by_hand_and_by_kernel_shap():
    # 2a + bc + abc at (1, 2, 3) from 0: a gets 2 + 6/3, b and c 6/2 + 6/3 each.
    np.testing.assert_allclose(exact_shapley(toy_value, 3), [4.0, 5.0, 5.0])
    np.testing.assert_allclose(hand_shapley(toy_value, 3), [4.0, 5.0, 5.0])
    # Oracle: shap's KernelExplainer with one background row enumerates all 8 coalitions.
    attr = explain(toy_explainable(), TOY_X, "kernel_shap", target=0, budget=64)
    np.testing.assert_allclose(attr.values, [4.0, 5.0, 5.0], atol=1e-8)
    assert attr.base_value == pytest.approx(toy_function(TOY_BASELINE)[0])
    assert attr.additivity_gap == pytest.approx(0.0, abs=1e-9)


def test_coalition_value_sets_absent_features_to_the_baseline():
    v = coalition_value(toy_function, TOY_X, TOY_BASELINE)
    assert v(()) == 0.0 and v((0,)) == 2.0 and v((1, 2)) == 6.0 and v((0, 1, 2)) == 14.0


def test_shapley_check_passes_right_answers():
    assert check_shapley(hand_shapley).passed
    assert check_shapley(exact_shapley).passed
    assert check_shapley(lambda v, n: list(hand_shapley(v, n))).passed


def _loo(v, n):
    return np.array(
        [v(tuple(range(n))) - v(tuple(j for j in range(n) if j != i)) for i in range(n)]
    )


def _unweighted(v, n):
    out = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        subsets = [s for k in range(n) for s in combinations(others, k)]
        out.append(np.mean([v((*s, i)) - v(s) for s in subsets]))
    return np.array(out)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda v, n: np.array([v((i,)) - v(()) for i in range(n)]), "empty coalition only"),
        (_loo, "leave-one-out"),
        (_unweighted, "equal weights"),
        (lambda v, n: hand_shapley(v, n) * 6, "n! = 6 times too large"),
        (lambda v, n: np.array([4.0, 5.0, 5.0]), "second 3-feature model"),
        (lambda v, n: hand_shapley(v, n) + 1, "add up to"),
        (lambda v, n: hand_shapley(v, n)[:2], "shape (2,)"),
        (lambda v, n: None, "returned None"),
        (lambda v, n: v(), "raised TypeError"),
    ],
)
def test_shapley_check_names_mistakes(wrong, message):
    result = check_shapley(wrong)
    assert not result.passed and message in result.message, result.message


# --- additivity -------------------------------------------------------------------------------


def test_additivity_check_passes_right_answers_and_probes_differ():
    assert check_additivity(hand_gap).passed
    assert check_additivity(lambda a: a.additivity_gap).passed
    shap_like, lime_up, lime_down = _additivity_probes()
    assert shap_like.additivity_gap == pytest.approx(0.0)
    assert lime_up.additivity_gap > 0.1 and lime_down.additivity_gap < -0.1


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda a: a.prediction - a.base_value - a.values.sum(), "sign is flipped"),
        (lambda a: a.values.sum() - a.prediction, "left out the base value"),
        (lambda a: a.base_value + np.abs(a.values).sum() - a.prediction, "summed |values|"),
        (lambda a: abs(hand_gap(a)), "returned |gap|"),
        (lambda a: a.base_value + a.values.sum(), "explanation's total"),
        (lambda a: 0.0, "on a lime explanation"),
        (lambda a: "gap", "expected one number"),
    ],
)
def test_additivity_check_names_mistakes(wrong, message):
    result = check_additivity(wrong)
    assert not result.passed and message in result.message, result.message


# --- Spearman agreement ----------------------------------------------------------------------


def test_spearman_check_passes_right_answers():
    assert check_spearman(hand_spearman).passed
    assert check_spearman(lambda a, b: np.corrcoef(rankdata(a), rankdata(b))[0, 1]).passed


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda a, b: np.corrcoef(a, b)[0, 1], "Pearson"),
        (lambda a, b: np.corrcoef(np.argsort(a), np.argsort(b))[0, 1], "np.argsort(np.argsort"),
        (lambda a, b: hand_spearman(np.abs(a), np.abs(b)), "you ranked |values|"),
        (lambda a, b: -hand_spearman(a, b), "sign is flipped"),
        (lambda a, b: 0.5, "expected"),
        (lambda a, b: None, "returned None"),
    ],
)
def test_spearman_check_names_mistakes(wrong, message):
    result = check_spearman(wrong)
    assert not result.passed and message in result.message, result.message


# --- LIME's surrogate -------------------------------------------------------------------------


def test_hand_surrogate_matches_sklearn_ridge_with_sample_weight():
    Z, y, w = _surrogate_probe()
    coef, b = hand_surrogate(Z, y, w)
    ref = Ridge(alpha=1.0).fit(Z, y, sample_weight=w)
    np.testing.assert_allclose(coef, ref.coef_, atol=1e-10)
    assert b == pytest.approx(ref.intercept_, abs=1e-10)
    assert w[0] == 1.0 and w.min() < 0.2  # the input itself has weight 1; far samples little


def test_lime_kernel_is_lime_librarys():
    from lime.lime_tabular import LimeTabularExplainer

    explainer = LimeTabularExplainer(np.random.default_rng(0).normal(size=(20, 4)))
    d = np.array([0.0, 0.5, 2.0])
    np.testing.assert_allclose(lime_kernel(d, 0.75 * np.sqrt(4)), explainer.base.kernel_fn(d))


def test_surrogate_check_passes_right_answers():
    assert check_lime_surrogate(hand_surrogate).passed
    assert check_lime_surrogate(lambda Z, y, w: list(hand_surrogate(Z, y, w))).passed


def _no_intercept(Z, y, w):
    coef = np.linalg.solve(Z.T @ (w[:, None] * Z) + np.eye(Z.shape[1]), Z.T @ (w * y))
    return coef, 0.0


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda Z, y, w: hand_surrogate(Z, y, np.ones_like(w)), "ignored the weights"),
        (lambda Z, y, w: hand_surrogate(Z, y, w, alpha=0.0), "without the penalty"),
        (_no_intercept, "without an intercept"),
        (lambda Z, y, w: hand_surrogate(Z, y, np.ones_like(w), 0.0), "plain least squares"),
        (lambda Z, y, w: (hand_surrogate(Z, y, w)[0] * 1.1, hand_surrogate(Z, y, w)[1]), "coef["),
        (lambda Z, y, w: hand_surrogate(Z, y, w)[0], "return a pair"),
        (lambda Z, y, w: (hand_surrogate(Z, y, w)[0][:2], 0.0), "shape (2,)"),
        (lambda Z, y, w: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_surrogate_check_names_mistakes(wrong, message):
    result = check_lime_surrogate(wrong)
    assert not result.passed and message in result.message, result.message
