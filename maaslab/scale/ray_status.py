"""Where a `python -m maaslab serve --engine ray` server's replicas run, read from outside it.

The Serve page watches a Ray server it started as a child process without importing Ray: the
server's local Ray instance runs the dashboard on loopback, and the dashboard's state API
(`/api/v0/actors`, `/api/v0/nodes`, ray/dashboard/modules/state/state_head.py) answers over
plain HTTP. Everything here is found from the server's process id:

- `session_dir(pid)`: the Ray session the server started (Ray names it `session_<date>_<pid>`
  after the driver's process id);
- `dashboard_url(session)`: the address the dashboard logged when it bound (it takes 8265, or
  the next free port);
- `auth_token(env)`: the token the dashboard asks for, found as Ray finds it;
- `cluster_status(url, token)`: the replicas (deployment, id, state, node, pid) and the nodes;
- `kill_one_replica(status, deployment)`: SIGKILL one running replica (lesson 17's fault: Ray
  Serve starts a new one);
- `session_processes(session)`: Ray processes of that session still running (none after stop).

(`ray_temp_dir`, `session_dir` and `session_processes` live in maaslab.scale.ray_watchdog,
which must run without importing maaslab's package, and torch with it.)
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from maaslab.errors import MaaslabError
from maaslab.scale.ray_watchdog import ray_temp_dir, session_dir, session_processes

__all__ = ["ray_temp_dir", "session_dir", "session_processes"]  # kept here: the page's API

APP = "maaslab"  # the Ray Serve application's name (maaslab.scale.ray_cluster deploys it)
LOOPBACK = "127.0.0.1"

DASHBOARD_LINE = re.compile(r"Dashboard head http address: (\S+)")  # dashboard.log, at bind
REPLICA_PREFIX = "SERVE_REPLICA::"  # Ray Serve names a replica SERVE_REPLICA::<app>#<dep>#<id>
INGRESS = "ingress"  # the deployment that answers the routes (maaslab.scale.ray_serve)
LOG_HEAD_BYTES = 200_000  # the dashboard logs its address early: read no more of its log


@dataclass(frozen=True)
class ReplicaRow:
    """One Ray Serve replica: where it runs and whether it is up."""

    deployment: str  # the model's name, or "ingress"
    replica: str  # Ray Serve's replica id
    state: str  # ALIVE, PENDING_CREATION, RESTARTING, DEAD
    node_id: str  # the Ray node it runs on ("" while not placed yet)
    node_ip: str  # that node's address ("" while not placed yet)
    pid: int  # its process id on that node (0 while it has none)


@dataclass(frozen=True)
class NodeRow:
    """One node of the Ray cluster."""

    node_id: str  # Ray's node id
    node_ip: str  # the node's address
    head: bool  # True for the head node (the one that runs Serve's controller and proxy)
    state: str  # ALIVE or DEAD
    cpus: float  # the CPUs the node offers Ray


@dataclass(frozen=True)
class ClusterStatus:
    """The replicas of one Serve app and the cluster's nodes, at one moment."""

    replicas: tuple[ReplicaRow, ...]  # by deployment, running ones first
    nodes: tuple[NodeRow, ...]  # head first
    dashboard: str  # the dashboard the state came from, http://HOST:PORT

    def running(self, deployment: str | None = None) -> list[ReplicaRow]:
        """The ALIVE replicas (of `deployment` only, if given)."""
        return [
            r
            for r in self.replicas
            if r.state == "ALIVE" and (deployment is None or r.deployment == deployment)
        ]

    def models(self) -> list[str]:
        """The model deployments (every deployment but the ingress), in order."""
        return sorted({r.deployment for r in self.replicas} - {INGRESS})


