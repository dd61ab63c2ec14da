"""Lesson 15: what the engine did, step by step — a recorder for the Engine view, and demo runs.

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

`DemoRun` runs a preset workload through an engine with the chosen switches (continuous
batching, prefix caching, speculative decoding), requests arriving at fixed *steps*, so a run
is the same on any machine; a page runs it on a background thread and polls `trace.snapshot()`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineConfig, EngineStats, LLMEngine
from maaslab.llm.measure import Report, Timing, Workload, report
from maaslab.llm.model import PagedModel
from maaslab.llm.scheduler import Step
from maaslab.llm.sequence import SamplingParams
from maaslab.paths import MODELS_DIR
from maaslab.registry import read_config
from maaslab.runtime import scaled, torch_threads

PHASES = ("waiting", "prefill", "decode", "preempted", "finished")
MAX_REQUESTS = 32  # requests one demo run takes at most (a row each in the timeline)


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
    # Free blocks still registered under a prefix hash. BlockManager publishes only their count
    # (stats().cached_free), so this reads its free list and hashes; the ids must match the count.
    return frozenset(b for b in blocks._free if blocks._hash[b] is not None)


# --- demo runs: a preset workload through an engine with the chosen switches ------------------

MODEL_FOLDER = MODELS_DIR / "mini-llama"  # the model a demo runs when it is there
DRAFT_FOLDER = MODELS_DIR / "mini-llama-draft"  # its draft for speculative decoding, if any


@dataclass(frozen=True)
class Switches:
    """The engine features a demo turns on or off."""

    continuous_batching: bool = True  # False: static batches, admitted only into an empty batch
    prefix_caching: bool = True  # share the KV blocks of a common prompt prefix
    speculative: bool = False  # a draft model guesses tokens the target checks in one pass


@dataclass(frozen=True)
class Part:
    """A group of a preset's requests: their share, lengths and arrival steps."""

    share: float  # fraction of the preset's requests
    prompt_tokens: tuple[int, int]  # uniform range of prompt lengths (after any system prompt)
    output_tokens: tuple[int, int]  # uniform range of max_tokens
    start: int = 0  # the engine step at which the first one arrives
    every: int = 0  # steps between arrivals (0: all at once)


@dataclass(frozen=True)
class Preset:
    """A workload that shows one feature of the engine, and the engine's limits for it."""

    name: str
    about: str  # the requests, one line
    look_for: str  # what they show, one line
    parts: tuple[Part, ...]
    config: EngineConfig  # block size, pool and batch limits (the switches are set per run)
    shared_prefix: int = 0  # tokens of a system prompt every request starts with

    def plan(
        self, requests: int, vocab: int, context: int, seed: int = 0
    ) -> list[tuple[int, list[int], int]]:
        """(arrival step, prompt token ids, max_tokens) per request, by arrival.

        Lengths shrink in proportion when a request could not fit the model's `context`.
        """
        if not 1 <= requests <= MAX_REQUESTS:
            raise MaaslabError(f"a demo runs 1 to {MAX_REQUESTS} requests, not {requests}")
        longest = self.shared_prefix + max(
            p.prompt_tokens[1] + p.output_tokens[1] for p in self.parts
        )
        scale = min(1.0, context / longest)

        def fit(span: tuple[int, int]) -> tuple[int, int]:
            return max(1, int(span[0] * scale)), max(1, int(span[1] * scale))

        rng = np.random.default_rng(seed)
        ids = (10, max(11, vocab - 1))
        # One system prompt for every part (a Workload would draw its own per part).
        prefix = rng.integers(*ids, size=int(self.shared_prefix * scale)).tolist()
        counts = [round(p.share * requests) for p in self.parts[:-1]]
        counts.append(max(0, requests - sum(counts)))
        plan = []
        for k, (part, count) in enumerate(zip(self.parts, counts, strict=True)):
            if count < 1:
                continue
            drawn = Workload(
                requests=count,
                prompt_tokens=fit(part.prompt_tokens),
                output_tokens=fit(part.output_tokens),
                vocab=ids,
                seed=seed + 1 + k,
            ).draw()
            for j, (_, prompt, max_tokens) in enumerate(drawn):
                plan.append((part.start + j * part.every, prefix + prompt, max_tokens))
        return sorted(plan, key=lambda r: r[0])


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "chat",
            "short prompts and answers of mixed lengths, a new request every second step",
            "requests joining the batch as others leave, and red preemptions when the small "
            "pool runs out",
            (Part(1.0, (8, 40), (16, 96), every=2),),
            EngineConfig(
                block_size=16,
                num_blocks=24,
                max_running=6,
                max_batched_tokens=128,
                prefill_chunk=64,
            ),
        ),
        Preset(
            "long prompts",
            "a few streams decoding long answers, then prompts of several hundred tokens",
            "each long prompt prefilled in chunks over several steps while the streams beside "
            "it still get a token at every step (chunked prefill)",
            (
                Part(0.34, (8, 16), (64, 112)),
                Part(0.66, (200, 400), (8, 24), start=4, every=6),
            ),
            EngineConfig(
                block_size=16,
                num_blocks=128,
                max_running=8,
                max_batched_tokens=80,
                prefill_chunk=64,
            ),
        ),
        Preset(
            "shared system prompt",
            "a 256-token system prompt before every short question",
            "the first request computes the system prompt; the others find its blocks in the "
            "prefix cache (outlined in the block map) and prefill only their question",
            (Part(1.0, (8, 32), (8, 24), every=2),),
            EngineConfig(
                block_size=16,
                num_blocks=48,
                max_running=12,
                max_batched_tokens=160,
                prefill_chunk=128,
            ),
            shared_prefix=256,
        ),
    )
}


