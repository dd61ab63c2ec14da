"""How a language-model service is measured: workloads, and the latencies users feel.

- **TTFT**, time to first token: from sending a request to its first token (queueing and
  prefill); what a chat user waits before anything appears.
- **ITL**, inter-token latency: the gaps between consecutive tokens of a stream.
- **TPOT**, time per output token: (end - first token) / (tokens - 1) for one request.
- **Throughput**: output tokens per second over the whole run.
- **Goodput**: requests per second that met the latency objective (an SLO on TTFT and TPOT),
  the measure vLLM's benchmark and DistServe report: throughput that users did not give up on.

A `Workload` draws prompts and output lengths from a seeded generator, arriving all at once
(`rate=None`, a closed burst) or as a Poisson process of `rate` requests per second; `drive`
runs one against an LLMEngine in this process and records when every token came.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from maaslab.errors import MaaslabError
from maaslab.llm.engine import LLMEngine
from maaslab.llm.sequence import SamplingParams


@dataclass(frozen=True)
class Workload:
    """Requests to send: how many, how long, when; the same seed gives the same requests."""

    requests: int = 16
    prompt_tokens: tuple[int, int] = (16, 64)  # uniform range of prompt lengths
    output_tokens: tuple[int, int] = (32, 256)  # uniform range of max_tokens
    rate: float | None = None  # Poisson arrivals per second; None: all at once
    shared_prefix: int = 0  # tokens of a system prompt every request starts with
    vocab: tuple[int, int] = (10, 1000)  # token ids are drawn from this range
    seed: int = 0

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise MaaslabError("a workload needs at least one request")
        for name, words in (
            ("prompt_tokens", "Prompt tokens"),
            ("output_tokens", "Output tokens"),
            ("vocab", "Token ids"),
        ):
            low, high = getattr(self, name)
            if low < 1:
                raise MaaslabError(f"{words}: min is {low}; it must be at least 1")
            if low > high:
                raise MaaslabError(
                    f"{words}: min ({low}) is more than max ({high}). Set min to at most max."
                )
        if self.rate is not None and self.rate <= 0:
            raise MaaslabError(f"rate must be positive (requests per second), got {self.rate}")

    def check_fits(self, context: int, vocab_size: int) -> None:
        """MaaslabError, in words, unless every request fits a model with this context and
        vocabulary (its longest prompt plus its longest answer, its largest token id)."""
        longest = self.shared_prefix + self.prompt_tokens[1] + self.output_tokens[1]
        if longest > context:
            raise MaaslabError(
                f"a prompt of up to {self.shared_prefix + self.prompt_tokens[1]} tokens with an "
                f"answer of up to {self.output_tokens[1]} needs {longest} positions, more than "
                f"the model's context of {context}: shorten the prompts or the answers"
            )
        if self.vocab[1] >= vocab_size:
            raise MaaslabError(
                f"token ids up to {self.vocab[1]} are past the model's vocabulary of "
                f"{vocab_size}: draw them from a range below {vocab_size}"
            )

    def draw(self) -> list[tuple[float, list[int], int]]:
        """(arrival offset in seconds, prompt token ids, max_tokens) per request."""
        rng = np.random.default_rng(self.seed)
        prefix = rng.integers(*self.vocab, size=self.shared_prefix).tolist()
        out, clock = [], 0.0
        for _ in range(self.requests):
            n = int(rng.integers(self.prompt_tokens[0], self.prompt_tokens[1] + 1))
            prompt = prefix + rng.integers(*self.vocab, size=n).tolist()
            max_tokens = int(rng.integers(self.output_tokens[0], self.output_tokens[1] + 1))
            if self.rate is not None:
                clock += float(rng.exponential(1.0 / self.rate))
            out.append((clock, prompt, max_tokens))
        return out


@dataclass
class Timing:
    """When one request was sent and when each of its tokens came (perf_counter seconds)."""

    sent: float
    prompt_tokens: int
    token_times: list[float] = field(default_factory=list)
    # Tokens produced, when more than the times recorded: a server's stream may carry two
    # tokens in one chunk (a character split across tokens), and its usage says how many.
    tokens: int | None = None

    @property
    def output_tokens(self) -> int:
        """Tokens this request produced."""
        return max(self.tokens or 0, len(self.token_times))

    @property
    def ttft(self) -> float:
        """Time to first token."""
        return self.token_times[0] - self.sent

    @property
    def itls(self) -> list[float]:
        """Gaps between consecutive tokens."""
        return list(np.diff(self.token_times))

    @property
    def tpot(self) -> float:
        """Mean time per output token after the first (0 for a single token)."""
        n = self.output_tokens
        return (self.token_times[-1] - self.token_times[0]) / (n - 1) if n > 1 else 0.0

    @property
    def e2e(self) -> float:
        """From sending to the last token."""
        return self.token_times[-1] - self.sent


@dataclass(frozen=True)
class Report:
    """Latency percentiles (seconds), throughput and goodput of one run."""

    requests: int
    output_tokens: int
    seconds: float
    ttft: dict[str, float]  # p50, p90, p99
    itl: dict[str, float]
    tpot: dict[str, float]
    e2e: dict[str, float]
    tokens_per_s: float
    goodput: float  # requests per second that met the SLO
    slo: tuple[float, float]  # (TTFT, TPOT) limits in seconds

    def line(self) -> str:
        """The run in one line."""
        return (
            f"{self.tokens_per_s:,.0f} tok/s · TTFT p50 {self.ttft['p50'] * 1e3:.0f} ms "
            f"p99 {self.ttft['p99'] * 1e3:.0f} ms · ITL p50 {self.itl['p50'] * 1e3:.1f} ms "
            f"p99 {self.itl['p99'] * 1e3:.1f} ms · goodput {self.goodput:.2f} req/s"
        )


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def report(timings: list[Timing], slo: tuple[float, float] = (1.0, 0.1)) -> Report:
    """Summarise a run; `slo` = (TTFT limit, TPOT limit) in seconds for goodput."""
    done = [t for t in timings if t.token_times]
    if not done:
        raise MaaslabError("no request produced a token: nothing to report")
    start = min(t.sent for t in done)
    seconds = max(t.token_times[-1] for t in done) - start
    tokens = sum(t.output_tokens for t in done)
    good = sum(t.ttft <= slo[0] and t.tpot <= slo[1] for t in done)
    return Report(
        requests=len(done),
        output_tokens=tokens,
        seconds=seconds,
        ttft=_percentiles([t.ttft for t in done]),
        itl=_percentiles([g for t in done for g in t.itls]),
        tpot=_percentiles([t.tpot for t in done]),
        e2e=_percentiles([t.e2e for t in done]),
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        goodput=good / seconds if seconds > 0 else 0.0,
        slo=slo,
    )


def drive(
    engine: LLMEngine, workload: Workload, temperature: float = 0.0, one_at_a_time: bool = False
) -> list[Timing]:
    """Run a workload through an engine in this process, requests arriving on schedule.

    Parameters
    ----------
    engine : the engine (any configuration).
    workload : the requests and their arrival times.
    temperature : sampling temperature of every request (0 = greedy); seeds are 0, 1, ...
    one_at_a_time : admit a request only when the previous one has finished (the baseline
        that serves each request on its own).
    """
    plan = workload.draw()
    timings: dict[int, Timing] = {}
    start, i = time.perf_counter(), 0
    while i < len(plan) or engine.has_work:
        now = time.perf_counter() - start
        while i < len(plan) and plan[i][0] <= now and not (one_at_a_time and engine.has_work):
            _, prompt, max_tokens = plan[i]
            params = SamplingParams(
                max_tokens=max_tokens, temperature=temperature, seed=i, ignore_eos=True
            )
            seq = engine.add_request(prompt, params)
            timings[seq] = Timing(start + plan[i][0], len(prompt))
            i += 1
        if not engine.has_work:
            time.sleep(min(0.005, max(0.0, plan[i][0] - now)) if i < len(plan) else 0)
            continue
        for out in engine.step():
            timings[out.seq_id].token_times.append(time.perf_counter())
    return list(timings.values())
