"""Language models on Ray Serve: a deployment each, its replicas running the engine (lesson 17).

    ingress: OpenAI routes ── RemoteEngine ── streaming handle ──>  LLMReplica x N
             (tokenize, stop strings, SSE)   generate(prompts, params)   EngineService + LLMEngine

Each replica of a language model's deployment (mini-llama, a Llama or GPT-2 folder) runs the
EngineService the single-process server runs: the same engine, scheduler, queue bound and
tenants' turns (maaslab.serve.llm_service). The ingress keeps its copy of the model only for
its tokenizer; the routes reach the replicas through a `RemoteEngine` in `ServedModel.service`,
with what llm_service hands them: `submit(prompts, params, tenant)` -> a `RemoteGeneration`
with `wait_first`, `next`, `abort`, `close`.

A request is one call of `LLMReplica.generate` through `handle.options(stream=True)`: an async
generator in the replica, a DeploymentResponseGenerator in the ingress. The replica yields
READY once every choice has its first token (or raises what the engine raised: a 400 for a
prompt too long, Overloaded for a full queue), then each (choice index, TokenOutput) as the
engine samples it, so the ingress sends each token on as it comes. Closing the generation
(the client left, the stream was cut, every choice ended by a stop string, the request timed
out) cancels the call: Ray Serve cancels the replica's generator, whose `finally` aborts its
sequences, and the engine frees their KV blocks before its next step. One choice stopped by its
stop string while its siblings still run keeps running in the replica until the request ends
(the call has no way back into it); its tokens are dropped in the ingress.

Faults: a replica that dies before the first token is asked again once (nothing was sent yet),
then the request is answered 503 with Retry-After (ReplicaLost); one that dies mid-answer ends
the answer with ReplicaLost (503 when nothing was sent, an error event in a stream).

The ingress's /metrics: token latencies as the ingress sees them (one Ray hop more than the
replica's), sequences waiting in the ingress for their first token, and the engine's numbers
(blocks, steps, tokens, aborts) as the last replica asked reported them (polled every
STATS_EVERY_S seconds; with several replicas, one replica's at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ray.exceptions import RayError, RayTaskError
from ray.serve.handle import DeploymentHandle

from maaslab.errors import MaaslabError
from maaslab.llm.blocks import BlockStats
from maaslab.llm.engine import EngineConfig, EngineStats, TokenOutput
from maaslab.llm.sequence import SamplingParams
from maaslab.scale.faults import ReplicaLost
from maaslab.serve.batching import ShuttingDown
from maaslab.serve.config import ServeConfig
from maaslab.serve.llm_service import LatencyHook

log = logging.getLogger("maaslab.serve")
READY = "ready"  # the replica's first item: every choice has its first token
STATS_EVERY_S = 1.0  # the ingress asks a replica for the engine's numbers this often


class _Lost(Exception):
    """The replica's process died, or is unreachable (a Ray error, not the replica's own)."""


class RemoteGeneration:
    """One request's choices running in a replica, seen from the ingress: the interface of
    maaslab.serve.llm_service.Generation (wait_first, next, abort, close, finished)."""

    def __init__(
        self,
        engine: RemoteEngine,
        prompts: list[list[int]],
        params: list[SamplingParams],
        tenant: str | None,
    ) -> None:
        self.engine, self.count, self.tenant = engine, len(prompts), tenant
        self._call = (prompts, params, tenant)
        self._stream: Any = None  # the DeploymentResponseGenerator once sent
        self.done: set[int] = set()  # choices finished or aborted
        self._ended = False  # the replica's call is over (ran out, failed or cancelled)
        self._finished_there: set[int] = set()  # choices the replica's engine finished
        self._waiting = True  # counted in the engine's `queued` (no first tokens yet)
        self._submitted = time.perf_counter()
        self._last: dict[int, float] = {}  # choice -> when its latest token came

    @property
    def finished(self) -> bool:
        """True once every choice has ended."""
        return len(self.done) == self.count

    async def _pull(self) -> Any:
        # The replica's next item; its own exceptions as themselves, a dead replica as _Lost.
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self._ended = True
            raise _Lost("its answer ended early") from None
        except RayTaskError as err:  # raised in the replica: a bad prompt, a full queue
            self._ended = True
            raise (err.cause if isinstance(err.cause, Exception) else err) from None
        except RayError as err:  # the replica's process died, or is unreachable
            self._ended = True
            self.engine.lost += 1
            raise _Lost(type(err).__name__) from None

    async def wait_first(self) -> None:
        """Send the request and wait until every choice has its first token; raise the
        replica's error instead (a replica that died first is asked again once)."""
        for attempt in range(self.engine.retries + 1):
            self._stream = self.engine.stream.generate.remote(*self._call)
            self._ended = False
            try:
                first = await self._pull()
                break
            except _Lost as lost:
                if attempt == self.engine.retries:
                    raise ReplicaLost(self.engine.name, str(lost)) from None
        if first != READY:
            raise MaaslabError(f"model {self.engine.name!r}: the replica answered {first!r}")
        self._unqueue()

    async def next(self) -> tuple[int, TokenOutput]:
        """The next (choice index, token) of any choice, as the replica's engine samples it."""
        while True:
            try:
                index, out = await self._pull()
            except _Lost as lost:
                raise ReplicaLost(self.engine.name, str(lost)) from None
            if out.finished:
                self._finished_there.add(index)
                self._ended = len(self._finished_there) == self.count
            if index in self.done:
                continue  # tokens of a choice aborted meanwhile
            self._observe(index, out)
            if out.finished:
                self.done.add(index)
            return index, out

    def _observe(self, index: int, out: TokenOutput) -> None:
        hook, now = self.engine.on_latency, time.perf_counter()
        if hook is not None:
            last = self._last.get(index)
            hook("first_token" if last is None else "inter_token", now - (last or self._submitted))
            if out.finished:
                hook("end_to_end", now - self._submitted)
        self._last[index] = now

    def abort(self, index: int) -> None:
        """Stop one choice: its tokens are dropped here; the replica's call is cancelled once
        no choice runs (module notes)."""
        if index not in self.done:
            self.done.add(index)
            if self.finished:
                self._cancel()

    def close(self) -> None:
        """Stop every choice still running: the replica's call is cancelled, which aborts its
        sequences and frees their KV blocks."""
        self.done.update(range(self.count))
        self._cancel()
        self._unqueue()

    def _cancel(self) -> None:
        if self._stream is not None and not self._ended:
            self._ended = True
            self._stream.cancel()

    def _unqueue(self) -> None:
        if self._waiting:
            self._waiting = False
            self.engine.queued -= self.count