@dataclass
class DemoModel:
    """The model a demo runs, what to call it, and its draft (or why there is none)."""

    target: PagedModel
    name: str  # e.g. "mini-llama" or "a tiny random Llama"
    note: str  # one line on what it is
    draft: PagedModel | None = None
    no_draft: str = ""  # why speculative decoding is off, one line ("" with a draft)
    random: bool = False  # a random stand-in: its tokens mean nothing


def tiny_llama(seed: int = 0) -> PagedModel:
    """A small random Llama (2 layers x 64, vocabulary 512, context 512), the same every time."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        return PagedModel(LlamaForCausalLM(config).eval())


def _load(folder: Path) -> PagedModel:
    read_config(folder)  # a folder with config.json and model.safetensors; pickles refused
    try:
        return PagedModel.from_folder(folder)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # transformers' own
        raise MaaslabError(f"{folder} did not load: {err}") from None


def demo_model(folder: str | Path | None = None, draft: str | Path | None = None) -> DemoModel:
    """mini-llama (or `folder`) when it is built, else a tiny random Llama; a draft beside it.

    Parameters
    ----------
    folder : the target's folder (None: MODEL_FOLDER, assets/models/mini-llama).
    draft : a draft model's folder on the same tokenizer (None: DRAFT_FOLDER).
    """
    folder = Path(MODEL_FOLDER if folder is None else folder)
    draft = Path(DRAFT_FOLDER if draft is None else draft)
    if not folder.is_dir():
        return DemoModel(
            tiny_llama(0),
            "a tiny random Llama",
            f"{folder.name} is not built yet, so this is a random Llama (seed 0, 2 layers x 64): "
            "its tokens are noise, but batching, caching and memory behave just the same.",
            no_draft=f"Speculative decoding needs a draft model trained with {folder.name}.",
            random=True,
        )
    target = _load(folder)
    note = f"{folder.name}: {target.layers} layers, {target.context}-token context."
    if not draft.is_dir():
        why = f"No draft model: speculative decoding needs a small model at {draft.name}/."
        return DemoModel(target, folder.name, note, no_draft=why)
    guesser = _load(draft)
    if guesser.vocab_size != target.vocab_size or guesser.context < target.context:
        why = f"{draft.name} does not share {folder.name}'s vocabulary and context."
        return DemoModel(target, folder.name, note, no_draft=why)
    return DemoModel(target, folder.name, note + f" Draft: {draft.name}.", draft=guesser)


@dataclass
class DemoResult:
    """How a demo run went."""

    trace: Trace
    stats: EngineStats  # the engine's counters at the end
    requests: int  # requests in the plan
    seconds: float
    stopped: bool  # Stop came before every request ended
    report: Report | None  # TTFT, ITL, throughput (None when no token came)

    def line(self) -> str:
        """The run in one line."""
        s = self.stats
        text = (
            f"{s.steps} steps · {s.generated_tokens} tokens in {self.seconds:.1f} s · "
            f"{s.preemptions} preemptions · {s.blocks.prefix_hits} prefix-cache hits"
        )
        if s.draft_checks:
            text += f" · {s.acceptance_rate:.0%} of guesses accepted"
        return text + (" · stopped" if self.stopped else "")


class DemoRun:
    """A preset workload through an engine with the chosen switches; run() steps it to the end.

    Everything is checked on creation (a MaaslabError says what to change), so a page can
    refuse bad settings at once and then run() on a background thread, reading `trace`.

    Parameters
    ----------
    model : a DemoModel, a PagedModel, or an LLMEngine to use as it is (its own config).
    preset : a Preset or the name of one in PRESETS.
    switches : continuous batching, prefix caching, speculative decoding.
    requests : how many (None: 12, or 6 in fast mode).
    num_blocks : the KV pool's size (None: the preset's).
    seed : draws the prompts and lengths.
    pause_s : a pause after every step (slow motion for a class; latencies then include it).
    """

    def __init__(
        self,
        model: DemoModel | PagedModel | LLMEngine,
        preset: Preset | str,
        switches: Switches = Switches(),
        *,
        requests: int | None = None,
        num_blocks: int | None = None,
        seed: int = 0,
        pause_s: float = 0.0,
        trace: Trace | None = None,
    ) -> None:
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise MaaslabError(f"no preset {preset!r}; choose from {', '.join(PRESETS)}")
            preset = PRESETS[preset]
        self.preset, self.pause_s = preset, max(0.0, pause_s)
        if isinstance(model, LLMEngine):  # as configured: the switches are its own
            c = model.config
            switches = Switches(c.continuous_batching, c.prefix_caching, model.draft is not None)
            self.engine = model
        else:
            self.engine = _engine(model, preset, switches, num_blocks)
        self.switches = switches
        eng = self.engine
        self.plan = preset.plan(
            requests or scaled(12, 6), eng.model.vocab_size, eng.model.context, seed
        )
        longest = max(len(prompt) + max_tokens for _, prompt, max_tokens in self.plan)
        need = eng.blocks.blocks_needed(longest)
        if need > eng.config.num_blocks:
            raise MaaslabError(
                f"the longest request ({longest} tokens) needs {need} KV blocks of "
                f"{eng.config.block_size}; the pool has {eng.config.num_blocks}: give it at "
                f"least {need} blocks"
            )
        self.trace = (trace or Trace()).attach(eng)

    def run(
        self,
        progress: Callable[[str, float], None] | None = None,
        stop: threading.Event | None = None,
    ) -> DemoResult:
        """Admit each request at its step and step the engine until all end (or `stop`).

        Parameters
        ----------
        progress : called after every step with (a status line, fraction of requests ended).
        stop : set it to end the run after the current step.
        """
        stop = stop or threading.Event()
        started = time.perf_counter()
        # One torch thread on a CPU, as mini-gpt's generate: a demo's small products gain
        # nothing from a second thread, which then waits for a core busy with the page.
        with torch_threads(1 if self.engine.model.device.type == "cpu" else None):
            done = self._steps(progress, stop)
        timings = self.trace.snapshot().timings()
        return DemoResult(
            trace=self.trace,
            stats=self.engine.stats(),
            requests=len(self.plan),
            seconds=time.perf_counter() - started,
            stopped=done < len(self.plan),
            report=report(timings) if timings else None,
        )

    def _steps(self, progress: Callable[[str, float], None] | None, stop: threading.Event) -> int:
        # Admit each request at its step (at once if the engine would idle), step, report;
        # the number of requests that ended.
        eng, plan = self.engine, self.plan
        i = done = 0
        while (i < len(plan) or eng.has_work) and not stop.is_set():
            while i < len(plan) and (plan[i][0] <= eng.steps or not eng.has_work):
                _, prompt, max_tokens = plan[i]
                params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
                eng.add_request(prompt, params)
                i += 1
            done += sum(out.finished for out in eng.step())
            if progress is not None:
                progress(
                    f"step {eng.steps} · {done} of {len(plan)} requests done", done / len(plan)
                )
            if self.pause_s:
                stop.wait(self.pause_s)
        return done


def _engine(
    model: DemoModel | PagedModel, preset: Preset, switches: Switches, num_blocks: int | None
) -> LLMEngine:
    # The preset's engine with the switches set; a draft only when asked for and there is one.
    demo = model if isinstance(model, DemoModel) else DemoModel(model, "model", "")
    if switches.speculative and demo.draft is None:
        raise MaaslabError(demo.no_draft or "speculative decoding needs a draft model")
    config = replace(
        preset.config,
        num_blocks=num_blocks or preset.config.num_blocks,
        continuous_batching=switches.continuous_batching,
        prefix_caching=switches.prefix_caching,
        speculative_tokens=preset.config.speculative_tokens if switches.speculative else 0,
    )
    return LLMEngine(demo.target, config, draft=demo.draft if switches.speculative else None)


def run_demo(
    model: DemoModel | PagedModel | LLMEngine,
    preset: Preset | str,
    switches: Switches = Switches(),
    **options,
) -> DemoResult:
    """Build a DemoRun (same parameters) and run it to the end in this thread."""
    progress, stop = options.pop("progress", None), options.pop("stop", None)
    return DemoRun(model, preset, switches, **options).run(progress, stop)
