"""The request-parsing layer: every request body passes here before any route touches it.

What the routes behind it may count on (the HTTP routes today; gRPC and new routes use the same
functions):

- the body is at most `max_body_bytes`: by its Content-Length, while a chunked body streams in,
  and again after gzip or deflate decompression (a small compressed body can inflate without
  bound), and it is handed on already decompressed;
- its JSON (the whole body, or the JSON header before Triton's binary tensor data) is UTF-8,
  nests at most MAX_DEPTH arrays and objects, holds no integer literal of more than
  MAX_INT_DIGITS digits, no number beyond a 64-bit float (1e400), no NaN or Infinity, and no
  string with a lone UTF-16 surrogate (`"\\ud800"`, which no UTF-8 text can hold).

Each refusal is a 4xx in the error shape of the route family (OpenAI's under /v1, `{"error":
"..."}` elsewhere), sent before routing. A body that takes too long to arrive is the
connection layer's business (maaslab.serve.connections: 408, then the connection is closed).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maaslab.errors import MaaslabError
from maaslab.serve.errors import send_error
from maaslab.serve.tensors import JSON_NUMBERS

# Nesting a request may use. A tensor sent as nested rows [N, C, H, W] needs 5 levels, a chat
# with content parts 5; 64 leaves room for any honest client and keeps every recursive
# consumer (pydantic, FastAPI's error reports, our own code) far from Python's stack limit.
MAX_DEPTH = 64
# 2**64 has 20 digits: longer integer literals fit no tensor type and no field. Python would
# need quadratic time to read a 100,000-digit one, and refuses beyond 4,300 digits anyway.
MAX_INT_DIGITS = 20
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
BINARY_HEADER = "inference-header-content-length"  # Triton's binary tensor data extension
STATE_KEY = "maaslab.json"  # where the checked JSON waits in the request's state

# A JSON string (escapes included) or a bracket: strings are skipped whole when counting depth.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class BadBody(MaaslabError):
    """A request body the server will not parse: answered with 400 and the reason."""

    status = 400


class BodyTooLarge(MaaslabError):
    """A request body (after decompression) over the server's size limit: answered with 413."""

    status = 413


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON text whose arrays and objects nest more than `limit` deep."""
    if text.count("[") + text.count("{") <= limit:
        return  # cannot nest deeper than it has brackets
    depth = 0
    for match in _TOKENS.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                raise BadBody(
                    f"the JSON nests more than {limit} levels deep: send flat data "
                    "(a tensor's data may be one flat list, as the protocol says)"
                )
        elif char in "]}":
            depth -= 1


def _integer(literal: str) -> int:
    digits = len(literal) - literal.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise BadBody(
            f"a {digits}-digit integer is too large: numbers must fit in 64 bits "
            f"(at most {MAX_INT_DIGITS} digits)"
        )
    return int(literal)


def _number(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        shown = literal if len(literal) <= 24 else literal[:20] + "..."
        raise BadBody(f"the number {shown} is too large for a 64-bit float")
    return value


def _constant(name: str) -> float:
    raise BadBody(f"{name} is not a JSON number: send finite numbers only")


def _check_strings(value: Any) -> None:
    # Iterative walk (the depth is bounded already, but a wide body has many items).
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: list[str] = [item]
        elif isinstance(item, list):
            stack.extend(item)
            continue
        elif isinstance(item, dict):
            texts = list(item)
            stack.extend(item.values())
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                bad = ord(text[err.start])
                raise BadBody(
                    f"a string holds a lone UTF-16 surrogate (\\u{bad:04x}), which is not "
                    "text: escape a character outside the BMP as a surrogate pair, or send UTF-8"
                ) from None


_SMALL = 1e20  # a number this large or larger is checked by the careful parse (MAX_INT_DIGITS)


def _plain_numbers(value: Any) -> bool:
    """True when every number in `value` (parsed JSON) is finite and below 1e20 in size, so
    the careful parse (one Python call per number) would give the very same value. A list of
    numbers only, a tensor's data, is checked by C-level passes instead of item by item."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            if set(map(type, item)) <= JSON_NUMBERS:
                if item and not max(map(abs, item)) < _SMALL:  # inf (or nan) fails too
                    return False
            else:
                stack.extend(item)
        elif type(item) in JSON_NUMBERS and not abs(item) < _SMALL:
            return False
    return True