def idle_stats(num_blocks: int) -> EngineStats:
    """The numbers of an engine with nothing to do: every block free, no step taken."""
    return EngineStats(0, 0, BlockStats(num_blocks, 0, num_blocks, 0, 0, 0), 0, 0, 0)


class RemoteEngine:
    """A language model's engine in the ingress: each request goes to the model's deployment
    through a streaming DeploymentHandle (module notes). What the routes and the app use of an
    EngineService: submit, depth, stats, aborted, on_latency, start, close."""

    def __init__(
        self,
        name: str,
        handle: DeploymentHandle,
        stats: EngineStats | None = None,
        retries: int = 1,
    ) -> None:
        self.name, self.handle, self.retries = name, handle, retries
        self.stream = handle.options(stream=True)
        self.on_latency: LatencyHook | None = None  # set by the app (token latencies)
        # The engine's numbers, as the last replica asked reported them (None: an idle engine
        # of the default size until a replica answers).
        self.stats = stats or idle_stats(EngineConfig().num_blocks)
        self.aborted = 0  # sequences stopped before their end, ditto
        self.queued = 0  # sequences sent and without a first token yet (event loop only)
        self.lost = 0  # requests whose replica died under them
        self.closed = False
        self._poll: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Sequences this ingress has sent that have no first token yet."""
        return self.queued

    def submit(
        self,
        prompts: Sequence[Sequence[int]],
        params: Sequence[SamplingParams],
        tenant: str | None = None,
    ) -> RemoteGeneration:
        """One request's choices (choice i: prompts[i] with params[i]); sent when the route
        awaits its `wait_first`. ShuttingDown once the server stops."""
        if self.closed:
            raise ShuttingDown(f"model {self.name!r} is shutting down")
        gen = RemoteGeneration(self, [list(p) for p in prompts], list(params), tenant)
        self.queued += gen.count
        return gen

    def start(self) -> None:
        """Start asking a replica for the engine's numbers (on the app's event loop)."""
        if self._poll is None:
            self._poll = asyncio.get_running_loop().create_task(self._read_stats())

    async def _read_stats(self) -> None:
        while True:
            try:
                self.stats, self.aborted = await self.handle.state.remote()
            except Exception as err:  # a replica restarting, Serve stopping: ask again later
                log.debug("the %s replica's numbers are not there: %s", self.name, err)
            await asyncio.sleep(STATS_EVERY_S)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Take no more requests; stop polling (Ray Serve stops the replicas)."""
        self.closed = True
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._poll, timeout_s)


class LLMReplica:
    """One replica of a language model: its engine on a thread of its own (EngineService)."""

    def __init__(self, name: str, spec: str, config: ServeConfig) -> None:
        import torch

        from maaslab.device import get_device
        from maaslab.serve.models import build_served

        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.model = build_served(name, spec, config, get_device(config.device), None)
        if self.model.service is None:
            raise MaaslabError(f"model {name!r} ({self.model.kind}) is not run by the engine")
        self.service = self.model.service

    async def generate(
        self, prompts: list[list[int]], params: list[SamplingParams], tenant: str | None
    ) -> AsyncIterator[Any]:
        """READY once every choice has its first token, then each (choice index, TokenOutput);
        cancelling the call aborts the sequences still running."""
        gen = self.service.submit(prompts, params, tenant)  # Overloaded: 503 in the ingress
        try:
            await gen.wait_first()
            yield READY
            while not gen.finished:
                yield await gen.next()
        finally:
            gen.close()  # the sequences still running leave the engine before its next step

    def state(self) -> tuple[EngineStats, int]:
        """The engine's latest numbers and the sequences aborted so far."""
        return self.service.stats, self.service.aborted

    async def __del__(self) -> None:
        """Ray Serve stops the replica: stop the engine thread after its current step."""
        await self.service.close()
