"""The model server on Ray Serve: the same routes, one deployment per model (lesson 17).

    ingress (1 replica)                         one deployment per model
    create_app's FastAPI app  ── handle ──>     ModelReplica x N: build_served + our Batcher
    OIP v2, OpenAI, explain, /metrics           (digits-cnn, sentiment-minilm, minilm-embed)
                              ── streaming ──>  LLMReplica x N: EngineService (mini-llama)
                                 handle

The ingress deployment serves the app maaslab.serve.create_app builds — every route, middleware
and error answer of the single-process server, not a copy. The seams are ServedModel.batcher (a
maaslab.serve.batching.ModelQueue) and ServedModel.service: in the ingress, a tensor model's
queue is a RemoteQueue that sends each request to the model's deployment through its
DeploymentHandle, and a language model's engine is a RemoteEngine (maaslab.scale.ray_llm) that
streams each request's tokens from a replica running the single-process server's engine; Ray
Serve picks the replica. The ingress also loads each model (metadata, the explain extension, a
language model's tokenizer); mini-gpt, a character model with no engine, is answered by the
ingress itself, on that copy. With grpc_port,
the ingress (one replica) serves OIP over gRPC on that port too, through the same app state (our
gRPC front, not Ray Serve's gRPC proxy). Its /metrics counts requests, statuses and latency; the
batch histograms stay empty there, since batches run in the replicas.

Batching: each replica runs our own Batcher (not `@serve.batch`), with the server's
max_batch_size and max_delay_ms. It is the code whose numbers the lessons measured, and it keeps
what `@serve.batch` has no notion of: a bounded queue whose overflow is a 503 with Retry-After
at once, tenants taking turns within a batch, and a batch split when one request is bad.

Faults: a replica that dies with requests in flight makes Ray raise an actor error in the
ingress; the request is sent once more (inference has no side effects), and if that fails too
it is answered 503 with Retry-After (ReplicaLost), never left hanging (request_timeout_s bounds
every wait: then 504).

`app_builder(args)` is the import path for Ray Serve config files (`serve run` / `serve deploy`):
    import_path: maaslab.scale.ray_serve:app_builder
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.handle import DeploymentHandle

from maaslab.errors import MaaslabError
from maaslab.scale.faults import ReplicaLost
from maaslab.serve.batching import BatchHook, RequestTimeout, ShareHook
from maaslab.serve.config import ServeConfig
from maaslab.serve.models import kind_of, served_name

INGRESS = "ingress"  # the ingress deployment's name; each model's deployment is named after it
RETRIES = 1  # a request whose replica died is sent this many more times before its 503
# A stopping replica looks for requests still running this often (Ray's default, 2 s, is also
# the least each stop waits: it sleeps once before it first looks).
DRAIN_POLL_S = 0.25


class RemoteQueue:
    """A model's queue in the ingress: each request goes to the model's Ray Serve deployment.

    A ModelQueue (maaslab.serve.batching): the routes call `submit` as they call a Batcher's;
    the batching, the queue bound and its 503 happen in the replica's own Batcher.
    """

    def __init__(self, name: str, handle: DeploymentHandle, retries: int = RETRIES) -> None:
        self.name, self.handle, self.retries = name, handle, retries
        self.on_batch: BatchHook | None = None  # batches run in the replicas, not here
        self.on_share: ShareHook | None = None
        self.in_flight = 0  # requests sent to the deployment and not answered yet
        self.lost = 0  # requests whose replica died under them (retried or answered 503)

    @property
    def depth(self) -> int:
        """Requests this ingress has sent to the model and not had answered."""
        return self.in_flight

    def full(self, tenant: Hashable = None) -> bool:
        """Never refused here: the replica's queue decides (its Overloaded comes back as 503)."""
        return False

    def start(self) -> None:
        """Nothing to start: the deployment's replicas run their own batchers."""

    async def close(self) -> None:
        """Nothing to stop: Ray Serve stops the replicas."""

    async def submit(
        self, payload: Any, rows: int = 1, timeout: float | None = None, tenant: Hashable = None
    ) -> Any:
        """Run one request on a replica; Overloaded, RequestTimeout or ReplicaLost as a Batcher
        would, and the replica's MaaslabError for a bad request."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self.in_flight += 1
        try:
            for attempt in range(self.retries + 1):
                response = self.handle.infer.remote(payload, rows, tenant)
                left = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    return await asyncio.wait_for(_result(response), left)
                except TimeoutError:
                    response.cancel()
                    raise RequestTimeout(
                        f"model {self.name!r} did not answer within {timeout:g} s; try again later"
                    ) from None
                except RayTaskError as err:  # the replica's own exception: a bad request, 503
                    cause = err.cause if isinstance(err.cause, Exception) else err
                    raise cause from None
                except RayError as err:  # the replica's process died, or is unreachable
                    self.lost += 1
                    if attempt == self.retries:
                        raise ReplicaLost(self.name, type(err).__name__) from None
            raise AssertionError("unreachable")  # the loop returns or raises
        finally:
            self.in_flight -= 1


async def _result(response: Any) -> Any:
    return await response


class ModelReplica:
    """One replica of one model: its wrapper and our Batcher, on the replica's event loop."""

    def __init__(self, name: str, spec: str, config: ServeConfig) -> None:
        import torch

        from maaslab.device import get_device
        from maaslab.serve.models import build_served

        if config.threads is not None:
            torch.set_num_threads(config.threads)
        # Loaded on the compute thread it will run on (see maaslab.serve.batching).
        self.compute = ThreadPoolExecutor(config.instances, thread_name_prefix="maaslab-compute")
        device = get_device(config.device)
        self.model = build_served(name, spec, config, device, self.compute)
        if self.model.batcher is None:
            raise MaaslabError(f"model {name!r} ({self.model.kind}) takes no tensor requests")

    async def infer(self, payload: Any, rows: int, tenant: Hashable = None) -> dict[str, Any]:
        """One request through this replica's batcher (the ingress bounds the wait)."""
        return await self.model.infer(payload, rows, None, tenant)

    def where(self) -> dict[str, Any]:
        """Where this replica runs: process id, Ray node and replica id."""
        import ray

        context = serve.get_replica_context()
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "replica": context.replica_id.unique_id,
            "deployment": context.deployment,
        }


