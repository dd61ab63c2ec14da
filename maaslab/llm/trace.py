"""Lesson 15: what the engine did, step by step — the recorder behind the Engine view.

A `Trace` hangs on an engine's `on_step` and keeps, for every step:

- each sequence's **phase** in it: *waiting* (queued, or running but left out of this step's
  token budget), *prefill* (computing prompt tokens: a chunk of a long prompt, or a recompute
  after a preemption), *decode* (one new token; several with speculative decoding),
  *preempted* (its blocks taken back in this step), and *finished* for every step after its end;
- the engine's counters (EngineStats) after it;
- and, for the last `max_maps` steps, the **KV block map**: which sequences hold which block,
  and which free blocks still hold a prefix that a later prompt can take back.

Per request it keeps the prompt tokens found in the prefix cache, its preemptions, and a
`measure.Timing` (TTFT, ITL). Memory is bounded: at most `max_steps` steps are kept (the oldest
go first) and a request is forgotten once its end has left the window. No plotting here:
maaslab.plots.llm draws a `TraceData`.

Demo runs that fill a Trace live in maaslab.llm.demo.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineStats, LLMEngine
from maaslab.llm.measure import Timing
from maaslab.llm.scheduler import Step

PHASES = ("waiting", "prefill", "decode", "preempted", "finished")


@dataclass(frozen=True)
class Cell:
    """One sequence in one step."""

    phase: str  # one of PHASES
    tokens: int = 0  # tokens whose KV this step computed for it (a prompt chunk; 1 decoding)
    produced: int = 0  # tokens it got in this step (up to k + 1 with speculative decoding)
    cached: int = 0  # on admission: prompt tokens found in the prefix cache (not computed)


@dataclass(frozen=True)
class BlockMap:
    """The KV pool after one step: who holds which block."""

    step: int
    num_blocks: int
    owners: dict[int, tuple[int, ...]]  # block -> ids of the sequences holding it
    cached_free: frozenset[int]  # free blocks that still hold a reusable prefix

    @property
    def shared(self) -> frozenset[int]:
        """Blocks held by more than one sequence (a common prefix, computed once)."""
        return frozenset(b for b, ids in self.owners.items() if len(ids) > 1)


@dataclass(frozen=True)
class StepRecord:
    """One engine step."""

    step: int  # the engine's step count after it (1 = the first step)
    time: float  # time.perf_counter() when it ended
    cells: dict[int, Cell]  # sequence id -> its cell (sequences that ended earlier: absent)
    stats: EngineStats  # the engine's counters after the step


@dataclass
class Request:
    """What the trace knows about one request (one sequence)."""

    id: int
    prompt_tokens: int
    max_tokens: int
    first_step: int  # the first step that saw it (it arrived before)
    timing: Timing  # sent = when the engine took it; token_times = when each token came
    cached_tokens: int = 0  # prompt tokens found in the prefix cache at its first admission
    preemptions: int = 0
    finished_step: int | None = None  # the step that produced its last token
    finish_reason: str | None = None  # "length", "stop", "abort"


@dataclass(frozen=True)
class TraceData:
    """A consistent copy of a Trace, safe to read while the engine goes on."""

    steps: tuple[StepRecord, ...]
    requests: dict[int, Request]
    maps: tuple[BlockMap, ...]
    dropped: int  # steps that were recorded and then left the window

    def cell(self, record: StepRecord, seq_id: int) -> Cell | None:
        """The sequence's cell in that step: finished after its end, None before it arrived."""
        if seq_id in record.cells:
            return record.cells[seq_id]
        req = self.requests.get(seq_id)
        if req is not None and req.finished_step is not None and record.step > req.finished_step:
            return Cell("finished")
        return None

    @property
    def stats(self) -> EngineStats | None:
        """The engine's counters after the last recorded step (None before the first)."""
        return self.steps[-1].stats if self.steps else None

    def timings(self) -> list[Timing]:
        """Timings of the requests that got at least one token, by id."""
        return [r.timing for _, r in sorted(self.requests.items()) if r.timing.token_times]


@dataclass
class _Seen:
    # The recorder's own memory of a sequence between steps.
    out: int = 0  # output tokens at the end of the last step
    admitted: bool = False  # has computed since it last (re)joined the batch
    recomputing: bool = False  # preempted and not yet caught up


