"""Lesson 11's exercise checks pass right answers and name the mistake in wrong ones."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from maaslab.exercises.explain_images_text import (
    AUC_PROBE_FRACTIONS,
    AUC_PROBE_SCORES,
    WORDS_PROBE_TEXT,
    WORDS_PROBE_VALUES,
    _tidy,
    check_deletion_auc,
    check_pixel_segments,
    check_remove_top_words,
    check_sanity_check,
    remove_top_words,
    sanity_probe,
)
from maaslab.explain import explain, faithfulness, sanity_check, tabular
from maaslab.explain.core import words_of

# --- the notebook's solutions ----------------------------------------------------------------


def hand_auc(fractions, scores):
    return float(np.sum(np.diff(fractions) * (scores[1:] + scores[:-1]) / 2))


def hand_sanity(trained, randomized):
    similarity = float(spearmanr(np.abs(trained), np.abs(randomized)).statistic)
    return similarity, similarity < 0.5


def hand_remove(text, values, k):
    _, spans = words_of(text)
    top = set(np.argsort(-np.asarray(values))[:k].tolist())
    out, last = "", 0
    for i, (a, b) in enumerate(spans):
        out += text[last:a] + ("" if i in top else text[a:b])
        last = b
    return " ".join((out + text[last:]).split())


@pytest.fixture(scope="module")
def tiny():
    # A small torch classifier on 6 columns: enough for real curves and a real sanity check.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    bg = np.random.default_rng(0).normal(size=(20, 6))
    model = tabular(net, bg, [f"f{i}" for i in range(6)], ["a", "b"], name="tiny")
    return model, np.array([1.5, -0.5, 2.0, 0.3, -1.2, 0.8])


# --- exercise 1: deletion AUC ------------------------------------------------------------------


def test_hand_auc_matches_the_library_curve(tiny):
    model, x = tiny
    f = faithfulness(model, x, explain(model, x, "deep_shap"), random_orders=2)
    for curve in (f.deletion, f.insertion, f.random_deletion):
        assert hand_auc(curve.fractions, curve.scores) == pytest.approx(curve.auc, abs=1e-12)


def test_deletion_auc_check_passes_the_trapezoid():
    assert check_deletion_auc(hand_auc).passed
    assert check_deletion_auc(lambda f, s: np.trapezoid(s, f)).passed


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda f, s: s.mean(), "mean of the scores"),
        (lambda f, s: np.sum(np.diff(f) * s[:-1]), "left rectangles"),
        (lambda f, s: np.sum(np.diff(f) * s[1:]), "right rectangles"),
        (lambda f, s: np.sum(np.diff(f) * (s[1:] + s[:-1])), "/ 2 is missing"),
        (lambda f, s: np.trapezoid(f, s), "arguments are swapped"),
        (lambda f, s: 0.3, "expected 0.2088"),
        (lambda f, s: None, "returned None"),
        (lambda f, s: 1 / 0, "ZeroDivisionError"),
        (lambda f, s: [1.0, 2.0], "one number"),
    ],
)
def test_deletion_auc_check_names_mistakes(answer, words):
    result = check_deletion_auc(answer)
    assert not result.passed and words in result.message


def test_probe_makes_the_mistakes_distinct():
    f, s = AUC_PROBE_FRACTIONS, AUC_PROBE_SCORES
    area = hand_auc(f, s)
    for wrong in (s.mean(), np.sum(np.diff(f) * s[:-1]), np.sum(np.diff(f) * s[1:])):
        assert abs(wrong - area) > 0.01


# --- exercise 2: per-pixel segments ------------------------------------------------------------


def test_pixel_segments_check_passes_row_major_numbering():
    assert check_pixel_segments(np.arange(64).reshape(8, 8)).passed
    assert check_pixel_segments([list(range(r * 8, r * 8 + 8)) for r in range(8)]).passed


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (np.arange(64), "image's own shape"),
        (np.arange(64).reshape(8, 8).T, "down the columns"),
        (np.arange(1, 65).reshape(8, 8), "start at 1"),
        (np.zeros((8, 8), int), "one segment"),
        (np.arange(16).reshape(4, 4).repeat(2, 0).repeat(2, 1), "16 segments"),
        (np.random.default_rng(0).permutation(64).reshape(8, 8), "row by row"),
        (np.arange(49).reshape(7, 7), "expected (8, 8)"),
        (object(), "segment numbers"),
    ],
)
def test_pixel_segments_check_names_mistakes(answer, words):
    result = check_pixel_segments(answer)
    assert not result.passed and words in result.message


# --- exercise 3: sanity check ------------------------------------------------------------------


def test_hand_sanity_matches_the_library(tiny):
    model, x = tiny
    for method in ("deep_shap", "gradient_shap"):
        check = sanity_check(model, x, method)
        similarity, ok = hand_sanity(check.trained.values, check.randomized.values)
        assert similarity == pytest.approx(check.similarity, abs=1e-12)
        assert ok == check.passed


def test_sanity_probe_has_one_failing_and_one_passing_pair():
    (a, b), (c, d) = sanity_probe()
    assert hand_sanity(a, b)[0] > 0.6 and not hand_sanity(a, b)[1]
    assert hand_sanity(c, d)[0] < 0.3 and hand_sanity(c, d)[1]


def test_sanity_check_check_passes_right_answers():
    result = check_sanity_check(hand_sanity)
    assert result.passed and "passed=False" in result.message


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda a, b: (spearmanr(a, b).statistic, spearmanr(a, b).statistic < 0.5), "sign"),
        (
            lambda a, b: (np.corrcoef(np.abs(a), np.abs(b))[0, 1], False),
            "Pearson's correlation of |",
        ),
        (lambda a, b: (np.corrcoef(a, b)[0, 1], False), "signed values"),
        (lambda a, b: (hand_sanity(a, b)[0], not hand_sanity(a, b)[1]), "CHANGES"),
        (lambda a, b: (hand_sanity(a, b)[0], "yes"), "True or False"),
        (lambda a, b: hand_sanity(a, b)[0], "(similarity, passed)"),
        (lambda a, b: (0.0, True), "expected"),
    ],
)
def test_sanity_check_check_names_mistakes(answer, words):
    result = check_sanity_check(answer)
    assert not result.passed and words in result.message


# --- exercise 4: remove the top words ----------------------------------------------------------


def test_remove_top_words_matches_the_deletion_masking(tiny):
    # Explainable.masked is what the deletion curve feeds the model; ours must cut the same words.
    from maaslab.explain.core import Explainable

    text_model = Explainable("text", lambda texts: np.zeros((len(texts), 2)), ("a", "b"))
    order = np.argsort(-WORDS_PROBE_VALUES, kind="stable")
    for k in (1, 3, 5):
        keep = np.ones(len(WORDS_PROBE_VALUES), bool)
        keep[order[:k]] = False
        expected = text_model.masked(WORDS_PROBE_TEXT, keep)[0]
        assert remove_top_words(WORDS_PROBE_TEXT, WORDS_PROBE_VALUES, k) == expected
        assert _tidy(hand_remove(WORDS_PROBE_TEXT, WORDS_PROBE_VALUES, k)) == expected
    assert remove_top_words(WORDS_PROBE_TEXT, WORDS_PROBE_VALUES, 2) == (
        "The trailer looked awful, but the film is a."
    )


def test_remove_top_words_check_passes_right_answers():
    assert check_remove_top_words(hand_remove).passed
    assert check_remove_top_words(remove_top_words).passed


def _by(order_fn, k_shift=0):
    def answer(text, values, k):
        words, _ = words_of(text)
        drop = set(order_fn(np.asarray(values))[: k + k_shift].tolist())
        return hand_remove(text, [1.0 if i in drop else 0.0 for i in range(len(words))], len(drop))

    return answer


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (_by(lambda v: np.argsort(-np.abs(v))), "|value|"),
        (_by(lambda v: np.argsort(v)), "smallest"),
        (_by(lambda v: np.argsort(-v), -1), "removed 1 words, expected 2"),
        (_by(lambda v: np.argsort(-v), 1), "removed 3 words, expected 2"),
        (
            lambda t, v, k: " ".join(
                w for i, w in enumerate(words_of(t)[0]) if i not in set(np.argsort(-v)[:k])
            ),
            "punctuation",
        ),
        (lambda t, v, k: t, "expected"),
        (lambda t, v, k: words_of(t)[0], "a str"),
    ],
)
def test_remove_top_words_check_names_mistakes(answer, words):
    result = check_remove_top_words(answer)
    assert not result.passed and words in result.message
