"""The `python -m maaslab serve` flags and what they turn into (a ServeConfig, then a server)."""

from __future__ import annotations

import argparse
import sys

from maaslab.serve.config import DEFAULT_MODELS, ServeConfig


def _models(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one model, e.g. digits-cnn")
    return names


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Add the serve flags to a (sub)parser."""
    d = ServeConfig()
    p.add_argument("--models", type=_models, default=DEFAULT_MODELS,
                   help="comma-separated shipped names or model folders "
                   f"(default: {','.join(DEFAULT_MODELS)})")  # fmt: skip
    p.add_argument("--host", default=d.host, help=f"interface to bind (default: {d.host}; "
                   "any other needs --api-key-env)")  # fmt: skip
    p.add_argument("--port", type=int, default=d.port, help=f"port (default: {d.port}; 0 = any)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help=f"rows per batched model call (default: {d.max_batch_size})")  # fmt: skip
    p.add_argument("--max-delay-ms", type=float, default=d.max_delay_ms,
                   help=f"wait for a batch to fill (default: {d.max_delay_ms:g})")  # fmt: skip
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"requests waiting per model before 503 (default: {d.max_queue})",
    )
    p.add_argument("--no-batching", action="store_true", help="run every request alone")
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="environment variable holding the Bearer API key")  # fmt: skip
    p.add_argument(
        "--request-timeout-s",
        type=float,
        default=d.request_timeout_s,
        help=f"give up after this (default: {d.request_timeout_s:g})",
    )
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"largest request body (default: {d.max_body_bytes})")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The ServeConfig the flags describe (MaaslabError when a value is out of range)."""
    return ServeConfig(
        models=args.models, host=args.host, port=args.port, device=args.device,
        max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue, batching=not args.no_batching, api_key_env=args.api_key_env,
        request_timeout_s=args.request_timeout_s, max_body_bytes=args.max_body_bytes,
    )  # fmt: skip


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/Ctrl+C; prints one line with the URL once ready."""
    from maaslab.serve.runner import serve

    config = config_from_args(args)

    def ready(url: str) -> None:
        print(f"maaslab serve: {', '.join(config.models)} on {url} "
              f"(batching {'on' if config.batching else 'off'})", flush=True)  # fmt: skip

    code = serve(config, on_ready=ready)
    print("maaslab serve: stopped", file=sys.stderr, flush=True)
    return code
