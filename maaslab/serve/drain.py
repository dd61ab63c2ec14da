"""Drain: what the server owes the requests it accepted when it is told to stop.

On SIGTERM (or Ctrl+C, or a test's `should_exit`) the server stops accepting at once: the
listening socket closes, idle connections close, `/v2/health/ready` answers 503, the gRPC
server (maaslab.serve.grpc_api) takes no new calls. Accepted work
then has until the **drain deadline** (`--drain-timeout-s`; by default the request timeout + 5 s)
to finish:

- a request without a stream is always answered by then: the deadline is never shorter than the
  request timeout, after which such a request gets 504;
- a stream still running at the deadline is ended with an error event, `data: {"error":
  {"message": ..., "type": "server_shutdown", "code": 503}}`, and no `data: [DONE]`, so the
  client knows its text is incomplete (the openai client raises an APIError).

The process then exits 0 if everything accepted was answered in full, or EXIT_CUT (75, "try
again later" in sysexits.h) if the deadline cut anything; its last log line says what.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

EXIT_CUT = 75  # sysexits.h EX_TEMPFAIL: the work that was cut may be sent again
DRAIN_GRACE_S = 5.0  # the default deadline: the request timeout plus this


class Drain:
    """One server's shutdown clock: when it began, its deadline and what it had to cut."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.began: float | None = None  # time.monotonic() when the shutdown began
        self.cut = 0  # streams ended with an error event at the deadline
        self.cancelled = 0  # requests the web server had to cancel (should stay 0)
        self.open = 0  # requests in flight now
        self._lock = threading.Lock()  # streams run on worker threads
        self._on_begin: list[Callable[[], None]] = []  # e.g. the gRPC server's stop

    @property
    def draining(self) -> bool:
        """True once the shutdown has begun."""
        return self.began is not None

    def begin(self) -> None:
        """Start the clock and call the on_begin hooks (again: no effect)."""
        if self.began is None:
            self.began = time.monotonic()
            for hook in self._on_begin:
                hook()

    def on_begin(self, hook: Callable[[], None]) -> None:
        """Call `hook` when the shutdown begins (at once if it has)."""
        self._on_begin.append(hook)
        if self.began is not None:
            hook()

    def remaining(self) -> float:
        """Seconds left until the deadline (all of it before the shutdown begins)."""
        if self.began is None:
            return self.deadline_s
        return max(0.0, self.deadline_s - (time.monotonic() - self.began))

    def expired(self) -> bool:
        """True once the shutdown began more than the deadline ago."""
        return self.began is not None and time.monotonic() - self.began > self.deadline_s

    def record_cut(self) -> None:
        """Count one stream ended at the deadline."""
        with self._lock:
            self.cut += 1

    def cut_message(self) -> str:
        """What a cut stream's error event says."""
        return (
            f"the server is shutting down and its drain deadline of {self.deadline_s:g} s "
            "has passed: this answer is incomplete; send the request again later"
        )

    @property
    def exit_code(self) -> int:
        """0 when every accepted request was answered in full, else EXIT_CUT."""
        return EXIT_CUT if self.cut or self.cancelled else 0

    def summary(self) -> str:
        """The shutdown in one line, for the log."""
        if not self.cut and not self.cancelled:
            return "every accepted request was answered"
        return (
            f"the {self.deadline_s:g} s drain deadline cut {self.cut} stream(s) and "
            f"{self.cancelled} other request(s); exit status {EXIT_CUT}"
        )


class DrainMiddleware:
    """Count requests in flight, and those the web server cancels when a shutdown runs late."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app, self.drain = app, drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: run the app, counting it in `drain`."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.drain.open += 1
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if self.drain.draining:  # uvicorn cancels what outlives its shutdown timeout
                self.drain.cancelled += 1
            raise
        finally:
            self.drain.open -= 1
