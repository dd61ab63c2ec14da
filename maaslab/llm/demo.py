"""Lesson 15's demo runs: a preset workload through an engine with the chosen switches.

`DemoRun` runs a preset (chat, long prompts, a shared system prompt) through an engine with
continuous batching, prefix caching and speculative decoding switched on or off, requests
arriving at fixed *steps*, so a run is the same on any machine; the Engine view runs it on a
background thread and polls its `Trace` (maaslab.llm.trace). It uses the shipped mini-llama when
it is built, else a seeded random Llama (the scheduling is what the demo shows).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineConfig, EngineStats, LLMEngine
from maaslab.llm.measure import Report, Workload, report
from maaslab.llm.model import PagedModel
from maaslab.llm.sequence import SamplingParams
from maaslab.llm.trace import Trace
from maaslab.paths import MODELS_DIR
from maaslab.registry import read_config
from maaslab.runtime import scaled, torch_threads

MODEL_FOLDER = MODELS_DIR / "mini-llama"  # the model a demo runs when it is there
DRAFT_FOLDER = MODELS_DIR / "mini-llama-draft"  # its draft for speculative decoding, if any

MAX_REQUESTS = 32  # requests one demo run takes at most (a row each in the timeline)


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
