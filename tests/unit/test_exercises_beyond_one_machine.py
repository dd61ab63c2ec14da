"""Lesson 17's checks pass right answers, name the mistake in wrong ones and call an unwritten
answer "not attempted"; their references (Ray Serve's own autoscaling policy, the config.pbtxt
the Triton export writes, the ingress's RemoteQueue) agree with the rules written out by hand."""

from __future__ import annotations

import math

from maaslab.exercises.beyond_one_machine import (
    AUTOSCALE_PROBES,
    FAULT_PROBES,
    TRITON_PROBES,
    answered_share,
    check_autoscale_decision,
    check_fault_share,
    check_replicas_needed,
    check_triton_dims,
    ray_decision,
    replicas_for,
    triton_batching,
)
from maaslab.exercises.unanswered import Unanswered

# --- the references against the rules by hand ---------------------------------------------------


def _by_hand(ongoing, running, target, low, high):
    desired = math.ceil(ongoing / target)
    if desired < running and running > 1:
        desired = max(1, desired)  # Ray reaches 0 only from 1 replica
    return max(low, min(high, desired))


def test_ray_decision_is_ongoing_over_target_bounded():
    for probe in AUTOSCALE_PROBES:
        assert ray_decision(*probe) == _by_hand(*probe), probe
    assert ray_decision(0.0, 1, 2.0, 0, 4) == 0  # from one replica it does scale to zero
    assert ray_decision(5.0, 2, 2.0, 1, 4) == 3  # 2.5 replicas' worth: 3


def test_triton_batching_is_the_exports_config():
    assert triton_batching((-1, 64), 32) == (32, (64,))
    assert triton_batching((-1, -1), 8) == (8, (-1,))  # the sequence length stays dynamic
    for shape, batch in TRITON_PROBES:
        assert triton_batching(shape, batch) == (batch, tuple(shape[1:]))


def test_replicas_for_rounds_up():
    assert replicas_for(250, 117, 1.0) == 3 and replicas_for(300, 100, 0.75) == 4


# --- the checks ----------------------------------------------------------------------------------


def test_autoscale_check():
    assert check_autoscale_decision(_by_hand).passed
    assert check_autoscale_decision(ray_decision).passed

    def rounded(o, r, t, lo, hi):
        return max(lo, min(hi, round(o / t)))

    assert "ceil" in check_autoscale_decision(rounded).message
    unbounded = check_autoscale_decision(lambda o, r, t, lo, hi: math.ceil(o / t))
    assert not unbounded.passed and "above max_replicas" in unbounded.message
    no_min = check_autoscale_decision(lambda o, r, t, lo, hi: min(hi, math.ceil(o / t)))
    assert not no_min.passed and "below min_replicas" in no_min.message

    def per_replica(o, r, t, lo, hi):
        return max(lo, min(hi, math.ceil(o / r / t)))

    assert "every replica's requests" in check_autoscale_decision(per_replica).message

    def to_zero(o, r, t, lo, hi):
        return max(lo, min(hi, math.ceil(o / t)))

    zero = check_autoscale_decision(to_zero)
    assert not zero.passed and "only from one replica" in zero.message
    assert "whole number" in check_autoscale_decision(lambda *a: 2.5).message
    assert "returned None" in check_autoscale_decision(lambda *a: None).message
    assert check_autoscale_decision(Unanswered("replicas")).status == "not attempted"


def test_triton_dims_check():
    assert check_triton_dims(lambda shape, b: (b, shape[1:])).passed
    assert check_triton_dims(lambda shape, b: (b, list(shape[1:]))).passed
    kept = check_triton_dims(lambda shape, b: (b, shape))
    assert not kept.passed and "leave it out" in kept.message
    dropped = check_triton_dims(lambda shape, b: (b, [d for d in shape if d != -1]))
    assert not dropped.passed and "sequence length" in dropped.message
    last = check_triton_dims(lambda shape, b: (b, shape[:-1]))
    assert not last.passed and "not the last" in last.message
    minus = check_triton_dims(lambda shape, b: (-1, shape[1:]))
    assert not minus.passed and "not the graph's -1" in minus.message
    assert "return (max_batch_size, dims)" in check_triton_dims(lambda s, b: 3).message
    assert check_triton_dims(Unanswered("dims")).status == "not attempted"


def test_replicas_needed_check():
    assert check_replicas_needed(lambda t, r, u: math.ceil(t / (r * u))).passed
    rounded = check_replicas_needed(lambda t, r, u: round(t / (r * u)))
    assert not rounded.passed and "nearest" in rounded.message
    floor_plus = check_replicas_needed(lambda t, r, u: int(t / (r * u)) + 1)
    assert not floor_plus.passed and "floor + 1" in floor_plus.message
    no_util = check_replicas_needed(lambda t, r, u: math.ceil(t / r))
    assert not no_util.passed and "per_replica_rps x utilization" in no_util.message
    times = check_replicas_needed(lambda t, r, u: math.ceil(t * u / r))
    assert not times.passed and "not multiply" in times.message
    exact = check_replicas_needed(lambda t, r, u: t / (r * u))
    assert not exact.passed and "whole" in exact.message
    assert check_replicas_needed(Unanswered("replicas")).status == "not attempted"


def test_answered_share_is_the_remote_queues_retry():
    for replicas, dead, retries in FAULT_PROBES:
        want = 1 - (dead / replicas) ** (retries + 1)
        assert math.isclose(answered_share(replicas, dead, retries), want)
    assert answered_share(2, 2, 1) == 0.0  # every replica dead: every request is a 503


def test_fault_share_check():
    assert check_fault_share(lambda r, d, k: 1 - (d / r) ** (k + 1)).passed
    once = check_fault_share(lambda r, d, k: 1 - d / r)
    assert not once.passed and "one attempt" in once.message
    first = check_fault_share(lambda r, d, k: 1 - (d / r) ** k)
    assert not first.passed and "first attempt" in first.message
    every = check_fault_share(lambda r, d, k: (1 - d / r) ** (k + 1))
    assert not every.passed and "one is enough" in every.message
    lost = check_fault_share(lambda r, d, k: (d / r) ** (k + 1))
    assert not lost.passed and "share lost" in lost.message
    percent = check_fault_share(lambda r, d, k: 100 * (1 - (d / r) ** (k + 1)))
    assert not percent.passed and "percentage" in percent.message
    assert check_fault_share(Unanswered("share")).status == "not attempted"
