"""The connection layer: deadlines on reading a request, a cap on open connections, and the
tenants' keys and limits checked at the door.

uvicorn keeps an idle keep-alive connection for `timeout_keep_alive` seconds after an answer,
but waits without limit for a request that is slow to arrive: a client that sends its headers
one byte a second, a body that never comes, or a connection that never sends anything are all
held open, and thousands of them exhaust the server. This protocol (uvicorn's httptools one,
with three additions) bounds both, and refuses a tenant's request before the app:

- **read deadline**: from a connection's first moment, and from the first byte of each later
  request, the whole request (headers and body) must arrive within `read_timeout_s`. Past it
  the client gets 408 (in the route family's error shape) if no answer has begun, and the
  connection is closed. The clock stops while the server itself holds reading back (a request
  pipelined behind one still running), since then the wait is not the client's.
- **connection cap**: a request arriving on a connection beyond `max_connections` is answered
  503 with Retry-After and the connection is closed; the app never sees it.
- **the door** (a server with tenants): as soon as a request's headers are in, its key is
  checked and its tenant's limits applied (`Tenancy.gate`, maaslab.serve.access). A missing or
  unknown key gets its 401 and a tenant past a limit its 429 with Retry-After from here, in
  the same bytes the app would send, counted in the tenant's usage as the app would count it;
  the body that follows is read and dropped, and the connection stays open for the next
  request. Neither the app nor a task on the event loop is made for a refused request: under
  a flood, the loop every tenant shares spends on each refusal only what reading, parsing
  and answering it costs (bench_service P16: 0.033 ms of CPU per 429 with a 32-row body,
  0.056 ms through the app). A request let in carries its tenant to the app, which does not check
  the key again. Health probes, HEAD, `Expect: 100-continue`, upgrades and a request
  pipelined behind one still running take the app's way, which answers them the same.
  `MAASLAB_SERVE_DOOR=0` in the server's environment leaves every refusal to the app, as
  before the door existed: for measuring what the door saves (bench_service P16, P17).

Keep-alive is unchanged: an idle connection closes `timeout_keep_alive` seconds after its last
answer, or after its request's body is in when the answer came first (a refusal).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from maaslab.serve.access import ADMITTED, Denied, Tenancy
from maaslab.serve.errors import error_bytes, send_error
from maaslab.serve.security import OPEN_PATHS

log = logging.getLogger("maaslab.serve")
RETRY_AFTER_S = 1  # what a refused connection is told to wait
DOOR_ENV = "MAASLAB_SERVE_DOOR"  # "0": no door, the app refuses (to measure the door's worth)


def raw_response(
    status: int,
    path: str,
    message: str,
    headers: dict[str, str],
    *,
    close: bool = True,
    first: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """A whole HTTP/1.1 refusal written below the app, in the bytes uvicorn writes for the
    app's: `first` (the server's own headers: date, server) before the refusal's, and
    `connection: close` when `close`."""
    body, raw = error_bytes(
        path, status, message, {**headers, "connection": "close"} if close else headers
    )
    lines = [STATUS_LINE[status]]
    lines += [name + b": " + value + b"\r\n" for name, value in (*first, *raw)]
    return b"".join(lines) + b"\r\n" + body


def request_path(url: bytes, root_path: str = "") -> str:
    """The path of a request target as uvicorn puts it in the ASGI scope (percent-decoded)."""
    path = httptools.parse_url(url).path.decode("ascii")
    return root_path + (urllib.parse.unquote(path) if "%" in path else path)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline and a connection cap (see above)."""

    read_timeout_s: float = 10.0  # set per server by `protocol_for`
    max_connections: int = 1000
    tenancy: Tenancy | None = None  # the server's tenants, checked at the door (None: no keys)

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
        """The first byte of a request: its clock starts (unless one already runs), and the
        connection is no longer idle."""
        super().on_message_begin()
        self._unset_keepalive_if_required()  # armed below, maybe in the same read
        self._reading = True
        self._arm()

    def on_message_complete(self) -> None:
        """The whole request has arrived: no deadline until the next one begins; if it was
        answered already (a refusal), the connection is idle from now."""
        self._reading = False
        self._disarm()
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.transport.is_closing():
            # uvicorn arms keep-alive when an answer ends, and disarms it on the next bytes
            # read: an answer sent before its body arrived would leave the connection unwatched.
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

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
        """Refuse the request when the server holds too many connections, or at the door
        (401 / 429); else route it."""
        if len(self.connections) > self.max_connections:
            log.warning("refused a request: %d connections open", len(self.connections))
            app, self.app = self.app, self._refuse  # uvicorn runs this request cycle with _refuse
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        if self.tenancy is None or not self._refused_at_the_door():
            super().on_headers_complete()

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        message = (
            f"the server has {self.max_connections} connections open, its limit: "
            f"retry in {RETRY_AFTER_S} s"
        )
        headers = {"retry-after": str(RETRY_AFTER_S), "connection": "close"}
        await send_error(send, 503, message, headers, path=scope.get("path", ""))

    # --- the door ------------------------------------------------------------------------------

    def _refused_at_the_door(self) -> bool:
        """Gate the request whose headers are in: True when it was refused (and answered)."""
        cycle = self.cycle
        if (
            (cycle is not None and not cycle.response_complete)  # its answer must wait its turn
            or self.expect_100_continue
            or self.flow.write_paused  # a client not reading its answers: the app's way waits
            or self.parser.should_upgrade()
            or self.parser.get_method() == b"HEAD"  # its answer has no body
        ):
            return False
        try:
            path = request_path(self.url, self.root_path)
        except (httptools.HttpParserError, UnicodeDecodeError):
            return False  # uvicorn's own parsing of the target answers it
        if path in OPEN_PATHS:
            return False
        authorization = b""
        for name, value in self.headers:  # the last one, as the app reads it
            if name == b"authorization":
                authorization = value
        assert self.tenancy is not None
        verdict = self.tenancy.gate(authorization.decode("latin-1"))
        if not isinstance(verdict, Denied):
            self.scope["state"][ADMITTED] = verdict
            return False
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.transport.write(
            raw_response(
                verdict.status,
                path,
                verdict.message,
                verdict.headers,
                close=not keep_alive,
                first=self.server_state.default_headers,
            )
        )
        # An answered cycle stands for the request, so its body is dropped as it arrives, a
        # shutdown closes the connection, and the read deadline only closes it.
        self.cycle = RequestResponseCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=lambda: None,
        )
        self.cycle.response_started = self.cycle.response_complete = True
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        return True  # keep-alive's clock starts once the body is in (on_message_complete)


def door_for(tenancy: Tenancy | None, environ: Mapping[str, str]) -> Tenancy | None:
    """The tenants to check at the door: the server's, unless DOOR_ENV is "0"."""
    return None if environ.get(DOOR_ENV, "1").strip() == "0" else tenancy


def protocol_for(
    read_timeout_s: float, max_connections: int, tenancy: Tenancy | None = None
) -> type[BoundedHttpProtocol]:
    """A protocol class for uvicorn's `http=` with this server's deadline, cap and tenants."""
    return type(
        "BoundedHttpProtocol",
        (BoundedHttpProtocol,),
        {
            "read_timeout_s": read_timeout_s,
            "max_connections": max_connections,
            "tenancy": tenancy,
        },
    )