class Trace:
    """Records every step of an engine (module notes); attach() it, then read snapshot().

    Parameters
    ----------
    max_steps : steps kept, the latest; older ones are dropped (bounded memory).
    max_maps : block maps kept, of the latest steps.
    """

    def __init__(self, max_steps: int = 2000, max_maps: int = 400) -> None:
        if max_steps < 1 or max_maps < 0:
            raise MaaslabError("a Trace keeps at least 1 step and 0 or more block maps")
        self.max_steps, self.max_maps = max_steps, max_maps
        self._steps: deque[StepRecord] = deque(maxlen=max_steps)
        self._maps: deque[BlockMap] = deque(maxlen=max_maps or None)
        self._requests: dict[int, Request] = {}
        self._seen: dict[int, _Seen] = {}
        self._recorded = 0
        self._lock = (
            threading.Lock()
        )  # record() runs on the engine's thread, snapshot() on a page's
        self._engine: LLMEngine | None = None
        self._then: Callable[[Step], None] | None = None

    def attach(self, engine: LLMEngine) -> Trace:
        """Watch this engine from its next step (a callback it already had still runs)."""
        if self._engine is not None:
            raise MaaslabError("this Trace already watches an engine: make a new Trace")
        self._engine, self._then = engine, engine.on_step
        engine.on_step = self.record
        return self

    def record(self, step: Step) -> None:
        """The engine's on_step: note every sequence's phase, the counters and the block map."""
        engine = self._engine
        if engine is None:
            raise MaaslabError("attach the Trace to an engine before it records")
        with self._lock:
            self._record(engine, step)
        if self._then is not None:
            self._then(step)

    def _record(self, engine: LLMEngine, step: Step) -> None:
        index, now = engine.steps, time.perf_counter()
        work = {seq.id: (seq, n) for seq, n in step.work}
        preempted = {seq.id for seq in step.preempted}
        alive = dict(engine.sequences)  # finished ones have left it: they are in work
        alive.update({seq.id: seq for seq, _ in step.work})
        for seq_id in [s for s in self._seen if s not in alive]:  # aborted since the last step
            self._end(seq_id, index - 1, "abort")
        cells = {}
        for seq_id, seq in sorted(alive.items()):
            req = self._requests.get(seq_id)
            if req is None:
                timing = Timing(seq.arrived, len(seq.prompt))
                req = Request(seq_id, len(seq.prompt), seq.params.max_tokens, index, timing)
                self._requests[seq_id] = req
                self._seen[seq_id] = _Seen()
            seen = self._seen[seq_id]
            if seq_id in preempted:
                cells[seq_id] = Cell("preempted")
                req.preemptions += 1
                seen.admitted, seen.recomputing = False, True
            elif seq_id in work:
                cells[seq_id] = self._computed(seq, work[seq_id][1], seen, req, index)
            else:
                cells[seq_id] = Cell("waiting")
        self._steps.append(StepRecord(index, now, cells, engine.stats()))
        self._recorded += 1
        if self.max_maps:
            blocks = engine.blocks
            owners = {b: tuple(ids) for b, ids in sorted(blocks.owners().items())}
            self._maps.append(BlockMap(index, blocks.num_blocks, owners, _cached_free(blocks)))
        self._forget_old()

    def _computed(self, seq, n: int, seen: _Seen, req: Request, index: int) -> Cell:
        # A sequence the step computed: prefill or decode, what it got, what the cache gave it.
        produced = len(seq.output) - seen.out
        # KV in the cache before the step. Once a sequence samples, all its tokens but the new
        # ones are computed (with a draft, `computed` also counts accepted guesses).
        before = len(seq.tokens) - produced - n if produced else seq.computed - n
        cached = 0 if seen.admitted else before  # on (re)admission: the prefix-cache hit
        if not seen.admitted and req.preemptions == 0:
            req.cached_tokens = before
        phase = "prefill" if seen.out == 0 or seen.recomputing else "decode"
        seen.admitted = True
        if produced:
            seen.out, seen.recomputing = len(seq.output), False
            req.timing.token_times.extend(seq.token_times[-produced:])
        if seq.finished:
            self._end(seq.id, index, seq.finish_reason)
        return Cell(phase, n, produced, cached)

    def _end(self, seq_id: int, step: int, reason: str | None) -> None:
        self._seen.pop(seq_id, None)
        req = self._requests[seq_id]
        req.finished_step, req.finish_reason = step, reason

    def _forget_old(self) -> None:
        # Requests that ended before the oldest kept step appear in no kept step: forget them.
        if len(self._steps) < self.max_steps:
            return
        oldest = self._steps[0].step
        for seq_id in [
            i
            for i, r in self._requests.items()
            if r.finished_step is not None and r.finished_step < oldest
        ]:
            del self._requests[seq_id]

    def snapshot(self) -> TraceData:
        """A copy of everything recorded so far (safe while the engine keeps stepping)."""
        with self._lock:
            requests = {
                i: replace(r, timing=replace(r.timing, token_times=list(r.timing.token_times)))
                for i, r in self._requests.items()
            }
            steps = tuple(self._steps)
            return TraceData(steps, requests, tuple(self._maps), self._recorded - len(steps))


def _cached_free(blocks) -> frozenset[int]:
    return frozenset(blocks.cached_free_blocks())
