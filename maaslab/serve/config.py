"""ServeConfig: every knob of the model server in one frozen dataclass, checked on creation,
and the `python -m maaslab serve` flags that fill it."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from maaslab.errors import MaaslabError
from maaslab.serve.drain import DRAIN_GRACE_S

DEFAULT_MODELS = ("digits-cnn", "sentiment-minilm", "mini-gpt", "minilm-embed")
ENGINES = ("process", "ray")  # where the models run: this process, or Ray Serve deployments


@dataclass(frozen=True)
class ServeConfig:
    """How the server runs: which models, where it listens, how it batches and what it refuses."""

    # Shipped model names or model folders; a folder is served under its folder name.
    models: tuple[str, ...] = DEFAULT_MODELS
    host: str = "127.0.0.1"  # loopback only: another interface needs an API key
    port: int = 8000  # 0 lets the OS pick a free port (the tests do this)
    # Also serve OIP v2 over gRPC on this port (maaslab.serve.grpc_api); None: no gRPC; 0: any
    # free port, named in the ready line.
    grpc_port: int | None = None
    device: str = "auto"  # auto picks cuda when present, else cpu
    max_batch_size: int = 32  # rows run together in one forward pass at most
    max_delay_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 256  # requests waiting per model; one more gets 503 + Retry-After at once
    batching: bool = True  # False runs every request alone (still queued and bounded)
    # Model instances (Triton's instance count): compute threads, and workers per model that
    # share its queue, each running its own batch, so one fills while another computes.
    instances: int = 1
    # Torch CPU threads in the server process; None: torch's default with one instance, else
    # cores / instances, and cores - 1 with a language model (unless OMP_NUM_THREADS is set).
    threads: int | None = None
    api_key_env: str | None = None  # name of the environment variable holding the Bearer key
    # Tenants: a keys file (maaslab.serve.tenants: hashed keys, roles, limits); excludes
    # api_key_env. Without either, a loopback server has no tenants and no admin routes.
    keys_file: str | None = None
    # A model repository <root>/<name>/<version>/ (maaslab.serve.repository): every name in it
    # is served with its versions, next to the --models items; admins load and unload there.
    repository: str | None = None
    request_timeout_s: float = 30.0  # a request still waiting after this gets 504
    max_body_bytes: int = 4 * 1024 * 1024  # larger request bodies get 413 before parsing
    # A request's headers and body must arrive within this many seconds of its first byte
    # (else 408 and the connection closes); a new connection must start a request within it.
    read_timeout_s: float = 10.0
    # Open connections at most; a request on one more gets 503 + Retry-After and is closed.
    max_connections: int = 1000
    # On SIGTERM, how long accepted work may still run; None: request_timeout_s + 5 s. Streams
    # still running then are ended with an error event (see maaslab.serve.drain).
    drain_timeout_s: float | None = None
    # Half precision on CUDA for models that keep their answers in it (checked at load time).
    half_precision: bool = True

    # The range each number may take (request_timeout_s excludes its lower end). A face that
    # offers these as widgets reads its limits here, so it cannot offer what the server refuses.
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = MappingProxyType(
        {
            "port": (0, 65535),
            "grpc_port": (0, 65535),
            "max_batch_size": (1, 4096),
            "max_delay_ms": (0, 10_000),
            "max_queue": (1, 1_000_000),
            "instances": (1, 64),
            "threads": (1, 1024),
            "request_timeout_s": (0, 3600),
            "max_body_bytes": (1024, 1024**3),
            "read_timeout_s": (0, 3600),
            "max_connections": (1, 100_000),
            "drain_timeout_s": (0, 24 * 3600),
        }
    )

    def __post_init__(self) -> None:
        models = (self.models,) if isinstance(self.models, str) else tuple(self.models)
        object.__setattr__(self, "models", models)  # a list or one name is taken as a tuple
        if not self.models and not self.repository:
            raise MaaslabError(
                "no models to serve: name at least one with --models, or give --repository ROOT"
            )
        if len(set(self.models)) != len(self.models):
            raise MaaslabError(f"a model is named twice in --models: {', '.join(self.models)}")
        for name in ("port", "grpc_port", "max_batch_size", "max_delay_ms", "instances", "threads"):
            self._check(name)
        if self.keys_file and self.api_key_env:
            raise MaaslabError(
                "give either --keys FILE (tenants) or --api-key-env VAR (one key), not both"
            )
        if self.grpc_port and self.grpc_port == self.port:
            raise MaaslabError(
                f"--grpc-port {self.grpc_port} is the HTTP --port too: give gRPC a port of its own"
            )
        self._check("max_queue", "1..1000000")
        low, high = self.bounds("request_timeout_s")
        if not low < self.request_timeout_s <= high:
            raise MaaslabError(
                f"--request-timeout-s must be in ({low:g}, {high:g}], got {self.request_timeout_s}"
            )
        self._check("max_body_bytes", "1 KiB..1 GiB")
        low, high = self.bounds("read_timeout_s")
        if not low < self.read_timeout_s <= high:
            raise MaaslabError(
                f"--read-timeout-s must be in ({low:g}, {high:g}], got {self.read_timeout_s}"
            )
        self._check("max_connections")
        self._check("drain_timeout_s")
        if self.drain_timeout_s is not None and self.drain_timeout_s < self.request_timeout_s:
            raise MaaslabError(
                f"--drain-timeout-s ({self.drain_timeout_s:g}) must be at least the request "
                f"timeout ({self.request_timeout_s:g}): a request accepted before a shutdown "
                "must be answered by its end"
            )

    @classmethod
    def bounds(cls, name: str) -> tuple[float, float]:
        """The (lowest, highest) value the field `name` may take."""
        if name not in cls.BOUNDS:
            raise MaaslabError(f"ServeConfig has no bounded field {name!r}; see ServeConfig.BOUNDS")
        return cls.BOUNDS[name]

    def _check(self, name: str, shown: str | None = None) -> None:
        value = getattr(self, name)
        low, high = self.bounds(name)
        if value is not None and not low <= value <= high:
            flag = "--" + name.replace("_", "-")
            raise MaaslabError(f"{flag} must be {shown or f'{low:g}..{high:g}'}, got {value}")

    def torch_threads(
        self, cores: int | None, environ: Mapping[str, str], engine: bool = False
    ) -> int | None:
        """CPU threads the server gives torch, or None to leave torch's default alone.

        `engine`: a language model is served. Its engine steps every few milliseconds and each
        step's tokens leave as server-sent events, so the event loop needs a core of its own,
        as vLLM's CPU backend advises: torch gets the other cores (at least one). Measured
        here (2 cores, 16 streams of mini-llama, the client on the same cores): 1 torch thread
        1,220 tokens/s served, 2 threads 830.
        """
        if self.threads is not None:
            return self.threads
        if environ.get("OMP_NUM_THREADS"):
            return None
        if self.instances > 1:
            return max(1, (cores or 1) // self.instances)
        if engine and cores and cores > 1:
            return cores - 1
        return None

    @property
    def drain_deadline_s(self) -> float:
        """Seconds accepted work may run after SIGTERM (see maaslab.serve.drain)."""
        if self.drain_timeout_s is not None:
            return self.drain_timeout_s
        return self.request_timeout_s + DRAIN_GRACE_S

    @property
    def effective_batch_size(self) -> int:
        """Rows per forward pass: 1 with batching off."""
        return self.max_batch_size if self.batching else 1

    @property
    def effective_delay_s(self) -> float:
        """Seconds a batch waits to fill: 0 with batching off."""
        return self.max_delay_ms / 1000 if self.batching else 0.0

    def describe(self) -> str:
        """How requests are batched and queued, in words (the Serve page's server line)."""
        mode = (
            f"batching on (up to {self.max_batch_size} rows, {self.max_delay_ms:g} ms wait)"
            if self.batching
            else "batching off"
        )
        return f"{mode} · queue {self.max_queue}"


@dataclass(frozen=True)
class ScaleConfig:
    """Where a ServeConfig's models run: this process, or Ray Serve deployments (one per model,
    behind the same routes: maaslab.scale.ray_serve)."""

    engine: str = "process"  # "process" (maaslab.serve alone) or "ray" (Ray Serve)
    replicas: int | None = None  # ray: replicas of each model's deployment (None: one)
    # ray: (min, max) replicas of each model, following the load; excludes `replicas`.
    autoscale: tuple[int, int] | None = None
    address: str | None = None  # ray: the cluster to join ("HOST:PORT"); None: a local one

    MAX_REPLICAS: ClassVar[int] = 64  # replicas of one model at most (fixed or autoscaled)

    def __post_init__(self) -> None:
        # The Ray flags mean nothing to the process engine: refuse them rather than ignore them.
        if self.engine not in ENGINES:
            raise MaaslabError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "process":
            given = [
                flag
                for flag, value in (
                    ("--replicas", self.replicas),
                    ("--autoscale", self.autoscale),
                    ("--address", self.address),
                )
                if value is not None
            ]
            if given:
                raise MaaslabError(
                    f"{', '.join(given)} needs --engine ray (the process engine runs one copy "
                    "of each model; use --instances for more compute threads)"
                )
            return
        if self.replicas is not None and self.autoscale is not None:
            raise MaaslabError(
                "give either --replicas N (fixed) or --autoscale MIN,MAX (by load), not both"
            )
        if self.replicas is not None and not 1 <= self.replicas <= self.MAX_REPLICAS:
            raise MaaslabError(f"--replicas must be 1..{self.MAX_REPLICAS}, got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 1 <= low <= high <= self.MAX_REPLICAS:
                raise MaaslabError(
                    f"--autoscale MIN,MAX needs 1 <= MIN <= MAX <= {self.MAX_REPLICAS}, "
                    f"got {low},{high}"
                )

    def check(self, config: ServeConfig) -> None:
        """Refuse what the chosen engine cannot serve of `config` (MaaslabError)."""
        if self.engine == "ray" and config.repository:
            raise MaaslabError(
                "--repository is served by --engine process only: name the models with "
                "--models for --engine ray"
            )


def _models(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one model, e.g. digits-cnn")
    return names


def _min_max(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        low, high = (int(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes MIN,MAX replicas as two whole numbers, e.g. 1,4 (got {text!r})"
        ) from None
    return low, high


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Add the serve flags to a (sub)parser."""
    d = ServeConfig()
    p.add_argument(
        "--models",
        type=_models,
        default=None,
        help="comma-separated shipped names or model folders "
        f"(default: {','.join(DEFAULT_MODELS)}; none with --repository)",
    )
    p.add_argument(
        "--host",
        default=d.host,
        help=f"interface to bind (default: {d.host}; any other needs --api-key-env)",
    )
    p.add_argument("--port", type=int, default=d.port, help=f"port (default: {d.port}; 0 = any)")
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve the Open Inference Protocol over gRPC on this port (0 = any; "
        "default: no gRPC)",
    )
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=d.max_batch_size,
        help=f"rows per batched model call (default: {d.max_batch_size})",
    )
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=d.max_delay_ms,
        help=f"wait for a batch to fill (default: {d.max_delay_ms:g})",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"requests waiting per model before 503 (default: {d.max_queue})",
    )
    p.add_argument("--no-batching", action="store_true", help="run every request alone")
    p.add_argument(
        "--no-half-precision",
        action="store_true",
        help="keep every model in fp32 on CUDA (default: fp16 where it keeps the answers)",
    )
    p.add_argument(
        "--instances",
        type=int,
        default=d.instances,
        help="model instances (compute threads), each running its own batches "
        f"(default: {d.instances})",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own with one instance, else cores / "
        "instances; with a language model served, one core is left to the event loop)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the Bearer API key",
    )
    p.add_argument(
        "--keys",
        default=None,
        metavar="FILE",
        help="tenants' keys file (hashed keys, roles admin/user, limits); make one with "
        "python -m maaslab keys classroom",
    )
    p.add_argument(
        "--repository",
        default=None,
        metavar="ROOT",
        help="model repository ROOT/NAME/VERSION/: serve every model in it with its versions "
        "(admins can load and unload there)",
    )
    p.add_argument(
        "--request-timeout-s",
        type=float,
        default=d.request_timeout_s,
        help=f"give up after this (default: {d.request_timeout_s:g})",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=d.max_body_bytes,
        help=f"largest request body (default: {d.max_body_bytes})",
    )
    p.add_argument(
        "--read-timeout-s",
        type=float,
        default=d.read_timeout_s,
        help="a request's headers and body must arrive within this, else 408 "
        f"(default: {d.read_timeout_s:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help=f"open connections at most; past it 503 (default: {d.max_connections})",
    )
    p.add_argument(
        "--drain-timeout-s",
        type=float,
        default=None,
        help="on SIGTERM, how long accepted work may still run; streams still running then "
        "end with an error event and the exit status is 75 (default: request timeout + 5)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="process",
        help="where the models run: this process, or Ray Serve with one deployment per model "
        "behind the same routes (default: process)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="with --engine ray: replicas of each model (default: 1)",
    )
    p.add_argument(
        "--autoscale",
        type=_min_max,
        default=None,
        metavar="MIN,MAX",
        help="with --engine ray: replicas of each model follow the load between MIN and MAX",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="with --engine ray: join this Ray cluster (ray start's HOST:PORT; default: start "
        "a local one)",
    )


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The ServeConfig the flags describe (MaaslabError when a value is out of range)."""
    return ServeConfig(
        models=args.models
        if args.models is not None
        else ()
        if args.repository
        else DEFAULT_MODELS,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        batching=not args.no_batching,
        instances=args.instances,
        threads=args.threads,
        api_key_env=args.api_key_env,
        keys_file=args.keys,
        repository=args.repository,
        request_timeout_s=args.request_timeout_s,
        max_body_bytes=args.max_body_bytes,
        read_timeout_s=args.read_timeout_s,
        max_connections=args.max_connections,
        drain_timeout_s=args.drain_timeout_s,
        half_precision=not args.no_half_precision,
    )


def scale_from_args(args: argparse.Namespace, config: ServeConfig) -> ScaleConfig:
    """The ScaleConfig the --engine flags describe, checked against the server's `config`."""
    scale = ScaleConfig(args.engine, args.replicas, args.autoscale, args.address)
    scale.check(config)
    return scale
