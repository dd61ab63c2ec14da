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

import torch

from maaslab.errors import MaaslabError
from maaslab.llm.blocks import BlockManager, BlockStats
from maaslab.llm.model import Chunk, PagedModel
from maaslab.llm.scheduler import Scheduler, SchedulerConfig, Step
from maaslab.llm.sequence import SamplingParams, Sequence
from maaslab.llm.speculative import verify_greedy, verify_sampled
from maaslab.models.gpt import next_token_probs


def on_cpu(logits: torch.Tensor) -> torch.Tensor:
    """A step's logits as float32 on the CPU, where every sequence samples with its own CPU
    random generator: one copy per step on a GPU, none on a CPU, and a seeded request draws
    the same numbers on any device."""
    return logits.float().cpu()


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
    speculative_tokens: int = 4  # tokens a draft model guesses per step (when there is one)

    def __post_init__(self) -> None:
        if min(self.block_size, self.num_blocks) < 1:
            raise MaaslabError("block_size and num_blocks must be >= 1")
        if not 0 <= self.speculative_tokens <= 16:
            raise MaaslabError(f"speculative_tokens must be 0..16, got {self.speculative_tokens}")
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
    draft_proposed: int = 0  # speculative guesses made
    draft_accepted: int = 0  # and kept by the target
    draft_checks: int = 0  # target passes over a sequence's guesses

    @property
    def tokens_per_check(self) -> float:
        """Tokens a target pass over guesses yielded on average (1 + accepted per pass)."""
        return 1 + self.draft_accepted / self.draft_checks if self.draft_checks else 1.0

    @property
    def acceptance_rate(self) -> float:
        """Share of the draft's guesses the target kept (0 without a draft)."""
        return self.draft_accepted / self.draft_proposed if self.draft_proposed else 0.0


