"""Load generation for a served language model: streams, as users feel them.

A language model's answer is a stream, so its load test measures what `run_load` (whole
answers, OIP v2 tensors) cannot: when each token arrives. `run_llm_load` sends a
`maaslab.llm.measure.Workload` to `/v1/completions` with `stream: true` and records, per
request, when it was sent and when each chunk of text came, then reports what vLLM's
`benchmark_serving.py` and GenAI-Perf report (see maaslab.llm.measure):

- TTFT, ITL, TPOT and end-to-end latency at p50 / p90 / p99;
- output tokens per second over the run (counted by the server's usage, in the model's tokens);
- **goodput**: requests per second that met the SLO (TTFT and TPOT limits).

Requests go out in one of two ways:

- **open loop** (`concurrency=None`): each request leaves at its arrival time in the workload,
  answered or not: all at once (`rate=None`) or as a Poisson process of `rate` per second.
  Latency then includes queueing when the server falls behind, as it would for real users;
- **closed loop** (`concurrency=c`): c users, each sending the next request when its previous
  stream ended.

Prompts are the workload's token ids (OpenAI's API takes a prompt as a list of token ids), with
`ignore_eos: true` (vLLM's extension), so every request produces exactly its `max_tokens` and
two runs (or the server and `maaslab.llm.measure.drive` in this process) do the same work.
Request i samples with seed i. A request the server refuses (503 when its queue is full, 4xx)
or a stream that breaks is counted, with its message, and left out of the latencies. A
`cancel` event stops sending and ends the streams in flight at their next chunk.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from maaslab.errors import MaaslabError
from maaslab.llm.measure import Report, Timing, Workload, report
from maaslab.serve.loadtest import Progress, run_coroutine, transport_error

__all__ = ["LLMLoadResult", "run_llm_load"]

STREAM_TIMEOUT_S = 300.0  # one whole stream; longer than any answer a small model gives here
MAX_USERS = 256  # closed-loop users at most


@dataclass
class LLMLoadResult:
    """What a language-model load test measured."""

    model: str
    mode: str  # "closed loop, 16 users", "open loop, Poisson 4 req/s", "open loop, all at once"
    timings: list[Timing]  # the requests that streamed to their end
    report: Report | None  # None when no request streamed to its end
    refused: int = 0  # 503: the server's queue was full
    refusal: str | None = None  # the server's words with its first 503
    errors: Counter = field(default_factory=Counter)  # what went wrong otherwise, by message
    cancelled: int = 0  # requests not sent, or streams ended early, because of `cancel`
    started: float = 0.0  # perf_counter when the run began: arrival times count from here

    @property
    def sent(self) -> int:
        """Requests that were answered, refused or failed (cancelled ones aside)."""
        return len(self.timings) + self.refused + sum(self.errors.values())

    def line(self) -> str:
        """The run in one line."""
        head = f"{self.model}, {self.mode}: {len(self.timings)}/{self.sent} streams done"
        if self.cancelled:
            head += f", {self.cancelled} cancelled"
        if self.refused:
            head += f", {self.refused} refused (503)"
        if self.errors:
            head += f", {sum(self.errors.values())} failed"
        return head + (f" · {self.report.line()}" if self.report else "")


class _Cancelled(Exception):
    """The load test was cancelled while this stream ran."""


class _Failed(Exception):
    """A request that got no whole stream: 503, another status, or a broken stream."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


async def _stream(
    session: aiohttp.ClientSession,
    target: str,
    body: dict,
    headers: dict[str, str],
    timing: Timing,
    cancel: threading.Event | None,
) -> None:
    # One streamed completion: the time of every chunk with text, the usage's token count.
    async with session.post(target, json=body, headers=headers) as response:
        if response.status != 200:
            text = await response.text()
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text[:200]
            raise _Failed(f"HTTP {response.status}: {message}", refused=response.status == 503)
        done = False
        async for raw in response.content:
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                raise _Failed(f"stream error: {event['error'].get('message', event['error'])}")
            if any(choice.get("text") for choice in event.get("choices", ())):
                timing.token_times.append(time.perf_counter())
            if event.get("usage"):
                timing.tokens = int(event["usage"]["completion_tokens"])
        if not done:
            raise _Failed("the stream ended without [DONE]")


