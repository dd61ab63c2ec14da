"""Lesson 09's auto-checked exercises: mean pooling, cosine search, LoRA size, per-tag accuracy,
macro F1.

Each check calls the learner's function on a fixed, seeded probe and compares with the library
(`maaslab.models.encoder.mean_pool` and `nearest`, which tests compare with sentence-transformers)
or with a reference written out here. When the answer matches a known mistake (padding averaged
in, dot product instead of cosine, one LoRA matrix counted, the overall accuracy everywhere, the
positive class's F1 for the macro F1) the message names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from maaslab.exercises.grading import (
    CheckResult,
    answer_number,
    call_answer,
    exercise,
    failed,
    first_mistake,
    passed,
    right_or_first_mistake,
)
from maaslab.metrics import precision_recall_f1
from maaslab.models.encoder import mean_pool, nearest

# Linear layers as (out_features, in_features), the shape of nn.Linear.weight: a small probe
# for LoRA counting, with square and non-square layers so in and out cannot be swapped unnoticed.
LORA_PROBE_SHAPES: tuple[tuple[int, int], ...] = ((64, 64), (64, 64), (128, 64), (64, 256))
# Rank 4 first: with r = 1 some mistakes (r x out x in vs out x in) give the same number.
LORA_PROBE_RANKS = (4, 8, 1)


def _to_array(got: object) -> np.ndarray:
    # Tensors (also with grad) and nested lists -> float array; raises on non-numbers.
    return np.asarray(got.detach().cpu() if hasattr(got, "detach") else got, dtype=float)


# --- exercise 1: mean pooling with an attention mask ----------------------------------------------


def _pool_probe() -> tuple[torch.Tensor, torch.Tensor]:
    # Three "sentences" of 3, 5 and 2 real tokens, right-padded to T = 5; C = 4 features.
    g = torch.Generator().manual_seed(9)
    hidden = torch.randn(3, 5, 4, generator=g) + 1.0  # shifted so padding visibly moves a mean
    mask = (torch.arange(5) < torch.tensor([[3], [5], [2]])).long()  # (B, T), 1 = real token
    return hidden, mask


@exercise
def check_mean_pool(fn: Callable) -> CheckResult:
    """Check `fn(hidden, mask) -> (B, C)`: the average of each text's real token vectors."""
    name = "mean pooling with an attention mask"
    hidden, mask = _pool_probe()
    got, bad = call_answer(name, fn, hidden, mask)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    try:
        got = _to_array(got)
    except (TypeError, ValueError):
        return failed(name, f"expected a tensor or array, got {type(got).__name__}")
    m = mask.unsqueeze(-1).float()  # (B, T, 1)
    T = hidden.shape[1]
    mistakes = [
        (
            hidden.mean(1),
            "you averaged the padding too: multiply by the mask before summing and "
            "divide by the number of real tokens (mask.sum), not by T",
        ),
        (
            (hidden * m).sum(1) / T,
            f"you left the padding out of the sum but still divided by "
            f"T = {T}: divide each row by its own count of real tokens, mask.sum(1)",
        ),
        ((hidden * m).sum(1), "this is the sum of the real tokens: divide by how many there are"),
        (hidden[:, 0], "this is the first token ([CLS]) alone: average every real token"),
        (
            (hidden * m).mean(2),
            "you averaged over the features (dim 2): average over the tokens, "
            "dim 1, so each text keeps its C features",
        ),
    ]
    expected = mean_pool(hidden, mask).numpy()
    hint = "Sum hidden * mask[..., None] over dim 1, divide by mask.sum(1)."
    return right_or_first_mistake(name, got, expected, mistakes, hint=hint)


# --- exercise 2: cosine similarity and top-k search ----------------------------------------------


def _search_probe() -> tuple[np.ndarray, np.ndarray]:
    # Not unit length on purpose, and built so that the dot product ranks differently from the
    # cosine: row 2 points almost the query's way but is short; row 1 is long and off to the side.
    query = np.array([1.0, 0.0, 0.0])
    corpus = np.array(
        [
            [0.8, 0.3, 0.1],  # second most similar direction
            [6.0, 5.0, 2.0],  # a long vector: the largest dot product, a middling cosine
            [0.5, 0.05, 0.0],  # the most similar direction, short
            [-1.0, 0.2, 0.0],  # the opposite direction
            [0.0, 1.0, 1.0],  # at right angles
            [2.0, -1.5, 0.5],
        ]
    )
    return query, corpus


