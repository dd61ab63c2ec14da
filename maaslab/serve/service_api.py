"""The service around the models: tenants' usage, model versions' rollouts, and OIP's model
repository extension (load / unload), over HTTP. gRPC's repository methods answer through the
same functions (maaslab.serve.grpc_api).

- GET  /usage                              your key's usage, limits and role
- GET  /usage/tenants                      every tenant's usage (admin)
- GET  /v2/models/{name}/rollout           versions, champion, challenger, canary %, shadow
- POST /v2/models/{name}/rollout           set challenger / canary_percent / shadow (admin)
- POST /v2/models/{name}/promote           the challenger becomes champion (admin)
- POST /v2/models/{name}/rollback          back to the previous champion (admin)
- POST /v2/repository/index                the repository's models and versions (admin)
- POST /v2/repository/models/{name}/load   load the versions on disk not loaded yet (admin)
- POST /v2/repository/models/{name}/unload unload the model, or one version (admin)

Loading is the ShellTorch lesson: it takes a *name*, never a path or a URL, resolves it only
inside the repository root the server was started with (maaslab.serve.repository refuses
`..`, separators, schemes and symlinks leading out), and refuses Triton's load parameters
(a config or files sent with the request) outright.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from maaslab.errors import MaaslabError
from maaslab.serve.access import require_admin, tenant_of
from maaslab.serve.errors import ERROR_RESPONSES
from maaslab.serve.parsing import request_json
from maaslab.serve.repository import ModelRepository
from maaslab.serve.versions import UnknownModel, load_model, unload_model


class Traffic(BaseModel):
    """POST /v2/models/{name}/rollout: what to change (fields left out stay as they are)."""

    model_config = ConfigDict(extra="forbid")
    challenger: str | None = None
    canary_percent: float | None = Field(None, ge=0, le=100)
    shadow: bool | None = None


router = APIRouter(tags=["Service: tenants, versions, repository"], responses=ERROR_RESPONSES)


def _tenancy(request: Request) -> Any:
    tenancy = request.app.state.tenancy
    if tenancy is None:
        raise UnknownModel(
            "this server has no keys, so it meters no usage: start it with --keys FILE "
            "(python -m maaslab keys classroom makes one)"
        )
    return tenancy


@router.get("/usage", summary="Your usage")
async def own_usage(request: Request) -> dict[str, Any]:
    """The calling key's tenant: role, limits and usage so far."""
    tenancy, tenant = _tenancy(request), tenant_of(request)
    assert tenant is not None  # the tenant layer answered 401 otherwise
    return {
        "tenant": tenant.name,
        "role": tenant.role,
        "limits": asdict(tenant.limits),
        "usage": tenancy.usage.snapshot(tenant.name),
    }


@router.get("/usage/tenants", summary="Every tenant's usage (admin)")
async def all_usage(request: Request) -> dict[str, Any]:
    """Usage and limits of every tenant of the keys file."""
    tenancy = _tenancy(request)
    require_admin(tenant_of(request))
    usage = tenancy.usage.snapshot_all()
    return {
        "tenants": [
            {"tenant": t.name, "role": t.role, "limits": asdict(t.limits), "usage": usage[t.name]}
            for t in tenancy.table.tenants
        ]
    }


@router.get("/v2/models/{name}/rollout", summary="Versions and traffic of a model")
async def rollout_state(request: Request, name: str) -> dict[str, Any]:
    """Versions, aliases, canary share, shadow agreement and requests per version."""
    return request.app.state.models.rollout(name).state()


@router.post("/v2/models/{name}/rollout", summary="Set a model's traffic (admin)")
async def set_rollout(request: Request, name: str, body: Traffic) -> dict[str, Any]:
    """Name the challenger, its canary share of unpinned requests and whether the champion's
    requests are shadowed to it; fields left out keep their value."""
    require_admin(tenant_of(request))
    rollout = request.app.state.models.rollout(name)
    given = body.model_fields_set
    rollout.set_traffic(
        **({"challenger": body.challenger} if "challenger" in given else {}),
        canary_percent=body.canary_percent,
        shadow=body.shadow,
    )
    return rollout.state()


