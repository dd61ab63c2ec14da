"""Lesson 15's auto-checked exercises: the KV cache's size, a block allocator, one scheduler
step, and the tokens a speculative target pass yields.

Every check compares the learner's function with the engine's own code on the same input:
`maaslab.llm.blocks.kv_bytes_per_token`, `BlockManager.blocks_needed`, `KVPool.slots`, the
`Scheduler` itself (built in the state the exercise describes) and
`maaslab.llm.speculative.expected_tokens`. When an answer equals a known mistake (K without V,
query heads for KV heads, bits for bytes, floor for ceil, a prompt admitted ahead of its turn,
a^k for the geometric sum...) the message names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from maaslab.errors import MaaslabError
from maaslab.exercises.grading import (
    CheckResult,
    call_answer,
    failed,
    passed,
    right_or_first_mistake,
)
from maaslab.llm.blocks import BlockManager, kv_bytes_per_token
from maaslab.llm.model import KVPool
from maaslab.llm.scheduler import Scheduler, SchedulerConfig
from maaslab.llm.sequence import SamplingParams, Sequence, Status
from maaslab.llm.speculative import expected_tokens

GIB = 2**30

# --- exercise 1: the KV cache's size --------------------------------------------------------------

# (model, layers, query heads, KV heads, head_dim, bits of one cached number), published shapes.
KV_PROBES = (
    ("Llama-2-7B, fp16", 32, 32, 32, 128, 16),
    ("Llama-2-70B, fp16 (GQA, 8 KV heads)", 80, 64, 8, 128, 16),
    ("mini-llama, fp32", 6, 8, 2, 32, 32),
    ("Llama-3-8B, fp8 cache", 32, 32, 8, 128, 8),
    ("Llama-3-8B, 4-bit cache", 32, 32, 8, 128, 4),
)


def _numbers(name: str, fn: Callable, cases) -> tuple[np.ndarray | None, CheckResult | None]:
    # The learner's answer for every case, as floats; a crash, a None or a non-number is a verdict.
    out = []
    for args in cases:
        got, bad = call_answer(name, fn, *args)
        if bad is not None:
            return None, bad
        try:
            out.append(float(got))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None, failed(name, f"expected a number, got {type(got).__name__}")
    return np.array(out), None


def _first_wrong(got: np.ndarray, want: np.ndarray, labels: list[str]) -> str:
    # "for <case> you gave x, expected y" at the first case that differs.
    i = int(np.argmax(~np.isclose(got, want, rtol=1e-6, atol=1e-9)))
    return f"for {labels[i]} you gave {got[i]:,.6g}, expected {want[i]:,.6g}"


def check_kv_bytes_per_token(fn: Callable) -> CheckResult:
    """Check `fn(layers, heads, kv_heads, head_dim, bits) -> bytes of KV cache per token`."""
    name = "KV-cache bytes per token"
    cases = [p[1:] for p in KV_PROBES]
    got, bad = _numbers(name, fn, cases)
    if bad is not None:
        return bad
    L, H, KV, D, bits = (np.array(c, dtype=float) for c in zip(*cases, strict=True))
    want = np.array([kv_bytes_per_token(c[0], c[2], c[3], 1) * c[4] / 8 for c in cases])
    mistakes = [
        (L * KV * D * bits / 8, "a token stores a key AND a value vector: multiply by 2"),
        (
            2 * L * H * D * bits / 8,
            "you counted query heads: only the key/value heads are cached, and under "
            "grouped-query attention there are fewer of them (num_key_value_heads)",
        ),
        (2 * L * KV * D * bits, "bits is the width in bits: divide by 8 for bytes"),
        (
            2 * L * KV * D * (bits // 8),
            "bits // 8 rounds a 4-bit number down to 0 bytes: multiply everything first, "
            "divide by 8 last",
        ),
        (2 * KV * D * bits / 8, "every layer keeps its own keys and values: multiply by layers"),
        (L * H * D * bits / 8, "count K and V (x 2), and the KV heads, not the query heads"),
    ]
    labels = [p[0] for p in KV_PROBES]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=1e-6, atol=1e-9)
    if not result.passed:
        return failed(name, f"{_first_wrong(got, want, labels)}: {result.message}")
    return passed(
        name,
        "2 x layers x kv_heads x head_dim x bits / 8: Llama-2-7B in fp16 keeps 0.5 MiB per "
        "token; Llama-2-70B, with 8 KV heads for 64 query heads, only 0.3125 MiB",
    )


# (bytes per token, tokens per sequence, sequences): 7B at 4k, 70B x 32 users, mini-llama x 16
CONTEXT_PROBES = ((524_288, 4096, 1), (327_680, 4096, 32), (3072, 512, 16), (65_536, 8192, 3))


def check_kv_cache_gib(fn: Callable) -> CheckResult:
    """Check `fn(bytes_per_token, tokens, sequences) -> GiB` of KV cache for a batch of contexts."""
    name = "KV cache of a batch of contexts, in GiB"
    got, bad = _numbers(name, fn, CONTEXT_PROBES)
    if bad is not None:
        return bad
    b, t, s = (np.array(c, dtype=float) for c in zip(*CONTEXT_PROBES, strict=True))
    want = b * t * s / GIB
    mistakes = [
        (b * t / GIB, "every sequence keeps its own context: multiply by the sequences"),
        (
            b * t * s / 1e9,
            "that is GB (10^9 bytes); a GiB is 2^30 = 1,073,741,824 bytes, as memory is sold",
        ),
        (b * t * s / 2**20, "that is MiB (2^20 bytes): a GiB is 2^30 bytes"),
        (b * t * s, "that is bytes: divide by 2^30 for GiB"),
    ]
    labels = [f"{x:,} B/token x {n} tokens x {k} sequences" for x, n, k in CONTEXT_PROBES]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=1e-6, atol=1e-12)
    if not result.passed:
        return failed(name, f"{_first_wrong(got, want, labels)}: {result.message}")
    return passed(
        name,
        "bytes per token x tokens x sequences / 2^30: one 4,096-token Llama-2-7B context "
        "takes 2 GiB, so memory, not compute, caps how many sequences run at once",
    )


# --- exercise 2: a block allocator ----------------------------------------------------------------

BLOCK_PROBES = tuple(
    (n, size) for size in (16, 4, 1) for n in (0, 1, size - 1, size, size + 1, 3 * size, 100)
)
# (block table, block_size): the slot of every position the table covers
SLOT_PROBES = (([9, 3, 14, 1], 4), ([7, 2], 16), ([5, 0, 12], 8))


def check_blocks_needed(fn: Callable) -> CheckResult:
    """Check `fn(num_tokens, block_size) -> blocks` that hold that many tokens."""
    name = "blocks needed for a number of tokens"
    got, bad = _numbers(name, fn, BLOCK_PROBES)
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
        return failed(name, f"{_first_wrong(got, want, labels)}: {result.message}")
    return passed(name, "ceil(n / block_size), as BlockManager.blocks_needed")


def _slot_cases() -> list[tuple[list[int], int, int]]:
    # (table, position, block_size) for every position each probe table covers
    return [(list(table), p, size) for table, size in SLOT_PROBES for p in range(len(table) * size)]


def check_slot(fn: Callable) -> CheckResult:
    """Check `fn(table, position, block_size) -> the cache slot holding that token's KV`."""
    name = "the cache slot of a token"
    cases = _slot_cases()
    got, bad = _numbers(name, fn, cases)
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
        return failed(name, f"{_first_wrong(got, want, labels)}: {result.message}")
    return passed(
        name,
        "table[p // block_size] * block_size + p % block_size, as KVPool.slots: the "
        "sequence's tokens are contiguous only within a block",
    )


# --- exercise 3: one scheduler step ---------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    """A sequence in the running batch."""

    name: str
    computed: int  # its tokens whose keys and values are in the cache
    pending: int  # tokens still to compute: 1 when decoding, the rest of the prompt otherwise
    blocks: int  # KV blocks its block table holds now


@dataclass(frozen=True)
class Waiting:
    """A sequence waiting to join: nothing of it is computed yet."""

    name: str
    prompt: int  # its prompt's tokens


@dataclass(frozen=True)
class StepState:
    """The scheduler's state before one step (prefix caching off, continuous batching on)."""

    running: tuple[Running, ...]  # oldest first
    waiting: tuple[Waiting, ...]  # in arrival order
    free_blocks: int  # blocks in the free list
    block_size: int = 16  # token slots per block
    max_batched_tokens: int = 64  # tokens one step computes at most, all sequences together
    prefill_chunk: int = 32  # prompt tokens one sequence computes in one step at most
    max_running: int = 4  # sequences in the running batch at most

    def __str__(self) -> str:
        lines = [
            f"{self.free_blocks} free blocks of {self.block_size} slots; per step at most "
            f"{self.max_batched_tokens} tokens, {self.prefill_chunk} per prompt, "
            f"{self.max_running} running"
        ]
        for r in self.running:
            what = "decoding" if r.pending == 1 else "prefilling"
            lines.append(
                f"  running {r.name}: {r.computed} computed, {r.pending} pending ({what}), "
                f"{r.blocks} blocks"
            )
        lines += [f"  waiting {w.name}: {w.prompt}-token prompt" for w in self.waiting]
        return "\n".join(lines)


