"""ServerProcess: `python -m maaslab serve` as a child process that a notebook or a page controls.

The server runs in its own process (its own interpreter, its own torch threads, its own GIL),
so a load generator or a Streamlit page in the parent never slows the model down by sharing a
lock with it. Start waits for the server's ready line and its readiness probe; stop sends
SIGTERM, which makes the server drain (answer what it accepted) and exit 0.
"""

from __future__ import annotations

import atexit
import collections
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from maaslab.errors import MaaslabError
from maaslab.serve.config import DEFAULT_MODELS

ROOT = Path(__file__).resolve().parents[2]  # the repository root: `python -m maaslab` works here
READY_MARK = " on http://"  # the CLI prints "maaslab serve: <models> on http://HOST:PORT (...)"
LOG_LINES = 2000  # lines of server output kept for log_tail (older ones are dropped)

_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # A notebook kernel or a page that exits must not leave servers holding ports and memory.
    for server in list(_LIVE):
        server.stop(timeout=5.0)


class ServerProcess:
    """One `python -m maaslab serve` child process: start, address, logs, stop.

    Parameters
    ----------
    models : shipped model names (or model folders) to serve.
    host, port : where to listen; port 0 lets the OS pick a free one (read it from `.port`).
    batching : False passes --no-batching (every request runs alone).
    max_batch_size, max_delay_ms, max_queue : dynamic batching and the bounded queue.
    instances : model instances (compute threads) in the server.
    device : "cpu", "cuda" or "auto".
    api_key_env : name of the environment variable holding the Bearer key (needed off loopback).
    extra_args : more CLI flags, e.g. ("--request-timeout-s", "10").
    env : extra environment variables for the child.
    threads : torch CPU threads in the server (None: the server's default, one per core shared
        by the instances). One is best when several servers share the cores: two threads that
        each wait for a busy core at every operation are slower than one that never waits.
    """

    def __init__(
        self,
        models: Sequence[str] | str = DEFAULT_MODELS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        batching: bool = True,
        max_batch_size: int = 32,
        max_delay_ms: float = 5.0,
        max_queue: int = 256,
        device: str = "cpu",
        api_key_env: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        threads: int | None = None,
        instances: int = 1,
    ) -> None:
        self.models = (models,) if isinstance(models, str) else tuple(models)
        self.host, self.requested_port = host, port
        self.batching = batching
        self.max_batch_size, self.max_delay_ms, self.max_queue = (
            max_batch_size,
            max_delay_ms,
            max_queue,
        )
        self.device, self.api_key_env = device, api_key_env
        if not 1 <= instances <= 64:
            raise MaaslabError(f"instances must be 1..64, got {instances}")
        self.instances = instances
        self.extra_args = tuple(str(a) for a in extra_args)
        if threads is not None and not 1 <= threads <= 256:
            raise MaaslabError(f"threads must be 1..256, got {threads}")
        self.threads = threads
        self.env = dict(env or {})
        if threads is not None:  # torch sizes its thread pool from these when it starts
            self.env.setdefault("OMP_NUM_THREADS", str(threads))
            self.env.setdefault("MKL_NUM_THREADS", str(threads))
        self.url: str | None = None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._ready = threading.Event()
        self._pump: threading.Thread | None = None
        self._started = 0.0  # time.monotonic() at start()

    def command(self) -> list[str]:
        """The command line the server is started with."""
        cmd = [
            sys.executable,
            "-m",
            "maaslab",
            "serve",
            "--models",
            ",".join(self.models),
            "--host",
            self.host,
            "--port",
            str(self.requested_port),
            "--device",
            self.device,
            "--max-batch-size",
            str(self.max_batch_size),
            "--max-delay-ms",
            f"{self.max_delay_ms:g}",
            "--max-queue",
            str(self.max_queue),
        ]
        if self.instances != 1:
            cmd += ["--instances", str(self.instances)]
        if not self.batching:
            cmd.append("--no-batching")
        if self.api_key_env:
            cmd += ["--api-key-env", self.api_key_env]
        return cmd + list(self.extra_args)

    @property
    def pid(self) -> int | None:
        """The server's process id (None before start)."""
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines the server printed (stdout and stderr together)."""
        return "".join(list(self._lines)[-lines:]) if lines > 0 else ""

    def _read_output(self) -> None:
        # Runs on a thread: keep the pipe drained (a full pipe would block the server) and
        # catch the ready line with the URL.
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
            if not self._ready.is_set() and READY_MARK in line:
                self.url = "http://" + line.split(READY_MARK, 1)[1].split()[0]
                self._ready.set()

    def _fail(self, why: str) -> MaaslabError:
        tail = self.log_tail(20).strip()
        return MaaslabError(f"the server {why}" + (f"; its last output:\n{tail}" if tail else ""))

    def start(self, timeout: float = 120.0, *, wait: bool = True) -> Self:
        """Spawn the server and wait until it answers /v2/health/ready (MaaslabError if not).

        Parameters
        ----------
        timeout : seconds to wait for models to load and the server to become ready.
        wait : False returns at once (call wait_ready later), so several servers load at once.
        """
        if self.running:
            return self.wait_ready(timeout) if wait else self
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._lines.clear()
        self._ready.clear()
        self.url = self.port = self.exit_code = None
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        self._started = time.monotonic()
        self._pump = threading.Thread(
            target=self._read_output, daemon=True, name=f"maaslab-serve-log-{self.process.pid}"
        )
        self._pump.start()
        _LIVE.add(self)
        return self.wait_ready(timeout) if wait else self

    def wait_ready(self, timeout: float = 120.0) -> Self:
        """Block until the started server answers /v2/health/ready; MaaslabError if it cannot.

        Parameters
        ----------
        timeout : seconds since start() to wait in all.
        """
        if self.process is None:
            raise MaaslabError("the server was not started: call start() first")
        deadline = self._started + timeout
        while not self._ready.wait(0.05):
            if self.process.poll() is not None:
                self._pump.join(2.0)  # type: ignore[union-attr]  # collect the last lines
                self.exit_code = self.process.returncode
                raise self._fail(f"exited with code {self.exit_code} before it was ready")
            if time.monotonic() > deadline:
                self.stop(timeout=5.0)
                raise self._fail(f"was not ready after {timeout:g} s")
        assert self.url is not None
        self.port = int(self.url.rsplit(":", 1)[1])
        while True:  # the ready line comes once uvicorn listens; the probe confirms it
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=5.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout=5.0)
                raise self._fail(f"printed its URL {self.url} but never became ready")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0, *, wait: bool = True) -> int | None:
        """SIGTERM (the server drains, then exits), SIGKILL after `timeout`; the exit code.

        Parameters
        ----------
        timeout : seconds to wait for the drain before killing the process.
        wait : False only sends SIGTERM and returns None (stop several servers at once, then
            call stop() again on each for its exit code).
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            if not wait:
                return None
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._pump is not None:
            self._pump.join(2.0)
        self.exit_code = self.process.returncode
        _LIVE.discard(self)
        return self.exit_code

    def __enter__(self) -> Self:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped (exit {self.exit_code})"
        where = self.url or f"{self.host}:{self.requested_port}"
        return f"ServerProcess({', '.join(self.models)} on {where}, {state})"
