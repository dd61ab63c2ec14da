"""A request inside the engine: its tokens, its sampling settings, and where it stands.

A sequence's tokens are its prompt followed by what it generated. `computed` counts the
leading tokens whose keys and values are in the cache; the rest are *pending*. A sequence being
prefilled has many pending tokens, one being decoded has exactly one (the token it sampled
last), and a preempted one has all of them again (its blocks were taken back; it recomputes).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from maaslab.errors import MaaslabError
from maaslab.models.gpt import next_token_probs


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples; checked on creation (a MaaslabError says what is wrong)."""

    max_tokens: int = 16  # new tokens at most
    temperature: float = 1.0  # 0 = always the likeliest token (greedy)
    top_k: int | None = None  # keep only the k likeliest tokens (None = all)
    top_p: float = 1.0  # nucleus sampling mass, (0, 1]
    seed: int | None = None  # same seed -> same tokens, alone or batched
    stop_token_ids: tuple[int, ...] = ()  # end the sequence after sampling one of these
    ignore_eos: bool = False  # keep going past the model's end-of-text token

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise MaaslabError(f"max_tokens must be a whole number >= 1, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 100.0:
            raise MaaslabError(f"temperature must be in [0, 100], got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise MaaslabError(f"top_k must be at least 1 (or None), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise MaaslabError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise MaaslabError(f"seed must be in 0..2**63-1, got {self.seed}")


class Status(enum.Enum):
    """Where a sequence is: waiting for blocks, in the running batch, or done."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request's state inside the engine."""

    id: int
    prompt: list[int]
    params: SamplingParams
    eos_token_ids: tuple[int, ...] = ()
    output: list[int] = field(default_factory=list)
    computed: int = 0  # leading tokens with their KV in the cache
    draft_computed: int = 0  # the same, in a speculative draft model's cache
    status: Status = Status.WAITING
    finish_reason: str | None = None  # "stop" (EOS or a stop token), "length", "abort"
    preemptions: int = 0
    arrived: float = field(default_factory=time.perf_counter)
    token_times: list[float] = field(default_factory=list)  # when each output token came
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise MaaslabError("the prompt is empty: give at least one token")
        if self.params.seed is not None:
            self.generator.manual_seed(self.params.seed)
        else:
            self.generator.seed()  # a fresh random seed

    @property
    def tokens(self) -> list[int]:
        """Prompt and output so far."""
        return self.prompt + self.output

    @property
    def pending(self) -> int:
        """Tokens still without KV in the cache."""
        return len(self.prompt) + len(self.output) - self.computed

    @property
    def prefilling(self) -> bool:
        """True while more than one token waits for its KV (a prompt or a recompute)."""
        return self.pending > 1

    @property
    def finished(self) -> bool:
        """True once the sequence has ended (any reason)."""
        return self.status is Status.FINISHED

    def sample(self, logits: torch.Tensor) -> int:
        """The next token from this sequence's logits (V,), with its own random generator."""
        p = self.params
        if p.temperature == 0:
            return int(torch.argmax(logits))
        probs = next_token_probs(logits, p.temperature, p.top_k, p.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def append(self, token: int, now: float) -> None:
        """Record a sampled token; finish on EOS, a stop token, or max_tokens."""
        self.output.append(token)
        self.token_times.append(now)
        if token in self.params.stop_token_ids or (
            token in self.eos_token_ids and not self.params.ignore_eos
        ):
            self.finish("stop")
        elif len(self.output) >= self.params.max_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        """End the sequence."""
        self.status, self.finish_reason = Status.FINISHED, reason
