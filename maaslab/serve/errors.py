"""Every refusal the server makes is JSON in the shape of its route family, with a 4xx (or
503/504) status: `{"error": "..."}` for the Open Inference Protocol and the rest of the server,
OpenAI's `{"error": {"message", "type", "param", "code"}}` under /v1.

FastAPI's own errors (404 route, 405 method, 422 validation) and our exceptions all pass
through the handlers here, so a client never sees HTML, a traceback or a bare 500. A 500 is
kept for bugs: it is logged with its traceback, answered in the family's shape, and the
connection stays open for the requests behind it.
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
        (403, "An admin route called without an admin key"),
        (404, "Unknown model or route"),
        (413, "Request body too large"),
        (422, "Request does not match the schema"),
        (429, "A limit of the key's tenant was reached (see Retry-After)"),
        (503, "Overloaded"),
        (504, "Timed out"),
    ]
}


OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible routes answer refusals in OpenAI's shape
OPENAI_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def is_openai_path(path: str) -> bool:
    """True for the OpenAI-compatible routes (their refusals use OpenAI's error shape)."""
    return path.startswith(OPENAI_PREFIX) or path == OPENAI_PREFIX.rstrip("/")


def openai_error(
    status: int, message: str, param: str | None = None, kind: str | None = None
) -> dict:
    """OpenAI's error body: the openai client shows `error.message` in its exception."""
    if kind is None:
        kind = OPENAI_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def error_body(path: str, status: int, message: str) -> dict:
    """A refusal's JSON body in the shape of the route family that `path` belongs to."""
    return openai_error(status, message) if is_openai_path(path) else {"error": message}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    """A JSONResponse with the refusal in the shape of `path`'s route family."""
    return JSONResponse(error_body(path, status, message), status_code=status, headers=headers)


def error_bytes(
    path: str, status: int, message: str, headers: dict[str, str] | None = None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(body, raw headers) of a refusal, for code that answers below the routes."""
    body = json.dumps(error_body(path, status, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return body, raw


async def send_error(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> None:
    """Send a refusal straight from ASGI middleware (before routing)."""
    body, raw = error_bytes(path, status, message, headers)
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
    """Register the handlers that turn every exception into a refusal in the family's shape."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        headers = getattr(exc, "headers", None)
        return error_response(exc.status_code, detail, headers, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, _validation_message(exc), path=request.url.path)

    @app.exception_handler(MaaslabError)
    async def user_error(request: Request, exc: MaaslabError):
        status = getattr(exc, "status", 400)  # a MaaslabError subclass may name its own 4xx
        return error_response(status, str(exc), path=request.url.path)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.rejected.labels(str(request.path_params.get("name", ""))[:64]).inc()
        headers = {"Retry-After": str(exc.retry_after)}
        return error_response(503, str(exc), headers, request.url.path)

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, exc: ShuttingDown):
        return error_response(503, str(exc), {"Retry-After": "5"}, request.url.path)

    @app.exception_handler(RequestTimeout)
    async def timed_out(request: Request, exc: RequestTimeout):
        return error_response(504, str(exc), path=request.url.path)


class UnhandledErrorMiddleware:
    """The last net: an exception no handler took is a bug; log it, answer 500, keep going.

    Starlette's own last handler re-raises after answering, and uvicorn then closes the
    connection, so a request pipelined behind the failing one was never answered. This one
    answers in the route family's shape and returns normally: the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: run the app; turn an escaped exception into a logged 500."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # the status line is gone already: all that is left is to stop
                raise
            message = f"internal error ({type(exc).__name__}); this is a bug in the server"
            await send_error(send, 500, message, path=scope.get("path", ""))
