"""Lesson 13's auto-checked exercises: all-reduce, DistributedSampler's shards, the global batch
and its learning rate, the bytes of a ring all-reduce.

Each check runs the learner's answer on fixed probes and compares it with maaslab.distributed
(whose functions the tests compare with torch.distributed and DistributedSampler). When an
answer matches a known mistake the message names it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from maaslab.distributed.collective import (
    average_gradients,
    ring_bytes_per_rank,
    scaled_lr,
    shard_indices,
)
from maaslab.exercises.grading import (
    CheckResult,
    answer_array,
    call_answer,
    check_array,
    exercise,
    failed,
    first_mistake,
    passed,
    right_or_first_mistake,
)

# --- exercise 1: all-reduce by hand --------------------------------------------------------------


def _allreduce_probe() -> list[torch.Tensor]:
    # Three ranks' gradients of one (2, 3) weight; shifted per rank so that returning one
    # rank's gradient, or the sum, cannot pass for the average.
    g = torch.Generator().manual_seed(13)
    return [torch.randn(2, 3, generator=g) + r for r in range(3)]


@exercise
def check_all_reduce_mean(fn: Callable) -> CheckResult:
    """Check `fn(per_rank: list of tensors) -> tensor`: the element-wise average over ranks."""
    name = "all-reduce average of the ranks' gradients"
    probe = _allreduce_probe()
    got, bad = call_answer(name, fn, probe)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    got, bad = answer_array(name, got)
    if bad is not None:
        return bad
    stacked = torch.stack(probe)
    expected = average_gradients([{"w": t} for t in probe])["w"]
    mistakes = [
        (
            stacked.sum(0),
            "this is the sum (what all_reduce(SUM) leaves on every rank): DDP then "
            "divides by the world size, here 3",
        ),
        (probe[0], "this is rank 0's own gradient: every rank must end with the same average"),
        (
            stacked.sum(0) / stacked[0].numel(),
            "you divided by the number of values in a gradient: divide by the number of ranks",
        ),
        (
            stacked.mean((1, 2)),
            "you averaged within each rank: average across ranks, element by "
            "element, keeping the gradient's shape",
        ),
    ]
    hint = "torch.stack(per_rank).sum(0) / len(per_rank)."
    return right_or_first_mistake(name, got, expected, mistakes, rtol=1e-5, atol=1e-6, hint=hint)


# --- exercise 2: the shard DistributedSampler gives a rank ---------------------------------------

SHARD_PROBES = ((10, 3, 0, 5, 0), (10, 3, 2, 5, 0), (10, 3, 1, 5, 2), (7, 2, 1, 0, 1))


@exercise
def check_shard_indices(fn: Callable) -> CheckResult:
    """Check `fn(n, world_size, rank, seed, epoch) -> list of indices` against
    DistributedSampler(shuffle=True, drop_last=True) on several (n, world, rank, seed, epoch)."""
    name = "the indices DistributedSampler gives a rank"
    for n, world, rank, seed, epoch in SHARD_PROBES:
        got, bad = call_answer(name, fn, n, world, rank, seed, epoch)
        if bad is not None:
            return bad
        try:
            got = [int(i) for i in (got.tolist() if hasattr(got, "tolist") else got)]
        except (TypeError, ValueError):
            return failed(name, f"expected a list of indices, got {type(got).__name__}")
        expected = shard_indices(n, world, rank, seed=seed, epoch=epoch)
        if got == expected:
            continue
        where = f"n={n}, world_size={world}, rank={rank}, seed={seed}, epoch={epoch}"
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        per = n // world
        mistakes = [
            (
                order[rank * per : (rank + 1) * per],
                "you gave each rank a contiguous block of the "
                "permutation; DistributedSampler takes every world_size-th index: "
                "order[rank:total:world_size]",
            ),
            (
                list(range(n))[rank : per * world : world],
                "you forgot to shuffle: the order is "
                "torch.randperm(n) from a generator seeded with seed + epoch",
            ),
            (
                torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()[
                    rank : per * world : world
                ],
                "the generator must be seeded with seed + epoch, "
                "or every epoch repeats the same order (that is what set_epoch changes)",
            ),
            (
                order[rank::world],
                "you kept the uneven tail: with drop_last=True the order is cut "
                "to a multiple of world_size first, so every rank gets the same number",
            ),
        ]
        why = first_mistake(got, mistakes, rtol=0, atol=0)
        if why:
            return failed(name, f"for {where}: {why}")
        return failed(name, f"for {where}: got {got}, expected {expected}")
    return passed(name, f"matches DistributedSampler on {len(SHARD_PROBES)} cases")


# --- exercise 3: global batch and learning rate --------------------------------------------------

# Two machines with 4 GPUs each, 32 examples per GPU; the recipe was tuned at batch 128, lr 0.1.
BATCH_PROBLEM = {
    "nodes": 2,
    "gpus_per_node": 4,
    "batch_per_gpu": 32,
    "base_batch": 128,
    "base_lr": 0.1,
}


@exercise
def check_global_batch_lr(answer: object) -> CheckResult:
    """Check (global batch, learning rate) for BATCH_PROBLEM under the linear scaling rule."""
    name = "global batch size and scaled learning rate"
    p = BATCH_PROBLEM
    try:
        batch, lr = (float(v) for v in answer)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return failed(name, "answer with a pair: (global_batch, lr)")
    global_batch = p["nodes"] * p["gpus_per_node"] * p["batch_per_gpu"]
    lr_expected = scaled_lr(p["base_lr"], p["base_batch"], global_batch)
    if batch == p["gpus_per_node"] * p["batch_per_gpu"]:
        return failed(name, f"{batch:g} counts one machine: every GPU of both nodes is a rank")
    if batch == p["batch_per_gpu"]:
        return failed(name, "32 is one rank's batch: the optimizer step averages all ranks")
    if batch != global_batch:
        return failed(name, f"global batch {batch:g}: multiply nodes x GPUs per node x batch")
    if np.isclose(lr, p["base_lr"]):
        return failed(
            name,
            "the batch is right but the learning rate was not scaled: the "
            "linear rule multiplies it by global batch / base batch",
        )
    if np.isclose(lr, p["base_lr"] * p["base_batch"] / global_batch):
        return failed(
            name, "you scaled the learning rate the wrong way: a larger batch gets a larger rate"
        )
    if not np.isclose(lr, lr_expected):
        return failed(name, f"lr {lr:g}: use base_lr x global_batch / base_batch")
    return passed(name, f"global batch {global_batch}, lr {lr_expected:g}")


# --- exercise 4: bytes of a ring all-reduce ------------------------------------------------------

RING_PROBES = ((1_000_000, 2, 4), (1_000_000, 8, 4), (25_000_000, 4, 2), (10, 1, 4))


@exercise
def check_ring_bytes(fn: Callable) -> CheckResult:
    """Check `fn(n_params, world_size, bytes_per_value) -> bytes each rank sends` in a ring."""
    name = "bytes each rank sends in a ring all-reduce"
    got_all, expected = [], []
    for n, p, b in RING_PROBES:
        got, bad = call_answer(name, fn, n, p, b)
        if bad is not None:
            return bad
        got_all.append(got)
        expected.append(ring_bytes_per_rank(n, p, b))
    got, bad = answer_array(name, got_all)
    if bad is not None:
        return bad
    probes = np.array(RING_PROBES, dtype=float)
    n, p, b = probes[:, 0], probes[:, 1], probes[:, 2]
    mistakes = [
        (
            (p - 1) / p * n * b,
            "that is only the reduce-scatter half: the all-gather sends "
            "the same amount again, 2 (p - 1) / p in all",
        ),
        (2 * (p - 1) * n * b, "each round sends one chunk (1/p of the vector), not all of it"),
        (2 * (p - 1) / p * n, "that counts values, not bytes: multiply by bytes_per_value"),
        (
            2 * n * b + 0 * p,
            "that is a parameter-server worker (push a gradient, pull the "
            "weights); in a ring each rank sends 2 (p - 1) / p of the vector",
        ),
    ]
    result = check_array(name, got, np.array(expected), rtol=1e-9, hint="2 (p - 1) / p x n x b.")
    if result.passed:
        return passed(name, f"{len(RING_PROBES)} cases right, e.g. 8 ranks send 1.75 x the model")
    why = first_mistake(got, mistakes, rtol=1e-9, atol=0)
    return failed(name, why) if why else result
