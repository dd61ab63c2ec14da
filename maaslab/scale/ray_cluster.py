"""Ray for the model server: a local instance or a loopback cluster, and where replicas run.

- `serve_on_ray(config, scale)`: what `python -m maaslab serve --engine ray` runs: Ray (a local
  instance, or the cluster at --address), Serve's HTTP proxy on --host/--port, the app of
  maaslab.scale.ray_serve; in the foreground until SIGINT/SIGTERM, then Serve and Ray shut down.
- `LocalCluster`: a head and worker nodes as `ray start --block` subprocesses on 127.0.0.1,
  each with its own CPUs, so replicas spread over nodes on one machine (lesson 17).
- a local Ray (no --address) dies with the server, SIGKILLed too: a watchdog subprocess ends
  that Ray session's processes once the server is gone (maaslab.scale.ray_watchdog); a
  LocalCluster's nodes die the same way with the process that started them.
- `replica_placement()`: each replica's deployment, id, node, process and state, from Ray's
  state API (the dashboard's API server, bound to loopback); `kill_replica` ends one.

Nothing reaches the network: usage stats are off, every node binds 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from maaslab.errors import MaaslabError
from maaslab.scale.ray_status import (
    APP,
    LOOPBACK,
    ClusterStatus,
    NodeRow,
    ReplicaRow,
    kill_one_replica,
    parse_nodes,
    parse_replicas,
)
from maaslab.scale.ray_watchdog import GIVE_UP_S, GRACE_S, watch_ray_session
from maaslab.serve.config import ScaleConfig, ServeConfig

log = logging.getLogger("maaslab.serve")

# Every Ray process started here inherits these: no usage report, nothing sent anywhere.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
START_TIMEOUT_S = 120.0  # a node, or the app's replicas, must be up within this
STOP_TIMEOUT_S = 30.0  # a node's `ray start --block` must exit within this after SIGTERM


def replica_placement(app: str = APP) -> list[ReplicaRow]:
    """Every replica of `app` Ray knows of (dead ones too), by deployment: from the state API.

    Needs a Ray connection (ray.init) to a cluster whose dashboard runs (LocalCluster's does);
    the Serve page reads the same rows over the dashboard's HTTP API (ray_status).
    """
    import ray
    from ray.util.state import list_actors, list_nodes

    # The connected cluster's own GCS names its dashboard; without it the state API asks the
    # newest Ray instance on this machine, which may be another one (and refuse our token).
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    nodes = parse_nodes(
        [
            {
                "node_id": n.node_id,
                "node_ip": n.node_ip,
                "is_head_node": n.is_head_node,
                "state": n.state,
                "resources_total": n.resources_total,
            }
            for n in list_nodes(address=address, raise_on_missing_output=False)
        ]
    )
    actors = [
        {"name": a.name, "node_id": a.node_id, "pid": a.pid, "state": a.state}
        for a in list_actors(address=address, limit=10_000, raise_on_missing_output=False)
    ]
    return list(parse_replicas(actors, nodes, app))


def kill_replica(deployment: str, app: str = APP) -> ReplicaRow:
    """SIGKILL the process of one ALIVE replica of `deployment` (a crash: Ray Serve replaces
    it); the replica killed. Only for replicas on this machine (a LocalCluster's)."""
    import ray.util

    nodes = [NodeRow("", ray.util.get_node_ip_address(), True, "ALIVE", 0.0)]  # this machine
    status = ClusterStatus(tuple(replica_placement(app)), tuple(nodes), dashboard="")
    return kill_one_replica(status, deployment)


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on at `host` now, bound as the server binds (serve.runner);
    federated.flower_runner.free_port is the loopback-only one of the Flower runs."""
    from maaslab.serve.runner import bind_socket

    with bind_socket(host, 0) as sock:
        return sock.getsockname()[1]


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise MaaslabError(f"{what} within {timeout:g} s")
        time.sleep(0.5)


class LocalCluster:
    """Ray nodes on 127.0.0.1 as `ray start --block` subprocesses: a head, then workers.

    Parameters
    ----------
    node_cpus : the CPUs each node offers Ray, head first (a model replica reserves
        RayServeArgs.replica_cpus of them, so (1, 1) puts one replica on each node).
    dashboard : run the head's dashboard (on loopback): the state API needs it.
    """

    def __init__(self, node_cpus: Sequence[float] = (1, 1), dashboard: bool = True) -> None:
        if not node_cpus:
            raise MaaslabError("a cluster needs at least one node: give node_cpus=(cpus, ...)")
        self.node_cpus, self.dashboard = tuple(node_cpus), dashboard
        self.nodes: list[subprocess.Popen] = []
        self.address = ""  # the head's GCS address, HOST:PORT, once started
        self.dashboard_url = ""
        # Token authentication with a token of this cluster's own (a private file): every node
        # and the driver present it. The driver's environment is restored by stop().
        self.env: dict[str, str] = dict(RAY_ENV)
        self._saved_env: dict[str, str | None] = {}
        self._watchdog: subprocess.Popen | None = None  # ends the nodes if this process dies

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _node(self, args: list[str], log: Path) -> subprocess.Popen:
        ray = Path(sys.executable).with_name("ray")
        # Ports Ray would otherwise take from fixed defaults (52365, 10001): free ones, so two
        # nodes, or two clusters, can share the machine.
        ports = ["--dashboard-agent-listen-port", str(free_port())]
        command = [str(ray), "start", "--block", "--node-ip-address", LOOPBACK, *ports, *args]
        with log.open("wb") as out:  # the child keeps its own copy of the file
            return subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C in a terminal reaches the driver, not the nodes
            )

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start every node and wait until the cluster has them all; the head's address."""
        import secrets
        import tempfile

        logs = Path(tempfile.mkdtemp(prefix="maaslab-ray-"))  # mode 700: the token stays ours
        token = logs / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        port = free_port()
        self.address = f"{LOOPBACK}:{port}"
        head = ["--head", "--port", str(port), "--num-cpus", f"{self.node_cpus[0]:g}"]
        head += ["--disable-usage-stats", "--include-dashboard", str(self.dashboard).lower()]
        head += ["--ray-client-server-port", str(free_port())]
        if self.dashboard:
            dash = free_port()
            head += ["--dashboard-host", LOOPBACK, "--dashboard-port", str(dash)]
            self.dashboard_url = f"http://{LOOPBACK}:{dash}"
            # the state API (replica_placement) asks this cluster, not the newest one here
            self.env["RAY_API_SERVER_ADDRESS"] = self.dashboard_url
        try:
            self.nodes.append(self._node(head, logs / "head.log"))
            # The nodes run in sessions of their own: if this process dies without stop() (a
            # kernel killed), the watchdog ends them and their session (maaslab.scale.ray_watchdog).
            env = {**os.environ, **self.env}
            self._watchdog = watch_ray_session(head=self.nodes[0].pid, env=env)
            _wait_until(self._head_listens, timeout, f"the Ray head did not start (see {logs})")
            for i, cpus in enumerate(self.node_cpus[1:], 1):
                worker = ["--address", self.address, "--num-cpus", f"{cpus:g}"]
                self.nodes.append(self._node(worker, logs / f"worker-{i}.log"))
            self.connect()
            import ray

            _wait_until(
                lambda: sum(n["Alive"] for n in ray.nodes()) >= len(self.node_cpus),
                timeout,
                f"the Ray cluster did not reach {len(self.node_cpus)} nodes (see {logs})",
            )
        except BaseException:
            self.stop()
            raise
        return self.address

    def _head_listens(self) -> bool:
        import socket

        if self.nodes[0].poll() is not None:
            raise MaaslabError(f"`ray start --head` exited with status {self.nodes[0].returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((LOOPBACK, int(self.address.rsplit(":", 1)[1]))) == 0

    def connect(self) -> None:
        """Connect this process to the cluster as a driver (ray.init)."""
        for name, value in self.env.items():  # before Ray reads its settings on import
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _reload_auth_settings()
        import ray

        deadline = time.monotonic() + START_TIMEOUT_S
        while not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            except RuntimeError as err:
                # On a busy machine the head's raylet can register after its port opens:
                # "No node info found matching attributes". Try again until the deadline.
                ray.shutdown()
                if "node info" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop Serve, disconnect, then SIGTERM the workers and the head (each stops its Ray
        processes). Serve goes first: a node with replicas running took over 30 s to stop."""
        import ray

        if ray.is_initialized():
            from ray import serve

            serve.shutdown()  # nothing to do when Serve is not running
            ray.shutdown()
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.terminate()
        for node in reversed(self.nodes):
            try:
                node.wait(timeout)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(timeout)
        self.nodes = []
        if self._watchdog is not None:  # it ends what the nodes left of the session, then exits
            self._watchdog.stdin.close()
            try:
                self._watchdog.wait(GIVE_UP_S + GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("the Ray watchdog (pid %d) still runs", self._watchdog.pid)
            self._watchdog = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        _reload_auth_settings()


def _reload_auth_settings() -> None:
    # Ray reads RAY_AUTH_MODE and the token once, when first imported; a process that imported
    # it before (a test session) re-reads them as Ray's own token setup does.
    if "ray" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def ray_serve_args(config: ServeConfig, scale: ScaleConfig) -> dict[str, Any]:
    """The app_builder arguments (maaslab.scale.ray_serve) of a server config and engine."""
    return {
        "models": list(config.models),
        "replicas": scale.replicas or 1,
        "autoscale": list(scale.autoscale) if scale.autoscale else None,
        "max_batch_size": config.effective_batch_size,
        "batch_timeout_ms": config.effective_delay_s * 1000,
        "max_queue": config.max_queue,
        "request_timeout_s": config.request_timeout_s,
        "device": config.device,
        "threads": config.threads,
        "grpc_port": config.grpc_port,
        "api_key_env": config.api_key_env,
        "keys_file": config.keys_file,
        "host": config.host,
    }


def deploy(config: ServeConfig, scale: ScaleConfig, timeout: float = START_TIMEOUT_S) -> None:
    """Start Serve's HTTP proxy on config.host:config.port (a concrete port) and run the app
    on the Ray this process is connected to; returns once every replica is running."""
    from ray import serve

    from maaslab.scale.ray_serve import app_builder

    serve.start(http_options={"host": config.host, "port": config.port}, proxy_location="HeadOnly")
    started = threading.Event()
    error: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(
                app_builder(ray_serve_args(config, scale)),
                name=APP,
                route_prefix="/",
                logging_config={"enable_access_log": False, "log_level": "WARNING"},
            )
        except BaseException as err:  # shown to the caller below
            error.append(err)
        started.set()

    # serve.run waits for the replicas without a deadline of its own: give it one.
    threading.Thread(target=run, daemon=True, name="serve-run").start()
    if not started.wait(timeout):
        raise MaaslabError(f"the Ray Serve app did not start within {timeout:g} s")
    if error:
        raise MaaslabError(f"the Ray Serve app failed to start: {error[0]}") from error[0]


def serve_on_ray(
    config: ServeConfig,
    scale: ScaleConfig,
    on_ready: Callable[[str, str | None], None] | None = None,
    on_stopped: Callable[[str], None] | None = None,
) -> int:
    """Serve `config`'s models on Ray Serve until SIGINT/SIGTERM; exit status 0.

    Parameters
    ----------
    config : the models, batching and limits (port 0 and grpc_port 0: free ports picked here).
    scale : engine "ray", replicas or autoscale, and the cluster's address (None: local Ray).
    on_ready : called with the HTTP URL and the gRPC address (or None) once every replica runs.
    on_stopped : called with a summary once Serve is down.
    """
    from dataclasses import replace

    from maaslab.serve.security import resolve_api_key

    scale.check(config)
    resolve_api_key(config.host, None if config.keys_file else config.api_key_env)
    config = replace(
        config,
        port=config.port or free_port(config.host),
        grpc_port=free_port(config.host) if config.grpc_port == 0 else config.grpc_port,
    )
    os.environ.update(RAY_ENV)
    import ray
    from ray import serve

    stop = threading.Event()
    handlers: dict[int, Any] = {}
    # A local Ray dies with this process, even SIGKILLed (maaslab.scale.ray_watchdog).
    watchdog = None if scale.address else watch_ray_session()
    try:
        if scale.address:
            ray.init(address=scale.address, log_to_driver=False, configure_logging=False)
        else:
            most = scale.autoscale[1] if scale.autoscale else scale.replicas or 1
            ray.init(
                address="local",  # a new instance, never one `ray start` left on this machine
                num_cpus=max(os.cpu_count() or 1, most * len(config.models)),
                include_dashboard=True,
                dashboard_host=LOOPBACK,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
                configure_logging=False,
            )
        # After ray.init: Ray's core installs a SIGTERM handler that ends the process at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda *_: stop.set())
        deploy(config, scale)
        if on_ready is not None:
            host = f"[{config.host}]" if ":" in config.host else config.host
            grpc = f"{host}:{config.grpc_port}" if config.grpc_port else None
            on_ready(f"http://{host}:{config.port}", grpc)
        while not stop.wait(0.5):
            pass
    finally:
        if ray.is_initialized():
            if scale.address:  # another's cluster: remove our app, leave their Serve running
                serve.delete(APP)
            else:
                serve.shutdown()
            ray.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if watchdog is not None:  # it ends what ray.shutdown left of the session, then exits
            watchdog.stdin.close()
            try:
                watchdog.wait(GIVE_UP_S + GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("the Ray watchdog (pid %d) still runs", watchdog.pid)
    if on_stopped is not None:
        on_stopped("Ray Serve app removed" + ("" if scale.address else ", local Ray stopped"))
    return 0
