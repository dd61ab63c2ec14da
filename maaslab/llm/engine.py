"""LLMEngine: requests in, tokens out, one scheduler step at a time.

    engine = LLMEngine.from_folder("assets/models/mini-llama")
    a = engine.add_request(prompt_ids, SamplingParams(max_tokens=32, temperature=0))
    while engine.has_work:
        for out in engine.step():          # every sequence that got a token this step
            print(out.seq_id, out.token, out.finished)

A step asks the scheduler what to compute, runs the model once over all of it
(maaslab.llm.model), tells the block manager which blocks are now filled (so they can be shared
as a prefix), samples one token for every sequence whose pending tokens are all computed, and
retires the sequences that ended. `generate` runs a list of prompts to the end; the server runs
`step` on its own thread and streams what each step yields.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

from maaslab.errors import MaaslabError
from maaslab.llm.blocks import BlockManager, BlockStats
from maaslab.llm.model import Chunk, PagedModel
from maaslab.llm.scheduler import Scheduler, SchedulerConfig, Step
from maaslab.llm.sequence import SamplingParams, Sequence


@dataclass(frozen=True)
class EngineConfig:
    """The engine's memory and batching; checked on creation."""

    block_size: int = 16  # token slots per KV block
    num_blocks: int = 512  # blocks in the KV pool (its memory: see LLMEngine.kv_bytes)
    max_running: int = 16  # sequences in the running batch at most
    max_batched_tokens: int = 512  # tokens computed per step at most
    prefill_chunk: int = 256  # prompt tokens one sequence computes per step at most
    prefix_caching: bool = True  # share the KV of full blocks of a common prefix
    continuous_batching: bool = True  # False: static batches (admit only into an empty batch)

    def __post_init__(self) -> None:
        if min(self.block_size, self.num_blocks) < 1:
            raise MaaslabError("block_size and num_blocks must be >= 1")
        self.scheduler()  # its own checks

    def scheduler(self) -> SchedulerConfig:
        """The scheduler's part of this config."""
        return SchedulerConfig(
            max_running=self.max_running,
            max_batched_tokens=self.max_batched_tokens,
            prefill_chunk=self.prefill_chunk,
            continuous=self.continuous_batching,
        )


@dataclass(frozen=True)
class TokenOutput:
    """One token a step produced for one sequence."""

    seq_id: int
    token: int
    finished: bool
    finish_reason: str | None  # "stop", "length" once finished


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for metrics and the Engine view."""

    running: int
    waiting: int
    blocks: BlockStats
    preemptions: int
    steps: int
    generated_tokens: int


class LLMEngine:
    """A paged-KV, continuously batching engine over one causal LM (module notes)."""

    def __init__(
        self,
        model: PagedModel,
        config: EngineConfig | None = None,
        eos_token_ids: Seq[int] = (),
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config or EngineConfig()
        c = self.config
        self.pool = model.new_pool(c.num_blocks, c.block_size)
        self.blocks = BlockManager(c.num_blocks, c.block_size, prefix_caching=c.prefix_caching)
        self.scheduler = Scheduler(c.scheduler(), self.blocks)
        self.eos_token_ids = tuple(eos_token_ids)
        self.on_step = on_step  # sees every step (the Engine view's timeline)
        self.sequences: dict[int, Sequence] = {}
        self._ids = itertools.count()
        self.steps = self.generated = 0

    @classmethod
    def from_folder(
        cls, folder: str | Path, config: EngineConfig | None = None, device: str = "cpu"
    ) -> LLMEngine:
        """An engine over a transformers model folder; EOS from its generation config."""
        model = PagedModel.from_folder(folder, device)
        eos = model.hf.generation_config.eos_token_id
        eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
        return cls(model, config, eos_ids)

    @property
    def kv_bytes(self) -> int:
        """Memory of the KV pool."""
        return self.pool.nbytes

    @property
    def has_work(self) -> bool:
        """True while a request waits or runs."""
        return self.scheduler.has_work

    def add_request(self, prompt: Seq[int], params: SamplingParams | None = None) -> int:
        """Queue a request; its sequence id. MaaslabError if it cannot fit the model at all."""
        params = params or SamplingParams()
        prompt = [int(t) for t in prompt]
        if any(not 0 <= t < self.model.vocab_size for t in prompt):
            raise MaaslabError(f"token ids must be in 0..{self.model.vocab_size - 1}")
        total = len(prompt) + params.max_tokens
        if total > self.model.context:
            raise MaaslabError(
                f"{len(prompt)} prompt tokens + max_tokens {params.max_tokens} = {total} is "
                f"more than the model's context of {self.model.context} tokens"
            )
        if self.blocks.blocks_needed(total) > self.config.num_blocks:
            raise MaaslabError(
                f"a request of {total} tokens needs more KV blocks than the engine has "
                f"({self.config.num_blocks} of {self.config.block_size})"
            )
        seq = Sequence(next(self._ids), prompt, params, self.eos_token_ids)
        self.sequences[seq.id] = seq
        self.scheduler.add(seq)
        return seq.id

    def abort(self, seq_id: int) -> None:
        """Stop a request now (a client left): its blocks are free for the next step."""
        seq = self.sequences.pop(seq_id, None)
        if seq is not None and not seq.finished:
            seq.finish("abort")
            self.scheduler.remove(seq)

    def step(self) -> list[TokenOutput]:
        """Schedule, run the model once, sample; the tokens this step produced."""
        step = self.scheduler.schedule()
        if not step.work:
            if self.scheduler.has_work:
                raise MaaslabError("the engine cannot schedule anything: too few KV blocks")
            return []
        chunks = [
            Chunk(
                seq.tokens[seq.computed : seq.computed + n], seq.computed, self.blocks.table(seq.id)
            )
            for seq, n in step.work
        ]
        logits = self.model.forward(chunks, self.pool)
        now = time.perf_counter()
        outputs = []
        for (seq, n), row in zip(step.work, logits, strict=True):
            seq.computed += n
            self.blocks.mark_computed(seq.id, seq.tokens, seq.computed)
            if seq.pending:
                continue  # a prompt chunk that does not end the prompt: no token yet
            token = seq.sample(row)
            seq.append(token, now)
            self.generated += 1
            outputs.append(TokenOutput(seq.id, token, seq.finished, seq.finish_reason))
            if seq.finished:
                self.scheduler.remove(seq)
                del self.sequences[seq.id]
        self.steps += 1
        if self.on_step is not None:
            self.on_step(step)
        return outputs

    def generate(
        self, prompts: Seq[Seq[int]], params: SamplingParams | Seq[SamplingParams] | None = None
    ) -> list[list[int]]:
        """Run every prompt to its end, all batched together; each one's new tokens."""
        many = params if isinstance(params, list | tuple) else [params] * len(prompts)
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, many, strict=True)]
        tokens: dict[int, list[int]] = {i: [] for i in ids}
        while self.has_work:
            for out in self.step():
                tokens[out.seq_id].append(out.token)
        return [tokens[i] for i in ids]

    def stats(self) -> EngineStats:
        """Running and waiting sequences, blocks, preemptions, steps, tokens so far."""
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            blocks=self.blocks.stats(),
            preemptions=self.scheduler.preemptions,
            steps=self.steps,
            generated_tokens=self.generated,
        )
