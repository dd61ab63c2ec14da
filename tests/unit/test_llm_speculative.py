"""Speculative decoding: greedy output identical to decoding without a draft, sampled output
distributed as the target's, and the expected-tokens formula."""

from __future__ import annotations

import pytest
import torch
from test_llm_engine import prompts, tiny, tiny_llama

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineConfig, LLMEngine
from maaslab.llm.model import PagedModel
from maaslab.llm.sequence import SamplingParams
from maaslab.llm.speculative import expected_tokens, verify_greedy, verify_sampled

GREEDY = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def target():
    return PagedModel(tiny("llama"))


@pytest.fixture(scope="module")
def draft():
    return PagedModel(tiny_llama(hidden=32, layers=1, heads=2, kv_heads=1, seed=5))


def test_greedy_output_is_identical_with_any_draft(target, draft):
    asks = prompts(6)
    plain = LLMEngine(target, EngineConfig(block_size=8)).generate(asks, GREEDY)
    poor = LLMEngine(target, EngineConfig(block_size=8, speculative_tokens=4), draft=draft)
    assert poor.generate(asks, GREEDY) == plain  # an unrelated draft: guesses mostly rejected
    perfect = LLMEngine(target, EngineConfig(block_size=8, speculative_tokens=4), draft=target)
    assert perfect.generate(asks, GREEDY) == plain
    assert perfect.stats().acceptance_rate == 1.0
    assert perfect.stats().steps < poor.stats().steps  # up to k + 1 tokens per target pass


def test_speculation_under_preemption_gives_the_same_tokens(target, draft):
    asks = prompts(6)
    plain = LLMEngine(target, EngineConfig(block_size=8)).generate(asks, GREEDY)
    tight = EngineConfig(
        block_size=4, num_blocks=30, prefill_chunk=8, max_batched_tokens=16, speculative_tokens=3
    )
    engine = LLMEngine(target, tight, draft=draft)
    assert engine.generate(asks, GREEDY) == plain
    assert engine.stats().preemptions > 0 and engine.stats().blocks.used == 0


def test_verify_greedy_keeps_the_agreeing_prefix_and_adds_the_targets_token():
    logits = torch.eye(5)[[1, 2, 3, 4]]  # the target's choices: 1, 2, 3, 4
    assert verify_greedy(logits, [1, 2, 0]) == ([1, 2, 3], 2)
    assert verify_greedy(logits, [1, 2, 3]) == ([1, 2, 3, 4], 3)
    assert verify_greedy(logits, [0, 2, 3]) == ([1], 0)


def test_rejection_sampling_leaves_the_targets_distribution():
    p_logits = torch.log(torch.tensor([0.5, 0.3, 0.2, 1e-9]))
    q = torch.tensor([0.1, 0.1, 0.1, 0.7])  # a draft that likes the wrong token
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(6000):
        guess = int(torch.multinomial(q, 1, generator=g))
        tokens, _ = verify_sampled(p_logits[None].repeat(2, 1), [q], [guess], 1.0, None, None, g)
        counts[tokens[0]] += 1
    freq = counts / counts.sum()
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.025)


def test_expected_tokens_per_target_pass():
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)  # 1 + 0.5 + 0.25
    with pytest.raises(MaaslabError):
        expected_tokens(1.5, 2)


def test_a_draft_must_share_the_vocabulary(target):
    other = PagedModel(tiny("gpt2"))
    other.vocab_size = 301
    with pytest.raises(MaaslabError, match="vocabulary"):
        LLMEngine(target, EngineConfig(speculative_tokens=2), draft=other)
