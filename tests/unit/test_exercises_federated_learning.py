"""Lesson 18's checks: right answers pass, each known mistake is named, a stub is not attempted."""

import numpy as np
import pytest

from maaslab.exercises.federated_learning import (
    check_attack_advantage,
    check_basic_composition,
    check_fedavg,
    check_masked_updates,
)
from maaslab.exercises.unanswered import Unanswered


def fedavg(weights, sizes):
    return sum(n * w for n, w in zip(sizes, weights, strict=True)) / sum(sizes)


def masked(updates, seed, sign=-1.0, scale=100.0):
    rng, out = np.random.default_rng(seed), [u.copy() for u in updates]
    for i in range(len(updates)):
        for j in range(i + 1, len(updates)):
            mask = rng.normal(scale=scale, size=updates[0].shape)
            out[i] += mask
            out[j] += sign * mask
    return out


def test_right_answers_pass():
    assert check_fedavg(fedavg).passed
    assert check_masked_updates(masked).passed
    assert check_basic_composition(lambda e, d: (sum(e), sum(d))).passed
    assert check_attack_advantage(lambda m, o, t: np.mean(m < t) - np.mean(o < t)).passed


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        (lambda w, n: np.mean(w, 0), "plain mean"),
        (lambda w, n: sum(k * x for k, x in zip(n, w, strict=True)), "forgot to divide"),
        (lambda w, n: w[-1], "largest client"),
    ],
)
def test_fedavg_mistakes_are_named(answer, named):
    verdict = check_fedavg(answer)
    assert not verdict.passed and named in verdict.message


def test_mask_mistakes_are_named():
    assert "do not cancel" in check_masked_updates(lambda u, s: masked(u, s, sign=1.0)).message
    assert "unmasked" in check_masked_updates(lambda u, s: u).message

    def one_left_out(updates, seed):  # the last client never gets a mask
        out = masked(updates[:-1], seed)
        return [*out, updates[-1]]

    assert "client(s) [3]" in check_masked_updates(one_left_out).message


def test_composition_and_attack_mistakes_are_named():
    assert "add up" in check_basic_composition(lambda e, d: (max(e), max(d))).message
    assert "delta adds up too" in check_basic_composition(lambda e, d: (sum(e), max(d))).message
    reversed_ = check_attack_advantage(lambda m, o, t: np.mean(o < t) - np.mean(m < t))
    assert "sign is reversed" in reversed_.message
    assert (
        "true-positive rate alone" in check_attack_advantage(lambda m, o, t: np.mean(m < t)).message
    )


def test_a_stub_is_not_attempted_and_a_crash_is_a_verdict():
    assert check_fedavg(Unanswered("my_fedavg")).status == "not attempted"
    crashed = check_masked_updates(lambda u, s: 1 / 0)
    assert not crashed.passed and "ZeroDivisionError" in crashed.message
