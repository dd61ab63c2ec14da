"""Open Inference Protocol v2 routes (the KServe / Triton HTTP API) for the tensor models.

digits-*: `pixels` FP32 [N, 64] on the 0-16 scale -> `probabilities` FP32 [N, 10].
sentiment-minilm: `text` BYTES [N] -> `probabilities` FP32 [N, 2] ([negative, positive]) and
`label` BYTES [N]. minilm-embed: `text` BYTES [N] -> `embedding` FP32 [N, 384].
Requests may use Triton's binary tensor data extension, so `tritonclient.http` works unmodified.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from maaslab import __version__
from maaslab.errors import MaaslabError
from maaslab.serve.access import tenant_name
from maaslab.serve.batching import Overloaded
from maaslab.serve.errors import ERROR_RESPONSES, send_error
from maaslab.serve.models import ServedModel, check_served_texts
from maaslab.serve.parsing import request_json
from maaslab.serve.tensors import (
    HEADER,
    Tensor,
    decode_inputs,
    encode_response,
    requested_outputs,
)
from maaslab.serve.versions import ModelTable

EXTENSIONS = ["binary_tensor_data", "explain", "model_repository"]
VERSION = "1"  # a --models item is version 1 of its name (a repository gives more: versions.py)
PLATFORM = "pytorch"
EMBED_DIM = 384


class TensorMeta(BaseModel):
    """An input or output in model metadata."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """GET /v2/models/{name}."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]


class ServerMetadata(BaseModel):
    """GET /v2."""

    name: str
    version: str
    extensions: list[str]


class TensorData(BaseModel):
    """A tensor in JSON: flat row-major data (or binary_data_size in parameters)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    """An output the client wants, and whether as binary data."""

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """POST /v2/models/{name}/infer body (JSON header when binary data follows)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorData] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferResponse(BaseModel):
    """Inference answer (JSON header when binary data follows)."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorData]


def signature(model: ServedModel) -> tuple[list[TensorMeta], list[TensorMeta]]:
    """(inputs, outputs) of a model in OIP terms; -1 is the batch dimension."""
    if model.kind == "digits":
        n_classes = len(model.wrapper.class_names)
        pixels = TensorMeta(name="pixels", datatype="FP32", shape=[-1, 64])
        return [pixels], [TensorMeta(name="probabilities", datatype="FP32", shape=[-1, n_classes])]
    text = [TensorMeta(name="text", datatype="BYTES", shape=[-1])]
    if model.kind == "sentiment":
        n_classes = len(model.wrapper.class_names)
        return text, [
            TensorMeta(name="probabilities", datatype="FP32", shape=[-1, n_classes]),
            TensorMeta(name="label", datatype="BYTES", shape=[-1]),
        ]
    if model.kind == "embedder":
        return text, [TensorMeta(name="embedding", datatype="FP32", shape=[-1, EMBED_DIM])]
    return [], []  # the generator speaks the OpenAI API (/v1/completions) instead


def find_model(models: ModelTable, name: str, version: str | None = None) -> ServedModel:
    """The served model `name` (its `version`: a number or an alias; else the champion), or
    UnknownModel naming the models there are."""
    return models.pick(name, version)


def get_model(request: Request, name: str, version: str | None = None) -> ServedModel:
    """The served model `name` of the request's app, or 404 naming the models there are."""
    return find_model(request.app.state.models, name, version)


def tensor_model(
    models: ModelTable, name: str, version: str | None = None, tenant: str | None = None
) -> ServedModel:
    """The tensor model an inference request for `name` goes to (the version it names, else
    the canary split: ModelTable.route), able to take one more request of `tenant`:
    UnknownModel, a MaaslabError for a language model, or Overloaded when that tenant's queue
    is full (checked before any tensor is decoded: an overloaded server must say so fast)."""
    model = models.pick(name, version)  # 404 and 400 before the request is counted
    if model.kind == "generator":
        raise MaaslabError(
            f"model {name!r} generates text: use POST /v1/completions or "
            "/v1/chat/completions (the OpenAI-compatible API)"
        )
    model = models.route(name, version)
    if model.batcher is not None and model.batcher.full(tenant):
        raise Overloaded(name, tenant=tenant)
    return model


INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class FullQueueMiddleware:
    """Answer 503 to an inference request whose queue is already full before its body is read.

    The request-parsing layer behind it reads and checks a body's whole JSON (0.7 ms of the
    event loop for 32 rows of digits) before any route runs; tensor_model's check would then
    refuse it anyway. Under a flood those refusals eat the event loop every tenant shares
    (bench_service P16), so a full queue is told here, from the path and the tenant alone. A
    request the canary split may send to either version goes on to the route, which decides.
    """

    def __init__(self, app: ASGIApp, models: ModelTable, metrics: Any) -> None:
        self.app, self.models, self.metrics = app, models, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: refuse a full queue at once, else pass through."""
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = INFER_PATH.fullmatch(scope["path"])
        refusal = self._full(match, scope) if match is not None else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        started, name = time.perf_counter(), match[1]
        await send_error(
            send, 503, str(refusal), {"retry-after": str(refusal.retry_after)}, scope["path"]
        )
        endpoint = "/v2/models/{name}" + ("/versions/{version}" if match[2] else "") + "/infer"
        self.metrics.rejected.labels(name[:64]).inc()
        self.metrics.observe(name[:64], endpoint, 503, time.perf_counter() - started)

    def _full(self, match: re.Match, scope: Scope) -> Overloaded | None:
        tenant = scope.get("state", {}).get("tenant")
        who = tenant.name if tenant is not None else None
        name, version = match[1], match[2]
        rollout = self.models.rollouts.get(name)
        if rollout is None:
            return None  # the route answers 404
        if version is None and rollout.challenger is not None and rollout.canary_percent > 0:
            return None  # either version may take it: the route's split decides
        try:
            model = self.models.pick(name, version)
        except MaaslabError:
            return None
        if model.batcher is not None and model.batcher.full(who):
            return Overloaded(name, tenant=who)
        return None


async def infer_tensors(
    model: ServedModel,
    body: dict[str, Any],
    binary: bytes,
    timeout: float,
    tenant: str | None = None,
    models: ModelTable | None = None,
) -> tuple[list[tuple[str, str, Any]], dict[str, bool]]:
    """Decode a request's inputs, check them, run the model: the outputs asked for as
    (name, datatype, value), and output name -> sent as binary. The HTTP route and gRPC's
    ModelInfer (maaslab.serve.grpc_api) both answer through this.

    Parameters
    ----------
    model : a tensor model (from tensor_model).
    body : the request in OIP JSON form: inputs (each with data or binary_data_size), outputs.
    binary : the raw tensors of the inputs that give binary_data_size, in input order.
    timeout : seconds the request may wait for the model (then RequestTimeout).
    tenant : whose request (the key's tenant name; None without keys): its turn in the queue.
    models : the server's table, to copy the request to a challenger when shadowing is on.
    """
    outputs = signature(model)[1]
    wanted = requested_outputs(body, [o.name for o in outputs])
    payload, rows = _payload(model, decode_inputs(body, binary))
    result = await model.infer(payload, rows, timeout, tenant)
    if models is not None:
        models.shadow(model, payload, rows, result)
    return [(o.name, o.datatype, result[o.name]) for o in outputs if o.name in wanted], wanted


def _payload(model: ServedModel, inputs: dict[str, Tensor]) -> tuple[Any, int]:
    # Turn decoded tensors into what the wrapper takes, checking names, types and shapes.
    want = signature(model)[0][0]
    extra = sorted(set(inputs) - {want.name})
    if want.name not in inputs or extra:
        raise MaaslabError(
            f"model {model.name!r} takes one input named {want.name!r} "
            f"({want.datatype} {want.shape}); got {', '.join(inputs)}"
        )
    t = inputs[want.name]
    if model.kind == "digits":
        if t.datatype not in ("FP16", "FP32", "FP64"):
            raise MaaslabError(f"input 'pixels' must be FP32 (or FP16/FP64), not {t.datatype}")
        if len(t.shape) != 2 or t.shape[1] != 64 or t.shape[0] < 1:
            raise MaaslabError(
                f"input 'pixels' must have shape [N, 64] with N >= 1, got {list(t.shape)}"
            )
        x = np.asarray(t.data, dtype=np.float32).reshape(t.shape)
        if not np.all(np.isfinite(x)):
            raise MaaslabError("input 'pixels' contains NaN or infinity")
        if x.min() < 0 or x.max() > 16:
            raise MaaslabError(
                f"input 'pixels' must lie in 0..16 (sklearn digits scale); got "
                f"{x.min():g}..{x.max():g}"
            )
        return x, len(x)
    if t.datatype != "BYTES":
        raise MaaslabError(f"input 'text' must be BYTES (strings), not {t.datatype}")
    if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
        raise MaaslabError(f"input 'text' must have shape [N] (or [N, 1]), got {list(t.shape)}")
    try:
        texts = [b.decode("utf-8") for b in t.data]
    except UnicodeDecodeError:
        raise MaaslabError("input 'text' is not valid UTF-8") from None
    return check_served_texts(texts), len(texts)


router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], responses=ERROR_RESPONSES)


@router.get("/health/live", summary="Server liveness")
async def live() -> dict[str, bool]:
    """200 while the process answers at all."""
    return {"live": True}


@router.get(
    "/health/ready", summary="Server readiness", responses={503: {"description": "Not ready"}}
)
async def ready(request: Request) -> JSONResponse:
    """200 when every model is loaded and the server is not shutting down, else 503."""
    ok = bool(request.app.state.models) and not request.app.state.drain.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("", summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    """Name, version and the protocol extensions this server supports."""
    return ServerMetadata(name="maaslab", version=__version__, extensions=EXTENSIONS)


async def _model_ready(request: Request, name: str, version: str | None) -> JSONResponse:
    get_model(request, name, version)  # 404 for an unknown model or version
    ok = not request.app.state.drain.draining
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(request: Request, name: str) -> JSONResponse:
    """200 when the model can take requests."""
    return await _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness")
async def model_version_ready(request: Request, name: str, version: str) -> JSONResponse:
    """Same as /ready, for one version (a number, or an alias: champion, challenger)."""
    return await _model_ready(request, name, version)


def _metadata(request: Request, name: str, version: str | None) -> ModelMetadata:
    model = get_model(request, name, version)
    inputs, outputs = signature(model)
    versions = list(request.app.state.models.rollout(name).versions)
    return ModelMetadata(
        name=name, versions=versions, platform=PLATFORM, inputs=inputs, outputs=outputs
    )


def links_by_name(expression: str) -> dict[str, Any]:
    """OpenAPI links from a response naming a model (at `expression`) to the routes taking
    that name, so a client or a schema-driven test can go from a listing to a real model."""
    by_name = {
        "ModelMetadata": "model_metadata",
        "ModelReady": "model_ready",
        "Infer": "infer",
        "Explain": "explain_route",
    }
    links = {
        link: {"operationId": op, "parameters": {"name": expression}}
        for link, op in by_name.items()
    }
    for link, op in {
        "VersionMetadata": "model_version_metadata",
        "VersionInfer": "infer_version",
    }.items():
        links[link] = {"operationId": op, "parameters": {"name": expression, "version": VERSION}}
    return links


@router.get(
    "/models/{name}",
    summary="Model metadata",
    responses={
        200: {"description": "The model's metadata", "links": links_by_name("$response.body#/name")}
    },
)
async def model_metadata(request: Request, name: str) -> ModelMetadata:
    """Inputs and outputs with their datatypes and shapes (-1 = any batch size)."""
    return _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def model_version_metadata(request: Request, name: str, version: str) -> ModelMetadata:
    """Same as the model's metadata, for one version (a number or an alias)."""
    return _metadata(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    models, tenant = request.app.state.models, tenant_name(request)
    model = tensor_model(models, name, version, tenant)
    body, binary = await request_json(request)
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MaaslabError("'id' must be a string")
    timeout = request.app.state.config.request_timeout_s
    outputs, as_binary = await infer_tensors(model, body, binary, timeout, tenant, models)
    answer: dict[str, Any] = {"model_name": name, "model_version": model.version}
    if request_id is not None:
        answer["id"] = request_id
    content, header_length = encode_response(answer, outputs, as_binary)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content, media_type="application/octet-stream", headers={HEADER: str(header_length)}
    )


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every $ref replaced by its definition (no $defs left)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


_INFER_DOC = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _inline_schema(InferRequest)},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    "responses": {
        200: {
            "model": InferResponse,
            "description": "Outputs (JSON, or a JSON "
            "header then binary tensors with Inference-Header-Content-Length)",
        }
    },
}


@router.post("/models/{name}/infer", summary="Inference", **_INFER_DOC)
async def infer(request: Request, name: str) -> Response:
    """Run the model on the request's inputs (JSON or binary tensor data)."""
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference (version)", **_INFER_DOC)
async def infer_version(request: Request, name: str, version: str) -> Response:
    """Same as /infer, sent to one version (a number, or an alias: champion, challenger)."""
    return await _infer(request, name, version)
