"""The connection layer: deadlines on reading a request, and a cap on open connections.

uvicorn keeps an idle keep-alive connection for `timeout_keep_alive` seconds after an answer,
but waits without limit for a request that is slow to arrive: a client that sends its headers
one byte a second, a body that never comes, or a connection that never sends anything are all
held open, and thousands of them exhaust the server. This protocol (uvicorn's httptools one,
with two additions) bounds both:

- **read deadline**: from a connection's first moment, and from the first byte of each later
  request, the whole request (headers and body) must arrive within `read_timeout_s`. Past it
  the client gets 408 (in the route family's error shape) if no answer has begun, and the
  connection is closed. The clock stops while the server itself holds reading back (a request
  pipelined behind one still running), since then the wait is not the client's.
- **connection cap**: a request arriving on a connection beyond `max_connections` is answered
  503 with Retry-After and the connection is closed; the app never sees it.

Keep-alive is unchanged: an idle connection closes `timeout_keep_alive` seconds after its last
answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from maaslab.serve.errors import error_bytes, send_error

log = logging.getLogger("maaslab.serve")
RETRY_AFTER_S = 1  # what a refused connection is told to wait


def raw_response(status: int, path: str, message: str, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 refusal that closes the connection, written below the app."""
    phrases = {408: "Request Timeout", 503: "Service Unavailable"}
    body, raw = error_bytes(path, status, message, {**headers, "connection": "close"})
    lines = [f"HTTP/1.1 {status} {phrases[status]}".encode()]
    lines += [name + b": " + value for name, value in raw]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline and a connection cap (see above)."""

    read_timeout_s: float = 10.0  # set per server by `protocol_for`
    max_connections: int = 1000

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading = False  # a request has begun and is not complete yet

    # --- the read deadline ---------------------------------------------------------------------

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_deadline)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection; it must start a request within the read deadline."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """The first byte of a request: its clock starts (unless one already runs)."""
        super().on_message_begin()
        self._reading = True
        self._arm()

    def on_message_complete(self) -> None:
        """The whole request has arrived: no deadline until the next one begins."""
        self._reading = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """After an answer, uvicorn's keep-alive timer watches an idle connection."""
        super().on_response_complete()
        if not self._reading:
            self._disarm()

    def _read_deadline(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the server holds reading back: not the client's delay
            self._arm()
            return
        cycle = self.cycle
        if not self._reading and (cycle is None or cycle.response_complete):
            self.transport.close()  # a connection that never started a request
            return
        log.info("closing a connection whose request did not arrive within the read deadline")
        if cycle is None or not cycle.response_started:
            path = str(self.scope.get("path", "")) if self.scope else ""
            message = (
                f"the request did not arrive within {self.read_timeout_s:g} s; "
                "send the headers and the body without pausing"
            )
            self.transport.write(raw_response(408, path, message, {}))
        if cycle is not None:  # the app, if it runs, sees a disconnect and sends nothing more
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # --- the connection cap --------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        """Route the request, or refuse it when the server holds too many connections."""
        if len(self.connections) <= self.max_connections:
            super().on_headers_complete()
            return
        log.warning("refused a request: %d connections open", len(self.connections))
        app, self.app = self.app, self._refuse  # uvicorn runs this request cycle with _refuse
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        message = (
            f"the server has {self.max_connections} connections open, its limit: "
            f"retry in {RETRY_AFTER_S} s"
        )
        headers = {"retry-after": str(RETRY_AFTER_S), "connection": "close"}
        await send_error(send, 503, message, headers, path=scope.get("path", ""))


def protocol_for(read_timeout_s: float, max_connections: int) -> type[BoundedHttpProtocol]:
    """A protocol class for uvicorn's `http=` with this server's deadline and cap."""
    return type(
        "BoundedHttpProtocol",
        (BoundedHttpProtocol,),
        {"read_timeout_s": read_timeout_s, "max_connections": max_connections},
    )
