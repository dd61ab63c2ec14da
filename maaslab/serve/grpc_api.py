"""Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService`, next to HTTP.

With `--grpc-port PORT` a grpc.aio server runs on uvicorn's event loop, over the same served
models: a ModelInfer joins the same dynamic batches as POST /v2/models/{name}/infer, passes the
same checks (maaslab.serve.oip.infer_tensors) and gets the same numbers, bit for bit. The
messages and the servicer base are the ones `tritonclient.grpc` ships (generated from Triton's
grpc_service.proto), so the official client works unmodified:

    client = tritonclient.grpc.InferenceServerClient("127.0.0.1:8001")
    pixels = tritonclient.grpc.InferInput("pixels", [1, 64], "FP32")
    pixels.set_data_from_numpy(rows)  # float32 [1, 64] on the 0..16 scale
    client.infer("digits-cnn", [pixels]).as_numpy("probabilities")

Tensors travel in raw_input_contents / raw_output_contents in the layout of Triton's binary
extension over HTTP (little-endian numbers; BYTES as a 4-byte little-endian length and the
bytes, per element); typed `contents` are accepted too. Served: ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata, ModelInfer, and the model repository's
RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload (admin keys only, the same checks
as HTTP: maaslab.serve.service_api); Triton's other methods answer UNIMPLEMENTED.

Tenants (maaslab.serve.access) apply as over HTTP: the key in the metadata names the tenant,
its limits answer RESOURCE_EXHAUSTED (HTTP's 429, with the wait in the message), its requests
wait in its own queue, and its usage is metered. `model_version` may name a version or an alias
(champion, challenger); left empty, the canary split decides.

A refusal gets the gRPC status of what HTTP answers, with the same message: 400 bad input ->
INVALID_ARGUMENT, 401 -> UNAUTHENTICATED (the key comes as metadata `authorization: Bearer
KEY`; ServerLive and ServerReady are open, like the HTTP probes), 403 -> PERMISSION_DENIED,
404 -> NOT_FOUND, 429 -> RESOURCE_EXHAUSTED, 503 full
queue -> RESOURCE_EXHAUSTED, 503 shutting down -> UNAVAILABLE, 504 -> DEADLINE_EXCEEDED, a bug
-> INTERNAL; a message over --max-body-bytes is refused by gRPC itself (RESOURCE_EXHAUSTED).
Each call is counted in the HTTP metrics under the endpoint "grpc <Method>" with the HTTP status
of the same answer, so one dashboard reads both. When the drain begins (SIGTERM) the server
takes no new calls; those running may finish until the drain deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from maaslab import __version__
from maaslab.errors import MaaslabError
from maaslab.serve.access import require_admin
from maaslab.serve.batching import Overloaded, RequestTimeout, ShuttingDown
from maaslab.serve.oip import PLATFORM, find_model, infer_tensors, signature, tensor_model
from maaslab.serve.quotas import Refusal
from maaslab.serve.service_api import (
    check_load_parameters,
    repository_index,
    repository_of,
    unload_version,
)
from maaslab.serve.tenants import Tenant
from maaslab.serve.tensors import NUMPY_DTYPES, join_bytes, raw_output
from maaslab.serve.versions import load_model, unload_model

log = logging.getLogger("maaslab.serve")
Code = grpc.StatusCode
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})  # probes, like /v2/health/*
EXTENSIONS: list[str] = []  # the HTTP extensions (binary data, explain) are HTTP's own
# The typed field of InferTensorContents that holds each datatype (FP16 has none: raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def refusal(exc: Exception) -> tuple[int, grpc.StatusCode]:
    """(HTTP status the HTTP routes answer `exc` with, the gRPC status that stands for it)."""
    if isinstance(exc, Overloaded):
        return 503, Code.RESOURCE_EXHAUSTED
    if isinstance(exc, ShuttingDown):
        return 503, Code.UNAVAILABLE
    if isinstance(exc, RequestTimeout):
        return 504, Code.DEADLINE_EXCEEDED
    if isinstance(exc, MaaslabError):
        status = getattr(exc, "status", 400)
        codes = {
            403: Code.PERMISSION_DENIED,
            404: Code.NOT_FOUND,
            413: Code.RESOURCE_EXHAUSTED,
        }
        return status, codes.get(status, Code.INVALID_ARGUMENT)
    return 500, Code.INTERNAL


def _parameter(value: Any) -> Any:
    # An InferParameter holds one of bool/int64/string/double/uint64.
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


def _contents_bytes(tensor: Any) -> bytes:
    # Typed contents in the binary layout, so they decode like raw contents.
    dtype = tensor.datatype
    if dtype not in CONTENTS:
        if dtype in NUMPY_DTYPES:
            raise MaaslabError(f"input {tensor.name!r}: {dtype} data must come as raw contents")
        return b""  # decode_inputs names the unknown datatype
    values = getattr(tensor.contents, CONTENTS[dtype])
    if dtype == "BYTES":
        return join_bytes(list(values))
    try:
        return np.asarray(list(values)).astype(NUMPY_DTYPES[dtype]).tobytes()
    except (OverflowError, ValueError):
        raise MaaslabError(f"input {tensor.name!r}: a value does not fit {dtype}") from None


def oip_request(request: Any) -> tuple[dict[str, Any], bytes]:
    """A ModelInferRequest as the HTTP route sees a binary request: (JSON body, raw tensors)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise MaaslabError(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs: "
            "give every input its raw contents, in input order (or none and use contents)"
        )
    inputs, blobs = [], []
    for i, tensor in enumerate(request.inputs):
        blob = raw[i] if raw else _contents_bytes(tensor)
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    body: dict[str, Any] = {"inputs": inputs}
    if request.outputs:
        body["outputs"] = [
            {"name": o.name, "parameters": {k: _parameter(v) for k, v in o.parameters.items()}}
            for o in request.outputs
        ]
    return body, b"".join(blobs)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The OIP v2 gRPC methods over the HTTP app's state: its models, config, metrics, drain,
    tenants and compute threads (the same objects, so both protocols share everything)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.models, self.config, self.metrics = state.models, state.config, state.metrics
        self.drain, self.tenancy = state.drain, state.tenancy

    async def _tenant(self, method: str, context: grpc.aio.ServicerContext) -> Tenant | None:
        # What the HTTP tenant layer does: 401, then the tenant's limits (429 there).
        if self.tenancy is None or method in OPEN_METHODS:
            return None
        metadata = dict(context.invocation_metadata() or ())
        tenant = self.tenancy.authenticate(metadata.get("authorization"))
        if tenant is None:
            await context.abort(
                Code.UNAUTHENTICATED,
                "missing or unknown API key: send the metadata 'authorization: Bearer KEY'",
            )
        refusal: Refusal | None = self.tenancy.admit(tenant)
        if refusal is not None:
            await context.abort(
                Code.RESOURCE_EXHAUSTED,
                f"{refusal.message} (HTTP answers 429 with Retry-After: {refusal.retry_after_s})",
            )
        return tenant

    async def _answer(
        self,
        method: str,
        model: str,
        context: grpc.aio.ServicerContext,
        answer: Callable[[Tenant | None], Message | Awaitable[Message]],
    ) -> Message:
        # What the HTTP middleware does around a route: tenant, drain count, metrics, refusals.
        tenant = await self._tenant(method, context)
        started, status = time.perf_counter(), 500
        self.drain.open += 1
        try:
            reply = answer(tenant)
            if not isinstance(reply, Message):
                reply = await reply
            status = 200
            return reply
        except asyncio.CancelledError:
            if self.drain.draining:  # aborted by the drain deadline
                self.drain.cancelled += 1
            raise
        except Exception as exc:
            status, code = refusal(exc)
            if isinstance(exc, Overloaded):
                self.metrics.rejected.labels(model[:64]).inc()
            message = str(exc)
            if status == 500:
                log.exception("unhandled error in gRPC %s", method)
                message = f"internal error ({type(exc).__name__}); this is a bug in the server"
        finally:
            self.drain.open -= 1
            if tenant is not None:
                self.tenancy.usage.record(tenant.name)
            self.metrics.observe(
                model[:64], f"grpc {method}", status, time.perf_counter() - started
            )
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def ServerLive(self, request: Any, context: Any) -> Any:
        """Live while the process answers."""

        def reply(tenant: Tenant | None) -> Message:
            return pb.ServerLiveResponse(live=True)

        return await self._answer("ServerLive", "", context, reply)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        """Ready when every model is loaded and the server is not shutting down."""

        def reply(tenant: Tenant | None) -> Message:
            return pb.ServerReadyResponse(ready=bool(self.models) and not self.drain.draining)

        return await self._answer("ServerReady", "", context, reply)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        """The model can take requests (NOT_FOUND for a model not served)."""

        def reply(tenant: Tenant | None) -> Message:
            find_model(self.models, request.name, request.version or None)
            return pb.ModelReadyResponse(ready=not self.drain.draining)

        return await self._answer("ModelReady", request.name, context, reply)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        """Name, version and the protocol extensions served over gRPC."""

        def reply(tenant: Tenant | None) -> Message:
            return pb.ServerMetadataResponse(
                name="maaslab", version=__version__, extensions=EXTENSIONS
            )

        return await self._answer("ServerMetadata", "", context, reply)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        """Inputs and outputs with datatypes and shapes, as GET /v2/models/{name} gives them."""

        def reply(tenant: Tenant | None) -> Message:
            model = find_model(self.models, request.name, request.version or None)
            inputs, outputs = signature(model)
            meta = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=model.name,
                versions=list(self.models.rollout(model.name).versions),
                platform=PLATFORM,
                inputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in inputs],
                outputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in outputs],
            )

        return await self._answer("ModelMetadata", request.name, context, reply)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """Run the model on the request's tensors, through its queue and batches."""

        async def reply(tenant: Tenant | None) -> Message:
            name = tenant.name if tenant is not None else None
            version = request.model_version or None
            model = tensor_model(self.models, request.model_name, version, name)
            body, binary = oip_request(request)
            timeout = self.config.request_timeout_s
            left = context.time_remaining()  # the client's deadline, when it set one
            if left is not None:
                timeout = max(0.001, min(timeout, left))
            outputs, _ = await infer_tensors(model, body, binary, timeout, name, self.models)
            answer = pb.ModelInferResponse(
                model_name=model.name, model_version=model.version, id=request.id
            )
            for name, dtype, value in outputs:
                shape, blob = raw_output(dtype, value)
                answer.outputs.add(name=name, datatype=dtype, shape=shape)
                answer.raw_output_contents.append(blob)
            return answer

        return await self._answer("ModelInfer", request.model_name, context, reply)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        """The repository's models and versions with their state (admin)."""

        def reply(tenant: Tenant | None) -> Message:
            require_admin(tenant)
            entries = repository_index(self.state)
            if request.ready:
                entries = [e for e in entries if e["state"] == "READY"]
            index = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(models=[index(**e) for e in entries])

        return await self._answer("RepositoryIndex", "", context, reply)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        """Load the versions of a repository model not loaded yet (admin)."""

        async def reply(tenant: Tenant | None) -> Message:
            require_admin(tenant)
            check_load_parameters(list(request.parameters))
            state = self.state
            repository = repository_of(state)
            await load_model(
                state.models, repository, request.model_name, state.config, state.compute
            )
            return pb.RepositoryModelLoadResponse()

        return await self._answer("RepositoryModelLoad", request.model_name, context, reply)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        """Unload a model, or one version of it with the parameter version (admin)."""

        async def reply(tenant: Tenant | None) -> Message:
            require_admin(tenant)
            given = {k: _parameter(v) for k, v in request.parameters.items()}
            await unload_model(self.models, request.model_name, unload_version(given))
            return pb.RepositoryModelUnloadResponse()

        return await self._answer("RepositoryModelUnload", request.model_name, context, reply)


