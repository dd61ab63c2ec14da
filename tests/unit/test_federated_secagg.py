import itertools

import numpy as np
import pytest
import torch
from torch import nn

from maaslab import MaaslabError
from maaslab.federated import weighted_average
from maaslab.federated.aggregation import (
    aggregate,
    aggregate_vectors,
    flatten_state,
    unflatten_state,
)
from maaslab.federated.secagg import (
    SecAggConfig,
    dequantize,
    mask_update,
    pair_mask,
    pair_seed,
    quantization_bound,
    quantize,
    ring_sum,
    secure_sum,
)
from maaslab.models import build_model


def _updates(k=5, size=2000, scale=300.0, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, size) for _ in range(k)]


def _states(k=4, seed=0):
    states = []
    for s in range(k):
        torch.manual_seed(seed + s)
        model = build_model("mlp", in_features=64, hidden=(16,), out_features=10)
        states.append({n: t.detach().clone() for n, t in model.state_dict().items()})
    return states


def _r(a, b):
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("cfg", [SecAggConfig(), SecAggConfig(ring_bits=20, frac_bits=4)])
def test_masks_cancel_exactly_in_the_ring(cfg):
    xs = [x / 1000 for x in _updates(k=5, size=3000, scale=1.0)]  # within the small ring too
    ids = [7, 2, 11, 0, 5]
    quantized = [quantize(x, cfg) for x in xs]
    masked = [
        mask_update(q, c, ids, seed=3, round_=4, cfg=cfg)
        for q, c in zip(quantized, ids, strict=True)
    ]
    assert not any(np.array_equal(m, q) for m, q in zip(masked, quantized, strict=True))
    # every mask met its negative: the masked sum IS the sum of the quantized updates
    np.testing.assert_array_equal(ring_sum(masked, cfg), ring_sum(quantized, cfg))
    result = secure_sum(xs, ids, seed=3, round_=4, cfg=cfg)
    error = np.abs(result.total - np.sum(xs, axis=0)).max()
    assert error <= result.error_bound
    assert result.error_bound == pytest.approx(quantization_bound(5, cfg), rel=1e-6)


def test_the_quantization_bound_holds_and_is_tight():
    cfg = SecAggConfig(frac_bits=10)  # coarse, so the rounding shows
    xs = _updates(k=2, size=20000, scale=5.0, seed=1)
    result = secure_sum(xs, cfg=cfg)
    error = np.abs(result.total - (xs[0] + xs[1])).max()
    assert error <= result.error_bound
    assert error > 0.5 * result.error_bound  # 2 * 2^-11 is nearly reached, not a loose bound


def test_pair_masks_are_antisymmetric_seeded_and_fresh_every_round():
    cfg, ids, size = SecAggConfig(), [0, 3, 4, 9], 500
    for i, j in itertools.permutations(ids, 2):
        m_ij = pair_mask(i, j, size, seed=1, round_=2, cfg=cfg)
        m_ji = pair_mask(j, i, size, seed=1, round_=2, cfg=cfg)
        np.testing.assert_array_equal(m_ij + m_ji, np.zeros(size, dtype=np.uint64))
        # seeded and reproducible: both clients of a pair derive the same mask
        np.testing.assert_array_equal(m_ij, pair_mask(i, j, size, seed=1, round_=2, cfg=cfg))
        assert pair_seed(1, 2, i, j).entropy == pair_seed(1, 2, j, i).entropy
        # a new round (or another run's seed) draws new masks: no mask is ever reused
        assert not np.array_equal(m_ij, pair_mask(i, j, size, seed=1, round_=3, cfg=cfg))
        assert not np.array_equal(m_ij, pair_mask(i, j, size, seed=2, round_=2, cfg=cfg))
    # different pairs have different masks
    assert not np.array_equal(
        pair_mask(0, 3, size, seed=1, round_=2, cfg=cfg),
        pair_mask(0, 4, size, seed=1, round_=2, cfg=cfg),
    )
    with pytest.raises(MaaslabError, match="two different clients"):
        pair_seed(0, 0, 5, 5)


def test_secure_sum_is_reproducible_and_its_total_does_not_depend_on_the_masks():
    xs = _updates(k=3)
    a, b = secure_sum(xs, seed=5, round_=1), secure_sum(xs, seed=5, round_=1)
    other = secure_sum(xs, seed=6, round_=1)
    for ma, mb, mo in zip(a.masked, b.masked, other.masked, strict=True):
        np.testing.assert_array_equal(ma, mb)
        assert not np.array_equal(ma, mo)
    np.testing.assert_array_equal(a.total, other.total)
    assert a.bytes_per_client == 2000 * 8


