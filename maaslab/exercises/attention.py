"""Lesson 07's auto-checked exercises: attention weights, the causal mask, masked attention, one
step of an RNN and how many steps of recurrence separate an early token from the output.

Each check calls the learner's function on a fixed, seeded probe (q, k, v of shape (2, 3, 5, 8);
x, h of an RNN step) and compares with `maaslab.models.attention` or `maaslab.models.rnn`, whose
functions tests compare with torch. When the answer matches a known mistake (no √d scaling, the
wrong triangle, masking after the softmax, a missing tanh, an off-by-one count) the message
names it.
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
from maaslab.models.rnn import rnn_step


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


def _rnn_probe() -> tuple[torch.Tensor, ...]:
    # x_t (B=2, E=3), h_prev (2, H=4), W_x (4, 3), W_h (4, 4), b (4,): E ≠ H, so W_x used the
    # wrong way round fails on its shape, while W_h (square) used transposed is a value we know.
    g = torch.Generator().manual_seed(11)
    shapes = ((2, 3), (2, 4), (4, 3), (4, 4), (4,))
    return tuple(torch.randn(*s, generator=g) for s in shapes)


@exercise
def check_rnn_step(fn: Callable) -> CheckResult:
    """Check `fn(x_t, h_prev, w_x, w_h, b) -> h_t`, one Elman step tanh(W_x x_t + W_h h + b)."""
    name = "RNN step h_t = tanh(W_x x_t + W_h h_{t-1} + b)"
    x, h, w_x, w_h, b = _rnn_probe()
    got, bad = _call(name, fn, x, h, w_x, w_h, b)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    z = x @ w_x.T + h @ w_h.T + b  # the pre-activation
    mistakes = [
        (z, "this is the pre-activation: apply torch.tanh to it"),
        (
            torch.tanh(x @ w_x.T + b),
            "h_prev is missing: add W_h h_{t-1}, the term that carries the past into step t",
        ),
        (torch.tanh(x @ w_x.T + h @ w_h.T), "the bias b is missing"),
        (
            torch.tanh(x @ w_x.T + h @ w_h + b),
            "W_h is used transposed: with rows as examples, W_h h is h_prev @ w_h.T",
        ),
        (
            torch.tanh(x @ w_x.T + b) + h @ w_h.T,
            "the tanh must wrap the whole sum: W_h h_{t-1} goes inside it, not after it",
        ),
        (torch.sigmoid(z), "that is a sigmoid: an Elman RNN squashes with tanh, into (-1, 1)"),
        (torch.relu(z), "that is a ReLU: an Elman RNN squashes with tanh, into (-1, 1)"),
    ]
    expected = rnn_step(x, h, w_x, w_h, b)
    return _verdict(name, got, expected, mistakes, "torch.tanh(x_t @ w_x.T + h_prev @ w_h.T + b).")


# (position s of the token, sequence length T) pairs the count is asked for
_HOPS_PROBE = ((0, 1), (0, 2), (0, 9), (3, 9), (8, 9), (0, 33), (10, 33))


@exercise
def check_recurrent_hops(fn: Callable) -> CheckResult:
    """Check `fn(s, T) -> n`: how many multiplications by W_h separate the input x_s from the
    last hidden state h_{T-1}, the one the answer is read from (positions 0..T-1)."""
    name = "multiplications by W_h between x_s and h_{T-1}"
    answers = []
    for s, T in _HOPS_PROBE:
        got, bad = call_answer(name, fn, s, T)
        if bad is not None:
            return bad
        answers.append(got)
    got, bad = answer_array(name, answers)
    if bad is not None:
        return bad
    s, T = np.array(_HOPS_PROBE).T
    mistakes = [
        (
            T - s,
            "one too many: x_s enters h_s through W_x, not W_h; W_h then carries h_s to "
            "h_{s+1}, ..., h_{T-1}, which is T-1-s steps",
        ),
        (T - s - 2, "one too few: count every step from h_s up to and including h_{T-1}"),
        (s, "you counted from the start of the sequence: count from x_s to the end, h_{T-1}"),
        (T - 1, "the count must depend on s: a later token is fewer steps from the end"),
        (T, "the count must depend on s: a later token is fewer steps from the end"),
    ]
    hint = "h_s holds x_s; each step h_t = tanh(W_x x_t + W_h h_{t-1} + b) multiplies by W_h once."
    return right_or_first_mistake(name, got, T - 1 - s, mistakes, rtol=0, atol=0, hint=hint)
