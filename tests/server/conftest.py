"""Real servers for the server tests: uvicorn on 127.0.0.1 with an ephemeral port.

Fixtures
--------
server : session-wide server with every default model (digits-cnn, sentiment-minilm, mini-gpt,
    minilm-embed); attributes .url ("http://127.0.0.1:PORT"), .port, .app, .thread.
start_server(**options) : another in-process server; options are ServeConfig fields (models,
    max_batch_size, max_delay_ms, max_queue, batching, request_timeout_s, max_body_bytes,
    grpc_port=0 for gRPC too (.grpc_port), ...) plus api_key=...; stopped at the end of the
    session. Models load once and are shared.
spawn_server(*cli_args, env=None) : `python -m maaslab serve --port 0 ...` as a subprocess
    (.url, .port, .process, .grpc_port with --grpc-port 0); for SIGTERM and CLI tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from maaslab.serve.app import create_app
from maaslab.serve.config import DEFAULT_MODELS, ServeConfig
from maaslab.serve.runner import bind_socket, uvicorn_server

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0  # loading MiniLM on a busy 2-core machine can take a while


@dataclass
class RunningServer:
    """A server the tests can call."""

    url: str
    port: int
    app: Any = None
    thread: threading.Thread | None = None
    process: subprocess.Popen | None = None
    uvicorn: Any = None
    output: list[str] = field(default_factory=list)
    grpc_port: int | None = None  # with grpc_port=0 (in-process) or --grpc-port 0 (spawned)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the server to drain and exit; wait for it."""
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
            assert self.thread is not None
            self.thread.join(timeout)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Wrappers(dict):
    """Zoo wrappers loaded once per session and shared by every in-process server."""

    def get_or_load(self, names: tuple[str, ...]) -> dict[str, Any]:
        """Served name -> wrapper for each --models item (a name or a folder)."""
        from maaslab.auto import load
        from maaslab.serve.models import served_name

        for name in names:
            if name not in self:
                self[name] = load(name)
        return {served_name(n): self[n] for n in names}


@pytest.fixture(scope="session")
def shared_wrappers() -> _Wrappers:
    """The session's cache of loaded models."""
    return _Wrappers()


def _start_thread_server(
    wrappers: _Wrappers, api_key: str | None = None, **options: Any
) -> RunningServer:
    options.setdefault("models", DEFAULT_MODELS)
    options["models"] = tuple(options["models"])
    config = ServeConfig(host="127.0.0.1", port=0, device="cpu", **options)
    app = create_app(config, api_key=api_key, preloaded=wrappers.get_or_load(config.models))
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn_server(app, config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}"
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"test server on port {port} did not start")
        time.sleep(0.02)
    return RunningServer(
        f"http://127.0.0.1:{port}", port, app, thread, uvicorn=server, grpc_port=app.state.grpc_port
    )


@pytest.fixture(scope="session")
def start_server(shared_wrappers: _Wrappers) -> Iterator:
    """Factory: start_server(**options) -> RunningServer (stopped at session end)."""
    started: list[RunningServer] = []

    def start(**options: Any) -> RunningServer:
        running = _start_thread_server(shared_wrappers, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture(scope="session")
def server(start_server) -> RunningServer:
    """One server with every default model, shared by the whole session."""
    return start_server(models=DEFAULT_MODELS)


def spawn(
    *args: str, env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S
) -> RunningServer:
    """Start `python -m maaslab serve --port 0 ARGS` and wait for its ready line."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "maaslab", "serve", "--port", "0", *args]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    ready: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if " on http://" in line and not ready:
                ready.append(line.rsplit(" on ", 1)[1].split()[0])

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("server process did not start:\n" + "".join(lines))
        time.sleep(0.05)
    try:  # a ready line this code cannot read must not leave the server running
        url = ready[0]
        httpx.get(url + "/v2/health/ready", timeout=10).raise_for_status()
        line = next(x for x in lines if " on http://" in x)
        grpc_port = (
            int(line.split(" gRPC at ")[1].split()[0].rsplit(":", 1)[1])
            if " gRPC at " in line
            else None
        )
        return RunningServer(
            url, int(url.rsplit(":", 1)[1]), process=proc, output=lines, grpc_port=grpc_port
        )
    except BaseException:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def spawn_server() -> Iterator:
    """Factory: spawn_server(*cli_args, env=None) -> RunningServer with .process."""
    procs: list[RunningServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> RunningServer:
        running = spawn(*args, env=env)
        procs.append(running)
        return running

    yield start
    for running in procs:
        running.stop()