@serve.ingress()
class Ingress:
    """The ingress deployment: create_app's FastAPI app, each model's requests sent to its
    deployment's handle (tensor models: RemoteQueue; language models: RemoteEngine)."""

    def __init__(self, config: ServeConfig, handles: dict[str, DeploymentHandle]) -> None:
        self.config, self.handles = config, handles

    def __serve_build_asgi_app__(self) -> Any:
        """Build the server's app in the replica (Ray Serve calls this after __init__)."""
        from maaslab.scale.ray_llm import RemoteEngine
        from maaslab.serve.app import create_app
        from maaslab.serve.models import load_models
        from maaslab.serve.security import resolve_api_key
        from maaslab.zoo import ChatModel

        config = self.config
        api_key = None if config.keys_file else resolve_api_key(config.host, config.api_key_env)
        # The ingress keeps a copy of each model for what its replicas do not answer: metadata
        # (class names), the explain extension, a language model's tokenizer, mini-gpt.
        models = load_models(config, engines=False)  # the replicas run the engines
        for name, model in models.items():
            if name not in self.handles:
                continue
            if isinstance(model.wrapper, ChatModel):
                model.service = RemoteEngine(name, self.handles[name])
            elif model.batcher is not None:
                model.batcher = RemoteQueue(name, self.handles[name])
        return create_app(config, api_key=api_key, models=models)


