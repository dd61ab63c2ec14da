"""EngineService: one LLMEngine on its own thread, fed by the server's requests.

The engine (maaslab.llm) is not thread-safe, so one thread owns it. Request handlers run on the
event loop; they meet the engine thread through two channels:

- **in**: `submit` puts the request's sequences on a thread-safe inbox and wakes the thread;
  `Generation.abort` / `close` put an abort there (a client left, a stop string was found);
- **out**: after every `engine.step()` the thread hands the tokens of that step to the event
  loop in one `loop.call_soon_threadsafe`, and each lands in its request's asyncio queue.

The thread admits what the inbox holds, steps while the engine has work, and sleeps on an event
when it has none. An abort reaches the engine before its next step, so an abandoned sequence
gives its KV blocks back at once.

**n choices of one prompt.** The first sequence is admitted at once; its siblings join when it
has produced its first token: by then its prompt's full blocks are computed and registered, and
the siblings find them in the prefix cache instead of computing the prompt again. (A prompt
shorter than one block has nothing to share: its siblings join at once.)

**Overload.** Sequences accepted and still without a first token are the queue; once it holds
`max_queue`, `submit` raises Overloaded (503 with Retry-After) instead of letting waits grow.

**Tenants take turns.** With keys (maaslab.serve.access) each tenant's requests wait in a FIFO
of their own, bounded by `max_queue` (a flood fills only its own), and the thread feeds the
engine's waiting line round robin over the tenants, only as far as the engine can admit in a
step (`max_running` waiting at most): whatever one tenant has queued, another's request joins
the next step's admissions. Without keys every request is one tenant's: first come, first
served, as before.

**Numbers.** The thread reads `engine.stats()` after every step (`stats`, for gauges) and times
each sequence: time to first token (from `submit`), the gap between its tokens, and its whole
life, handed to `on_latency(kind, seconds)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineConfig, EngineStats, LLMEngine, TokenOutput
from maaslab.llm.model import PagedModel
from maaslab.llm.sequence import SamplingParams
from maaslab.serve.batching import Overloaded, ShuttingDown

log = logging.getLogger("maaslab.serve")
IDLE_WAIT_S = 1.0  # an idle engine thread looks at its stop flag this often
LatencyHook = Callable[[str, float], None]  # ("first_token" | "inter_token" | "end_to_end", s)


@dataclass(eq=False)
class _Seq:
    """One choice of a request, as the engine thread tracks it."""

    gen: Generation
    index: int  # the choice's index in its request
    prompt: list[int]
    params: SamplingParams
    submitted: float  # time.perf_counter() at submit
    seq_id: int | None = None  # the engine's id once admitted
    last: float | None = None  # when its latest token came


class Generation:
    """One request's sequences, seen from the event loop: their tokens arrive in one queue."""

    def __init__(self, service: EngineService, count: int, tenant: str | None = None) -> None:
        self.service, self.count, self.tenant = service, count, tenant
        self._queue: asyncio.Queue[tuple[int, TokenOutput | BaseException]] = asyncio.Queue()
        self._early: deque[tuple[int, TokenOutput | BaseException]] = deque()
        self.started: set[int] = set()  # choices that have a first token (or an error)
        self.done: set[int] = set()  # choices finished, failed or aborted

    @property
    def finished(self) -> bool:
        """True once every choice has ended."""
        return len(self.done) == self.count

    def _put(self, index: int, item: TokenOutput | BaseException) -> None:
        # On the event loop, from the engine thread's hand-out.
        if index not in self.started:
            self.started.add(index)
            self.service._dequeued(self.tenant)
        self._queue.put_nowait((index, item))

    async def wait_first(self) -> None:
        """Wait until every choice has its first token; raise the first error instead."""
        while len(self.started) < self.count:
            item = await self._queue.get()
            self._early.append(item)
            if isinstance(item[1], BaseException):
                raise item[1]

    async def next(self) -> tuple[int, TokenOutput]:
        """The next (choice index, token) of any choice; the engine's error if one failed."""
        while True:
            index, item = self._early.popleft() if self._early else await self._queue.get()
            if index in self.done:
                continue  # tokens of a choice aborted meanwhile
            if isinstance(item, BaseException):
                self.done.add(index)
                raise item
            if item.finished:
                self.done.add(index)
            return index, item

    def abort(self, index: int) -> None:
        """Stop one choice now (its stop string came); its blocks are freed before the next step."""
        if index not in self.done:
            self.done.add(index)
            self._forget(index)
            self.service._abort(self, index)

    def close(self) -> None:
        """Stop every choice still running (the client left, or the answer is complete)."""
        for index in range(self.count):
            self.abort(index)

    def _forget(self, index: int) -> None:
        if index not in self.started:  # it leaves the queue without a first token
            self.started.add(index)
            self.service._dequeued(self.tenant)