STEP_PROBES = (
    # the step's token budget runs out on a new prompt
    StepState(
        running=(Running("A", 40, 1, 3), Running("B", 47, 1, 3), Running("C", 48, 1, 3)),
        waiting=(Waiting("D", 50), Waiting("E", 20)),
        free_blocks=6,
        max_batched_tokens=34,
    ),
    # the head of the queue does not fit in the free blocks
    StepState(
        running=(Running("A", 100, 1, 7),),
        waiting=(Waiting("D", 200), Waiting("E", 20), Waiting("F", 10)),
        free_blocks=10,
        max_batched_tokens=128,
        max_running=3,
    ),
    # a prompt half prefilled, a decode that starts a new block, too few blocks left to admit
    StepState(
        running=(Running("A", 16, 40, 7), Running("B", 24, 1, 3)),
        waiting=(Waiting("C", 12), Waiting("D", 5)),
        free_blocks=2,
        block_size=8,
        max_batched_tokens=64,
        prefill_chunk=16,
        max_running=3,
    ),
    # room for one more sequence only
    StepState(
        running=(Running("A", 30, 1, 2),),
        waiting=(Waiting("C", 20), Waiting("D", 20)),
        free_blocks=20,
        max_batched_tokens=256,
        prefill_chunk=64,
        max_running=2,
    ),
    # an older prefill takes the whole budget
    StepState(
        running=(Running("A", 16, 30, 3), Running("B", 33, 1, 3)),
        waiting=(Waiting("E", 5),),
        free_blocks=4,
        max_batched_tokens=16,
        prefill_chunk=16,
    ),
)