@dataclass(frozen=True)
class RayServeArgs:
    """The arguments of app_builder (a Ray Serve config file's `args`)."""

    # Shipped names or model folders, as `serve --models` takes them.
    models: tuple[str, ...] = ("digits-cnn",)
    replicas: int = 1  # replicas of each model's deployment (ignored with autoscale)
    autoscale: tuple[int, int] | None = None  # (min, max) replicas by load; None: fixed
    max_batch_size: int = 32  # rows per forward pass in a replica's batcher
    batch_timeout_ms: float = 5.0  # how long a batch's first request waits for company
    max_queue: int = 256  # requests waiting per replica before 503 + Retry-After
    request_timeout_s: float = 30.0  # a request still unanswered after this gets 504
    device: str = "cpu"  # where each replica runs its model (auto: cuda when present)
    # Torch threads per replica; None: the machine's cores but one (Ray's proxy and the ingress
    # need it) / the most replicas of a model. Measured here (digits-cnn, 1 replica, 16
    # clients, 2 cores): 2 torch threads 92 req/s (p99 349 ms), 1 thread 117 req/s (245 ms).
    threads: int | None = None
    replica_cpus: float = 1.0  # Ray CPUs each model replica reserves (placement, not threads)
    # Autoscaling aims at this many requests in flight per replica (Ray Serve's default). The
    # ingress hands requests on as fast as it parses them, so a replica sees a few at a time
    # even under 16 clients: measured, a target of 8 never added a replica.
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 3.0  # autoscaling: load above target this long adds replicas
    downscale_delay_s: float = 10.0  # autoscaling: load below target this long removes them
    grpc_port: int | None = None  # the ingress also serves OIP over gRPC here (one ingress)
    api_key_env: str | None = None  # environment variable holding the Bearer key (ingress)
    keys_file: str | None = None  # tenants' keys file (ingress)
    host: str = "127.0.0.1"  # the interface the HTTP proxy binds (for the key check)

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> RayServeArgs:
        """Checked arguments from a config file's dict (MaaslabError names a wrong key)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise MaaslabError(
                f"app_builder does not take {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(known))}"
            )
        values = dict(args)
        if isinstance(values.get("models"), str):
            values["models"] = [n.strip() for n in values["models"].split(",") if n.strip()]
        values["models"] = tuple(values.get("models") or ())
        if values.get("autoscale") is not None:
            values["autoscale"] = tuple(int(x) for x in values["autoscale"])
        made = cls(**values)
        made.check()
        return made

    def check(self) -> None:
        """Refuse values Ray Serve or the server would refuse later, with what to do."""
        from maaslab.serve.config import ScaleConfig

        ScaleConfig("ray", None if self.autoscale else self.replicas, self.autoscale)
        if self.replica_cpus < 0:
            raise MaaslabError(f"replica_cpus must be >= 0, got {self.replica_cpus}")

    def serve_config(self) -> ServeConfig:
        """The ServeConfig every replica and the ingress build their part of the server from."""
        most = self.autoscale[1] if self.autoscale else self.replicas
        threads = self.threads or max(1, ((os.cpu_count() or 1) - 1) // most)
        return ServeConfig(
            models=self.models,
            host=self.host,
            grpc_port=self.grpc_port,
            device=self.device,
            max_batch_size=self.max_batch_size,
            max_delay_ms=self.batch_timeout_ms,
            max_queue=self.max_queue,
            threads=threads,
            request_timeout_s=self.request_timeout_s,
            api_key_env=self.api_key_env,
            keys_file=self.keys_file,
        )


def model_deployment(name: str, spec: str, config: ServeConfig, args: RayServeArgs) -> Any:
    """The bound deployment of one model: its replicas (fixed or autoscaled), running our
    Batcher (a tensor model) or the engine (a language model: ray_llm.LLMReplica)."""
    from maaslab.auto import is_language_model
    from maaslab.scale.ray_llm import LLMReplica

    # A replica takes as many requests as its queue holds plus one batch running: past that,
    # its own queue answers 503 (Ray would otherwise hold them in the router).
    options: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": config.max_queue + config.max_batch_size,
        "graceful_shutdown_wait_loop_s": DRAIN_POLL_S,
        "ray_actor_options": {"num_cpus": args.replica_cpus},
    }
    if args.autoscale is not None:
        low, high = args.autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": args.target_ongoing_requests,
            "upscale_delay_s": args.upscale_delay_s,
            "downscale_delay_s": args.downscale_delay_s,
        }
    else:
        options["num_replicas"] = args.replicas
    replica = LLMReplica if is_language_model(spec) else ModelReplica
    return serve.deployment(replica).options(**options).bind(name, spec, config)


def deployed_separately(spec: str) -> bool:
    """True for a model that gets a deployment of its own: a tensor model, or a language
    model (mini-llama, a causal-LM folder) run by the engine. mini-gpt (characters, no
    engine) is answered by the ingress. A name the server cannot place is deployed."""
    from maaslab.auto import is_language_model

    if is_language_model(spec):
        return True
    try:
        return kind_of(served_name(spec)) != "generator"
    except MaaslabError:
        return True


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The server as a Ray Serve application: `serve run` / `serve deploy` import path
    `maaslab.scale.ray_serve:app_builder`.

    One deployment per model, named after it: a tensor model's replicas run our Batcher
    (ModelReplica), a language model's (mini-llama, a Llama or GPT-2 folder) the engine
    (maaslab.scale.ray_llm.LLMReplica), reached through a streaming handle; mini-gpt, with no
    engine, is answered by the ingress. The ingress deployment ("ingress", one replica)
    serves every route.

    Parameters
    ----------
    args : a dict (a config file's `args`); every key is optional:
        models : list of shipped names or model folders, as `serve --models` takes them
            (a comma-separated string works too); default ["digits-cnn"].
        replicas : int, replicas of each model's deployment (default 1).
        autoscale : [min, max] replicas by load, or null for a fixed count (default null).
        max_batch_size : rows per forward pass in a replica's batcher (default 32).
        batch_timeout_ms : how long a batch waits to fill, in ms (default 5).
        max_queue, request_timeout_s, device, threads, replica_cpus,
        target_ongoing_requests, upscale_delay_s, downscale_delay_s, grpc_port,
        api_key_env, keys_file, host : see RayServeArgs.
    """
    checked = RayServeArgs.from_dict(args)
    config = checked.serve_config()
    handles = {
        served_name(spec): model_deployment(served_name(spec), spec, config, checked)
        for spec in config.models
        if deployed_separately(spec)
    }
    # The ingress takes every request the proxy hands it: the app's own limits answer
    # overload (Ray's default of 5 at a time would queue the rest in the proxy).
    ingress = serve.deployment(Ingress).options(
        name=INGRESS,
        num_replicas=1,
        max_ongoing_requests=config.max_connections,
        graceful_shutdown_wait_loop_s=DRAIN_POLL_S,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(config, handles)