@exercise
def check_top_k_search(fn: Callable) -> CheckResult:
    """Check `fn(query (C,), corpus (N, C), k) -> indices` of the k rows with the largest cosine."""
    name = "top-k search by cosine similarity"
    query, corpus = _search_probe()
    k = 3
    got, bad = call_answer(name, fn, query, corpus, k)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    if isinstance(got, tuple):
        got = got[0]  # (indices, scores) -> indices
    try:
        got = _to_array(got).astype(int).ravel()
    except (TypeError, ValueError):
        return failed(name, f"expected k indices, got {type(got).__name__}")
    unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    expected = nearest(query / np.linalg.norm(query), unit, k)[0][0]
    if got.tolist() == expected.tolist():
        return passed(name, f"rows {expected.tolist()}, most similar first")
    dot = corpus @ query
    cosine = unit @ (query / np.linalg.norm(query))
    distance = np.linalg.norm(corpus - query, axis=1)
    mistakes = [
        (
            np.argsort(-dot)[:k],
            "you ranked by the raw dot product, which favours long vectors: "
            "divide by both lengths (or normalize the rows first) to get the cosine",
        ),
        (
            np.argsort(cosine)[:k],
            "these are the k *least* similar rows: sort by the negated "
            "similarity (np.argsort(-sims)) to put the largest first",
        ),
        (
            np.argsort(distance)[:k],
            "you ranked by Euclidean distance between unnormalized "
            "vectors; the cosine ignores length, so normalize first (or use the cosine directly)",
        ),
        (np.sort(expected), "the right rows, but sorted by index: return them most similar first"),
    ]
    why = first_mistake(got, mistakes, rtol=0, atol=0)
    if why:
        return failed(name, why)
    if len(got) != k:
        return failed(name, f"expected {k} indices, got {len(got)}: keep the first k of the order")
    how = "Compute cos = corpus @ query / (|corpus| |query|), then np.argsort(-cos)[:k]."
    return failed(name, f"got rows {got.tolist()}, expected {expected.tolist()}. {how}")


# --- exercise 3: accuracy per phenomenon ---------------------------------------------------------


def _phenomenon_probe() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    # 12 reviews with unequal group sizes, so dividing by the wrong count shows.
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0])
    predictions = np.array([0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1])
    phenomena = (
        "plain",
        "plain",
        "plain",
        "plain",
        "plain",
        "negation",
        "negation",
        "negation",
        "sarcasm",
        "sarcasm",
        "contrast",
        "contrast",
    )
    return predictions, labels, phenomena


def phenomenon_accuracy(
    predictions: np.ndarray, labels: np.ndarray, phenomena: Sequence[str]
) -> dict[str, float]:
    """Accuracy within each phenomenon tag, in the order the tags first appear."""
    right = np.asarray(predictions) == np.asarray(labels)
    tags = np.asarray(phenomena)
    return {p: float(right[tags == p].mean()) for p in dict.fromkeys(phenomena)}


@exercise
def check_phenomenon_accuracy(fn: Callable) -> CheckResult:
    """Check `fn(predictions, labels, phenomena) -> {phenomenon: accuracy}`."""
    name = "accuracy per phenomenon"
    predictions, labels, phenomena = _phenomenon_probe()
    got, bad = call_answer(name, fn, predictions, labels, phenomena)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    expected = phenomenon_accuracy(predictions, labels, phenomena)
    if not isinstance(got, dict):
        return failed(name, f"expected a dict {{phenomenon: accuracy}}, got {type(got).__name__}")
    if set(got) != set(expected):
        return failed(name, f"the keys should be the tags {sorted(expected)}, got {sorted(got)}")
    try:
        values = np.array([float(got[p]) for p in expected])
    except (TypeError, ValueError):
        return failed(name, "every value must be a number (a fraction between 0 and 1)")
    want = np.array(list(expected.values()))
    if np.allclose(values, want):
        return passed(name, ", ".join(f"{p} {v:.2f}" for p, v in expected.items()))
    right = predictions == labels
    tags = np.array(phenomena)
    counts = np.array([right[tags == p].sum() for p in expected], dtype=float)
    mistakes = [
        (
            np.full(len(want), right.mean()),
            "every tag got the overall accuracy: keep only the "
            "reviews of that tag (right[tags == p]) before averaging",
        ),
        (1 - want, "these are error rates: accuracy is the fraction predicted *right*"),
        (counts, "these are counts of right answers: divide by the number of reviews of the tag"),
        (
            counts / len(right),
            f"you divided by all {len(right)} reviews: divide by the number of reviews of that tag",
        ),
    ]
    why = first_mistake(values, mistakes)
    if why:
        return failed(name, why)
    worst = max(expected, key=lambda p: abs(float(got[p]) - expected[p]))
    return failed(
        name,
        f"{worst}: got {float(got[worst]):.3f}, expected {expected[worst]:.3f}. "
        "Mean of (predictions == labels) over the reviews with that tag.",
    )


# --- exercise 4: how many numbers LoRA trains ----------------------------------------------------


