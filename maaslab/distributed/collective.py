"""What data-parallel training communicates, written out: all-reduce, ring all-reduce, sharding.

Pure functions on arrays, no process group: the lesson runs them in one process and compares
them with what torch.distributed and DistributedSampler do across processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from maaslab.errors import MaaslabError


def average_gradients(per_rank: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """All-reduce by hand, as DDP does it: sum every rank's gradient, then divide by world size.

    Parameters
    ----------
    per_rank : one {parameter name: gradient} table per rank, all with the same names and shapes.
    """
    if not per_rank:
        raise MaaslabError("average_gradients needs the gradients of at least one rank")
    names = list(per_rank[0])
    for r, grads in enumerate(per_rank):
        if list(grads) != names:
            raise MaaslabError(f"rank {r} has parameters {list(grads)}, rank 0 has {names}")
    world = len(per_rank)
    return {n: torch.stack([g[n] for g in per_rank]).sum(0) / world for n in names}


@dataclass(frozen=True)
class RingResult:
    """What a simulated ring all-reduce ends with, and what it cost."""

    values: list[np.ndarray]  # what every rank holds at the end (the element-wise sum)
    elements_sent: list[int]  # numbers each rank sent to its right-hand neighbour
    steps: int  # communication rounds: 2 (p - 1)


def ring_allreduce(per_rank: Sequence[np.ndarray]) -> RingResult:
    """Sum equal-length vectors over a ring of ranks: reduce-scatter, then all-gather.

    Parameters
    ----------
    per_rank : one 1-D array per rank. The vector is cut into p chunks; in each of p - 1 rounds
        every rank passes one chunk to its right-hand neighbour, which adds it to its own (after
        that, rank r owns the full sum of chunk r + 1), then p - 1 more rounds pass the finished
        chunks around. Each rank sends 2 (p - 1) / p of the vector, whatever p is.
    """
    p = len(per_rank)
    if p < 1:
        raise MaaslabError("ring_allreduce needs at least one rank")
    size = np.asarray(per_rank[0]).size
    if any(np.asarray(v).size != size for v in per_rank):
        raise MaaslabError("every rank must hold a vector of the same length")
    # chunks[r][c]: rank r's copy of chunk c
    chunks = [np.array_split(np.asarray(v, dtype=np.float64).ravel().copy(), p) for v in per_rank]
    sent = [0] * p
    for step in range(p - 1):  # reduce-scatter: rank r sends chunk (r - step) to rank r + 1
        outgoing = [(r, (r - step) % p, chunks[r][(r - step) % p].copy()) for r in range(p)]
        for r, c, data in outgoing:
            chunks[(r + 1) % p][c] = chunks[(r + 1) % p][c] + data
            sent[r] += data.size
    for step in range(p - 1):  # all-gather: rank r passes on the finished chunk (r + 1 - step)
        outgoing = [(r, (r + 1 - step) % p, chunks[r][(r + 1 - step) % p].copy()) for r in range(p)]
        for r, c, data in outgoing:
            chunks[(r + 1) % p][c] = data
            sent[r] += data.size
    return RingResult([np.concatenate(c) for c in chunks], sent, 2 * (p - 1))


def ring_bytes_per_rank(n_params: int, world_size: int, bytes_per_value: int = 4) -> float:
    """Bytes each rank sends in one ring all-reduce of `n_params` values: 2 (p - 1) / p · n · b.

    Parameters
    ----------
    n_params : numbers in the gradient (the model's trainable parameters).
    world_size : ranks in the ring (p).
    bytes_per_value : 4 for float32 gradients, 2 for bf16/fp16.
    """
    if world_size < 1 or n_params < 0:
        raise MaaslabError("world_size must be at least 1 and n_params not negative")
    return 2 * (world_size - 1) / world_size * n_params * bytes_per_value


def parameter_server_bytes(
    n_params: int, world_size: int, bytes_per_value: int = 4
) -> dict[str, float]:
    """Bytes per step with one parameter server: each worker pushes a gradient, pulls weights."""
    worker = 2.0 * n_params * bytes_per_value  # one gradient up, one set of weights down
    return {"per_worker": worker, "server": worker * world_size}


def allreduce_seconds(
    n_params: int,
    world_size: int,
    bandwidth_gbps: float,
    latency_us: float = 5.0,
    bytes_per_value: int = 4,
) -> float:
    """The ring all-reduce cost model: 2 (p - 1) latency terms plus the bandwidth term.

    Parameters
    ----------
    bandwidth_gbps : link bandwidth in gigabytes per second (NVLink ~ 300, 100 Gb Ethernet ~ 12).
    latency_us : time to start one message, in microseconds.
    """
    if bandwidth_gbps <= 0:
        raise MaaslabError(f"bandwidth must be positive, got {bandwidth_gbps}")
    volume = ring_bytes_per_rank(n_params, world_size, bytes_per_value)
    return 2 * (world_size - 1) * latency_us * 1e-6 + volume / (bandwidth_gbps * 1e9)


def shard_indices(
    n: int, world_size: int, rank: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True
) -> list[int]:
    """The example indices DistributedSampler(drop_last=True) gives `rank` in `epoch`.

    Parameters
    ----------
    n : examples in the dataset.
    world_size, rank : how many ranks share it, and which one asks.
    seed, epoch : the permutation is randperm(n) from a generator seeded with seed + epoch, so
        every rank draws the same one without talking to the others; set_epoch changes it.
    shuffle : False keeps the dataset order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise MaaslabError(f"rank must be in [0, {world_size - 1}], got {rank}")
    if n < world_size:
        raise MaaslabError(f"{n} examples cannot give each of {world_size} ranks one")
    if shuffle:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    total = (n // world_size) * world_size  # the tail that does not divide evenly is dropped
    return order[rank:total:world_size]


def global_batches(
    n: int, world_size: int, batch_size: int, *, seed: int = 0, epoch: int = 0
) -> list[list[int]]:
    """The examples of every optimizer step of one DDP epoch, all ranks' shards together.

    Step i uses rank r's i-th batch of `batch_size`; one process training on these global
    batches takes the same steps as DDP (the last partial batch of a rank is dropped).
    """
    shards = [shard_indices(n, world_size, r, seed=seed, epoch=epoch) for r in range(world_size)]
    steps = len(shards[0]) // batch_size
    return [
        [i for shard in shards for i in shard[s * batch_size : (s + 1) * batch_size]]
        for s in range(steps)
    ]


def scaled_lr(base_lr: float, base_batch: int, global_batch: int) -> float:
    """The linear scaling rule: grow the learning rate with the global batch size."""
    if base_batch < 1 or global_batch < 1:
        raise MaaslabError("batch sizes must be at least 1")
    return base_lr * global_batch / base_batch


def steps_per_epoch(n: int, world_size: int, batch_size: int) -> int:
    """Optimizer steps in one DDP epoch: each rank's shard of n // p examples in full batches."""
    return math.floor((n // world_size) / batch_size)
