"""The door: a server with tenants answers 401 and 429 in the connection layer, before the app.

Each test feeds raw HTTP/1.1 bytes to the connection layer's protocol over a recording
transport, once with the door (the protocol the server's runner builds for the app) and once
without it (the app's tenant middleware refuses): the bytes written, the usage metered and the
Prometheus counts must be the same, and the app must never see a refused request.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from maaslab.serve.access import Tenancy
from maaslab.serve.app import create_app
from maaslab.serve.config import ServeConfig
from maaslab.serve.connections import DOOR_ENV, door_for, protocol_for
from maaslab.serve.runner import uvicorn_server
from maaslab.serve.tenants import KeyTable, Limits, Tenant, hash_key

KEYS = {  # name -> (role, key, limits)
    "teacher": ("admin", "teacher-key-0123456789abcdef", Limits()),
    "free": ("user", "free-key-0123456789abcdef", Limits()),
    "limited": ("user", "limited-key-0123456789abcdef", Limits(requests_per_s=0.01, burst=1)),
}
SERVER_HEADERS = [(b"date", b"Mon, 07 Dec 2026 09:00:00 GMT"), (b"server", b"uvicorn")]
COUNTERS = tuple(
    f"maaslab_{name}_total{{"
    for name in ("tenant_requests", "tenant_refused", "requests", "errors", "rejected")
)
BODY = b'{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": []}]}'


def request(
    path: str = "/v2/models/digits/infer",
    key: str | None = "limited",
    *,
    method: str = "POST",
    version: str = "1.1",
    headers: tuple[bytes, ...] = (),
    body: bytes = BODY,
) -> bytes:
    """One raw request; `key` names a tenant of KEYS (None: no Authorization header)."""
    lines = [f"{method} {path} HTTP/{version}".encode(), b"Host: t", *headers]
    if key is not None:
        lines.append(f"Authorization: Bearer {KEYS[key][1]}".encode())
    if method == "POST":
        lines += [b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body if method == "POST" else b"")


class Transport:
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        self.written, self.closed = b"", False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Server:
    """One app (no models) behind the connection layer, with or without the door."""

    def __init__(self, door: bool) -> None:
        table = KeyTable(
            Tenant(n, role, hash_key(key), lim) for n, (role, key, lim) in KEYS.items()
        )
        self.tenancy = Tenancy(table)
        config = ServeConfig(models=("digits",))
        app = create_app(config, models={}, tenancy=self.tenancy)
        self.seen: list[str] = []  # the paths of the requests the app was called with

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            self.seen.append(scope["path"])
            await app(scope, receive, send)

        self.loop = asyncio.new_event_loop()
        self.config = uvicorn.Config(counted, lifespan="off", log_level="warning")
        self.config.load()
        self.state = ServerState()
        self.state.default_headers = SERVER_HEADERS
        # With the door: the protocol the server's runner gives uvicorn for this app.
        http = uvicorn_server(app, config).config.http
        self.protocol = http if door else protocol_for(10.0, 1000, None)
        assert self.protocol.tenancy is (self.tenancy if door else None)

    def connect(self) -> tuple[Any, Transport]:
        """A new connection: its protocol and transport."""
        conn = self.protocol(self.config, self.state, {}, _loop=self.loop)
        transport = Transport()
        conn.connection_made(transport)
        return conn, transport

    def feed(self, conn: Any, *chunks: bytes) -> None:
        """Receive `chunks` one after the other, running the app's tasks after each."""
        for chunk in chunks:
            conn.data_received(chunk)
            while self.state.tasks:
                self.loop.run_until_complete(asyncio.gather(*self.state.tasks))

    def exchange(self, *chunks: bytes) -> bytes:
        """What one connection answers to `chunks`."""
        conn, transport = self.connect()
        self.feed(conn, *chunks)
        conn.connection_lost(None)
        return transport.written

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def servers():
    door, app_way = Server(door=True), Server(door=False)
    yield door, app_way
    door.close()
    app_way.close()


def statuses(written: bytes) -> list[int]:
    """The status of every answer in a connection's bytes, in order."""
    return [int(part[:3]) for part in written.split(b"HTTP/1.1 ")[1:]]