def lora_parameter_count(shapes: Sequence[tuple[int, int]], r: int) -> int:
    """Trainable numbers of rank-r LoRA on linear layers of shape (out, in): sum of r (in + out)."""
    return sum(r * (n_in + n_out) for n_out, n_in in shapes)


@exercise
def check_lora_count(fn: Callable) -> CheckResult:
    """Check `fn(shapes, r) -> int`, the numbers rank-r LoRA trains on layers (out, in)."""
    name = "LoRA parameter count"
    shapes = list(LORA_PROBE_SHAPES)
    for r in LORA_PROBE_RANKS:
        got, bad = call_answer(name, fn, list(shapes), r)
        if bad is not None:  # a CheckResult is falsy when it fails
            return bad
        try:
            got = int(got)
        except (TypeError, ValueError):
            return failed(name, f"expected one whole number, got {type(got).__name__}")
        expected = lora_parameter_count(shapes, r)
        if got == expected:
            continue
        full = sum(o * i for o, i in shapes)
        mistakes = [
            (
                full,
                "that is every number of the frozen weights W (out x in): LoRA trains only "
                "A (r x in) and B (out x r)",
            ),
            (full + expected, "you counted the frozen weights W too: only A and B are trained"),
            (sum(r * i for _, i in shapes), "you counted only A (r x in): add B (out x r)"),
            (sum(o * r for o, _ in shapes), "you counted only B (out x r): add A (r x in)"),
            (
                sum(r * o * i for o, i in shapes),
                "r x out x in is r full-size matrices: A is "
                "r x in and B is out x r, so a layer adds r (in + out)",
            ),
            (r * sum(shapes[0]), "that is one layer: sum over every layer"),
            (expected // r, "you left out the rank: A has r rows and B has r columns"),
        ]
        why = first_mistake(got, mistakes, rtol=0, atol=0) or f"got {got:,}, expected {expected:,}"
        return failed(
            name,
            f"for r = {r} on {shapes}: {why}. A layer (out, in) adds A (r x in) and B (out x r).",
        )
    return passed(name, f"for r = 4, 8, 1 on {shapes}: r x (in + out) per layer, summed")


# --- exercise 6: macro F1 ---------------------------------------------------------------------


def _f1_probes() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(what it is, labels, predictions): imbalanced, so that macro F1, accuracy, the positive
    class's F1 and the support-weighted F1 all differ."""
    rng = np.random.default_rng(0)
    binary = np.array([0] * 30 + [1] * 10)
    binary_hat = np.where(rng.uniform(size=40) < 0.75, binary, 1 - binary)
    three = np.repeat([0, 1, 2], [25, 10, 5])
    three_hat = np.where(rng.uniform(size=40) < 0.7, three, rng.integers(0, 3, 40))
    return [("40 imbalanced reviews", binary, binary_hat), ("three classes", three, three_hat)]


def _f1_mistakes(y: np.ndarray, y_hat: np.ndarray) -> list[tuple[float, str]]:
    report = precision_recall_f1(y, y_hat)
    p, r = report.macro_precision, report.macro_recall
    weighted = float(np.sum(report.f1 * report.support) / report.support.sum())
    return [
        (
            report.accuracy,
            "this is the accuracy (the micro F1): compute F1 per class, then average the classes",
        ),
        (
            report.f1[-1],
            "this is the F1 of the last class only (scikit-learn's f1_score "
            "defaults to average='binary', the positive class): average the F1 of every class",
        ),
        (
            2 * p * r / (p + r),
            "this is the harmonic mean of the macro precision and recall: "
            "take each class's F1 first, then their plain mean",
        ),
        (
            weighted,
            "this weighs each class by its examples (average='weighted'): macro gives "
            "every class the same weight",
        ),
        ((p + r) / 2, "F1 is the harmonic mean of precision and recall, not their mean"),
    ]


@exercise
def check_macro_f1(fn: Callable) -> CheckResult:
    """Check `fn(labels, predictions) -> float`, the macro F1 written by hand, against
    `maaslab.metrics.precision_recall_f1` (equal to scikit-learn's f1_score(average="macro"))."""
    name = "macro F1"
    for what, y, y_hat in _f1_probes():
        got, bad = call_answer(name, fn, y, y_hat)
        if bad is not None:  # a CheckResult is falsy when it fails
            return bad
        value, bad = answer_number(name, got, what)
        if bad is not None:
            return bad
        expected = precision_recall_f1(y, y_hat).macro_f1
        if abs(value - expected) > 1e-9:
            why = first_mistake(value, _f1_mistakes(y, y_hat), rtol=1e-9)
            hint = why or "per class F1 = 2 TP / (2 TP + FP + FN); macro F1 is their plain mean"
            return failed(name, f"on {what} you got {value:.4f}, expected {expected:.4f}: {hint}")
    return passed(name, "equal to scikit-learn's f1_score(average='macro') on both probes")