async def _drive(
    url: str,
    model: str,
    plan: list[tuple[float, list[int], int]],
    concurrency: int | None,
    temperature: float,
    api_key: str | None,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> LLMLoadResult:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    target = url.rstrip("/") + "/v1/completions"
    out = LLMLoadResult(model, "", [], None)
    t0 = out.started = time.perf_counter()

    async def send(session: aiohttp.ClientSession, i: int) -> None:
        arrival, prompt, max_tokens = plan[i]
        if concurrency is None:  # open loop: leave at the arrival time, answered or not
            await asyncio.sleep(max(0.0, t0 + arrival - time.perf_counter()))
        if cancel is not None and cancel.is_set():
            out.cancelled += 1
            return
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": i,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        timing = Timing(time.perf_counter(), len(prompt))
        try:
            await _stream(session, target, body, headers, timing, cancel)
            out.timings.append(timing)
        except _Cancelled:
            out.cancelled += 1
        except _Failed as failed:
            if failed.refused:
                out.refused += 1
                out.refusal = out.refusal or str(failed)
            else:
                out.errors[str(failed)] += 1
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            out.errors[transport_error(err)] += 1
        if progress is not None:
            finished = out.sent + out.cancelled
            progress(f"{finished}/{len(plan)} requests", finished / len(plan))

    async def user(session: aiohttp.ClientSession, queue: list[int]) -> None:
        while queue:
            await send(session, queue.pop(0))

    limit = concurrency or len(plan)
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=2.0)
    timeout = aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S, sock_connect=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if concurrency is None:
            await asyncio.gather(*(send(session, i) for i in range(len(plan))))
        else:
            queue = list(range(len(plan)))
            await asyncio.gather(*(user(session, queue) for _ in range(concurrency)))
    return out


def run_llm_load(
    url: str,
    model: str,
    workload: Workload,
    *,
    concurrency: int | None = None,
    temperature: float = 0.0,
    slo: tuple[float, float] = (1.0, 0.1),
    api_key: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> LLMLoadResult:
    """Stream a workload's requests to a served language model; what the users felt.

    Parameters
    ----------
    url : the server, e.g. "http://127.0.0.1:8000".
    model : a language model it serves (e.g. mini-llama).
    workload : the requests: prompt and output lengths, arrivals (rate), seed. Its token ids
        must be in the model's vocabulary (Workload.vocab).
    concurrency : closed loop with this many users; None: open loop on the workload's arrival
        times.
    temperature : every request's temperature (0 = greedy); request i uses seed i.
    slo : (TTFT limit, TPOT limit) in seconds, for goodput.
    api_key : Bearer key when the server requires one.
    progress : called with (stage, fraction) after every request.
    cancel : a threading.Event that, once set, stops sending and ends the streams in flight
        (the server then aborts their sequences); what finished before is reported.
    """
    if concurrency is not None and not 1 <= concurrency <= MAX_USERS:
        raise MaaslabError(f"concurrency must be 1..{MAX_USERS} users, got {concurrency}")
    if not 0.0 <= temperature <= 2.0:
        raise MaaslabError(f"temperature must be in [0, 2], got {temperature}")
    if not (slo[0] > 0 and slo[1] > 0):
        raise MaaslabError(f"the SLO's limits must be positive seconds, got {slo}")
    plan = workload.draw()
    if concurrency is not None:
        mode = f"closed loop, {concurrency} users"
    elif workload.rate is None:
        mode = "open loop, all at once"
    else:
        mode = f"open loop, Poisson {workload.rate:g} req/s"
    make: Callable = lambda: _drive(  # noqa: E731
        url, model, plan, concurrency, temperature, api_key, progress, cancel
    )
    gc.freeze()  # a collection pass over a loaded notebook would be measured as latency
    try:
        result: LLMLoadResult = run_coroutine(make)  # type: ignore[assignment]
    finally:
        gc.unfreeze()
    done = [t for t in result.timings if t.token_times]
    result.mode = mode
    result.report = report(done, slo) if done else None
    return result