def test_a_limited_key_is_refused_before_the_app_in_the_apps_own_bytes(servers):
    door, app_way = servers
    sent = [request(), request(), request("/v1/models", method="GET")]  # burst 1: then 429s
    written = {s: s.exchange(*sent) for s in servers}
    assert statuses(written[door]) == [404, 429, 429]  # admitted (no such model), refused
    assert written[door] == written[app_way]
    assert b"retry-after: 100\r\n" in written[door]
    assert b'"type": "rate_limit_error"' in written[door]  # the OpenAI route's shape
    assert door.seen == ["/v2/models/digits/infer"]  # the admitted one only
    assert len(app_way.seen) == 3
    usage = {s: s.tenancy.usage.snapshot("limited") for s in servers}
    assert (
        usage[door]["refused"]
        == usage[app_way]["refused"]
        == {
            "daily": 0,
            "rate": 2,
            "tokens": 0,
        }
    )
    assert usage[door]["requests"] == usage[app_way]["requests"] == 1
    metrics = request("/metrics", "teacher", method="GET")
    scraped = {s: s.exchange(metrics).decode() for s in servers}
    counted = {
        s: sorted(line for line in text.splitlines() if line.startswith(COUNTERS))
        for s, text in scraped.items()
    }
    assert any('{reason="rate",tenant="limited"} 2.0' in line for line in counted[door])
    assert counted[door] == counted[app_way]


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (b"Authorization: Bearer",),
        (b"Authorization: Basic dGVhY2hlcjprZXk=",),
        (b"Authorization: Bearer not-a-key-of-anyone-here",),
        (b"Authorization: bearer  " + KEYS["free"][1].encode() + b"x",),
        # two headers: the last one counts, at the door as in the app
        (b"Authorization: Bearer " + KEYS["free"][1].encode(), b"Authorization: Bearer nope"),
    ],
)
def test_a_missing_or_unknown_key_gets_the_apps_401_at_the_door(servers, headers):
    door, app_way = servers
    sent = request(key=None, headers=headers)
    written = {s: s.exchange(sent, sent) for s in servers}
    assert statuses(written[door]) == [401, 401]
    assert b"www-authenticate: Bearer\r\n" in written[door]
    assert written[door] == written[app_way]
    assert door.seen == []


def test_a_key_that_is_let_in_reaches_the_app_which_does_not_check_it_again(servers, monkeypatch):
    door, app_way = servers
    compared: list[str] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(b) or real(a, b))
    sent = [request("/usage", "free", method="GET")] * 5 + [
        request("/v2/health/live", None, method="GET")
    ]
    written = door.exchange(*sent)
    assert statuses(written) == [200] * 6
    assert door.seen == ["/usage"] * 5 + ["/v2/health/live"]  # the probe needs no key
    # Every key's hash compared once per request (no early exit), and once only: the app
    # takes the tenant the door let in.
    assert compared == [t.key_sha256 for t in door.tenancy.table.tenants] * 5
    assert door.tenancy.usage.snapshot("free")["requests"] == 5
    assert statuses(app_way.exchange(*sent)) == [200] * 6


def test_after_a_refusal_the_body_is_dropped_and_the_connection_serves_the_next_request(servers):
    door, _ = servers
    door.exchange(request())  # the one request of the burst
    conn, transport = door.connect()
    refused = request()
    head, body = refused.split(b"\r\n\r\n")
    # The body arrives after the answer, in two pieces, the second with a pipelined request.
    door.feed(
        conn, head + b"\r\n\r\n", body[:10], body[10:] + request("/usage", "free", method="GET")
    )
    assert statuses(transport.written) == [429, 200]
    assert not transport.closed and door.seen[-1] == "/usage"
    assert conn.timeout_keep_alive_task is not None  # idle again: keep-alive's clock runs
    # A refusal pipelined behind a request still running is answered in its turn (the app's way).
    conn2, transport2 = door.connect()
    door.feed(conn2, request("/usage", "free", method="GET") + refused)
    assert statuses(transport2.written) == [200, 429]
    conn.connection_lost(None)
    conn2.connection_lost(None)


def test_an_http_10_refusal_closes_the_connection_like_the_app(servers):
    door, app_way = servers
    for s in servers:
        s.exchange(request())  # the burst
    written = {}
    for s in servers:
        conn, transport = s.connect()
        s.feed(conn, request(version="1.0"))
        assert transport.closed
        written[s] = transport.written
    assert statuses(written[door]) == [429]
    assert b"connection: close\r\n" in written[door]
    assert written[door] == written[app_way]


def test_the_door_can_be_switched_off_to_measure_what_it_saves():
    tenancy = Tenancy(KeyTable([Tenant("t", "user", hash_key("k" * 20))]))
    assert door_for(tenancy, {}) is tenancy
    assert door_for(tenancy, {DOOR_ENV: "1"}) is tenancy
    assert door_for(tenancy, {DOOR_ENV: "0"}) is None
    assert door_for(None, {}) is None


def test_a_refused_request_whose_body_stops_coming_is_closed_at_the_read_deadline(
    servers, monkeypatch
):
    door, _ = servers
    door.exchange(request())  # the burst
    monkeypatch.setattr(door.protocol, "read_timeout_s", 0.05)
    conn, transport = door.connect()
    head = request().split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    door.feed(conn, head + b'{"inputs": [')
    assert statuses(transport.written) == [429] and not transport.closed
    door.loop.run_until_complete(asyncio.sleep(0.3))
    assert transport.closed
    assert statuses(transport.written) == [429]  # answered once: no 408 after the 429
