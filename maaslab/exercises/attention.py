"""Lesson 07's auto-checked exercises: attention weights, the causal mask, masked attention.

Each check calls the learner's function on a fixed, seeded probe (q, k, v of shape (2, 3, 5, 8))
and compares with `maaslab.models.attention`, whose functions tests compare with torch. When
the answer matches a known mistake (no √d scaling, the wrong triangle, masking after the softmax)
the message names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from maaslab.exercises.grading import (
    CheckResult,
    answer_array,
    call_answer,
    exercise,
    failed,
    right_or_first_mistake,
)
from maaslab.models.attention import causal_mask, scaled_dot_product_attention


def _probe(T: int = 5, d: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Fixed random q, k, v (B=2, H=3): the same probe for every learner and every check.
    g = torch.Generator().manual_seed(7)
    return tuple(torch.randn(2, 3, T, d, generator=g) for _ in range(3))  # type: ignore[return-value]


def _call(name: str, fn: Callable, *args) -> tuple[np.ndarray | None, CheckResult | None]:
    # Run the learner's function; a crash, a None or a non-array is a verdict.
    got, bad = call_answer(name, fn, *args)
    if isinstance(got, tuple):
        got = got[0]  # (out, weights) -> out
        if got is None:
            return None, failed(name, "your function returned None: did you forget `return`?")
    return (None, bad) if bad is not None else answer_array(name, got)


def _verdict(
    name: str, got: np.ndarray, expected: torch.Tensor, mistakes, hint: str
) -> CheckResult:
    # A mistake may leave NaN where the reference has -inf masked away: NaN equals NaN here.
    return right_or_first_mistake(name, got, expected, mistakes, equal_nan=True, hint=hint)


@exercise
def check_attention_weights(fn: Callable) -> CheckResult:
    """Check `fn(q, k) -> weights`, the attention weights softmax(Q Kᵀ / √d) over the keys."""
    name = "attention weights softmax(Q Kᵀ / √d)"
    q, k, v = _probe()
    got, bad = _call(name, fn, q, k)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    scores = q @ k.transpose(-2, -1)  # (B, H, T, T), not yet scaled
    d = q.shape[-1]
    mistakes = [
        (
            scores.softmax(-1),
            f"you forgot to divide the scores by √d (√{d}); without it "
            "large d makes the softmax nearly one-hot",
        ),
        ((scores / d).softmax(-1), f"you divided by d = {d}; divide by √d = {math.sqrt(d):.3g}"),
        (
            (scores / math.sqrt(d)).softmax(-2),
            "the softmax runs over the queries (dim -2): take "
            "it over the keys, the last dim, so that every row sums to 1",
        ),
        (scores / math.sqrt(d), "these are the scaled scores; apply a softmax over the last dim"),
    ]
    expected = scaled_dot_product_attention(q, k, v)[1]
    return _verdict(name, got, expected, mistakes, "Compute q @ k.transpose(-2, -1) / √d.")


@exercise
def check_causal_mask(fn: Callable) -> CheckResult:
    """Check `fn(T) -> mask`, the (T, T) causal mask (True where query t may see key s ≤ t)."""
    name = "causal mask"
    T = 5
    got, bad = _call(name, fn, T)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    ones = torch.ones(T, T)
    mistakes = [
        (
            ones.triu(),
            "that is the wrong triangle: row t is query t, it may see keys 0..t, so "
            "True belongs on and below the diagonal (torch.tril)",
        ),
        (ones.triu(1), "the mask is inverted: here True must mean 'may attend', not 'blocked'"),
        (
            ones.tril(-1),
            "the diagonal is missing: a token may attend to itself (tril, not "
            "tril(-1)), otherwise the first row has nothing to attend to",
        ),
        (ones, "nothing is masked: a token must not see the tokens after it"),
    ]
    return _verdict(name, got, causal_mask(T).float(), mistakes, "Try torch.ones(T, T).tril().")


@exercise
def check_attention_output(fn: Callable) -> CheckResult:
    """Check `fn(q, k, v, mask) -> out` (or (out, weights)) with a causal mask."""
    name = "masked scaled dot-product attention"
    q, k, v = _probe()
    mask = causal_mask(q.shape[-2])
    got, bad = _call(name, fn, q, k, v, mask)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    weights = scores.softmax(-1)
    mistakes = [
        (weights @ v, "the mask is ignored: set the scores where mask is False to -inf"),
        (
            (weights * mask) @ v,
            "you zeroed the weights after the softmax, so rows no longer sum "
            "to 1: mask the scores with -inf before the softmax",
        ),
        (
            scores.masked_fill(mask, float("-inf")).softmax(-1) @ v,
            "you masked the wrong positions: mask is True where attention is allowed, so fill "
            "~mask (or mask == False) with -inf",
        ),
        (
            (scores * math.sqrt(d)).masked_fill(~mask, float("-inf")).softmax(-1) @ v,
            f"you forgot to divide the scores by √d (√{d})",
        ),
    ]
    expected = scaled_dot_product_attention(q, k, v, mask)[0]
    return _verdict(name, got, expected, mistakes, "softmax(masked scores / √d) @ v.")
