"""The iteration-level scheduler: which sequences compute which tokens in the next step.

Static batching (what `generate()` on a batch does) admits a batch, runs it until its longest
member ends, then admits the next: short requests wait for long ones and finished rows idle.
Continuous batching (Orca, vLLM) decides again at *every step*: a finished sequence leaves at
once and a waiting one takes its place. Each step here:

1. the running sequences, oldest first, get their next piece: one token when decoding, a chunk
   of at most `prefill_chunk` tokens of a prompt (chunked prefill: a long prompt is spread over
   several steps, so the streams already running keep getting their tokens);
2. a sequence that needs a new KV block when none is free makes room by *preempting* the
   newest running sequence (it gives back its blocks and waits to be recomputed, vLLM's
   "recompute" policy);
3. waiting sequences join, first come first served, while there are free blocks for their
   prompt, room under `max_running`, and tokens left under `max_batched_tokens`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from maaslab.errors import MaaslabError
from maaslab.llm.blocks import BlockManager
from maaslab.llm.sequence import Sequence, Status


@dataclass(frozen=True)
class SchedulerConfig:
    """Limits of one step; checked on creation."""

    max_running: int = 16  # sequences in the running batch at most
    max_batched_tokens: int = 512  # tokens computed in one step at most (all sequences)
    prefill_chunk: int = 256  # prompt tokens one sequence computes in one step at most
    continuous: bool = True  # False: static batching, admit only into an empty batch

    def __post_init__(self) -> None:
        if min(self.max_running, self.max_batched_tokens, self.prefill_chunk) < 1:
            raise MaaslabError("max_running, max_batched_tokens and prefill_chunk must be >= 1")
        if self.prefill_chunk > self.max_batched_tokens:
            raise MaaslabError(
                f"prefill_chunk ({self.prefill_chunk}) cannot exceed max_batched_tokens "
                f"({self.max_batched_tokens}): a chunk must fit in one step"
            )


@dataclass
class Step:
    """What one step computes: (sequence, tokens) pairs, and who was preempted for it."""

    work: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Tokens computed in this step."""
        return sum(n for _, n in self.work)


class Scheduler:
    """Waiting and running sequences, and the step-by-step decisions (module notes)."""

    def __init__(self, config: SchedulerConfig, blocks: BlockManager) -> None:
        self.config, self.blocks = config, blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (it joins the batch at a later step)."""
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        """True while any sequence waits or runs."""
        return bool(self.waiting or self.running)

    def remove(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out and give its blocks back at once."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq.id)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.id)
        seq.computed = seq.draft_computed = 0
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)  # first in line again: it arrived before the others

    def _piece(self, seq: Sequence, budget: int) -> int:
        # Tokens this sequence computes now: 1 when decoding, a prompt chunk when prefilling.
        return min(seq.pending, self.config.prefill_chunk, budget)

    def schedule(self) -> Step:
        """Decide the next step (and preempt when blocks run out)."""
        step, budget = Step(), self.config.max_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = self._piece(seq, budget)
            while not self.blocks.can_append(seq.id, seq.computed + n):
                victim = self.running[-1]  # the newest; never one scheduled already (i < it)
                self._preempt(victim)
                step.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is Status.WAITING:  # it preempted itself: nothing left to free
                continue
            self.blocks.append(seq.id, seq.computed + n)
            step.work.append((seq, n))
            budget -= n
            i += 1
        if not self.config.continuous and self.running:
            return step  # static batching: the batch runs to its end before anyone joins
        while self.waiting and len(self.running) < self.config.max_running and budget > 0:
            seq = self.waiting[0]
            if seq in step.preempted or not self.blocks.can_allocate(seq.tokens):
                break  # first come, first served: nobody overtakes the head of the queue
            seq.computed = seq.draft_computed = self.blocks.allocate(seq.id, seq.tokens)
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            n = self._piece(seq, budget)
            step.work.append((seq, n))
            budget -= n
        return step
