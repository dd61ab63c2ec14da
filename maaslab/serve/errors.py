"""Every refusal the server makes is JSON `{"error": "..."}` with a 4xx (or 503/504) status.

FastAPI's own errors (404 route, 405 method, 422 validation) and our exceptions all pass
through the handlers here, so a client never sees HTML, a traceback or a bare 500.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maaslab.errors import MaaslabError
from maaslab.serve.batching import Overloaded, RequestTimeout, ShuttingDown

log = logging.getLogger("maaslab.serve")


class ErrorBody(BaseModel):
    """What every error response holds."""

    error: str


# Declared on every route so the OpenAPI document (and schemathesis) knows the error shape;
# naming 422 here also stops FastAPI from documenting its own validation body we never send.
ERROR_RESPONSES: dict[int | str, dict] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in [
        (400, "Malformed request"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model or route"),
        (413, "Request body too large"),
        (422, "Request does not match the schema"),
        (503, "Overloaded"),
        (504, "Timed out"),
    ]
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    """A JSONResponse {"error": message}."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def send_error(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """Send {"error": message} straight from ASGI middleware (before routing)."""
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _validation_message(err: RequestValidationError) -> str:
    # One readable line per problem: where in the request, and what pydantic said.
    parts = []
    for item in err.errors()[:5]:
        where = ".".join(str(x) for x in item.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into {"error": ...}."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, _validation_message(exc))

    @app.exception_handler(MaaslabError)
    async def user_error(request: Request, exc: MaaslabError):
        from maaslab.serve.tensors import BodyTooLarge

        return error_response(413 if isinstance(exc, BodyTooLarge) else 400, str(exc))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.rejected.labels(str(request.path_params.get("name", ""))[:64]).inc()
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, exc: ShuttingDown):
        return error_response(503, str(exc), {"Retry-After": "5"})

    @app.exception_handler(RequestTimeout)
    async def timed_out(request: Request, exc: RequestTimeout):
        return error_response(504, str(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        # A 500 is a bug in the server, never the client's fault: log it with its traceback.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); this is a bug")


class BodyLimitMiddleware:
    """413 for bodies over `limit` bytes, by Content-Length or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: refuse early by header; otherwise read the body with a running count."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_error(send, 400, "Content-Length is not a number")
                return
            if size > self.limit:
                await send_error(send, 413, self._message(size))
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): buffer up to the limit, then replay to the app.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await send_error(send, 413, self._message(total, at_least=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        more = "more than " if at_least else ""
        return f"request body of {more}{size:,} bytes is over the server's limit of {self.limit:,}"
