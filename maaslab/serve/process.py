"""ServerProcess: `python -m maaslab serve` as a child process that a notebook or a page controls.

The server runs in its own process (its own interpreter, its own torch threads, its own GIL),
so a load generator or a Streamlit page in the parent never slows the model down by sharing a
lock with it. Start waits for the server's ready line and its readiness probe; stop sends
SIGTERM, which makes the server drain (answer what it accepted) and exit 0, or 75 when its drain
deadline had to cut a stream (maaslab.serve.drain).
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
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from maaslab.errors import MaaslabError
from maaslab.serve.config import ScaleConfig, ServeConfig
from maaslab.serve.drain import EXIT_CUT

ROOT = Path(__file__).resolve().parents[2]  # the repository root: `python -m maaslab` works here
READY_MARK = " on http://"  # the CLI prints "maaslab serve: <models> on http://HOST:PORT (...)"
GRPC_MARK = " gRPC at "  # ... "on http://HOST:PORT and gRPC at HOST:PORT (...)" with --grpc-port
LOG_LINES = 2000  # lines of server output kept for log_tail (older ones are dropped)
# --engine ray: Serve's controller may take 30 s to shut down, then Ray stops its processes;
# killing the server earlier would leave its raylet and gcs_server running.
RAY_STOP_S = 120.0

_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # A notebook kernel or a page that exits must not leave servers holding ports and memory.
    # A Ray server gets its full stop: SIGKILL would orphan Ray's agent processes.
    for server in list(_LIVE):
        server.stop(timeout=RAY_STOP_S if server.scale.engine == "ray" else 5.0)


class ServerProcess:
    """One `python -m maaslab serve` child process: start, address, logs, stop.

    Parameters
    ----------
    config : how the server runs, checked when the ServeConfig is made (a bad value fails
        here with ServeConfig's message, not later as a dead child). Use port=0 to let the OS
        pick a free port (read it from `.port`; and grpc_port=0 from `.grpc_port`). `threads`
        also sets OMP_NUM_THREADS and MKL_NUM_THREADS for the child: one thread is best when
        several servers share the cores, since two threads that each wait for a busy core at
        every operation are slower than one that never waits.
    env : extra environment variables for the child.
    scale : where the models run: this one process (default), or Ray Serve replicas
        (`--engine ray`, ScaleConfig("ray", replicas=2)); checked against `config` here.
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        env: Mapping[str, str] | None = None,
        scale: ScaleConfig | None = None,
    ) -> None:
        if not isinstance(config, ServeConfig):
            raise MaaslabError(
                f"ServerProcess takes a ServeConfig, got {type(config).__name__}: e.g. "
                "ServerProcess(ServeConfig(models=('digits-cnn',), port=0))"
            )
        self.scale = scale if scale is not None else ScaleConfig()
        self.scale.check(config)
        self.config = config
        self.env = dict(env or {})
        if config.threads is not None:  # torch sizes its thread pool from these when it starts
            self.env.setdefault("OMP_NUM_THREADS", str(config.threads))
            self.env.setdefault("MKL_NUM_THREADS", str(config.threads))
        self.url: str | None = None
        self.port: int | None = None
        self.grpc_port: int | None = None  # the port gRPC listens on (config.grpc_port set)
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._ready = threading.Event()
        self._pump: threading.Thread | None = None
        self._started = 0.0  # time.monotonic() at start()

    @property
    def models(self) -> tuple[str, ...]:
        """The models served (as named in the config)."""
        return self.config.models

    def served(self) -> str:
        """What it serves, in words: the --models items and the repository, if any."""
        parts = list(self.config.models)
        if self.config.repository is not None:
            parts.append(f"the repository {self.config.repository}")
        return ", ".join(parts)

    def command(self) -> list[str]:
        """The command line the server is started with: every setting of the config."""
        c, default = self.config, ServeConfig()
        cmd = [
            sys.executable,
            "-m",
            "maaslab",
            "serve",
            "--host",
            c.host,
            "--port",
            str(c.port),
            "--device",
            c.device,
            "--max-batch-size",
            str(c.max_batch_size),
            "--max-delay-ms",
            f"{c.max_delay_ms:g}",
            "--max-queue",
            str(c.max_queue),
        ]
        if c.models:
            cmd += ["--models", ",".join(c.models)]
        if c.repository is not None:
            cmd += ["--repository", c.repository]
        if c.keys_file is not None:
            cmd += ["--keys", c.keys_file]
        if c.grpc_port is not None:
            cmd += ["--grpc-port", str(c.grpc_port)]
        if c.instances != default.instances:
            cmd += ["--instances", str(c.instances)]
        if c.threads is not None:
            cmd += ["--threads", str(c.threads)]
        if c.request_timeout_s != default.request_timeout_s:
            cmd += ["--request-timeout-s", f"{c.request_timeout_s:g}"]
        if c.max_body_bytes != default.max_body_bytes:
            cmd += ["--max-body-bytes", str(c.max_body_bytes)]
        if c.read_timeout_s != default.read_timeout_s:
            cmd += ["--read-timeout-s", f"{c.read_timeout_s:g}"]
        if c.max_connections != default.max_connections:
            cmd += ["--max-connections", str(c.max_connections)]
        if c.drain_timeout_s is not None:
            cmd += ["--drain-timeout-s", f"{c.drain_timeout_s:g}"]
        if not c.batching:
            cmd.append("--no-batching")
        if not c.half_precision:
            cmd.append("--no-half-precision")
        if c.api_key_env:
            cmd += ["--api-key-env", c.api_key_env]
        return cmd + self._scale_flags()

    def _scale_flags(self) -> list[str]:
        s = self.scale
        if s.engine == "process":
            return []
        flags = ["--engine", s.engine]
        if s.replicas is not None:
            flags += ["--replicas", str(s.replicas)]
        if s.autoscale is not None:
            flags += ["--autoscale", f"{s.autoscale[0]},{s.autoscale[1]}"]
        if s.address is not None:
            flags += ["--address", s.address]
        return flags

    def runs_on(self) -> str:
        """Where the models run, in words: one process, or Ray Serve and its replicas."""
        s = self.scale
        if s.engine == "process":
            return "one process"
        count = (
            f"autoscaled {s.autoscale[0]}..{s.autoscale[1]} replicas"
            if s.autoscale
            else f"{s.replicas or 1} replica{'s' if (s.replicas or 1) > 1 else ''}"
        )
        return f"Ray Serve, {count} per model"

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

    def headline(self) -> str:
        """What is served where, in one markdown line: models, address, pid, batching, queue."""
        c = self.config
        ray = f" · {self.runs_on()}" if self.scale.engine != "process" else ""
        return f"Serving **{self.served()}** at `{self.url}` · pid {self.pid}{ray} · {c.describe()}"

    def exit_note(self, lines: int = 20) -> str:
        """Why a server that stopped by itself is gone: its exit code, then its last output."""
        code = self.process.returncode if self.process is not None else None
        return (
            f"The server exited on its own (code {code}); its last output:\n{self.log_tail(lines)}"
        )

    def _read_output(self) -> None:
        # Runs on a thread: keep the pipe drained (a full pipe would block the server) and
        # catch the ready line with the URL.
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
            if not self._ready.is_set() and READY_MARK in line:
                self.url = "http://" + line.split(READY_MARK, 1)[1].split()[0]
                if GRPC_MARK in line:
                    self.grpc_port = int(line.split(GRPC_MARK, 1)[1].split()[0].rsplit(":", 1)[1])
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
        self.url = self.port = self.grpc_port = self.exit_code = None
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

    def stop(self, timeout: float | None = None, *, wait: bool = True) -> int | None:
        """SIGTERM (the server drains, then exits), SIGKILL after `timeout`; the exit code.

        Parameters
        ----------
        timeout : seconds to wait for the drain before killing the process (default: the
            server's drain deadline and 10 s more; RAY_STOP_S at least with --engine ray).
        wait : False only sends SIGTERM and returns None (stop several servers at once, then
            call stop() again on each for its exit code).
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            if not wait:
                return None
            if timeout is None:
                timeout = self.config.drain_deadline_s + 10
                if self.scale.engine == "ray":
                    timeout = max(timeout, RAY_STOP_S)
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

    @staticmethod
    def stop_note(code: int | None) -> str:
        """What stop() returning `code` means: 0 is a drained, clean exit; EXIT_CUT a drain
        whose deadline cut streams still running (see maaslab.serve.drain)."""
        if code == 0:
            how = "it drained and exited"
        elif code == EXIT_CUT:
            how = "its drain deadline cut streams still running; it exited"
        else:
            how = "it exited"
        return f"Server stopped (SIGTERM; {how} with code {code})."

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
        where = self.url or f"{self.config.host}:{self.config.port}"
        return f"ServerProcess({self.served()} on {where}, {state})"
