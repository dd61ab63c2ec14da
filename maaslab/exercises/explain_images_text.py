"""Lesson 11's auto-checked exercises: a deletion AUC, LIME's per-pixel segments, the sanity
check's similarity and verdict, and removing a text's top words.

Each check runs the learner's answer on a fixed probe and compares with what the library does
(`maaslab.explain.quality` for curves and the sanity check, `Explainable.masked` for words, the
segmentation `maaslab.explain.methods.lime` uses for 8x8 digits). When the answer matches a known
mistake (rectangles instead of trapezoids, column-major segments, signed values, words ranked by
size, punctuation lost) the message names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr

from maaslab.exercises.grading import (
    CheckResult,
    call_answer,
    exercise,
    failed,
    first_mistake,
    passed,
)
from maaslab.explain.core import drop_words, words_of
from maaslab.explain.quality import SANITY_THRESHOLD

# A deletion curve with uneven steps (features removed in groups of different size), so the mean
# of the scores and the rectangle sums differ from the trapezoid area.
AUC_PROBE_FRACTIONS = np.array([0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0])
AUC_PROBE_SCORES = np.array([0.97, 0.90, 0.62, 0.30, 0.12, 0.05, 0.02])

# Text for the word-removal exercise: punctuation inside, and a word ("awful") whose value is
# large but negative, so ranking by |value| and by value give different words.
WORDS_PROBE_TEXT = "The trailer looked awful, but the film itself is a gem."
WORDS_PROBE_VALUES = np.array([0.01, -0.05, -0.02, -0.40, 0.12, 0.0, 0.08, 0.25, 0.03, 0.02, 0.55])


def _number(name: str, got: object) -> tuple[float | None, CheckResult | None]:
    try:
        value = float(np.asarray(got, dtype=float).reshape(()))
    except (TypeError, ValueError):
        return None, failed(name, f"expected one number, got {type(got).__name__}")
    if not np.isfinite(value):
        return None, failed(name, "the answer is NaN or infinite")
    return value, None


# --- exercise 1: the area under a deletion curve ------------------------------------------------


@exercise
def check_deletion_auc(fn: Callable) -> CheckResult:
    """Check `fn(fractions, scores) -> area` (trapezoid rule) on an uneven deletion curve."""
    name = "area under a deletion curve (trapezoid rule)"
    f, s = AUC_PROBE_FRACTIONS, AUC_PROBE_SCORES
    got, bad = call_answer(name, fn, f, s)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    value, bad = _number(name, got)
    if bad is not None:
        return bad
    dx = np.diff(f)
    expected = float(np.sum(dx * (s[1:] + s[:-1]) / 2))
    if abs(value - expected) <= 1e-6:
        return passed(name, f"area {value:.4f}, as the library's Curve.auc (np.trapezoid)")
    mistakes = [
        (
            float(s.mean()),
            "that is the mean of the scores: it treats every step as equally "
            "wide, but the steps here remove 5%, 10%, 20%, 30% of the features; weight each "
            "segment by its width",
        ),
        (
            float(np.sum(dx * s[:-1])),
            "left rectangles (each segment at its starting score): "
            "average the two ends of each segment instead",
        ),
        (
            float(np.sum(dx * s[1:])),
            "right rectangles (each segment at its ending score): "
            "average the two ends of each segment instead",
        ),
        (
            float(np.sum(dx * (s[1:] + s[:-1]))),
            "twice the area: a trapezoid is width x (left + right) / 2 — the / 2 is missing",
        ),
        (
            float(np.sum(np.diff(s) * (f[1:] + f[:-1]) / 2)),
            "the arguments are swapped: "
            "integrate the scores (y) over the fractions (x), np.trapezoid(scores, fractions)",
        ),
        (float(np.sum(s)), "that is the sum of the scores: multiply by each segment's width"),
    ]
    why = first_mistake(value, mistakes, rtol=0, atol=1e-6)
    if why:
        return failed(name, why)
    return failed(
        name,
        f"got {value:.4f}, expected {expected:.4f}. Sum over segments of "
        "(x[i+1] - x[i]) * (y[i] + y[i+1]) / 2.",
    )


# --- exercise 2: LIME's segmentation of an 8x8 digit -------------------------------------------


@exercise
def check_pixel_segments(segments: object, shape: tuple[int, int] = (8, 8)) -> CheckResult:
    """Check a per-pixel segmentation: an (8, 8) array numbering the pixels 0..63 row by row."""
    name = "per-pixel segmentation of an 8x8 image"
    h, w = shape
    try:
        got = np.asarray(segments)
        got = got.astype(float)
    except (TypeError, ValueError):
        return failed(name, f"expected an array of segment numbers, got {type(segments).__name__}")
    expected = np.arange(h * w).reshape(h, w)
    if got.shape != (h, w):
        if got.size == h * w:
            return failed(
                name,
                f"shape {got.shape}: LIME's segmentation has the image's own "
                f"shape ({h}, {w}); reshape it",
            )
        return failed(name, f"shape {got.shape}, expected ({h}, {w}): one number per pixel")
    if np.array_equal(got, expected):
        return passed(
            name,
            f"{h * w} segments, segment i = pixel i (row-major), so LIME's "
            "weights line up with the pixel names r0c0, r0c1, ...",
        )
    labels = np.unique(got)
    if len(labels) == 1:
        return failed(
            name,
            "every pixel is in one segment: LIME would have a single feature "
            "(this is what quickshift gives an 8x8 digit)",
        )
    if np.array_equal(got, expected.T):
        return failed(
            name,
            "the segments are numbered down the columns: number them row by "
            "row (np.arange(64).reshape(8, 8)), the order of the 64 pixel features",
        )
    if np.array_equal(got, expected + 1):
        return failed(name, "the numbers start at 1: LIME's feature i is segment i, counted from 0")
    if len(labels) < h * w:
        return failed(
            name,
            f"{len(labels)} segments, expected {h * w}: every pixel must be its "
            "own segment (blocks of pixels are superpixels)",
        )
    return failed(
        name,
        "64 segments, but not numbered 0..63 row by row: segment i must be "
        "pixel i = row * 8 + column",
    )


# --- exercise 3: the sanity check --------------------------------------------------------------


def sanity_probe() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Two (trained, random-weights) value pairs: one that barely changes, one that does."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=64) * np.repeat([0.1, 1.0], 32)  # strokes and background
    similar = (base, -base * rng.uniform(0.6, 1.4, 64) + rng.normal(0, 0.05, 64))
    changed = (base, rng.normal(size=64) ** 3)
    return similar, changed


def _reference_sanity(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    similarity = float(spearmanr(np.abs(a), np.abs(b)).statistic)
    return similarity, similarity < SANITY_THRESHOLD


@exercise
def check_sanity_check(fn: Callable) -> CheckResult:
    """Check `fn(trained, randomized) -> (similarity, passed)`: Spearman of |values|, < 0.5."""
    name = "sanity check: similarity and verdict"
    answers = []
    for trained, randomized in sanity_probe():
        got, bad = call_answer(name, fn, trained, randomized)
        if bad is not None:
            return bad
        if not isinstance(got, tuple | list) or len(got) != 2:
            return failed(name, "return two things: (similarity, passed)")
        value, bad = _number(name, got[0])
        if bad is not None:
            return bad
        if not isinstance(got[1], bool | np.bool_):
            return failed(name, f"`passed` must be True or False, got {type(got[1]).__name__}")
        expected = _reference_sanity(trained, randomized)
        wrong = {
            "the sign was kept: compare |values| (np.abs), since a method may flip every sign "
            "under random weights and still point at the same pixels": float(
                spearmanr(trained, randomized).statistic
            ),
            "that is Pearson's correlation of |values|: the check compares rankings, use "
            "Spearman's (scipy.stats.spearmanr)": float(
                pearsonr(np.abs(trained), np.abs(randomized)).statistic
            ),
            "that is Pearson's correlation of the signed values: use Spearman's rank "
            "correlation of |values|": float(pearsonr(trained, randomized).statistic),
        }
        if abs(value - expected[0]) > 1e-6:
            why = first_mistake(value, [(w, why) for why, w in wrong.items()], rtol=0, atol=1e-6)
            if why:
                return failed(name, why)
            return failed(
                name,
                f"similarity {value:.4f}, expected {expected[0]:.4f}: Spearman "
                "correlation of np.abs(trained) and np.abs(randomized)",
            )
        if bool(got[1]) != expected[1]:
            return failed(
                name,
                f"similarity {value:.2f} but passed={bool(got[1])}: a method "
                f"passes when its map CHANGES with the weights, similarity < "
                f"{SANITY_THRESHOLD}",
            )
        answers.append((value, bool(got[1])))
    (s1, p1), (s2, p2) = answers
    return passed(
        name,
        f"similarity {s1:.2f} -> passed={p1} (the map ignores the weights); "
        f"{s2:.2f} -> passed={p2}",
    )


# --- exercise 4: remove a text's top words -----------------------------------------------------


def remove_top_words(text: str, values: np.ndarray, k: int) -> str:
    """`text` with the k words of largest attribution cut out (as the deletion curve does)."""
    words, spans = words_of(text)
    keep = np.ones(len(words), dtype=bool)
    keep[np.argsort(-np.asarray(values), kind="stable")[:k]] = False
    return drop_words(text, spans, keep)


def _tidy(text: str) -> str:
    # Spacing is not the point of the exercise: "is a ." and "is a." count as the same text.
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(str(text).split()))


@exercise
def check_remove_top_words(fn: Callable) -> CheckResult:
    """Check `fn(text, values, k) -> text` with the k most supportive words removed."""
    name = "remove the top-k words by attribution"
    text, values = WORDS_PROBE_TEXT, WORDS_PROBE_VALUES
    words, spans = words_of(text)
    for k in (2, 3):
        got, bad = call_answer(name, fn, text, values, k)
        if bad is not None:
            return bad
        if not isinstance(got, str):
            return failed(name, f"return the shortened text (a str), got {type(got).__name__}")
        expected = remove_top_words(text, values, k)
        if _tidy(got) == _tidy(expected):
            continue

        def cut(order: np.ndarray, n: int = k) -> str:
            keep = np.ones(len(words), dtype=bool)
            keep[order[:n]] = False
            return _tidy(drop_words(text, spans, keep))

        top = np.argsort(-values, kind="stable")
        mistakes = [
            (
                cut(np.argsort(-np.abs(values), kind="stable")),
                "you ranked by |value|: deletion "
                "removes the words that SUPPORT the explained class most, largest value first "
                "('awful' pushes the other way)",
            ),
            (
                cut(np.argsort(values, kind="stable")),
                "you removed the k words with the smallest "
                "values: sort from the largest down (np.argsort(-values))",
            ),
            (cut(top, k - 1), f"you removed {k - 1} words, expected {k}: check the slice [:k]"),
            (cut(top, k + 1), f"you removed {k + 1} words, expected {k}: check the slice [:k]"),
            (
                " ".join(w for i, w in enumerate(words) if i not in set(top[:k].tolist())),
                "the punctuation is gone: cut the words out of the text with the spans from "
                "words_of and keep everything else (the model reads commas and full stops too)",
            ),
        ]
        for wrong, why in mistakes:
            if _tidy(got) == _tidy(wrong):
                return failed(name, why)
        return failed(name, f"with k={k} got {got!r}, expected {expected!r}")
    return passed(name, f"k=2 gives {remove_top_words(text, values, 2)!r}")
