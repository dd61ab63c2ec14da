"""Dynamic batching: a bounded queue per model and a worker that runs requests together.

Requests wait in an asyncio queue; a worker takes the first one, waits up to `max_delay_s`
for more until `max_batch_size` rows are gathered, runs them as one call in a worker thread (so
the event loop keeps answering), then hands each request its own slice of the answer. With
`instances` > 1 (Triton's instance count) that many workers share the queue: while one runs
its batch on one core, the next gathers and runs on another.

The server hands every Batcher one shared pool of compute threads (`executor`), the same
threads the models were loaded on. Each thread that runs torch on a CPU gets its own OpenMP
team; once a process has more team threads than cores, OpenMP stops spinning between parallel
regions and every region pays a wake-up. Measured here (MiniLM, 2 cores, 2 torch threads):
loaded on the main thread and run on another, 15.5 ms per review alone and 3.6 ms in a batch
of 16; loaded and run on one thread, 8.6 and 2.7 ms. A full
queue refuses at once (the caller answers 503 with Retry-After) instead of letting latency grow
without bound; a request that waits too long is given up (504) and skipped if not yet started.

Fair sharing between tenants (the keys of maaslab.serve.tenants): requests wait in one FIFO per
tenant, each bounded by `max_queue`, and a batch is filled round robin over the tenants that
have requests waiting, one request each per turn. A tenant that floods the server fills only
its own queue (and gets 503s for its excess); another tenant's request joins the next batch
whatever the flood's depth. Without tenants everything is one FIFO, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

BatchFn = Callable[[list[Any]], Sequence[Any]]  # payloads -> one result (or exception) each
BatchHook = Callable[[int, int, float], None]  # (rows, requests, seconds) after every batch
# (tenant, rows, seconds) for each request of a batch: its share of the batch's compute time
ShareHook = Callable[[Hashable, int, float], None]


class Overloaded(Exception):
    """The model's queue is full: try again after `retry_after` seconds."""

    def __init__(self, model: str, retry_after: int = 1, tenant: Hashable = None) -> None:
        whose = "queue full" if tenant is None else f"{tenant}'s queue full"
        super().__init__(f"model {model!r} is overloaded ({whose}); retry after {retry_after} s")
        self.retry_after = retry_after


class RequestTimeout(Exception):
    """A request waited longer than the server's per-request timeout."""


class ShuttingDown(Exception):
    """The batcher is closed and takes no new work."""


@dataclass
class _Item:
    payload: Any
    rows: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    abandoned: bool = False  # the caller gave up (timeout): do not spend compute on it
    tenant: Hashable = None  # whose request (None: no tenants)


class FairQueue:
    """Waiting requests, one FIFO per tenant, taken round robin; each FIFO holds `per_tenant`
    at most. Used from one event loop only. A closed queue hands out None once it is empty."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._fifos: dict[Hashable, deque[_Item]] = {}
        self._turns: deque[Hashable] = deque()  # tenants with requests waiting, next first
        self._size = 0
        self._changed = asyncio.Event()
        self.closed = False

    def qsize(self, tenant: Hashable = ...) -> int:
        """Requests waiting: all of them, or one tenant's."""
        if tenant is ...:
            return self._size
        fifo = self._fifos.get(tenant)
        return len(fifo) if fifo else 0

    def put(self, item: _Item) -> None:
        """Queue at the back of its tenant's FIFO; asyncio.QueueFull when that one is full."""
        fifo = self._fifos.get(item.tenant)
        if fifo is None:
            fifo = self._fifos[item.tenant] = deque()
            self._turns.append(item.tenant)
        elif len(fifo) >= self.per_tenant:
            raise asyncio.QueueFull
        fifo.append(item)
        self._size += 1
        self._changed.set()

    def put_back(self, item: _Item) -> None:
        """Return a request taken too early: front of its FIFO, its tenant's turn next."""
        fifo = self._fifos.get(item.tenant)
        if fifo is None:
            fifo = self._fifos[item.tenant] = deque()
        elif item.tenant in self._turns:
            self._turns.remove(item.tenant)
        self._turns.appendleft(item.tenant)
        fifo.appendleft(item)
        self._size += 1
        self._changed.set()

    def get_nowait(self) -> _Item | None:
        """The next tenant's oldest request; None when closed and empty; QueueEmpty else."""
        if not self._size:
            if self.closed:
                return None
            raise asyncio.QueueEmpty
        tenant = self._turns.popleft()
        fifo = self._fifos[tenant]
        item = fifo.popleft()
        if fifo:
            self._turns.append(tenant)  # back of the line: the others go first
        else:
            del self._fifos[tenant]
        self._size -= 1
        return item

    async def get(self) -> _Item | None:
        """Wait for a request (None once closed and empty)."""
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                self._changed.clear()
                await self._changed.wait()

    def close(self) -> None:
        """Take no more; waiters get None once what is queued has been taken."""
        self.closed = True
        self._changed.set()


