"""Lesson 13's exercise checks pass right answers and name the mistake in wrong ones."""

import pytest
import torch

from maaslab.distributed import (
    all_reduce_values,
    ring_bytes_per_rank,
    scaled_lr,
    shard_indices,
)
from maaslab.exercises.distributed_training import (
    BATCH_PROBLEM,
    check_all_reduce_mean,
    check_global_batch_lr,
    check_ring_bytes,
    check_shard_indices,
)


def hand_all_reduce_mean(per_rank):
    # The notebook's solution: sum over ranks, divide by the world size.
    return torch.stack(per_rank).sum(0) / len(per_rank)


def hand_shard(n, world_size, rank, seed, epoch):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    total = n // world_size * world_size
    return order[rank:total:world_size]


def hand_ring_bytes(n_params, world_size, bytes_per_value):
    return 2 * (world_size - 1) / world_size * n_params * bytes_per_value


def test_hand_solutions_match_the_library_and_torch():
    values = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])]
    torch.testing.assert_close(hand_all_reduce_mean(values), all_reduce_values(values)[0] / 2)
    assert hand_shard(11, 3, 2, 4, 1) == shard_indices(11, 3, 2, seed=4, epoch=1)
    assert hand_ring_bytes(10, 4, 2) == ring_bytes_per_rank(10, 4, 2)


def test_checks_pass_right_answers():
    assert check_all_reduce_mean(hand_all_reduce_mean).passed
    assert check_all_reduce_mean(lambda v: sum(v) / len(v)).passed
    assert check_shard_indices(hand_shard).passed
    assert check_shard_indices(lambda n, w, r, s, e: shard_indices(n, w, r, seed=s, epoch=e))
    p = BATCH_PROBLEM
    batch = p["nodes"] * p["gpus_per_node"] * p["batch_per_gpu"]
    lr = scaled_lr(p["base_lr"], p["base_batch"], batch)
    assert (batch, lr) == (256, pytest.approx(0.2))
    assert check_global_batch_lr((batch, lr)).passed
    assert check_global_batch_lr([256.0, 0.2]).passed
    assert check_ring_bytes(hand_ring_bytes).passed


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda v: torch.stack(v).sum(0), "this is the sum"),
        (lambda v: v[0], "rank 0's own gradient"),
        (lambda v: torch.stack(v).sum(0) / v[0].numel(), "number of values in a gradient"),
        (lambda v: torch.stack(v).mean((1, 2)), "averaged within each rank"),
        (lambda v: hand_all_reduce_mean(v) + 1, "largest difference"),
        (lambda v: None, "returned None"),
        (lambda v: v.mean(), "raised AttributeError"),
    ],
)
def test_all_reduce_check_names_mistakes(wrong, message):
    result = check_all_reduce_mean(wrong)
    assert result is not None and not result.passed and message in result.message


def _perm(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda n, w, r, s, e: _perm(n, s + e)[r * (n // w) : (r + 1) * (n // w)], "contiguous"),
        (lambda n, w, r, s, e: list(range(n))[r : n // w * w : w], "forgot to shuffle"),
        (lambda n, w, r, s, e: _perm(n, s)[r : n // w * w : w], "seed + epoch"),
        (lambda n, w, r, s, e: _perm(n, s + e)[r::w], "uneven tail"),
        (lambda n, w, r, s, e: [0, 1], "expected"),
        (lambda n, w, r, s, e: 3, "expected a list of indices"),
    ],
)
def test_shard_check_names_mistakes(wrong, message):
    result = check_shard_indices(wrong)
    assert result is not None and not result.passed and message in result.message


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((128, 0.1), "counts one machine"),
        ((32, 0.1), "one rank's batch"),
        ((512, 0.4), "multiply nodes x GPUs"),
        ((256, 0.1), "was not scaled"),
        ((256, 0.05), "the wrong way"),
        ((256, 0.3), "use base_lr x global_batch / base_batch"),
        (256, "answer with a pair"),
        (("a", "b"), "answer with a pair"),
    ],
)
def test_global_batch_check_names_mistakes(answer, message):
    result = check_global_batch_lr(answer)
    assert result is not None and not result.passed and message in result.message


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda n, p, b: (p - 1) / p * n * b, "reduce-scatter half"),
        (lambda n, p, b: 2 * (p - 1) * n * b, "one chunk"),
        (lambda n, p, b: 2 * (p - 1) / p * n, "counts values, not bytes"),
        (lambda n, p, b: 2 * n * b, "parameter-server worker"),
        (lambda n, p, b: n * b, "largest difference"),
        (lambda n, p, b: "many", "expected a tensor or array"),
    ],
)
def test_ring_check_names_mistakes(wrong, message):
    result = check_ring_bytes(wrong)
    assert result is not None and not result.passed and message in result.message