class EngineService:
    """Runs one LLMEngine on its own thread for the server (module notes).

    Parameters
    ----------
    name : the served model's name (in messages and metrics).
    engine : the engine; only this service's thread touches it once started.
    max_queue : sequences that may wait for their first token; one more request gets 503.
    on_latency : called on the engine thread with ("first_token" | "inter_token" |
        "end_to_end", seconds) for every sequence.
    """

    def __init__(
        self,
        name: str,
        engine: LLMEngine,
        max_queue: int = 256,
        on_latency: LatencyHook | None = None,
    ) -> None:
        self.name, self.engine, self.max_queue = name, engine, max_queue
        self.on_latency = on_latency
        self.queued = 0  # sequences accepted without a first token yet (event loop only)
        self.queued_by: dict[str | None, int] = {}  # ... per tenant (event loop only)
        self.aborted = 0  # sequences stopped before their end (engine thread)
        self.stats: EngineStats = engine.stats()  # the latest snapshot (engine thread writes)
        self._inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: dict[int, _Seq] = {}  # engine id -> sequence (engine thread)
        self._held: dict[int, list[_Seq]] = {}  # id(leader) -> siblings waiting for its prompt
        # Requests not yet in the engine, per tenant, and whose turn is next (engine thread).
        self._pending: dict[str | None, deque[list[_Seq]]] = {}
        self._turns: deque[str | None] = deque()
        self.closed = False

    @classmethod
    def for_model(
        cls,
        name: str,
        hf_model,
        eos_token_ids: Sequence[int],
        config: EngineConfig,
        max_queue: int,
        on_latency: LatencyHook | None = None,
    ) -> EngineService:
        """A service over a loaded transformers causal LM (a zoo ChatModel's `.model`)."""
        engine = LLMEngine(PagedModel(hf_model), config, tuple(eos_token_ids))
        return cls(name, engine, max_queue, on_latency)

    # --- the event loop's side -------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread; call on the running event loop that will read the tokens."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._run, name=f"engine-{self.name}", daemon=True
            )
            self._thread.start()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (after its current step) and fail what still runs; wait at most
        `timeout_s` for it."""
        self.closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout_s)
            if self._thread.is_alive():
                log.warning("the %s engine thread did not stop within %g s", self.name, timeout_s)

    def submit(
        self,
        prompts: Sequence[Sequence[int]],
        params: Sequence[SamplingParams],
        tenant: str | None = None,
    ) -> Generation:
        """Queue one request's choices (choice i: prompts[i] with params[i]) for `tenant`
        (None without keys); its Generation.

        Raises Overloaded when `max_queue` sequences of that tenant already wait for their
        first token, and ShuttingDown once the server stops. A prompt the engine refuses (too
        long for the context, an unknown token) comes back as a MaaslabError from `wait_first`.
        """
        if self.closed:
            raise ShuttingDown(f"model {self.name!r} is shutting down")
        if self.queued_by.get(tenant, 0) >= self.max_queue:
            raise Overloaded(self.name, tenant=tenant)
        self.start()
        gen = Generation(self, len(prompts), tenant)
        now = time.perf_counter()
        seqs = [
            _Seq(gen, i, [int(t) for t in p], sp, now)
            for i, (p, sp) in enumerate(zip(prompts, params, strict=True))
        ]
        self.queued += len(seqs)
        self.queued_by[tenant] = self.queued_by.get(tenant, 0) + len(seqs)
        self._inbox.put(("add", seqs))
        self._wake.set()
        return gen

    @property
    def depth(self) -> int:
        """Sequences waiting for their first token (the queue that max_queue bounds)."""
        return self.queued

    def _dequeued(self, tenant: str | None) -> None:
        # A sequence got its first token or left without one (event loop).
        self.queued -= 1
        self.queued_by[tenant] -= 1
        if not self.queued_by[tenant]:
            del self.queued_by[tenant]

    def _abort(self, gen: Generation, index: int) -> None:
        self._inbox.put(("abort", gen, index))
        self._wake.set()

    def _hand_out(self, items: list[tuple[Generation, int, TokenOutput | BaseException]]) -> None:
        # On the event loop: every token of one step to its request.
        for gen, index, item in items:
            if index not in gen.done:
                gen._put(index, item)

    # --- the engine thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before reading the inbox: a later submit sets it again
            out: list[tuple[Generation, int, TokenOutput | BaseException]] = []
            try:
                self._take_inbox(out)
                self._feed(out)
                if self.engine.has_work:
                    self._step(out)
                self.stats = self.engine.stats()
            except Exception as exc:  # a bug: fail what runs, keep serving
                log.exception("the %s engine failed a step", self.name)
                self._fail_all(exc, out)
            if out:
                self._send(out)
            if not self.engine.has_work and not self._stop.is_set():
                self._wake.wait(IDLE_WAIT_S)
        out = []
        self._shut(out)
        self._send(out)

    def _send(self, out: list) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(self._hand_out, out)

    def _take_inbox(self, out: list) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            if command[0] == "add":
                tenant = command[1][0].gen.tenant
                if tenant not in self._pending:
                    self._pending[tenant] = deque()
                    self._turns.append(tenant)
                self._pending[tenant].append(command[1])
            else:
                self._drop(command[1], command[2], out)

    def _feed(self, out: list) -> None:
        # Into the engine's waiting line, tenants in turn, while a step could admit them.
        room = max(1, self.engine.config.max_running)
        while self._turns and len(self.engine.scheduler.waiting) < room:
            tenant = self._turns.popleft()
            fifo = self._pending[tenant]
            seqs = fifo.popleft()
            if fifo:
                self._turns.append(tenant)
            else:
                del self._pending[tenant]
            if seqs:
                self._add(seqs, out)

    def _add(self, seqs: list[_Seq], out: list) -> None:
        # The first choice of each prompt is admitted now; the others wait for its first token
        # (module notes), unless the prompt has no full block to share.
        leaders: dict[tuple[int, ...], _Seq] = {}
        first = []
        for seq in seqs:
            leader = leaders.setdefault(tuple(seq.prompt), seq)
            if leader is seq or len(seq.prompt) <= self.engine.config.block_size:
                first.append(seq)
            else:
                self._held.setdefault(id(leader), []).append(seq)
        for seq in first:
            self._admit(seq, out)

    def _admit(self, seq: _Seq, out: list) -> None:
        try:
            seq.seq_id = self.engine.add_request(seq.prompt, seq.params)
        except MaaslabError as err:  # too long for the context, an unknown token...
            out.append((seq.gen, seq.index, err))
            self._release(seq, out)  # its siblings get the same answer
            return
        self._live[seq.seq_id] = seq

    def _release(self, leader: _Seq, out: list) -> None:
        for sibling in self._held.pop(id(leader), []):
            self._admit(sibling, out)

    def _drop(self, gen: Generation, index: int, out: list) -> None:
        # An abort: a running choice leaves the engine (its blocks are free for the next step),
        # a held one its queue; the siblings a leader held join now.
        for seq_id, seq in list(self._live.items()):
            if seq.gen is gen and seq.index == index:
                self.engine.abort(seq_id)
                del self._live[seq_id]
                self.aborted += 1
                self._release(seq, out)
        for key, siblings in list(self._held.items()):
            self._held[key] = [s for s in siblings if not (s.gen is gen and s.index == index)]
        for fifo in self._pending.values():  # not in the engine yet: it just leaves the line
            for seqs in fifo:
                seqs[:] = [s for s in seqs if not (s.gen is gen and s.index == index)]

    def _shut(self, out: list) -> None:
        # The thread's last act: everything still queued, held or running gets ShuttingDown.
        exc = ShuttingDown(f"model {self.name!r} is shutting down")
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                break
            if command[0] == "add":
                out.extend((s.gen, s.index, exc) for s in command[1])
        for fifo in self._pending.values():
            out.extend((s.gen, s.index, exc) for seqs in fifo for s in seqs)
        self._pending.clear()
        self._turns.clear()
        self._fail_all(exc, out)

    def _step(self, out: list) -> None:
        outputs = self.engine.step()
        now = time.perf_counter()
        for token in outputs:
            seq = self._live.get(token.seq_id)
            if seq is None:
                continue
            first = seq.last is None
            self._observe(
                "first_token" if first else "inter_token",
                now - (seq.submitted if first else seq.last),
            )
            seq.last = now
            out.append((seq.gen, seq.index, token))
            if first:
                self._release(seq, out)
            if token.finished:
                del self._live[token.seq_id]
                self._observe("end_to_end", now - seq.submitted)

    def _fail_all(self, exc: BaseException, out: list) -> None:
        for seq_id, seq in list(self._live.items()):
            # After a failed step the engine may be in any state; the answers must still go out.
            with contextlib.suppress(Exception):
                self.engine.abort(seq_id)
            out.append((seq.gen, seq.index, exc))
        self._live.clear()
        for siblings in self._held.values():
            out.extend((s.gen, s.index, exc) for s in siblings)
        self._held.clear()

    def _observe(self, kind: str, seconds: float) -> None:
        if self.on_latency is not None:
            self.on_latency(kind, seconds)
