"""Lesson 09's exercise checks pass right answers and name the mistake in wrong ones."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn

from maaslab.exercises.pretrained_transformers import (
    LORA_PROBE_SHAPES,
    check_lora_count,
    check_macro_f1,
    check_mean_pool,
    check_phenomenon_accuracy,
    check_top_k_search,
    lora_parameter_count,
    phenomenon_accuracy,
)
from maaslab.models.encoder import mean_pool, nearest

# --- mean pooling ------------------------------------------------------------------------------


def hand_mean_pool(hidden, mask):
    # The notebook's solution: it must agree with the library's mean_pool.
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


def test_hand_mean_pool_matches_the_library_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    hidden, mask = torch.randn(2, 6, 8, generator=g), torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    torch.testing.assert_close(hand_mean_pool(hidden, mask), mean_pool(hidden, mask))
    # Changing the padded positions changes nothing; the second text is the mean of 4 tokens.
    other = hidden.clone()
    other[1, 4:] = 100.0
    torch.testing.assert_close(hand_mean_pool(other, mask), hand_mean_pool(hidden, mask))
    torch.testing.assert_close(hand_mean_pool(hidden, mask)[1], hidden[1, :4].mean(0))


def test_mean_pool_check_passes_right_answers():
    assert check_mean_pool(hand_mean_pool).passed
    assert check_mean_pool(mean_pool).passed
    assert check_mean_pool(lambda h, m: hand_mean_pool(h, m).numpy()).passed  # arrays too


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda h, m: h.mean(1), "averaged the padding too"),
        (lambda h, m: (h * m[..., None]).sum(1) / h.shape[1], "still divided by T"),
        (lambda h, m: (h * m[..., None]).sum(1), "sum of the real tokens"),
        (lambda h, m: h[:, 0], "first token ([CLS]) alone"),
        (lambda h, m: (h * m[..., None]).mean(2), "averaged over the features"),
        (lambda h, m: hand_mean_pool(h, m) + 0.5, "largest difference"),
        (lambda h, m: hand_mean_pool(h, m)[:, :2], "shape (3, 2), expected (3, 4)"),
        (lambda h, m: None, "returned None"),
        (lambda h, m: 1 / 0, "raised ZeroDivisionError"),
        (lambda h, m: "pooled", "expected a tensor or array"),
    ],
)
def test_mean_pool_check_names_mistakes(wrong, message):
    result = check_mean_pool(wrong)
    assert not result.passed
    assert message in result.message, result.message


# --- top-k search ------------------------------------------------------------------------------


def hand_top_k(query, corpus, k):
    sims = corpus @ query / (np.linalg.norm(corpus, axis=1) * np.linalg.norm(query))
    return np.argsort(-sims)[:k]


def test_hand_top_k_matches_nearest_on_unit_vectors():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(20, 5))
    query = rng.normal(size=5)
    unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    idx, scores = nearest(query / np.linalg.norm(query), unit, 4)
    np.testing.assert_array_equal(hand_top_k(query, corpus, 4), idx[0])
    assert np.all(np.diff(scores[0]) <= 0)  # most similar first


def test_top_k_check_passes_right_answers():
    assert check_top_k_search(hand_top_k).passed
    # Returning (indices, scores) like maaslab's nearest is fine too.
    assert check_top_k_search(lambda q, c, k: (hand_top_k(q, c, k), None)).passed
    assert check_top_k_search(lambda q, c, k: torch.from_numpy(hand_top_k(q, c, k))).passed


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda q, c, k: np.argsort(-(c @ q))[:k], "raw dot product"),
        (lambda q, c, k: hand_top_k(q, c, len(c))[::-1][:k], "least* similar"),
        (lambda q, c, k: np.argsort(np.linalg.norm(c - q, axis=1))[:k], "Euclidean distance"),
        (lambda q, c, k: np.sort(hand_top_k(q, c, k)), "sorted by index"),
        (lambda q, c, k: hand_top_k(q, c, k + 1), "expected 3 indices, got 4"),
        (lambda q, c, k: np.array([5, 4, 3]), "got rows [5, 4, 3], expected [2, 0, 5]"),
        (lambda q, c, k: None, "returned None"),
        (lambda q, c, k: object(), "expected k indices"),
    ],
)
def test_top_k_check_names_mistakes(wrong, message):
    result = check_top_k_search(wrong)
    assert not result.passed
    assert message in result.message, result.message


# --- accuracy per phenomenon -------------------------------------------------------------------


def hand_phenomenon_accuracy(predictions, labels, phenomena):
    tags = np.array(phenomena)
    right = predictions == labels
    return {p: float(right[tags == p].mean()) for p in set(phenomena)}


def test_phenomenon_accuracy_matches_the_tfidf_baseline():
    from maaslab.reviews import load_reviews, tfidf_baseline

    train, test = load_reviews("train"), load_reviews("test")
    baseline = tfidf_baseline(train, test)
    ours = phenomenon_accuracy(baseline.predictions, test.labels, test.phenomena)
    assert ours == pytest.approx(baseline.per_phenomenon)
    assert set(ours) == set(baseline.per_phenomenon)


def test_phenomenon_check_passes_right_answers():
    assert check_phenomenon_accuracy(hand_phenomenon_accuracy).passed
    assert check_phenomenon_accuracy(phenomenon_accuracy).passed


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda p, y, t: {k: float((p == y).mean()) for k in t}, "overall accuracy"),
        (
            lambda p, y, t: {k: 1 - v for k, v in hand_phenomenon_accuracy(p, y, t).items()},
            "error rates",
        ),
        (lambda p, y, t: {k: float((p == y)[np.array(t) == k].sum()) for k in t}, "counts"),
        (
            lambda p, y, t: {k: float((p == y)[np.array(t) == k].sum()) / len(y) for k in t},
            "divided by all 12 reviews",
        ),
        (lambda p, y, t: {"plain": 0.6}, "the keys should be the tags"),
        (lambda p, y, t: [0.6, 0.33], "expected a dict"),
        (lambda p, y, t: {k: "high" for k in t}, "must be a number"),
        (
            lambda p, y, t: {**hand_phenomenon_accuracy(p, y, t), "sarcasm": 0.9},
            "sarcasm: got 0.900, expected 0.500",
        ),
    ],
)
def test_phenomenon_check_names_mistakes(wrong, message):
    result = check_phenomenon_accuracy(wrong)
    assert not result.passed
    assert message in result.message, result.message


# --- LoRA parameter count ----------------------------------------------------------------------


def hand_lora_count(shapes, r):
    return sum(r * n_in + n_out * r for n_out, n_in in shapes)


def test_lora_count_matches_peft_on_real_layers():
    # Oracle: PEFT's own count of trainable numbers on a stack of linear layers.
    from peft import LoraConfig, get_peft_model

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(i, o) for o, i in LORA_PROBE_SHAPES)

    for r in (1, 4):
        model = get_peft_model(Stack(), LoraConfig(r=r, target_modules=r"layers\.\d+"))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == lora_parameter_count(LORA_PROBE_SHAPES, r)
        assert trainable == hand_lora_count(LORA_PROBE_SHAPES, r)


def test_lora_check_passes_right_answers():
    assert check_lora_count(hand_lora_count).passed
    assert check_lora_count(lambda s, r: np.int64(lora_parameter_count(s, r))).passed


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda s, r: sum(o * i for o, i in s), "every number of the frozen weights"),
        (lambda s, r: sum(o * i + r * (i + o) for o, i in s), "counted the frozen weights W too"),
        (lambda s, r: sum(r * i for o, i in s), "only A (r x in)"),
        (lambda s, r: sum(o * r for o, i in s), "only B (out x r)"),
        (lambda s, r: sum(r * o * i for o, i in s), "r full-size matrices"),
        (lambda s, r: r * (s[0][0] + s[0][1]), "that is one layer"),
        (lambda s, r: sum(i + o for o, i in s), "left out the rank"),
        (lambda s, r: hand_lora_count(s, r) + 1, "got 3,073, expected 3,072"),
        (lambda s, r: hand_lora_count(s, r) if r > 1 else 0, "for r = 1"),
        (lambda s, r: "many", "one whole number"),
        (lambda s, r: None, "returned None"),
    ],
)
def test_lora_check_names_mistakes(wrong, message):
    result = check_lora_count(wrong)
    assert not result.passed
    assert message in result.message, result.message


# --- macro F1 ----------------------------------------------------------------------------------


def hand_macro_f1(labels, predictions):
    # The notebook's solution.
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    scores = []
    for k in np.union1d(labels, predictions):
        tp = np.sum((predictions == k) & (labels == k))
        fp = np.sum((predictions == k) & (labels != k))
        fn = np.sum((predictions != k) & (labels == k))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_macro_f1_by_hand_passes_and_equals_sklearn():
    assert check_macro_f1(hand_macro_f1).passed
    y, y_hat = np.array([0, 0, 0, 1, 2, 2]), np.array([0, 1, 0, 1, 2, 0])
    assert hand_macro_f1(y, y_hat) == pytest.approx(f1_score(y, y_hat, average="macro"))
    assert check_macro_f1(lambda y, p: f1_score(y, p, average="macro")).passed


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda y, p: float(np.mean(np.asarray(y) == np.asarray(p))), "this is the accuracy"),
        (lambda y, p: f1_score(y, p) if len(set(y)) == 2 else 0.0, "average='binary'"),
        (lambda y, p: f1_score(y, p, average="weighted"), "weighs each class by its examples"),
        (
            lambda y, p: (
                (2 * precision_score(y, p, average="macro") * recall_score(y, p, average="macro"))
                / (precision_score(y, p, average="macro") + recall_score(y, p, average="macro"))
            ),
            "harmonic mean of the macro precision and recall",
        ),
        (
            lambda y, p: (
                (precision_score(y, p, average="macro") + recall_score(y, p, average="macro")) / 2
            ),
            "not their mean",
        ),
        (lambda y, p: "high", "expected one number"),
    ],
)
def test_macro_f1_slips_are_named(answer, message):
    verdict = check_macro_f1(answer)
    assert not verdict.passed and message in verdict.message, verdict.message
