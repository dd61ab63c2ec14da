"""Who is calling and what they may do: the tenant layer in front of every route (HTTP) and
every method (gRPC, maaslab.serve.grpc_api).

A server started with `--keys FILE` (maaslab.serve.tenants: hashed keys, roles, limits) knows
its callers as tenants; `--api-key-env VAR` is the one-tenant case (an admin named "admin");
a loopback server without keys has no tenants and no admin, so its admin routes answer 403.
For each request, in this order:

1. authenticate: no key or an unknown one -> 401 (health probes are open);
2. admit: the tenant's daily quota, request rate and token budget -> 429 with Retry-After;
   (on a server run by uvicorn, steps 1 and 2 happen in the connection layer, as soon as a
   request's headers are in: maaslab.serve.connections answers 401 and 429 itself, so a
   refused flood never reaches the app; `Tenancy.gate` is the one rule both places apply)
3. the route runs with `request.state.tenant` set: inference waits in the tenant's own queue
   (fair turns, maaslab.serve.batching), admin routes check `require_admin` (403 for a user);
4. meter: when the response has been sent, its request, tokens and compute time are added to
   the tenant's usage (GET /usage; Prometheus `maaslab_tenant_*`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from maaslab.errors import MaaslabError
from maaslab.serve.quotas import Admission, Refusal, Usage
from maaslab.serve.security import OPEN_PATHS
from maaslab.serve.tenants import KeyTable, Limits, Tenant, hash_key

SINGLE_KEY_TENANT = "admin"  # the tenant an --api-key-env key stands for
ADMITTED = "admitted"  # scope["state"] key: the tenant the connection layer already let in
UNKNOWN_KEY = "missing or unknown API key: send 'Authorization: Bearer KEY'"


@dataclass(frozen=True)
class Denied:
    """A request refused at the tenant layer: the status, the message and the headers."""

    status: int  # 401 (no or unknown key) or 429 (a limit of the tenant)
    message: str  # the error body's message
    headers: dict[str, str]  # www-authenticate for a 401, retry-after for a 429


class Forbidden(MaaslabError):
    """A known key asks for something its role may not do: answered with 403."""

    status = 403


@dataclass
class Tenancy:
    """The server's tenants: their keys, the limits applied at request time, their usage."""

    table: KeyTable
    admission: Admission = field(init=False)
    usage: Usage = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.table)
        self.usage = Usage(self.table)

    @classmethod
    def single_key(cls, key: str) -> Tenancy:
        """One admin tenant holding `key` (the --api-key-env server)."""
        return cls(KeyTable([Tenant(SINGLE_KEY_TENANT, "admin", hash_key(key), Limits())]))

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant whose key the Authorization value carries (constant time), else None."""
        return self.table.authenticate(authorization)

    def admit(self, tenant: Tenant, tokens: int = 0) -> Refusal | None:
        """None to let the request in, or why not (recorded in the tenant's usage)."""
        refusal = self.admission.admit(tenant, tokens)
        if refusal is not None:
            self.usage.refused(tenant.name, refusal.reason)
        return refusal

    def gate(self, authorization: str | None) -> Tenant | Denied:
        """Authenticate and admit one request: its tenant, or the 401 / 429 to answer."""
        tenant = self.authenticate(authorization)
        if tenant is None:
            return Denied(401, UNKNOWN_KEY, {"www-authenticate": "Bearer"})
        refusal = self.admit(tenant)
        if refusal is not None:
            return Denied(429, refusal.message, {"retry-after": str(refusal.retry_after_s)})
        return tenant

    def meter_share(self, tenant: Hashable, rows: int, seconds: float) -> None:
        """A batch's compute time, its share for one request (a Batcher's on_share hook)."""
        if isinstance(tenant, str) and self.table.get(tenant) is not None:
            self.usage.record(tenant, requests=0, compute_s=seconds)


def tenant_of(request: Request) -> Tenant | None:
    """The tenant a request came from (None on a server without keys)."""
    return getattr(request.state, "tenant", None)


def tenant_name(request: Request) -> str | None:
    """The name of the request's tenant: the queue it waits in (None without keys)."""
    tenant = tenant_of(request)
    return tenant.name if tenant is not None else None


def require_admin(tenant: Tenant | None) -> Tenant:
    """The tenant if it is an admin; Forbidden (403) for a user key or a server without keys."""
    if tenant is None:
        raise Forbidden(
            "this route needs an admin key, and this server has no keys: start it with "
            "--keys FILE (see python -m maaslab keys classroom) or --api-key-env VAR"
        )
    if not tenant.is_admin:
        raise Forbidden(f"the key of {tenant.name!r} is a user key; this route needs an admin key")
    return tenant


def add_tokens(request: Request, input_tokens: int = 0, output_tokens: int = 0) -> None:
    """Count a request's model tokens in its tenant's usage (metered when the answer ends)."""
    counts = request.scope.setdefault("state", {}).setdefault("tokens", [0, 0])
    counts[0] += input_tokens
    counts[1] += output_tokens


class TenantMiddleware:
    """Authenticate (401), admit (429 + Retry-After), then meter the answer (ASGI)."""

    def __init__(self, app: ASGIApp, tenancy: Tenancy) -> None:
        self.app, self.tenancy = app, tenancy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: refuse, or pass through and meter once the response is complete."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        from maaslab.serve.errors import send_error

        state: dict[str, Any] = scope.setdefault("state", {})
        tenant = state.pop(ADMITTED, None)  # let in by the connection layer already
        if tenant is None:
            headers: Mapping[bytes, bytes] = dict(scope.get("headers") or [])
            tenant = self.tenancy.gate(headers.get(b"authorization", b"").decode("latin-1"))
        if isinstance(tenant, Denied):
            await send_error(send, tenant.status, tenant.message, tenant.headers, scope["path"])
            return
        state["tenant"] = tenant
        try:
            await self.app(scope, receive, send)
        finally:  # answered, failed or cut off by the client: the request counts all the same
            self._meter(tenant, state)

    def _meter(self, tenant: Tenant, state: dict[str, Any]) -> None:
        inputs, outputs = state.pop("tokens", (0, 0))
        self.tenancy.usage.record(tenant.name, input_tokens=inputs, output_tokens=outputs)
        if inputs or outputs:  # known only now: the next request waits if this one overdrew
            self.tenancy.admission.charge_tokens(tenant, inputs + outputs)