@contextlib.asynccontextmanager
async def grpc_service(state: Any) -> AsyncIterator[int]:
    """Serve OIP v2 over gRPC on config.host:config.grpc_port while the block runs; yields the
    port bound. When `drain` begins, no new calls are taken and those running may finish until
    its deadline; leaving the block waits for that.

    `state` is the HTTP app's (app.state): its models, metrics, drain, tenants and compute
    threads are shared; from its config: host, grpc_port, request timeout, message size
    (max_body_bytes) and calls in progress at most (max_connections: one gRPC connection
    carries many calls).
    """
    config, drain = state.config, state.drain
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.so_reuseport", 0),  # a port in use must fail, not be shared
        ],
        maximum_concurrent_rpcs=config.max_connections,
    )
    servicer = InferenceServicer(state)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    host = f"[{config.host}]" if ":" in config.host else config.host
    try:
        port = server.add_insecure_port(f"{host}:{config.grpc_port}")
    except RuntimeError as err:
        raise MaaslabError(f"cannot listen for gRPC on {host}:{config.grpc_port}: {err}") from None
    await server.start()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []
    drain.on_begin(lambda: stopping.append(loop.create_task(server.stop(drain.remaining()))))
    try:
        yield port
    finally:
        drain.begin()  # no effect when the web server began it
        await stopping[0]