class LLMEngine:
    """A paged-KV, continuously batching engine over one causal LM (module notes)."""

    def __init__(
        self,
        model: PagedModel,
        config: EngineConfig | None = None,
        eos_token_ids: Seq[int] = (),
        on_step: Callable[[Step], None] | None = None,
        draft: PagedModel | None = None,
    ) -> None:
        """Parameters
        ----------
        model : the model that answers.
        config : memory and batching (EngineConfig()).
        eos_token_ids : tokens that end a sequence (unless its request ignores them).
        on_step : called with every scheduled Step (the Engine view's timeline).
        draft : a smaller model on the same tokenizer for speculative decoding, which then
            guesses config.speculative_tokens tokens per step.
        """
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
        self.draft = draft if self.config.speculative_tokens > 0 else None
        self.draft_pool = None
        self.proposed = self.accepted = 0  # draft guesses made and kept
        self.checks = 0  # target passes that checked guesses
        if self.draft is not None:
            if self.draft.vocab_size != model.vocab_size or self.draft.context < model.context:
                raise MaaslabError(
                    "a draft model must share the target's vocabulary and context "
                    f"(vocab {self.draft.vocab_size} vs {model.vocab_size}, context "
                    f"{self.draft.context} vs {model.context})"
                )
            self.draft_pool = self.draft.new_pool(c.num_blocks, c.block_size)

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
        guesses = self._draft(step) if self.draft is not None else {}
        chunks = []
        for seq, n in step.work:
            table = self.blocks.table(seq.id)
            ahead = guesses.get(seq.id, ([], []))[0]
            new = seq.tokens[seq.computed : seq.computed + n] + ahead
            chunks.append(Chunk(new, seq.computed, table, logits=len(ahead) + 1))
        logits = on_cpu(self.model.forward(chunks, self.pool))
        now = time.perf_counter()
        outputs, row = [], 0
        for seq, n in step.work:
            ahead, draft_probs = guesses.get(seq.id, ([], []))
            rows = logits[row : row + len(ahead) + 1]
            row += len(ahead) + 1
            if ahead:
                tokens, accepted = self._verify(seq, rows, ahead, draft_probs)
                self.proposed += len(ahead)
                self.accepted += accepted
                self.checks += 1
                seq.computed += 1 + accepted
                seq.draft_computed = min(seq.draft_computed, seq.computed)
            else:
                seq.computed += n
                tokens = [] if seq.pending else [seq.sample(rows[-1])]
            for token in tokens:
                seq.append(token, now)
                self.generated += 1
                outputs.append(TokenOutput(seq.id, token, seq.finished, seq.finish_reason))
                if seq.finished:
                    break
            self.blocks.mark_computed(seq.id, seq.tokens, min(seq.computed, len(seq.tokens)))
            if seq.finished:
                self.scheduler.remove(seq)
                del self.sequences[seq.id]
        self.steps += 1
        if self.on_step is not None:
            self.on_step(step)
        return outputs

    # --- speculative decoding ----------------------------------------------------------------

    def _guesses_for(self, seq: Sequence) -> int:
        # How many tokens the draft may guess for a decoding sequence: k, less near its end.
        room = min(
            self.config.speculative_tokens,
            seq.params.max_tokens - len(seq.output) - 1,
            self.model.context - len(seq.tokens),
        )
        if room < 1 or not self.blocks.can_append(seq.id, seq.computed + room + 1):
            return 0
        self.blocks.append(seq.id, seq.computed + room + 1)
        return room

    def _draft(self, step: Step) -> dict[int, tuple[list[int], list[torch.Tensor]]]:
        """Run the draft: it catches up on every sequence's new tokens (so its own cache
        follows the target's), then guesses ahead for the decoding ones; seq id -> (guesses,
        the distributions they were drawn from)."""
        assert self.draft is not None and self.draft_pool is not None
        room = {seq.id: self._guesses_for(seq) for seq, n in step.work if not seq.prefilling}
        chunks, guessing = [], []
        for seq, n in step.work:
            end = seq.computed + n  # the target computes up to here in this step
            table = self.blocks.table(seq.id)
            chunks.append(Chunk(seq.tokens[seq.draft_computed : end], seq.draft_computed, table))
            seq.draft_computed = end
            if room.get(seq.id):
                guessing.append(seq)
        out: dict[int, tuple[list[int], list[torch.Tensor]]] = {s.id: ([], []) for s in guessing}
        logits = on_cpu(self.draft.forward(chunks, self.draft_pool))
        rows = {seq.id: i for i, (seq, _) in enumerate(step.work)}
        current = {seq.id: logits[rows[seq.id]] for seq in guessing}
        for j in range(max((room[s.id] for s in guessing), default=0)):
            active = [s for s in guessing if room[s.id] > j]
            for seq in active:
                token, probs = self._draft_sample(seq, current[seq.id])
                out[seq.id][0].append(token)
                out[seq.id][1].append(probs)
            more = [s for s in active if room[s.id] > j + 1]
            if not more:
                break
            chunks = [
                Chunk([out[s.id][0][-1]], s.draft_computed, self.blocks.table(s.id)) for s in more
            ]
            for s in more:
                s.draft_computed += 1
            for s, row in zip(
                more, on_cpu(self.draft.forward(chunks, self.draft_pool)), strict=True
            ):
                current[s.id] = row
        return out

    @staticmethod
    def _draft_sample(seq: Sequence, logits: torch.Tensor) -> tuple[int, torch.Tensor]:
        p = seq.params
        if p.temperature == 0:
            return int(logits.argmax()), logits
        probs = next_token_probs(logits, p.temperature, p.top_k, p.top_p)
        return int(torch.multinomial(probs, 1, generator=seq.generator)), probs

    @staticmethod
    def _verify(
        seq: Sequence, rows: torch.Tensor, ahead: list[int], draft_probs: list[torch.Tensor]
    ) -> tuple[list[int], int]:
        p = seq.params
        if p.temperature == 0:
            return verify_greedy(rows, ahead)
        return verify_sampled(
            rows, draft_probs, ahead, p.temperature, p.top_k, p.top_p, seq.generator
        )

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
            draft_proposed=self.proposed,
            draft_accepted=self.accepted,
            draft_checks=self.checks,
        )
