"""Lesson 08 checks: each passes a right answer and names the mistake in a wrong one."""

import math

import pytest
import torch

from maaslab.exercises.mini_gpt import (
    COUNT_CONFIGS,
    TOP_PS,
    check_gpt_param_count,
    check_temperature_softmax,
    check_top_k_sampling,
    check_top_p,
    check_uniform_loss,
    probe_logits,
)
from maaslab.models.gpt import GPTConfig, MiniGPT, next_token_probs

# --- right answers, written the way the notebook writes them ------------------------------------


def temperature_softmax(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def top_k_probs(logits, k):
    kth = torch.topk(logits, k).values[-1]
    return torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)


def top_p_probs(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    keep = sorted_probs.cumsum(0) - sorted_probs < p
    out = torch.zeros_like(probs)
    out[order[keep]] = sorted_probs[keep]
    return out / out.sum()


def param_count(cfg):
    V, T, C, L = cfg.vocab_size, cfg.context, cfg.n_embd, cfg.n_layer
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C


def _fails(result, *words):
    assert not result.passed, result
    for word in words:
        assert word in result.message, result.message


# --- the checks against the library and the model ------------------------------------------------


def test_the_notebooks_answers_pass():
    assert check_temperature_softmax(temperature_softmax)
    assert check_top_k_sampling(top_k_probs)
    assert check_top_p(top_p_probs)
    assert check_uniform_loss(math.log(104))
    assert check_gpt_param_count(param_count)


def test_the_parameter_formula_matches_real_models():
    """Oracle: the formula the lesson teaches equals the count of real GPT2LMHeadModels."""
    for cfg in (*COUNT_CONFIGS, GPTConfig(n_layer=1, n_embd=32, n_head=4, context=16)):
        torch.manual_seed(0)
        model = MiniGPT(cfg)
        assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    assert param_count(GPTConfig()) == 814_848


def test_checks_do_not_move_the_global_random_stream():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    check_gpt_param_count(param_count)
    assert torch.rand(1) == expected


def test_probe_is_a_real_filtering_problem():
    # The nucleus is more than one token and less than all of them, for every p the check uses.
    for p in TOP_PS:
        kept = int((next_token_probs(probe_logits(), top_p=p) > 0).sum())
        assert 1 < kept < len(probe_logits())


# --- wrong answers get named ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda z, t: torch.softmax(z * t, -1), ["multiplied", "temperature=0.5"]),
        (lambda z, t: torch.softmax(z, -1), ["ignored"]),
        (lambda z, t: z / t, ["apply a softmax"]),
        (lambda z, t: torch.softmax(z, -1) / t, ["after the softmax"]),
        (lambda z, t: torch.exp(z / t), ["divide by its sum"]),
        (lambda z, t: torch.softmax(z / (t + 0.1), -1), ["largest difference"]),
        (lambda z, t: None, ["None"]),
        (lambda z, t: 1 / 0, ["ZeroDivisionError"]),
    ],
)
def test_temperature_mistakes(answer, words):
    _fails(check_temperature_softmax(answer), *words)


def _softmax_keep(logits, keep):
    return torch.softmax(logits.masked_fill(~keep, float("-inf")), -1)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            lambda z, k: _softmax_keep(z, z <= torch.topk(z, k, largest=False).values[-1]),
            ["least", "k=1"],
        ),
        (
            lambda z, k: torch.softmax(z, -1) * (z >= torch.topk(z, k).values[-1]),
            ["not renormalized"],
        ),
        (lambda z, k: _softmax_keep(z, z >= torch.topk(z, k + 1).values[-1]), ["one too many"]),
        (
            lambda z, k: _softmax_keep(z, z >= torch.topk(z, max(k - 1, 1)).values[-1]),
            ["one too few", "k=5"],
        ),
        (lambda z, k: torch.softmax(z, -1), ["nothing was filtered"]),
        (lambda z, k: torch.softmax(z, -1)[:k], ["shape"]),
    ],
)
def test_top_k_mistakes(answer, words):
    _fails(check_top_k_sampling(answer), *words)


def _nucleus(logits, p, rule, renormalize=True, descending=True):
    probs = torch.softmax(logits, -1)
    sorted_probs, order = torch.sort(probs, descending=descending)
    keep = rule(sorted_probs.cumsum(0), sorted_probs, p)
    out = torch.zeros_like(probs)
    out[order[keep]] = sorted_probs[keep]
    return out / out.sum() if renormalize else out


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda z, p: _nucleus(z, p, lambda c, s, p: c < p), ["past p", "p=0.5"]),
        (lambda z, p: _nucleus(z, p, lambda c, s, p: c <= p), ["past p"]),
        (
            lambda z, p: _nucleus(z, p, lambda c, s, p: c - s < p, renormalize=False),
            ["not renormalized"],
        ),
        (lambda z, p: _nucleus(z, p, lambda c, s, p: c - s < p, descending=False), ["ascending"]),
        (lambda z, p: torch.softmax(z, -1), ["nothing was filtered"]),
        (lambda z, p: _nucleus(z, p + 0.2, lambda c, s, p: c - s < p), ["largest difference"]),
    ],
)
def test_top_p_mistakes(answer, words):
    _fails(check_top_p(answer), *words)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (math.log2(104), ["bits"]),
        (math.log10(104), ["base 10"]),
        (1 / 104, ["probability"]),
        (104, ["perplexity"]),
        (-math.log(104), ["sign"]),
        (math.log(103), ["unknown marker"]),
        (4.0, ["got 4"]),
        ("ln 104", ["expected a number"]),
    ],
)
def test_uniform_loss_mistakes(answer, words):
    _fails(check_uniform_loss(answer), *words)


def test_uniform_loss_follows_the_vocabulary():
    assert check_uniform_loss(math.log(65), vocab_size=65)
    _fails(check_uniform_loss(math.log(104), vocab_size=65), "got")


def _minus(term):
    return lambda cfg: param_count(cfg) - term(cfg.vocab_size, cfg.context, cfg.n_embd, cfg.n_layer)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (_minus(lambda V, T, C, L: -V * C), ["tied"]),
        (_minus(lambda V, T, C, L: T * C), ["position embedding"]),
        (_minus(lambda V, T, C, L: 2 * C), ["ln_f"]),
        (_minus(lambda V, T, C, L: 2 * C * (2 * L + 1)), ["LayerNorms are missing"]),
        (_minus(lambda V, T, C, L: 9 * C * L), ["biases"]),
        (_minus(lambda V, T, C, L: 13 * C * L + 2 * C), ["biases and LayerNorms"]),
        (_minus(lambda V, T, C, L: L * (6 * C * C + 3 * C)), ["4 x n_embd"]),
        (_minus(lambda V, T, C, L: 1), ["-1", "814,848"]),
        (lambda cfg: 814_848, ["vocab_size=50", "105,344"]),
        (lambda cfg: cfg.nope, ["AttributeError"]),
    ],
)
def test_param_count_mistakes(answer, words):
    _fails(check_gpt_param_count(answer), *words)