def test_one_masked_update_is_uncorrelated_with_the_true_one():
    # Over a seeded sample of rounds and clients, what the server sees from one client is
    # uncorrelated with that client's update (|r| ~ 1 / sqrt(2000) = 0.022; 0.12 is 5 sigma).
    cfg, rs = SecAggConfig(), []
    for round_ in range(8):
        xs = _updates(k=3, seed=round_)
        result = secure_sum(xs, seed=0, round_=round_, cfg=cfg)
        rs += [_r(dequantize(m, cfg), x) for m, x in zip(result.masked, xs, strict=True)]
        seen = dequantize(result.masked[0], cfg)
        assert np.abs(seen).max() > 0.9 * cfg.capacity  # spread over the whole ring
    assert max(abs(r) for r in rs) < 0.12
    # The same statistic without masks (a client alone has no pair) would fail the test.
    x = _updates(k=1)[0]
    unmasked = dequantize(mask_update(quantize(x, cfg), 0, [0], seed=0, round_=0, cfg=cfg), cfg)
    assert _r(unmasked, x) > 0.999


def test_a_dropped_client_leaves_masks_that_do_not_cancel():
    # Out of scope, and why: without client 2's masked vector, its masks with 0 and 1 remain.
    xs = _updates(k=3)
    result = secure_sum(xs)
    partial = dequantize(ring_sum(result.masked[:2]))
    assert np.abs(partial - (xs[0] + xs[1])).max() > 1e6


def test_masked_aggregate_equals_weighted_average():
    states, weights = _states(k=4), [300, 412, 100, 625]
    reference = weighted_average(states, weights)
    plain = aggregate(states, weights, "plain")
    masked = aggregate(states, weights, "masked", clients=[5, 2, 9, 0], round_=3, seed=1)
    assert masked.total_weight == 1437.0  # the sum of the counts, decoded from the masked sum
    assert 0 < masked.error_bound < 1e-9
    assert np.abs(masked.vector - plain.vector).max() <= masked.error_bound
    for name, ref in reference.items():
        # within the bound, plus one float32 rounding of the averaged value
        tol = masked.error_bound + float(ref.abs().max()) * 2.0**-23
        torch.testing.assert_close(masked.average[name], ref, rtol=0, atol=tol)
    # the server saw masked vectors only: none correlates with its client's weighted update
    for seen, update in zip(masked.seen, masked.updates, strict=True):
        assert abs(_r(seen, update)) < 0.15
    assert masked.bytes_per_client == (plain.vector.size + 1) * 8
    assert plain.bytes_per_client == plain.vector.size * 4 + 8  # float32 weights and a count


def test_plain_aggregate_is_weighted_average_bit_for_bit_and_keeps_integer_buffers():
    states = []
    for s in range(3):
        torch.manual_seed(s)
        model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
        model.train()(torch.randn(8, 4) + s)  # moves the running statistics
        model[1].num_batches_tracked += s
        states.append({n: t.detach().clone() for n, t in model.state_dict().items()})
    weights = [3, 1, 2]
    reference = weighted_average(states, weights)
    for method in ("plain", "masked"):
        average = aggregate(states, weights, method).average
        assert average["1.num_batches_tracked"].item() == 1  # the first state's counter
        if method == "plain":
            for name, ref in reference.items():
                assert torch.equal(average[name], ref), name
    # without masks the server sees each client's weighted update as it is
    plain = aggregate(states, weights, "plain")
    assert all(np.array_equal(s, u) for s, u in zip(plain.seen, plain.updates, strict=True))


def test_flatten_and_unflatten_round_trip():
    state = _states(k=1)[0]
    back = unflatten_state(flatten_state(state), state)
    assert all(torch.equal(back[n], t) for n, t in state.items())
    with pytest.raises(MaaslabError, match="numbers"):
        unflatten_state(flatten_state(state)[:-1], state)


def test_bad_inputs_are_refused_with_what_to_do():
    with pytest.raises(MaaslabError, match="ring_bits must be between 8 and 64"):
        SecAggConfig(ring_bits=65)
    with pytest.raises(MaaslabError, match="frac_bits must be between 0 and ring_bits - 2"):
        SecAggConfig(ring_bits=16, frac_bits=15)
    with pytest.raises(MaaslabError, match=r"lower SecAggConfig\.frac_bits or raise ring_bits"):
        secure_sum([np.full(3, 2.0**30), np.full(3, 2.0**30)])  # each fits, their sum does not
    with pytest.raises(MaaslabError, match="does not fit the ring"):
        quantize(np.array([np.nan]))
    with pytest.raises(MaaslabError, match="distinct client id"):
        secure_sum(_updates(k=2), clients=[1, 1])
    with pytest.raises(MaaslabError, match="unknown aggregation 'secret'"):
        aggregate_vectors(_updates(k=2), [1, 1], "secret")
    with pytest.raises(MaaslabError, match="one weight per update"):
        aggregate_vectors(_updates(k=2), [1], "masked")
    with pytest.raises(MaaslabError, match="non-negative with a positive sum"):
        aggregate_vectors(_updates(k=2), [1, -1], "masked")
    with pytest.raises(MaaslabError, match="same length"):
        aggregate_vectors([np.zeros(3), np.zeros(4)], [1, 1], "masked")
