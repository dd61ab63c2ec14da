"""Run the server under uvicorn with a graceful SIGTERM: stop accepting, answer what was
accepted until the drain deadline, exit 0 (or 75 when the deadline cut a stream: see
maaslab.serve.drain)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from maaslab.errors import MaaslabError
from maaslab.serve.config import ServeConfig
from maaslab.serve.connections import door_for, protocol_for
from maaslab.serve.drain import Drain
from maaslab.serve.security import resolve_api_key

CUT_GRACE_S = 2.0  # after the drain deadline: time for cut streams to send their error event


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM/SIGINT drain and return instead of re-raising the signal.

    uvicorn re-raises a caught signal after its shutdown, so the process would die *by*
    SIGTERM (exit status -15); a service manager should see a clean exit 0 after a drain.
    """

    on_started: Callable[[], None] | None = None  # called once it listens, lifespan done
    drain: Drain | None = None  # the app's drain clock, started when the shutdown begins

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, then the on_started hook."""
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the drain clock, then uvicorn's shutdown (stop accepting, wait, cancel)."""
        if self.drain is not None:
            self.drain.begin()
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install handlers that ask for a graceful exit (the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a MaaslabError saying why not (e.g. port in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise MaaslabError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app, config: ServeConfig, log_level: str = "warning") -> GracefulServer:
    """A GracefulServer for `app` (from create_app): the connection layer, the drain deadline
    and quiet logs."""
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        http=protocol_for(
            config.read_timeout_s,
            config.max_connections,
            door_for(getattr(app.state, "tenancy", None), os.environ),
        ),
        # Streams end themselves at the drain deadline; uvicorn cancels what is left after.
        timeout_graceful_shutdown=config.drain_deadline_s + CUT_GRACE_S,  # type: ignore[arg-type]
        timeout_keep_alive=5,
    )
    server = GracefulServer(uv)
    server.drain = getattr(app.state, "drain", None)
    return server


def serve(
    config: ServeConfig,
    on_ready: Callable[[str, str | None], None] | None = None,
    on_stopped: Callable[[str], None] | None = None,
) -> int:
    """Check security, load the models, bind, serve until SIGTERM/SIGINT; the drain's exit
    status (0: every accepted request answered in full; 75: the drain deadline cut some).

    Parameters
    ----------
    config : what to serve and how.
    on_ready : called with the server's URL and its gRPC address (host:port, or None without
        --grpc-port) once it is bound and the models are loaded.
    on_stopped : called with the drain's summary in words once the server has stopped.
    """
    # Refuse an open bind before spending seconds on imports and loading models.
    # (A keys file is the other way to open another interface: every caller needs a key.)
    api_key = None if config.keys_file else resolve_api_key(config.host, config.api_key_env)
    import torch

    from maaslab.auto import is_language_model
    from maaslab.serve.app import create_app

    engine = any(is_language_model(spec) for spec in config.models)
    threads = config.torch_threads(os.cpu_count(), os.environ, engine=engine)
    if threads is not None:
        torch.set_num_threads(threads)

    sock = bind_socket(config.host, config.port)
    try:
        if config.grpc_port:  # a port in use fails here, before the models load
            bind_socket(config.host, config.grpc_port).close()
        app = create_app(config, api_key=api_key)
        server = uvicorn_server(app, config)
        if on_ready is not None:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host

            def ready() -> None:
                grpc_port = app.state.grpc_port
                on_ready(f"http://{shown}:{port}", grpc_port and f"{shown}:{grpc_port}")

            server.on_started = ready
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise MaaslabError("the server failed to start: see the error above")
    drain: Drain = app.state.drain
    if on_stopped is not None:
        on_stopped(drain.summary())
    return drain.exit_code