class ModelQueue(Protocol):
    """What a ServedModel's routes call to run a request: a Batcher here, or a queue that
    forwards each request to the model's replicas elsewhere (maaslab.scale.ray_serve)."""

    on_batch: BatchHook | None  # metrics after every batch run here (None: not watched)
    on_share: ShareHook | None  # metering of each tenant's share of a batch run here

    @property
    def depth(self) -> int:
        """Requests waiting (for the metrics' queue gauge)."""
        ...

    def full(self, tenant: Hashable = None) -> bool:
        """True when one more request of `tenant` would be refused at once."""
        ...

    def start(self) -> None:
        """Start on the running event loop (the app's startup)."""
        ...

    async def submit(
        self, payload: Any, rows: int = 1, timeout: float | None = None, tenant: Hashable = None
    ) -> Any:
        """Run one request and return its result (Overloaded, RequestTimeout, ShuttingDown)."""
        ...

    async def close(self) -> None:
        """Finish what was accepted and stop (the app's shutdown)."""
        ...


class Batcher:
    """Queue + worker for one model; `submit` from request handlers, `close` at shutdown."""

    def __init__(
        self,
        name: str,
        run: BatchFn,
        *,
        max_batch_size: int = 32,
        max_delay_s: float = 0.005,
        max_queue: int = 256,
        instances: int = 1,
        on_batch: BatchHook | None = None,
        executor: ThreadPoolExecutor | None = None,
        on_share: ShareHook | None = None,
    ) -> None:
        if instances < 1:
            raise ValueError(f"instances must be at least 1, got {instances}")
        self.name, self.run, self.instances = name, run, instances
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_s
        self.max_queue = max_queue
        self.on_batch, self.on_share = on_batch, on_share
        self._queue: FairQueue | None = None
        self._workers: list[asyncio.Task] = []
        # One thread per instance. One instance lets torch spread each forward pass over the
        # cores; several (each with fewer torch threads) keep the cores busy while another
        # instance waits for its batch to fill or hands out answers. A shared executor is
        # the caller's to shut down; an own one is shut down by close().
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix=f"batch-{name}"
        )
        self._closed = False
        self.in_flight = 0  # requests taken off the queue and not yet answered

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (not counting the batch being run)."""
        return self._queue.qsize() if self._queue is not None else 0

    def full(self, tenant: Hashable = None) -> bool:
        """True when one more request of `tenant` would be refused."""
        return self._queue is not None and self._queue.qsize(tenant) >= self.max_queue

    def start(self) -> None:
        """Create the queue and the workers on the running event loop."""
        if not self._workers:
            self._queue = FairQueue(self.max_queue)
            loop = asyncio.get_running_loop()
            self._workers = [loop.create_task(self._work()) for _ in range(self.instances)]

    async def submit(
        self, payload: Any, rows: int = 1, timeout: float | None = None, tenant: Hashable = None
    ) -> Any:
        """Queue one request of `tenant` and wait for its result; Overloaded at once when that
        tenant's queue is full."""
        if self._closed:
            raise ShuttingDown(f"model {self.name!r} is shutting down")
        self.start()
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        item = _Item(payload, max(1, rows), loop.create_future(), tenant=tenant)
        try:
            self._queue.put(item)
        except asyncio.QueueFull:
            raise Overloaded(self.name, tenant=tenant) from None
        try:
            # shield: a timeout must not cancel the future the worker will still resolve.
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except TimeoutError:
            item.abandoned = True
            raise RequestTimeout(
                f"model {self.name!r} did not answer within {timeout:g} s; try again later"
            ) from None

    async def close(self) -> None:
        """Stop taking work, finish everything already queued, then stop the workers."""
        self._closed = True
        if self._workers and self._queue is not None:
            self._queue.close()  # each worker stops once the queue is empty
            for worker in self._workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            self._workers = []
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    async def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        # Gather more requests until the batch is full or the first one has waited long enough.
        assert self._queue is not None
        batch, rows, stop = [first], first.rows, False
        deadline = asyncio.get_running_loop().time() + self.max_delay_s
        while rows < self.max_batch_size:
            try:
                item = self._queue.get_nowait()  # the next tenant's turn
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item is None:
                stop = True
                break
            if item.abandoned:
                continue
            if rows + item.rows > self.max_batch_size:
                # Too big to join: it starts the next batch (put back at the front).
                self._queue.put_back(item)
                break
            batch.append(item)
            rows += item.rows
        return batch, stop

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if first.abandoned:
                continue
            batch, stop = await self._collect(first)
            live = [it for it in batch if not it.abandoned and not it.future.done()]
            if live:
                self.in_flight += len(live)
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(
                        self._executor, self.run, [it.payload for it in live]
                    )
                except Exception as err:  # the whole call failed: every request learns why
                    results = [err] * len(live)
                finally:
                    self.in_flight -= len(live)
                if len(results) != len(live):  # a broken batch function must not kill the worker
                    results = [
                        RuntimeError(
                            f"{self.name}: batch answered {len(results)} of {len(live)} requests"
                        )
                    ] * len(live)
                seconds = time.perf_counter() - started
                for it, result in zip(live, results, strict=True):
                    if it.future.done():
                        continue
                    if isinstance(result, BaseException):
                        it.future.set_exception(result)
                    else:
                        it.future.set_result(result)
                rows = sum(it.rows for it in live)
                if self.on_batch is not None:
                    self.on_batch(rows, len(live), seconds)
                if self.on_share is not None:
                    for it in live:
                        self.on_share(it.tenant, it.rows, seconds * it.rows / rows)
            if stop:
                return
