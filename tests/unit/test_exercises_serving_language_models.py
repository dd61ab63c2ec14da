"""Lesson 15's checks pass right answers, name each known mistake, and refuse garbage."""

from __future__ import annotations

import math

import pytest

from maaslab.errors import MaaslabError
from maaslab.exercises.serving_language_models import (
    STEP_MISTAKES,
    STEP_PROBES,
    Running,
    StepState,
    Waiting,
    check_blocks_needed,
    check_expected_tokens,
    check_kv_bytes_per_token,
    check_kv_cache_gib,
    check_schedule_step,
    check_slot,
    engine_decision,
    random_states,
    reference_step,
)

# --- exercise 1 -----------------------------------------------------------------------------------


def test_kv_bytes_per_token():
    assert check_kv_bytes_per_token(lambda L, H, KV, D, bits: 2 * L * KV * D * bits / 8).passed
    assert check_kv_bytes_per_token(lambda L, H, KV, D, bits: 2 * L * KV * D * bits // 8).passed
    cases = {
        "AND a value": lambda L, H, KV, D, bits: L * KV * D * bits / 8,
        "query heads": lambda L, H, KV, D, bits: 2 * L * H * D * bits / 8,
        "divide by 8": lambda L, H, KV, D, bits: 2 * L * KV * D * bits,
        "4-bit number down to 0": lambda L, H, KV, D, bits: 2 * L * KV * D * (bits // 8),
        "multiply by layers": lambda L, H, KV, D, bits: 2 * KV * D * bits / 8,
    }
    for words, fn in cases.items():
        result = check_kv_bytes_per_token(fn)
        assert not result.passed and words in result.message, (words, result.message)
    query = check_kv_bytes_per_token(lambda L, H, KV, D, bits: 2 * L * H * D * bits / 8)
    assert "Llama-2-70B" in query.message  # where it shows: the first GQA model


def test_kv_bytes_per_token_refuses_garbage():
    assert "returned None" in check_kv_bytes_per_token(lambda *a: None).message
    assert "expected a number" in check_kv_bytes_per_token(lambda *a: "lots").message
    assert "raised ZeroDivisionError" in check_kv_bytes_per_token(lambda *a: 1 / 0).message
    assert not check_kv_bytes_per_token(lambda *a: 12345).passed


def test_kv_cache_gib():
    assert check_kv_cache_gib(lambda b, t, s: b * t * s / 2**30).passed
    cases = {
        "multiply by the sequences": lambda b, t, s: b * t / 2**30,
        "that is GB": lambda b, t, s: b * t * s / 1e9,
        "that is MiB": lambda b, t, s: b * t * s / 2**20,
        "that is bytes": lambda b, t, s: b * t * s,
    }
    for words, fn in cases.items():
        result = check_kv_cache_gib(fn)
        assert not result.passed and words in result.message, (words, result.message)
    assert not check_kv_cache_gib(lambda b, t, s: 2.0).passed
    assert "expected a number" in check_kv_cache_gib(lambda b, t, s: [b]).message


# --- exercise 2 -----------------------------------------------------------------------------------


def test_blocks_needed():
    assert check_blocks_needed(lambda n, size: -(-n // size)).passed
    assert check_blocks_needed(lambda n, size: math.ceil(n / size)).passed
    cases = {
        "floor division": lambda n, size: n // size,
        "one block too many": lambda n, size: n // size + 1,
        "whole number": lambda n, size: n / size,
        "round() rounds": lambda n, size: round(n / size),
        "number of tokens": lambda n, size: n,
    }
    for words, fn in cases.items():
        result = check_blocks_needed(fn)
        assert not result.passed and words in result.message, (words, result.message)
    assert "returned None" in check_blocks_needed(lambda n, size: None).message


def test_slot():
    def right(table, p, size):
        return table[p // size] * size + p % size

    assert check_slot(right).passed
    cases = {
        "multiply it by block_size": lambda t, p, s: t[p // s] + p % s,
        "offset inside its block": lambda t, p, s: t[p // s] * s,
        "physical block": lambda t, p, s: t[p // s],
        "not the position": lambda t, p, s: p,
        "swapped": lambda t, p, s: t[p % s % len(t)] * s + p // s,
        "count from 0": lambda t, p, s: t[max((p - 1) // s, 0)] * s + (p - 1) % s,
    }
    for words, fn in cases.items():
        result = check_slot(fn)
        assert not result.passed and words in result.message, (words, result.message)
    crash = check_slot(lambda t, p, s: t[p])  # indexes past the table
    assert not crash.passed and "IndexError" in crash.message


def test_slot_reference_is_the_engines_pool():
    # the check's answer comes from KVPool.slots; the pool agrees with the formula by hand
    import torch

    from maaslab.llm.model import KVPool

    pool = KVPool(1, 16, 4, 1, 1)
    slots = pool.slots([9, 3, 14, 1], torch.arange(16)).tolist()
    assert slots == [[9, 3, 14, 1][p // 4] * 4 + p % 4 for p in range(16)]


# --- exercise 3 -----------------------------------------------------------------------------------


def test_the_written_out_rule_is_the_engines_scheduler():
    for state in (*STEP_PROBES, *random_states(300, seed=3)):
        assert reference_step(state) == engine_decision(state), str(state)


def test_probe_answers_are_what_the_lesson_says():
    assert engine_decision(STEP_PROBES[0]) == {"A": 1, "B": 1, "C": 1, "D": 31}
    assert engine_decision(STEP_PROBES[1]) == {"A": 1}
    assert engine_decision(STEP_PROBES[2]) == {"A": 16, "B": 1}
    assert engine_decision(STEP_PROBES[3]) == {"A": 1, "C": 20}
    assert engine_decision(STEP_PROBES[4]) == {"A": 16}


def test_schedule_step_passes_the_rule_and_names_every_mistake():
    assert check_schedule_step(reference_step).passed
    as_pairs = check_schedule_step(lambda s: list(reference_step(s).items()))
    assert as_pairs.passed  # a list of (name, tokens) pairs is accepted too
    for flag, why in STEP_MISTAKES:
        result = check_schedule_step(lambda s, flag=flag: reference_step(s, **{flag: True}))
        assert not result.passed and why in result.message, (flag, result.message)


def test_schedule_step_refuses_garbage():
    assert "return a dict" in check_schedule_step(lambda s: "A").message
    assert "returned None" in check_schedule_step(lambda s: None).message
    nothing = check_schedule_step(lambda s: {})
    assert not nothing.passed and "you scheduled {}" in nothing.message
    everyone = check_schedule_step(lambda s: {r.name: r.pending for r in s.running})
    assert not everyone.passed


def test_a_state_that_needs_a_preemption_or_holds_the_wrong_blocks_is_refused():
    tight = StepState(running=(Running("A", 32, 1, 2),), waiting=(), free_blocks=0)
    with pytest.raises(MaaslabError, match="preempt"):
        engine_decision(tight)  # its 33rd token needs a third block of 16
    wrong = StepState(running=(Running("A", 32, 1, 5),), waiting=(Waiting("B", 3),), free_blocks=1)
    with pytest.raises(MaaslabError, match="holds 2 blocks"):
        engine_decision(wrong)


# --- exercise 4 -----------------------------------------------------------------------------------


def test_expected_tokens():
    def right(a, k):
        return k + 1 if a == 1 else (1 - a ** (k + 1)) / (1 - a)

    assert check_expected_tokens(right).passed
    assert check_expected_tokens(lambda a, k: sum(a**i for i in range(k + 1))).passed
    cases = {
        "accepted guesses only": lambda a, k: sum(a**i for i in range(1, k + 1)),
        "one term short": lambda a, k: sum(a**i for i in range(k)),
        "a^k is the chance": lambda a, k: a**k,
        "its chance is a^i": lambda a, k: 1 + k * a,
        "limit for k": lambda a, k: 1 / (1 - a) if a < 1 else math.inf,
    }
    for words, fn in cases.items():
        result = check_expected_tokens(fn)
        assert not result.passed and words in result.message, (words, result.message)


def test_expected_tokens_at_acceptance_one():
    unguarded = check_expected_tokens(lambda a, k: (1 - a ** (k + 1)) / (1 - a))
    assert not unguarded.passed and "handle a == 1" in unguarded.message
    wrong = check_expected_tokens(lambda a, k: k if a == 1 else (1 - a ** (k + 1)) / (1 - a))
    assert not wrong.passed and "expected 2" in wrong.message
    assert "expected a number" in check_expected_tokens(lambda a, k: "many").message
