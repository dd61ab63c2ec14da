"""Exercise 2: a block allocator, the blocks a sequence needs and the cache slot of a token.

The checks compare with `BlockManager.blocks_needed` and `KVPool.slots` and name the known
slips: floor for ceil, one block too many, a block number used as a slot, // and % swapped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from maaslab.exercises.grading import CheckResult, exercise, failed, passed, right_or_first_mistake
from maaslab.exercises.serving_language_models.answers import answer_numbers, first_wrong
from maaslab.llm.blocks import BlockManager
from maaslab.llm.model import KVPool

BLOCK_PROBES = tuple(
    (n, size) for size in (16, 4, 1) for n in (0, 1, size - 1, size, size + 1, 3 * size, 100)
)
# (block table, block_size): the slot of every position the table covers
SLOT_PROBES = (([9, 3, 14, 1], 4), ([7, 2], 16), ([5, 0, 12], 8))


@exercise
def check_blocks_needed(fn: Callable) -> CheckResult:
    """Check `fn(num_tokens, block_size) -> blocks` that hold that many tokens."""
    name = "blocks needed for a number of tokens"
    got, bad = answer_numbers(name, fn, BLOCK_PROBES)
    if bad is not None:
        return bad
    n, size = (np.array(c) for c in zip(*BLOCK_PROBES, strict=True))
    want = np.array([BlockManager(1, s).blocks_needed(k) for k, s in BLOCK_PROBES], dtype=float)
    mistakes = [
        (n // size, "that is floor division: a block that is only partly full is still needed"),
        (
            n // size + 1,
            "n // block_size + 1 takes one block too many when n is a multiple of block_size "
            "(and gives 1 block for 0 tokens): round up with -(-n // block_size)",
        ),
        (n / size, "a block count is a whole number: round n / block_size up"),
        (np.round(n / size), "round() rounds to the nearest; a partly full block needs ceil"),
        (n, "that is the number of tokens: divide by block_size, rounding up"),
    ]
    labels = [f"{k} tokens in blocks of {s}" for k, s in BLOCK_PROBES]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=0, atol=1e-9)
    if not result.passed:
        return failed(name, f"{first_wrong(got, want, labels)}: {result.message}")
    return passed(name, "ceil(n / block_size), as BlockManager.blocks_needed")


def _slot_cases() -> list[tuple[list[int], int, int]]:
    # (table, position, block_size) for every position each probe table covers
    return [(list(table), p, size) for table, size in SLOT_PROBES for p in range(len(table) * size)]


@exercise
def check_slot(fn: Callable) -> CheckResult:
    """Check `fn(table, position, block_size) -> the cache slot holding that token's KV`."""
    name = "the cache slot of a token"
    cases = _slot_cases()
    got, bad = answer_numbers(name, fn, cases)
    if bad is not None:
        return bad
    want = []
    for table, size in SLOT_PROBES:
        pool = KVPool(1, max(table) + 1, size, 1, 1)  # the engine's own slot formula
        want += pool.slots(table, torch.arange(len(table) * size)).tolist()
    want = np.array(want, dtype=float)
    t = [c[0] for c in cases]
    p = np.array([c[1] for c in cases])
    size = np.array([c[2] for c in cases])
    block = np.array([tab[k] for tab, k in zip(t, p // size, strict=True)])
    swapped = np.array([tab[k % len(tab)] for tab, k in zip(t, p % size, strict=True)])
    one_based = np.array([tab[max(k, 0)] for tab, k in zip(t, (p - 1) // size, strict=True)])
    mistakes = [
        (
            block + p % size,
            "table[p // block_size] is a block number: multiply it by block_size to get its "
            "first slot, then add the offset p % block_size",
        ),
        (block * size, "add the token's offset inside its block, p % block_size"),
        (block, "that is the physical block; the slot is block * block_size + p % block_size"),
        (
            p,
            "the slot is not the position: the sequence's blocks are scattered through the pool; "
            "look up its logical block p // block_size in the table",
        ),
        (
            swapped * size + p // size,
            "// and % are swapped: the block is p // block_size, the offset p % block_size",
        ),
        (
            one_based * size + (p - 1) % size,
            "positions count from 0: the first token is position 0, in slot table[0] * block_size",
        ),
    ]
    labels = [f"position {k} with table {tab} and blocks of {s}" for tab, k, s in cases]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=0, atol=1e-9)
    if not result.passed:
        return failed(name, f"{first_wrong(got, want, labels)}: {result.message}")
    return passed(
        name,
        "table[p // block_size] * block_size + p % block_size, as KVPool.slots: the "
        "sequence's tokens are contiguous only within a block",
    )