@router.post("/v2/models/{name}/promote", summary="Promote the challenger (admin)")
async def promote(request: Request, name: str) -> dict[str, Any]:
    """The challenger becomes champion; requests in flight finish where they were sent."""
    require_admin(tenant_of(request))
    rollout = request.app.state.models.rollout(name)
    rollout.promote()
    return rollout.state()


@router.post("/v2/models/{name}/rollback", summary="Roll back to the previous champion (admin)")
async def rollback(request: Request, name: str) -> dict[str, Any]:
    """The previous champion answers again; the version rolled back from stays loaded as the
    challenger with no traffic."""
    require_admin(tenant_of(request))
    rollout = request.app.state.models.rollout(name)
    rollout.rollback()
    return rollout.state()


def repository_of(app_state: Any) -> ModelRepository:
    """The server's model repository, or a 400 saying how to give it one."""
    if app_state.config.repository is None:
        raise MaaslabError(
            "this server has no model repository: start it with --repository ROOT "
            "(folders ROOT/NAME/VERSION/)"
        )
    return ModelRepository(app_state.config.repository)


def repository_index(app_state: Any) -> list[dict[str, str]]:
    """Each model version in the repository: READY when loaded, else UNAVAILABLE and why."""
    table = app_state.models
    entries = []
    for entry in repository_of(app_state).index():
        rollout = table.rollouts.get(entry["name"])
        if rollout is not None and entry["version"] in rollout.versions:
            entry = {**entry, "state": "READY", "reason": ""}
        elif entry["state"] == "READY":  # loadable, not loaded
            entry = {**entry, "state": "UNAVAILABLE", "reason": "not loaded"}
        entries.append(entry)
    return entries


def check_load_parameters(parameters: Any) -> None:
    """Refuse what Triton's load accepts and this server never will: a config or model files
    sent with the request. Loading takes a name, and only folders already in the repository."""
    if parameters:
        raise MaaslabError(
            f"load takes no parameters (got {', '.join(map(str, parameters))}): this server "
            "loads only model folders already inside its repository, never a config or files "
            "sent with the request"
        )


def unload_version(parameters: Any) -> str | None:
    """The one version an unload names (parameters {"version": "2"}), or None for all."""
    parameters = dict(parameters or {})
    version = parameters.pop("version", None)
    if parameters:
        raise MaaslabError(
            f"unload takes only the parameter 'version', not {', '.join(map(str, parameters))}"
        )
    if version is not None and not isinstance(version, str | int):
        raise MaaslabError("parameter 'version' must be a version number such as \"2\"")
    return None if version is None else str(version)


async def _body(request: Request) -> dict[str, Any]:
    if not await request.body():
        return {}
    body, _ = await request_json(request)
    return body


@router.post("/v2/repository/index", summary="Repository index (admin)")
async def index(request: Request) -> list[dict[str, str]]:
    """Every model and version of the repository with its state (READY = loaded)."""
    require_admin(tenant_of(request))
    body = await _body(request)
    entries = repository_index(request.app.state)
    if body.get("ready"):
        entries = [e for e in entries if e["state"] == "READY"]
    return entries


@router.post("/v2/repository/models/{name}/load", summary="Load a model (admin)")
async def load(request: Request, name: str) -> dict[str, Any]:
    """Load the versions of `name` in the repository that are not loaded yet; a new version
    of a served model arrives as its challenger with no traffic."""
    require_admin(tenant_of(request))
    body = await _body(request)
    check_load_parameters(body.get("parameters"))
    state = request.app.state
    versions = await load_model(
        state.models, repository_of(state), name, state.config, state.compute
    )
    return {"name": name, "loaded": versions, "rollout": state.models.rollout(name).state()}


@router.post("/v2/repository/models/{name}/unload", summary="Unload a model (admin)")
async def unload(request: Request, name: str) -> dict[str, Any]:
    """Unload every version of `name`, or the version named in parameters (not the champion);
    requests already queued are answered first."""
    require_admin(tenant_of(request))
    body = await _body(request)
    versions = await unload_model(
        request.app.state.models, name, unload_version(body.get("parameters"))
    )
    return {"name": name, "unloaded": versions}
