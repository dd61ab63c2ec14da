"""Exercise 3's world: the scheduler's state before one step, and what the engine decides.

A `StepState` describes running and waiting sequences, the free blocks and the step's limits;
`engine_decision` builds `maaslab.llm.scheduler.Scheduler` and its block manager in that state
and asks it for one step, the answer `check_schedule_step` compares with. `STEP_PROBES` are the
states the notebook shows; `random_states` draws more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maaslab.errors import MaaslabError
from maaslab.llm.blocks import BlockManager
from maaslab.llm.scheduler import Scheduler, SchedulerConfig
from maaslab.llm.sequence import SamplingParams, Sequence, Status


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
