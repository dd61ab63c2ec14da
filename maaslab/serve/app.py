"""create_app: the FastAPI application of the MaaS Lab model server.

Layers, outermost first: the drain's request count -> tenants (keys, limits, metering:
maaslab.serve.access; when the server has keys) -> a full queue's 503 before the body is read
(maaslab.serve.oip.FullQueueMiddleware) -> the request-parsing layer (body size,
decompression, bounded JSON: maaslab.serve.parsing) -> metrics -> the last net for bugs ->
routes. Below them all, the connection layer (maaslab.serve.connections) bounds how long a
request may take to arrive and how many connections are open.

Models are loaded before the app is built (a failure is a clear message at start, not a 500
later): the --models items as version 1 of their names, and with --repository every version of
every model there (maaslab.serve.versions holds them, with the canary and shadow rules). Batch
workers and language-model engine threads start with the event loop and stop when it shuts
down. With `config.grpc_port` the same models, batches, limits, metrics, tenants and drain
also serve OIP v2 over gRPC (maaslab.serve.grpc_api), on the same event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI

from maaslab import __version__
from maaslab.serve.access import Tenancy, TenantMiddleware
from maaslab.serve.config import ServeConfig
from maaslab.serve.drain import Drain, DrainMiddleware
from maaslab.serve.errors import ERROR_RESPONSES, UnhandledErrorMiddleware, install_error_handlers
from maaslab.serve.metrics import MetricsMiddleware, ServerMetrics, metrics_endpoint
from maaslab.serve.models import ServedModel, load_models
from maaslab.serve.oip import FullQueueMiddleware
from maaslab.serve.parsing import RequestBodyMiddleware
from maaslab.serve.versions import ModelTable

ENGINE_STOP_S = 10.0  # at shutdown, how long a language model's engine thread may take to stop
DESCRIPTION = (
    "MaaS Lab model server. Open Inference Protocol v2 under /v2 (with Triton's binary tensor "
    "data extension and our explain extension: POST /v2/models/{name}/explain), an "
    "OpenAI-compatible API under /v1, Prometheus metrics at /metrics."
)


def create_app(
    config: ServeConfig | None = None,
    *,
    api_key: str | None = None,
    models: dict[str, ServedModel] | None = None,
    preloaded: dict[str, Any] | None = None,
    tenancy: Tenancy | None = None,
) -> FastAPI:
    """Build the server app.

    Parameters
    ----------
    config : models, batching and limits (defaults: ServeConfig()).
    api_key : when set, every route except the health probes needs `Bearer <api_key>` (one
        admin tenant).
    models : already built ServedModels to serve instead of loading config.models.
    preloaded : served name -> zoo wrapper already in memory, reused instead of loading again.
    tenancy : the tenants (default: from config.keys_file, else from api_key, else none).
    """
    config = config or ServeConfig()
    if tenancy is None and config.keys_file:  # a bad keys file stops the start, before loading
        from maaslab.serve.tenants import KeyTable

        tenancy = Tenancy(KeyTable.load(config.keys_file))
    elif tenancy is None and api_key:
        tenancy = Tenancy.single_key(api_key)
    # The threads every model is loaded and run on (one per instance): see serve.batching.
    compute = ThreadPoolExecutor(config.instances, thread_name_prefix="maaslab-compute")
    try:
        table = ModelTable(
            models if models is not None else load_models(config, preloaded, compute)
        )
        if config.repository is not None:
            from maaslab.serve.repository import ModelRepository
            from maaslab.serve.versions import load_repository

            load_repository(table, ModelRepository(config.repository), config, compute)
    except BaseException:
        compute.shutdown(wait=False)
        raise
    metrics = ServerMetrics()

    def watch(model: ServedModel) -> None:
        # Metrics and metering hooks of one model version (at start, and on a repository load).
        label = model.name if model.version == "1" else f"{model.name}/{model.version}"
        if model.batcher is not None:
            model.batcher.on_batch = metrics.batch_hook(label)
            if tenancy is not None:
                model.batcher.on_share = tenancy.meter_share
            metrics.watch_queue(label, lambda b=model.batcher: b.depth)
        if model.service is not None:
            model.service.on_latency = metrics.latency_hook(label)
            metrics.watch_queue(label, lambda s=model.service: s.depth)
            metrics.watch_engine(label, lambda s=model.service: (s.stats, s.aborted))

    for model in table.every():
        watch(model)
    table.on_added = watch
    metrics.watch_rollouts(table)
    if tenancy is not None:
        metrics.watch_tenants(tenancy.usage)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for model in table.every():
            if model.batcher is not None:
                model.batcher.start()
            if model.service is not None:
                model.service.start()
        async with contextlib.AsyncExitStack() as grpc:
            if config.grpc_port is not None:  # grpc is imported only by a server that uses it
                from maaslab.serve.grpc_api import grpc_service

                service = grpc_service(app.state)
                app.state.grpc_port = await grpc.enter_async_context(service)
            yield
        # uvicorn has already stopped accepting and waited for open requests, and leaving the
        # stack waited for the gRPC calls still running; finish the rest.
        await table.settle()
        for model in table.every():
            if model.batcher is not None:
                await model.batcher.close()
            if model.service is not None:  # after its current step; what still runs is failed
                await model.service.close(ENGINE_STOP_S)
        compute.shutdown(wait=True)

    app = FastAPI(
        title="MaaS Lab model server",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # operationId = the route function's name: short, stable, and what OpenAPI links name
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.config = config
    app.state.models = table
    app.state.tenancy = tenancy
    app.state.compute = compute  # a repository load runs on these threads too
    app.state.metrics = metrics
    app.state.drain = Drain(config.drain_deadline_s)
    app.state.grpc_port = None  # the port gRPC listens on, once started (config.grpc_port)
    install_error_handlers(app)

    from maaslab.serve import explain_api, oip, openai_api, service_api

    app.include_router(oip.router)
    app.include_router(service_api.router)
    app.include_router(openai_api.router)
    app.include_router(explain_api.router)
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)

    # add_middleware wraps what is there, so the last added runs first: auth, body, metrics.
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestBodyMiddleware, limit=config.max_body_bytes)
    app.add_middleware(FullQueueMiddleware, models=table, metrics=metrics)
    if tenancy is not None:
        app.add_middleware(TenantMiddleware, tenancy=tenancy)
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    return app