def engine_decision(state: StepState) -> dict[str, int]:
    """What maaslab.llm.scheduler's Scheduler computes in this state: name -> tokens this step.

    Builds the real block manager and sequences (running ones holding their blocks) and asks
    the scheduler for one step. A state whose running sequences would need a preemption
    (more new blocks than are free) is refused: the exercise leaves preemption out.
    """
    size = state.block_size
    for r in state.running:
        held = -(-(r.computed + r.pending if r.pending > 1 else r.computed) // size)
        if r.computed < 1 or r.pending < 1 or r.blocks != held:
            raise MaaslabError(
                f"running {r.name}: a sequence with {r.computed} computed and {r.pending} "
                f"pending tokens holds {held} blocks of {size}, not {r.blocks}"
            )
    total = sum(r.blocks for r in state.running) + state.free_blocks
    blocks = BlockManager(max(total, 1), size, prefix_caching=False)
    scheduler = Scheduler(
        SchedulerConfig(
            max_running=state.max_running,
            max_batched_tokens=state.max_batched_tokens,
            prefill_chunk=state.prefill_chunk,
        ),
        blocks,
    )
    names: dict[int, str] = {}
    greedy = SamplingParams(max_tokens=1024, temperature=0)
    for i, r in enumerate(state.running):
        # A prefilling sequence is a prompt partly computed; a decoding one a computed prompt
        # with one sampled token still to compute.
        if r.pending > 1:
            seq = Sequence(i, [7] * (r.computed + r.pending), greedy)
        else:
            seq = Sequence(i, [7] * r.computed, greedy, output=[7])
        blocks.allocate(seq.id, seq.prompt)
        seq.computed, seq.status = r.computed, Status.RUNNING
        scheduler.running.append(seq)
        names[seq.id] = r.name
    for i, w in enumerate(state.waiting, start=len(state.running)):
        scheduler.add(Sequence(i, [7] * w.prompt, greedy))
        names[i] = w.name
    step = scheduler.schedule()
    if step.preempted:
        raise MaaslabError(
            "the running sequences need more new blocks than are free: the scheduler would "
            "preempt, which this exercise leaves out; give the state more free blocks"
        )
    return {names[seq.id]: n for seq, n in step.work}


def reference_step(
    state: StepState,
    *,
    prefill_first: bool = False,
    overtake: bool = False,
    no_chunk: bool = False,
    no_budget: bool = False,
    chunk_blocks: bool = False,
    forget_growth: bool = False,
    no_max_running: bool = False,
    no_admission: bool = False,
    decode_first: bool = False,
) -> dict[str, int]:
    """The step's rule written out (equal to engine_decision); the flags make the known mistakes.

    1. Running sequences, oldest first, while tokens are left: each computes min(pending,
       prefill_chunk, tokens left) and takes the new blocks that needs from the free list.
    2. Waiting sequences, in arrival order, while the batch has room and tokens are left: the
       first one joins if the free list holds blocks for its whole prompt, else nobody joins;
       it computes min(prompt, prefill_chunk, tokens left).
    """
    size = state.block_size
    budget = 10**9 if no_budget else state.max_batched_tokens
    free = state.free_blocks
    chunk = 10**9 if no_chunk else state.prefill_chunk
    out: dict[str, int] = {}

    def run() -> None:
        nonlocal budget, free
        order = state.running
        if decode_first:
            order = tuple(sorted(order, key=lambda r: r.pending > 1))
        for r in order:
            if budget <= 0:
                break
            n = min(r.pending, chunk, budget)
            if not forget_growth:
                free -= max(0, -(-(r.computed + n) // size) - r.blocks)
            out[r.name] = n
            budget -= n

    def admit() -> None:
        nonlocal budget, free
        count = len(state.running)
        for w in state.waiting:
            if (count >= state.max_running and not no_max_running) or budget <= 0:
                break
            n = min(w.prompt, chunk, budget)
            need = -(-(n if chunk_blocks else w.prompt) // size)
            if need > free:
                if overtake:
                    continue
                break
            free -= need
            out[w.name] = n
            budget -= n
            count += 1

    steps = [run] if no_admission else [admit, run] if prefill_first else [run, admit]
    for part in steps:
        part()
    return out


STEP_MISTAKES = (
    (
        "overtake",
        "first come, first served: when the head of the queue does not fit in the free blocks, "
        "nobody behind it joins this step (or a long prompt could wait forever behind short ones)",
    ),
    (
        "prefill_first",
        "the running sequences go first: their tokens come out of the budget before any new "
        "prompt joins, or every arrival would stall the streams already running",
    ),
    (
        "decode_first",
        "running sequences are served oldest first, whatever they are doing: a prefill that "
        "started earlier keeps its place ahead of a later sequence's decode",
    ),
    (
        "no_chunk",
        "a prompt computes at most prefill_chunk tokens per step (chunked prefill), so the "
        "streams beside it keep getting their tokens",
    ),
    ("no_budget", "the step computes at most max_batched_tokens tokens, all sequences together"),
    (
        "chunk_blocks",
        "a sequence joins only if the free list holds blocks for its whole prompt, not just for "
        "this step's chunk (the block manager allocates the prompt at admission)",
    ),
    (
        "forget_growth",
        "a running sequence whose next tokens cross into a new block takes that block from the "
        "free list first: subtract it before admitting anyone",
    ),
    ("no_max_running", "no more than max_running sequences run at once"),
    (
        "no_admission",
        "waiting sequences join in this same step when there is room, tokens and blocks: "
        "that is continuous batching",
    ),
)


def _as_decision(got: object) -> dict[str, int] | None:
    # {name: tokens} from a dict or a list of (name, tokens) pairs; zero entries dropped
    try:
        pairs = got.items() if isinstance(got, dict) else list(got)  # type: ignore[union-attr]
        return {str(k): int(v) for k, v in pairs if int(v) != 0}
    except (TypeError, ValueError):
        return None


def random_states(count: int, seed: int = 15) -> list[StepState]:
    """Seeded random states without preemption, for checking a step rule beyond the probes."""
    rng = np.random.default_rng(seed)
    states: list[StepState] = []
    while len(states) < count:
        size = int(rng.choice([4, 8, 16]))
        running = []
        for i in range(int(rng.integers(0, 4))):
            computed = int(rng.integers(1, 80))
            pending = 1 if rng.random() < 0.6 else int(rng.integers(2, 60))
            held = computed + pending if pending > 1 else computed
            running.append(Running(f"R{i}", computed, pending, -(-held // size)))
        waiting = [Waiting(f"W{i}", int(rng.integers(1, 90))) for i in range(rng.integers(0, 4))]
        chunk = int(rng.choice([8, 16, 32]))
        state = StepState(
            running=tuple(running),
            waiting=tuple(waiting),
            free_blocks=int(rng.integers(0, 12)),
            block_size=size,
            max_batched_tokens=chunk * int(rng.integers(1, 4)) + int(rng.integers(0, 8)),
            prefill_chunk=chunk,
            max_running=int(rng.integers(1, 5)),
        )
        try:
            engine_decision(state)
        except MaaslabError:
            continue  # it would need a preemption
        states.append(state)
    return states


def check_schedule_step(fn: Callable) -> CheckResult:
    """Check `fn(state: StepState) -> {name: tokens}` against the engine's own scheduler."""
    name = "one scheduler step"
    answers: list[tuple[StepState, dict[str, int]]] = []
    for state in (*STEP_PROBES, *random_states(40)):
        got, bad = call_answer(name, fn, state)
        if bad is not None:
            return bad
        decision = _as_decision(got)
        if decision is None:
            return failed(name, "return a dict {name: tokens this step}, e.g. {'A': 1, 'D': 31}")
        answers.append((state, decision))
    for state, decision in answers:
        want = engine_decision(state)
        if decision == want:
            continue
        where = f"in the state\n{state}\nyou scheduled {decision}, the engine {want}"
        # Several slips can give the same wrong step; name the one that explains every answer.
        here = [(f, w) for f, w in STEP_MISTAKES if reference_step(state, **{f: True}) == decision]
        for flag, why in here:
            if all(reference_step(s, **{flag: True}) == d for s, d in answers):
                return failed(name, f"{where}: {why}")
        if here:
            return failed(name, f"{where}: {here[0][1]}")
        return failed(
            name,
            f"{where}. Hint: running sequences first (min(pending, chunk, tokens left)), then "
            "waiting ones in order while one fits (blocks for its whole prompt)",
        )
    return passed(
        name,
        "the same decisions as maaslab.llm.scheduler on every state: decodes and running "
        "prefills first, then first come first served, in chunks, within the budget",
    )


# --- exercise 4: tokens per target pass -----------------------------------------------------------

SPEC_PROBES = tuple((a, k) for a in (0.0, 0.5, 0.8, 0.9) for k in (1, 4, 7))


def check_expected_tokens(fn: Callable) -> CheckResult:
    """Check `fn(acceptance, k) -> mean tokens per target pass` with k guesses per pass."""
    name = "expected tokens per target pass"
    got, bad = _numbers(name, fn, SPEC_PROBES)
    if bad is not None:
        return bad
    a, k = (np.array(c, dtype=float) for c in zip(*SPEC_PROBES, strict=True))
    want = np.array([expected_tokens(x, int(n)) for x, n in SPEC_PROBES])
    mistakes = [
        (
            a * (1 - a**k) / (1 - a),
            "that counts the accepted guesses only: the target pass always adds one token of "
            "its own (the correction at the first rejection, or a bonus token after k hits)",
        ),
        (
            (1 - a**k) / (1 - a),
            "one term short: with k guesses there are k + 1 terms, 1 + a + ... + a^k",
        ),
        (
            a**k,
            "a^k is the chance that all k guesses are kept; the expected count sums the chances "
            "of keeping the first 1, 2, ..., k: 1 + a + a^2 + ... + a^k",
        ),
        (
            1 + k * a,
            "guess i counts only if every guess before it was kept too (a rejection ends the "
            "pass): its chance is a^i, not a",
        ),
        (k * a, "guess i is kept with chance a^i (all before it kept), and add the target's token"),
        (1 / (1 - a), "that is the limit for k -> infinity: stop the sum at a^k"),
    ]
    labels = [f"acceptance {x} and k = {n}" for x, n in SPEC_PROBES]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=1e-6, atol=1e-9)
    if not result.passed:
        return failed(name, f"{_first_wrong(got, want, labels)}: {result.message}")
    for k_ in (1, 4):
        got_one, bad = call_answer(name, fn, 1.0, k_)
        if bad is not None:
            return failed(
                name,
                f"at acceptance 1 your function failed ({bad.message}): every guess is kept, "
                f"so a pass yields k + 1 tokens; handle a == 1 before dividing by 1 - a",
            )
        try:
            ok = np.isclose(float(got_one), k_ + 1)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return failed(
                name, f"at acceptance 1 and k = {k_} you gave {got_one!r}, expected {k_ + 1}"
            )
    return passed(
        name,
        "(1 - a^(k+1)) / (1 - a): at a = 0.8 and k = 4 a target pass yields 3.36 tokens "
        "instead of 1, as maaslab.llm.speculative.expected_tokens",
    )