def _careful_loads(text: str, what: str) -> Any:
    try:
        return json.loads(text, parse_int=_integer, parse_float=_number, parse_constant=_constant)
    except json.JSONDecodeError as err:
        raise BadBody(f"{what} is not valid JSON: {err}") from None
    except RecursionError:  # unreachable after check_depth; a guard, not a path
        raise BadBody(f"{what} nests too deeply") from None


def loads(raw: bytes | str, what: str = "the request body") -> Any:
    """Parse JSON the way every route needs it: bounded, finite and valid Unicode (else BadBody).

    Parameters
    ----------
    raw : the JSON, as bytes (UTF-8) or text.
    what : how the message names it ("the request body", "the JSON header").
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError as err:
        raise BadBody(f"{what} is not UTF-8 text (byte {err.start} is not valid)") from None
    if not text.strip():
        raise BadBody(f"{what} is empty: send a JSON object")
    check_depth(text)
    # First json's own C parse, which reads numbers without calling back into Python (a tensor
    # of 2,048 numbers: 0.36 ms against 0.53 ms). Its value stands when no number in it is
    # one the careful parse would refuse; else (a huge integer, 1e400, NaN, bad JSON) the
    # careful parse runs and says why.
    try:
        value = json.loads(text, parse_constant=_constant)
    except (ValueError, RecursionError, BadBody):
        value = _careful_loads(text, what)
    else:
        if not _plain_numbers(value):
            value = _careful_loads(text, what)
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a request's Content-Encoding (gzip or deflate, as tritonclient can send), refusing
    to inflate past `limit` bytes."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    kind = encoding.strip().lower()
    if kind not in ("gzip", "deflate"):
        raise BadBody(f"Content-Encoding {encoding!r} is not supported: use gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise BadBody(f"the {kind} request body cannot be decompressed: {err}") from None
    if len(out) > limit:
        raise BodyTooLarge(
            f"the decompressed request body is over the server's limit of {limit:,} bytes"
        )
    return out


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a body; the binary part is empty without the header."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise BadBody(
            f"Inference-Header-Content-Length must be a whole number, got {header_length[:40]!r}"
        ) from None
    if not 0 < n <= len(body):
        raise BadBody(
            f"Inference-Header-Content-Length is {n}, but the body holds {len(body)} bytes"
        )
    return body[:n], body[n:]


async def request_json(request: Request) -> tuple[dict[str, Any], bytes]:
    """(JSON object, binary part) of a request: what the layer checked, or parsed now alike."""
    checked = request.scope.get("state", {}).get(STATE_KEY)
    if checked is None:
        head, rest = split_binary(await request.body(), request.headers.get(BINARY_HEADER))
        checked = loads(head), rest
    if not isinstance(checked[0], dict):
        raise BadBody("the request body must be a JSON object")
    return checked


class RequestBodyMiddleware:
    """Read every request body once, bounded, decompressed and checked, before routing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: refuse early by header; otherwise read, check and replay the body."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        try:
            body = await self._read(headers, receive)
            if body is None:  # the client left while sending
                return
            encoding = headers.get(b"content-encoding")
            body = decompress(body, encoding.decode("latin-1") if encoding else None, self.limit)
            if body.strip():
                length = headers.get(BINARY_HEADER.encode())
                head, rest = split_binary(body, length.decode("latin-1") if length else None)
                scope.setdefault("state", {})[STATE_KEY] = (loads(head), rest)
        except (BadBody, BodyTooLarge) as err:
            await send_error(send, err.status, str(err), path=path)
            return
        # The routes see the plain body: no encoding left, its real length.
        kept = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
        ]
        scope = {**scope, "headers": [*kept, (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise BadBody("Content-Length is not a number") from None
            if size > self.limit:
                raise BodyTooLarge(self._message(size))
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                raise BodyTooLarge(self._message(total, at_least=True))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _message(self, size: int, at_least: bool = False) -> str:
        more = "more than " if at_least else ""
        return f"request body of {more}{size:,} bytes is over the server's limit of {self.limit:,}"
