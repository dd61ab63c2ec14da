"""ServeConfig: every knob of the model server in one frozen dataclass, checked on creation,
and the `python -m maaslab serve` flags that fill it."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from maaslab.errors import MaaslabError

DEFAULT_MODELS = ("digits-cnn", "sentiment-minilm", "mini-gpt", "minilm-embed")


@dataclass(frozen=True)
class ServeConfig:
    """How the server runs: which models, where it listens, how it batches and what it refuses."""

    # Shipped model names or model folders; a folder is served under its folder name.
    models: tuple[str, ...] = DEFAULT_MODELS
    host: str = "127.0.0.1"  # loopback only: another interface needs an API key
    port: int = 8000  # 0 lets the OS pick a free port (the tests do this)
    device: str = "auto"  # auto picks cuda when present, else cpu
    max_batch_size: int = 32  # rows run together in one forward pass at most
    max_delay_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 256  # requests waiting per model; one more gets 503 + Retry-After at once
    batching: bool = True  # False runs every request alone (still queued and bounded)
    # Model instances (Triton's instance count): compute threads, and workers per model that
    # share its queue, each running its own batch, so one fills while another computes.
    instances: int = 1
    # Torch CPU threads in the server process; None: torch's default with one instance, else
    # cores / instances (unless OMP_NUM_THREADS says otherwise).
    threads: int | None = None
    api_key_env: str | None = None  # name of the environment variable holding the Bearer key
    request_timeout_s: float = 30.0  # a request still waiting after this gets 504
    max_body_bytes: int = 4 * 1024 * 1024  # larger request bodies get 413 before parsing
    # Half precision on CUDA for models that keep their answers in it (checked at load time).
    half_precision: bool = True

    def __post_init__(self) -> None:
        if not self.models:
            raise MaaslabError("no models to serve: name at least one with --models")
        if len(set(self.models)) != len(self.models):
            raise MaaslabError(f"a model is named twice in --models: {', '.join(self.models)}")
        if not 0 <= self.port <= 65535:
            raise MaaslabError(f"--port must be 0..65535, got {self.port}")
        if not 1 <= self.max_batch_size <= 4096:
            raise MaaslabError(f"--max-batch-size must be 1..4096, got {self.max_batch_size}")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise MaaslabError(f"--max-delay-ms must be 0..10000, got {self.max_delay_ms}")
        if not 1 <= self.instances <= 64:
            raise MaaslabError(f"--instances must be 1..64, got {self.instances}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise MaaslabError(f"--threads must be 1..1024, got {self.threads}")
        if not 1 <= self.max_queue <= 1_000_000:
            raise MaaslabError(f"--max-queue must be 1..1000000, got {self.max_queue}")
        if not 0 < self.request_timeout_s <= 3600:
            raise MaaslabError(
                f"--request-timeout-s must be in (0, 3600], got {self.request_timeout_s}"
            )
        if not 1024 <= self.max_body_bytes <= 1024**3:
            raise MaaslabError(f"--max-body-bytes must be 1 KiB..1 GiB, got {self.max_body_bytes}")

    def torch_threads(self, cores: int | None, environ: Mapping[str, str]) -> int | None:
        """CPU threads the server gives torch, or None to leave torch's default alone."""
        if self.threads is not None:
            return self.threads
        if self.instances > 1 and not environ.get("OMP_NUM_THREADS"):
            return max(1, (cores or 1) // self.instances)
        return None

    @property
    def effective_batch_size(self) -> int:
        """Rows per forward pass: 1 with batching off."""
        return self.max_batch_size if self.batching else 1

    @property
    def effective_delay_s(self) -> float:
        """Seconds a batch waits to fill: 0 with batching off."""
        return self.max_delay_ms / 1000 if self.batching else 0.0


def _models(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one model, e.g. digits-cnn")
    return names


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Add the serve flags to a (sub)parser."""
    d = ServeConfig()
    p.add_argument(
        "--models",
        type=_models,
        default=DEFAULT_MODELS,
        help="comma-separated shipped names or model folders "
        f"(default: {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--host",
        default=d.host,
        help=f"interface to bind (default: {d.host}; any other needs --api-key-env)",
    )
    p.add_argument("--port", type=int, default=d.port, help=f"port (default: {d.port}; 0 = any)")
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
        help="torch CPU threads (default: torch's own with one instance, else cores / instances)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the Bearer API key",
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


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The ServeConfig the flags describe (MaaslabError when a value is out of range)."""
    return ServeConfig(
        models=args.models,
        host=args.host,
        port=args.port,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        batching=not args.no_batching,
        instances=args.instances,
        threads=args.threads,
        api_key_env=args.api_key_env,
        request_timeout_s=args.request_timeout_s,
        max_body_bytes=args.max_body_bytes,
    )