def dashboard_url(session: Path) -> str | None:
    """The dashboard's http://HOST:PORT as it logged it on binding; None before it has."""
    log = session / "logs" / "dashboard.log"
    try:
        with log.open("rb") as f:
            text = f.read(LOG_HEAD_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    match = DASHBOARD_LINE.search(text)
    return f"http://{match.group(1)}" if match else None


def auth_token(env: Mapping[str, str] | None = None) -> str | None:
    """The Ray token the dashboard checks: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names,
    or ~/.ray/auth_token (Ray's own order); None if there is none (no token auth)."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN"):
        return env["RAY_AUTH_TOKEN"].strip()
    path = Path(env["RAY_AUTH_TOKEN_PATH"]) if env.get("RAY_AUTH_TOKEN_PATH") else None
    path = path or Path.home() / ".ray" / "auth_token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def parse_nodes(rows: list[dict]) -> tuple[NodeRow, ...]:
    """NodeRows from the state API's /api/v0/nodes result rows, head first."""
    nodes = [
        NodeRow(
            node_id=row["node_id"],
            node_ip=row.get("node_ip") or "",
            head=bool(row.get("is_head_node")),
            state=row.get("state") or "",
            cpus=float((row.get("resources_total") or {}).get("CPU", 0.0)),
        )
        for row in rows
    ]
    return tuple(sorted(nodes, key=lambda n: (not n.head, n.state != "ALIVE", n.node_id)))


def parse_replicas(
    rows: list[dict], nodes: tuple[NodeRow, ...], app: str = APP
) -> tuple[ReplicaRow, ...]:
    """The replicas of Serve app `app` among the state API's /api/v0/actors result rows."""
    ips = {n.node_id: n.node_ip for n in nodes}
    prefix = f"{REPLICA_PREFIX}{app}#"
    replicas = []
    for row in rows:
        name = row.get("name") or ""
        if not name.startswith(prefix):
            continue
        deployment, replica = name[len(prefix) :].split("#", 1)
        node = row.get("node_id") or ""
        state = row.get("state") or ""
        pid = int(row.get("pid") or 0)
        replicas.append(ReplicaRow(deployment, replica, state, node, ips.get(node, ""), pid))
    order = {"ALIVE": 0, "RESTARTING": 1, "PENDING_CREATION": 2, "DEPENDENCIES_UNREADY": 2}
    return tuple(sorted(replicas, key=lambda r: (r.deployment, order.get(r.state, 3), r.replica)))


def _state_rows(url: str, route: str, token: str | None, timeout: float) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(
        f"{url}{route}", params={"limit": 10_000}, headers=headers, timeout=timeout
    )
    if response.status_code == 401:
        raise MaaslabError(
            f"the Ray dashboard at {url} refused the token: set RAY_AUTH_TOKEN to the cluster's "
            "token (`ray get-auth-token`)"
        )
    response.raise_for_status()
    body = response.json()
    if not body.get("result", False):
        raise MaaslabError(f"the Ray state API at {url}{route} failed: {body.get('msg')}")
    return body["data"]["result"]["result"]


def cluster_status(
    url: str, token: str | None = None, app: str = APP, timeout: float = 5.0
) -> ClusterStatus:
    """The replicas of `app` and the nodes, from the Ray dashboard at `url`.

    Parameters
    ----------
    url : the dashboard, http://HOST:PORT (dashboard_url).
    token : Ray's auth token when the cluster checks one (auth_token).
    app : the Ray Serve application ("maaslab": what `serve --engine ray` deploys).
    timeout : seconds for each of the two requests.
    """
    try:
        nodes = parse_nodes(_state_rows(url, "/api/v0/nodes", token, timeout))
        actors = _state_rows(url, "/api/v0/actors", token, timeout)
    except httpx.HTTPError as err:
        raise MaaslabError(f"the Ray dashboard at {url} did not answer: {err}") from err
    return ClusterStatus(parse_replicas(actors, nodes, app), nodes, url)


def kill_one_replica(status: ClusterStatus, deployment: str) -> ReplicaRow:
    """SIGKILL the process of one running replica of `deployment` (a crash: Ray Serve's
    controller notices and starts another); the replica killed. Local nodes only."""
    alive = status.running(deployment)
    if not alive:
        raise MaaslabError(f"no running replica of {deployment!r}: wait for one to come up")
    victim = alive[-1]
    local = {LOOPBACK, *(n.node_ip for n in status.nodes if n.head)}
    if victim.node_ip not in local or not victim.pid:
        raise MaaslabError(f"replica {victim.replica} runs on {victim.node_ip}, not this machine")
    try:
        os.kill(victim.pid, signal.SIGKILL)
    except ProcessLookupError as err:
        raise MaaslabError(f"replica {victim.replica} (pid {victim.pid}) is already gone") from err
    return victim
