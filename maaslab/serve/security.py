"""Who may call the server: loopback by default, a Bearer API key for anything wider.

TorchServe's ShellTorch CVEs came from a management API reachable from the network that
registered models from URLs. Here: the default bind is 127.0.0.1; another interface is refused
unless an API key is set, keys are compared in constant time, and no route loads a model.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from maaslab.errors import MaaslabError

# Probes (Kubernetes liveness/readiness) must work without credentials; they reveal nothing.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
MIN_KEY_CHARS = 16  # shorter keys are guessable; refuse them rather than pretend


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; any other name or address is the network."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_api_key(
    host: str, api_key_env: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The API key the server will demand, or None on loopback without one.

    Raises MaaslabError (the CLI exits with code 2) when a non-loopback bind has no key, or
    when the named variable is missing, empty or too short.
    """
    env = os.environ if environ is None else environ
    if api_key_env is None:
        if not is_loopback(host):
            raise MaaslabError(
                f"refusing to listen on {host} without an API key: set one in an environment "
                "variable and pass --api-key-env VAR (or keep the default --host 127.0.0.1)"
            )
        return None
    key = env.get(api_key_env, "").strip()
    if not key:
        raise MaaslabError(
            f"--api-key-env names {api_key_env}, but that environment variable is not set or empty"
        )
    if len(key) < MIN_KEY_CHARS:
        raise MaaslabError(
            f"the API key in {api_key_env} is too short: use at least {MIN_KEY_CHARS} characters"
        )
    return key


def key_matches(header: str | None, key: str) -> bool:
    """Does an Authorization header carry `Bearer <key>`? Constant-time comparison."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), key.encode())


class ApiKeyMiddleware:
    """Answer 401 to any request without the right Bearer key (health probes excepted)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: check the header, then pass through or refuse."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if key_matches(auth, self.key):
            await self.app(scope, receive, send)
            return
        from maaslab.serve.errors import send_error

        await send_error(
            send,
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY'",
            {"www-authenticate": "Bearer"},
            path=scope["path"],
        )
