"""Lesson 08's auto-checked exercises: parameter count, the loss of a uniform guess, and the
three knobs of sampling (temperature, top-k, top-p).

Each sampling check calls the learner's function on fixed, seeded logits and compares with
`maaslab.models.gpt.next_token_probs`, the sampler behind `generate` and the Inference page.
The parameter check compares with a real `MiniGPT` of the same config. When an answer matches a
known mistake (multiplying by the temperature, keeping the k least likely tokens, dropping the
token that crosses p, counting the tied output layer twice...) the message names it.
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
    check_array,
    exercise,
    failed,
    first_mistake,
    passed,
)
from maaslab.models.gpt import GPTConfig, MiniGPT, next_token_probs

PROBE_VOCAB = 20  # tokens in the probe distribution: small enough to read, big enough to filter
TEMPERATURES = (0.5, 2.0)  # both sides of 1, where a forgotten temperature shows
TOP_KS = (1, 5)
TOP_PS = (0.5, 0.9)
# Configs for the parameter count: the lesson's default and one where every term differs.
COUNT_CONFIGS = (GPTConfig(), GPTConfig(vocab_size=50, context=32, n_embd=64, n_layer=2, n_head=2))


def probe_logits() -> torch.Tensor:
    """Fixed next-token logits (PROBE_VOCAB,) that every learner and every check sees."""
    g = torch.Generator().manual_seed(8)
    return torch.randn(PROBE_VOCAB, generator=g) * 2.0


def _call(name: str, fn: Callable, *args) -> tuple[np.ndarray | None, CheckResult | None]:
    # Run the learner's function; a crash, a None or a non-array is a verdict.
    got, bad = call_answer(name, fn, *args)
    return (None, bad) if bad is not None else answer_array(name, got)


def _verdict(
    name: str, got: np.ndarray, expected: torch.Tensor, mistakes, hint: str, setting: str
) -> CheckResult:
    # Right answer, or the first known mistake it matches, or a generic verdict.
    result = check_array(name, got, expected.numpy(), rtol=1e-4, atol=1e-6, hint=hint)
    if result.passed:
        return result
    why = first_mistake(got, mistakes, equal_nan=True)
    if why:
        return failed(name, f"with {setting}: {why}")
    if got.shape == expected.shape and np.all(np.isfinite(got)) and abs(got.sum() - 1) > 1e-3:
        return failed(
            name, f"with {setting} your probabilities sum to {got.sum():.4g}, not 1. " + hint
        )
    return failed(name, f"with {setting}: {result.message}")


def _renormalized(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return kept / kept.sum()


def _keep(order: torch.Tensor, keep_sorted: torch.Tensor) -> torch.Tensor:
    # Boolean mask over the vocabulary from a mask over tokens listed in `order`.
    keep = torch.zeros(PROBE_VOCAB, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    return keep


@exercise
def check_temperature_softmax(fn: Callable) -> CheckResult:
    """Check `fn(logits, temperature) -> probs`, the softmax of logits / temperature."""
    name = "softmax with temperature"
    logits = probe_logits()
    for T in TEMPERATURES:
        got, bad = _call(name, fn, logits, T)
        if bad is not None:  # a CheckResult is falsy when it fails
            return bad
        mistakes = [
            (
                (logits * T).softmax(-1),
                "you multiplied the logits by the temperature; divide "
                "them, so that T < 1 sharpens and T > 1 flattens",
            ),
            (
                logits.softmax(-1),
                "the temperature is ignored: divide the logits by it before the softmax",
            ),
            (
                logits / T,
                "these are the scaled logits: apply a softmax to turn them into probabilities",
            ),
            (
                logits.softmax(-1) / T,
                "you divided the probabilities by T after the softmax: divide the logits before it",
            ),
            (
                torch.exp(logits / T),
                "exp(logits / T) is not yet a distribution: divide by its "
                "sum (that is the softmax)",
            ),
        ]
        expected = next_token_probs(logits, temperature=T)
        result = _verdict(
            name,
            got,
            expected,
            mistakes,
            "Try torch.softmax(logits / temperature, dim=-1).",
            f"temperature={T}",
        )
        if not result:
            return result
    return passed(name, f"matches next_token_probs for temperatures {TEMPERATURES}")


@exercise
def check_top_k_sampling(fn: Callable) -> CheckResult:
    """Check `fn(logits, k) -> probs`: only the k most likely tokens keep (renormalized) mass."""
    name = "top-k filtering"
    logits = probe_logits()
    probs = logits.softmax(-1)
    rank = torch.empty(PROBE_VOCAB, dtype=torch.long)
    rank[probs.argsort(descending=True)] = torch.arange(PROBE_VOCAB)  # 0 = most likely
    for k in TOP_KS:
        got, bad = _call(name, fn, logits, k)
        if bad is not None:  # a CheckResult is falsy when it fails
            return bad
        mistakes = [
            (
                _renormalized(probs, rank >= PROBE_VOCAB - k),
                "you kept the k *least* likely "
                "tokens: keep the k largest logits (torch.topk takes the largest by default)",
            ),
            (
                torch.where(rank < k, probs, 0.0),
                "the kept probabilities are not renormalized: "
                "divide them by their sum, or set the other logits to -inf before the softmax",
            ),
            (_renormalized(probs, rank < k + 1), f"you kept k + 1 = {k + 1} tokens, one too many"),
            (probs, "nothing was filtered: every token still has a chance"),
        ]
        if k > 1:
            mistakes.append(
                (
                    _renormalized(probs, rank < k - 1),
                    f"you kept k - 1 = {k - 1} tokens, one too few",
                )
            )
        expected = next_token_probs(logits, top_k=k)
        result = _verdict(
            name,
            got,
            expected,
            mistakes,
            "Set every logit below the k-th largest to -inf, then take the softmax.",
            f"k={k}",
        )
        if not result:
            return result
    return passed(name, f"matches next_token_probs for k = {TOP_KS}")


@exercise
def check_top_p(fn: Callable) -> CheckResult:
    """Check `fn(logits, p) -> probs`, nucleus sampling: the fewest most likely tokens whose
    probabilities sum to at least p, renormalized."""
    name = "top-p (nucleus) filtering"
    logits = probe_logits()
    probs = logits.softmax(-1)
    order, ascending = probs.argsort(descending=True), probs.argsort()
    sorted_probs, low_first = probs[order], probs[ascending]
    before = sorted_probs.cumsum(0) - sorted_probs  # mass of the more likely tokens
    for p in TOP_PS:
        got, bad = _call(name, fn, logits, p)
        if bad is not None:  # a CheckResult is falsy when it fails
            return bad
        nucleus = _keep(order, before < p)  # the right set: the mass before a token is below p
        mistakes = [
            (
                _renormalized(probs, _keep(order, before + sorted_probs <= p)),
                "you dropped the token that takes the total past p, so the kept mass is below p: "
                "keep a token while the mass *before* it is below p (cumsum - prob < p)",
            ),
            (
                torch.where(nucleus, probs, 0.0),
                "the kept probabilities are not renormalized: divide them by their sum",
            ),
            (
                _renormalized(probs, _keep(ascending, low_first.cumsum(0) - low_first < p)),
                "you sorted in ascending order and kept the least likely tokens: sort descending",
            ),
            (probs, "nothing was filtered: every token still has a chance"),
        ]
        expected = next_token_probs(logits, top_p=p)
        result = _verdict(
            name,
            got,
            expected,
            mistakes,
            "Sort descending, keep tokens while "
            "the cumulative mass before them is < p, renormalize.",
            f"p={p}",
        )
        if not result:
            return result
    return passed(name, f"matches next_token_probs for p = {TOP_PS}")


@exercise
def check_uniform_loss(answer: object, vocab_size: int = 104) -> CheckResult:
    """Check the cross-entropy (nats per token) of a model that gives every token 1 / V."""
    name = f"loss of a uniform guess over {vocab_size} tokens"
    try:
        value = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return failed(name, f"expected a number, got {type(answer).__name__}")
    right = math.log(vocab_size)
    if math.isclose(value, right, rel_tol=1e-4):
        return passed(
            name, f"ln {vocab_size} = {right:.4f} nats: every prediction pays -ln(1/{vocab_size})"
        )
    mistakes = [
        (
            math.log2(vocab_size),
            "that is in bits (log base 2); the loss uses the natural log, nats",
        ),
        (math.log10(vocab_size), "that is log base 10; the loss uses the natural log"),
        (1 / vocab_size, "that is the probability of each token; the loss is -ln of it"),
        (float(vocab_size), "that is the perplexity e^loss; the loss is its natural log"),
        (-right, "wrong sign: the loss is -ln p, and ln(1/V) is negative"),
        (
            math.log(vocab_size - 1),
            f"that is ln {vocab_size - 1}: the vocabulary has "
            f"{vocab_size} tokens (the unknown marker counts)",
        ),
    ]
    why = first_mistake(value, mistakes, rtol=1e-4, atol=0)
    if why:
        return failed(name, why)
    return failed(
        name,
        f"got {value:.4g}. The model puts 1/{vocab_size} on the right token "
        "every time; the loss is -ln of that.",
    )


def _true_count(config: GPTConfig) -> int:
    # A real model on the meta device: exact shapes, no memory, no draw from the global RNG.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return sum(p.numel() for p in MiniGPT(config).parameters())


@exercise
def check_gpt_param_count(fn: Callable[[GPTConfig], int]) -> CheckResult:
    """Check `fn(config) -> int`, the parameter count of a MiniGPT from its config by formula."""
    name = "parameter count of a mini GPT"
    for cfg in COUNT_CONFIGS:
        setting = (
            f"GPTConfig(vocab_size={cfg.vocab_size}, context={cfg.context}, "
            f"n_embd={cfg.n_embd}, n_layer={cfg.n_layer})"
        )
        try:
            got = int(fn(cfg))
        except Exception as err:  # any error in the answer is a verdict
            return failed(name, f"your function raised {type(err).__name__}: {err}")
        right = _true_count(cfg)
        if got == right:
            continue
        V, T, C, L = cfg.vocab_size, cfg.context, cfg.n_embd, cfg.n_layer
        mistakes = [
            (
                right + V * C,
                "you counted the output layer (lm_head) as new weights: it is tied "
                "to the token embedding, the same V x C matrix, so it adds nothing",
            ),
            (right - T * C, "the position embedding (context x n_embd) is missing"),
            (right - 2 * C, "the final LayerNorm (ln_f: weight and bias, 2 x n_embd) is missing"),
            (
                right - 2 * C * (2 * L + 1),
                "the LayerNorms are missing: two per block and one at "
                "the end, each with 2 x n_embd parameters",
            ),
            (
                right - L * 9 * C,
                "the biases of the linear layers in the blocks are missing "
                "(3C + C in attention, 4C + C in the MLP)",
            ),
            (right - L * 13 * C - 2 * C, "the biases and LayerNorms are missing"),
            (
                right - L * (6 * C * C + 3 * C),
                "the MLP is 4 x n_embd wide, not n_embd: its two matrices have 2 x 4C² parameters",
            ),
        ]
        why = first_mistake(got, mistakes, rtol=0, atol=0)
        if why:
            return failed(name, f"for {setting}: {why}")
        return failed(
            name,
            f"for {setting} you count {got:,}, the model has {right:,} "
            f"({got - right:+,}). Count embeddings (V·C + T·C), 12C² + 13C per block "
            "and 2C for the final LayerNorm; lm_head is tied.",
        )
    return passed(
        name,
        f"right for {len(COUNT_CONFIGS)} configs, e.g. "
        f"{_true_count(COUNT_CONFIGS[0]):,} for GPTConfig()",
    )
