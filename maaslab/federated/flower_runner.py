"""Run the Flower app (flower.py) on its Deployment Engine: a SuperLink and N SuperNodes, locally.

`run_flower_deployment` does on one machine what a real deployment does across many:
1. writes the app project into a fresh temporary folder (a pyproject.toml whose
   [tool.flwr.app.components] name `maaslab.federated.flower`'s apps, and whose run config is
   the frozen FlowerSpec), and a Flower home ($FLWR_HOME) with one SuperLink connection;
2. starts `flower-superlink` and one `flower-supernode` per client as processes on 127.0.0.1,
   every API on a free port, insecure (loopback only), each in a process group of its own;
3. submits the app with `flwr run --stream`, which returns when the run has finished;
4. reads the per-round table and final weights the ServerApp wrote, and stops every process
   (the SuperLink, the SuperNodes and the ServerApp/ClientApp processes they started), on
   success, failure or timeout alike.
Nothing goes to the network: telemetry and the update check are off (FLWR_TELEMETRY_ENABLED=0,
FLWR_DISABLE_UPDATE_CHECK=1), nothing installs app dependencies
(`--disable-runtime-dependency-installation`), every address is loopback.
No Ray: that is only the Simulation Engine's backend.

What a round costs here (bench/bench_federated_flower.py measures it): each SuperNode starts a
fresh ClientApp process for every message (Python, torch and maaslab imported anew, the dataset
loaded and dealt anew), an idle SuperNode asks the SuperLink for work every 3 s, and the
ServerApp asks for replies every 3 s. For the lesson's small MLP that is seconds per round
where run_federated takes a fraction of one; for a model that trains for minutes per round, as
on real devices, it is noise.

The app project is generated, not committed: its every value comes from the FlowerSpec, so a
committed copy could only drift from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import torch
from torch import nn

from maaslab.errors import MaaslabError
from maaslab.federated.client import ClientRecord
from maaslab.federated.fedavg import FederatedConfig, RoundRecord
from maaslab.federated.flower import (
    ERROR_FILE,
    FINAL_WEIGHTS,
    RESULT_FILE,
    FlowerSpec,
    sampling,
)
from maaslab.federated.partition import Partition
from maaslab.models import model_config
from maaslab.paths import ROOT
from maaslab.registry import read_safetensors, save_model

DEPLOY_TIMEOUT_S = 300.0  # a lesson's run takes well under a minute; this long means it is stuck
READY_TIMEOUT_S = 60.0  # for the SuperLink's ports and every SuperNode's first contact
MAX_NODES = 16  # SuperNodes one machine starts for a lesson
CONNECTION = "maaslab-loopback"  # the SuperLink connection's name in $FLWR_HOME/config.toml
POLL_S = 0.05  # how often processes and files are checked while waiting
ACTIVATED = "[Fleet.ActivateNode] Activated"  # the SuperLink's log line for a connected node


@dataclass(frozen=True)
class FlowerResult:
    """A Flower run, shaped like FederatedResult: its config, the clients, every round."""

    config: FederatedConfig
    partition: Partition  # who held what: the same partition_dataset each SuperNode dealt
    rounds: tuple[RoundRecord, ...]  # round 0 (the initial model) first, as in FederatedResult
    test_loss: float  # the final global model on the test split, read once by the ServerApp
    test_accuracy: float | None
    state: dict[str, torch.Tensor]  # the final global weights
    startup_seconds: float  # SuperLink and SuperNodes started until every node had connected
    run_seconds: float  # `flwr run` submitted until the run had finished
    wall_time: float  # the whole call: project, processes, run, shutdown

    def column(self, name: str) -> list[Any]:
        """One global figure across rounds (round 0 first), e.g. result.column("val_accuracy")."""
        return [getattr(r, name) for r in self.rounds]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flower_env(home: Path) -> dict[str, str]:
    """The environment of every Flower process: its own home, no telemetry, maaslab importable."""
    env = {
        **os.environ,
        "FLWR_HOME": str(home),  # Flower's config, apps and caches: never the user's ~/.flwr
        "FLWR_TELEMETRY_ENABLED": "0",  # else each process reports events to Flower's servers
        "FLWR_DISABLE_UPDATE_CHECK": "1",  # else each CLI start asks api.flower.ai for updates
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # no `uv sync` of app dependencies
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # the SuperLink and SuperNodes start flower-superexec (and it the apps) by name
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # loopback never via a proxy
    return env


APP_MODULE = "maaslab_flower_app"  # the generated app's one module (a top-level name, see below)
# It only names maaslab's apps. Flower's CLI checks each component with importlib.find_spec,
# which imports a dotted name's parent packages: pointing it at maaslab.federated.flower
# would import torch and all of maaslab in `flwr run` itself, seconds on every run.
APP_SOURCE = '''"""Entry points of the generated Flower app: MaaS Lab's ServerApp and ClientApp."""

from maaslab.federated import flower

server_app = flower.server_app
client_app = flower.client_app
'''


def write_project(folder: Path, spec: FlowerSpec) -> Path:
    """Write the Flower app project (pyproject.toml and its entry module) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "maaslab-fedavg",
            "version": "1.0.0",
            "description": "MaaS Lab's FedAvg run on Flower's Deployment Engine",
            "dependencies": [],  # the app runs in maaslab's own environment: nothing to install
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "maaslab",
                    "components": {
                        "serverapp": f"{APP_MODULE}:server_app",
                        "clientapp": f"{APP_MODULE}:client_app",
                    },
                    "config": spec.to_run_config(),
                }
            }
        },
    }
    (folder / f"{APP_MODULE}.py").write_text(APP_SOURCE, encoding="utf-8")
    path = folder / "pyproject.toml"
    path.write_text(tomli_w.dumps(project), encoding="utf-8")
    return path


def write_connection(home: Path, control_port: int) -> Path:
    """$FLWR_HOME/config.toml with one insecure SuperLink connection on 127.0.0.1."""
    home.mkdir(parents=True, exist_ok=True)
    config = {
        "superlink": {
            "default": CONNECTION,
            CONNECTION: {"address": f"127.0.0.1:{control_port}", "insecure": True},
        }
    }
    path = home / "config.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def _script(name: str) -> str:
    """A console script of this interpreter's environment (flower-superlink, flwr, ...)."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise MaaslabError(
            f"{name} not found beside {sys.executable}: install flwr as pinned in requirements.txt"
        )
    return str(path)


class _Processes:
    """Processes started in groups of their own; stop() kills every group, children included."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        """Start `command` with its output in logs/NAME.log."""
        with (self.logs / f"{name}.log").open("wb") as sink:
            self.started[name] = subprocess.Popen(
                command,
                cwd=self.logs,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                # a group of its own: killpg also reaches the SuperExec and the app processes
                # Flower starts under it (they inherit the group)
                start_new_session=True,
            )
        return self.started[name]

    def log(self, name: str) -> str:
        """Everything process `name` has printed so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def tail(self, name: str, lines: int = 6) -> str:
        """Its last lines, for an error message."""
        text = [ln for ln in self.log(name).splitlines() if ln.strip()]
        return "\n".join(text[-lines:]) or "(it printed nothing)"

    def check_alive(self, *names: str) -> None:
        """Raise if one of these long-running processes has exited."""
        for name in names:
            code = self.started[name].poll()
            if code is not None:
                raise MaaslabError(f"{name} exited with code {code}:\n{self.tail(name)}")

    def stop(self) -> None:
        """Kill every group (newest first) and wait for each process started here."""
        for process in reversed(list(self.started.values())):
            with contextlib.suppress(ProcessLookupError):  # the group has ended meanwhile
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.started.values():
            process.wait(timeout=30)


def _wait(what: str, done: Callable[[], bool], check: Callable[[], None], deadline: float) -> None:
    """Poll `done` until it is true; `check` raises if a process died; MaaslabError at deadline."""
    while not done():
        check()
        if time.monotonic() > deadline:
            raise MaaslabError(
                f"timed out waiting for {what}: stopped every process (raise timeout_s if the "
                "machine is busy)"
            )
        time.sleep(POLL_S)


def run_flower_deployment(
    model: nn.Module,
    cfg: FederatedConfig,
    n_clients: int,
    *,
    dataset: str = "digits",
    dataset_options: dict[str, Any] | None = None,
    alpha: float | None = None,
    partition_seed: int = 0,
    timeout_s: float = DEPLOY_TIMEOUT_S,
    workdir: str | Path | None = None,
) -> FlowerResult:
    """Run FedAvg as a Flower app on a local SuperLink and `n_clients` SuperNodes; return it.

    Parameters
    ----------
    model : the initial global model (a maaslab model: the clients rebuild it from its config).
        It is not changed; the final global weights come back in `result.state`.
    cfg : rounds, clients per round, local epochs, batch size, optimizer, lr, seed: as for
        run_federated (FedAvg only: Flower's FedAvg strategy is the server here).
    n_clients : SuperNodes to start; node k holds client k of the partition.
    dataset, dataset_options : load_dataset(dataset, **dataset_options), loaded by every node.
    alpha, partition_seed : partition_dataset(data, n_clients, alpha=alpha, seed=partition_seed).
    timeout_s : for the whole run; then every process is killed and MaaslabError raised.
    workdir : an empty folder to keep the project, $FLWR_HOME, logs/ and out/ in (to read
        after the run); None = a temporary folder, removed at the end.
    """
    unsupported = {
        "algorithm": cfg.algorithm != "fedavg",
        "dp": cfg.dp,
        "aggregation": cfg.aggregation != "plain",
    }
    if any(unsupported.values()):
        name = next(k for k, v in unsupported.items() if v)
        raise MaaslabError(
            f"run_flower_deployment runs Flower's plain FedAvg (its server sees each update, "
            f"clients train without DP); {name}={getattr(cfg, name)!r} runs with run_federated"
        )
    if not 1 <= n_clients <= MAX_NODES:
        raise MaaslabError(f"n_clients must be between 1 and {MAX_NODES}, got {n_clients}")
    sampling(cfg, n_clients)  # refuse more clients per round than nodes before starting any
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="maaslab-flower-")))
        else:
            root = Path(workdir)
            root.mkdir(parents=True, exist_ok=True)
            if any(root.iterdir()):
                raise MaaslabError(f"workdir {root} is not empty: give an empty or new folder")
        spec = FlowerSpec(
            federated=cfg,
            n_clients=n_clients,
            model=model_config(model),
            initial_model=str(save_model(model, root / "initial")),
            output=str(root / "out"),
            dataset=dataset,
            dataset_options=tuple(sorted((dataset_options or {}).items())),
            alpha=alpha,
            partition_seed=partition_seed,
            reply_timeout_s=timeout_s,
        )
        return _deploy(spec, root, started, time.monotonic() + timeout_s)


def _deploy(spec: FlowerSpec, root: Path, started: float, deadline: float) -> FlowerResult:
    n_clients = spec.n_clients
    home, logs, out = root / "home", root / "logs", Path(spec.output)
    for folder in (home, logs, out):
        folder.mkdir()
    _, partition = spec.load_data()  # a bad dataset or partition fails here, not in a node
    write_project(root / "app", spec)
    fleet, appio, control = free_port(), free_port(), free_port()
    write_connection(home, control)
    processes = _Processes(flower_env(home), logs)
    nodes = [f"supernode{k}" for k in range(n_clients)]
    try:
        processes.start(
            "superlink",
            [
                _script("flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",  # else it may `uv sync` online
                f"--fleet-api-address=127.0.0.1:{fleet}",
                f"--serverappio-api-address=127.0.0.1:{appio}",
                f"--control-api-address=127.0.0.1:{control}",
            ],
        )
        for k, name in enumerate(nodes):
            processes.start(
                name,
                [
                    _script("flower-supernode"),
                    "--insecure",
                    f"--superlink=127.0.0.1:{fleet}",
                    f"--clientappio-api-address=127.0.0.1:{free_port()}",
                    f"--node-config=partition-id={k} num-partitions={n_clients}",
                ],
            )
        servers = ["superlink", *nodes]

        def connected() -> bool:  # the SuperLink logs each node it activates
            return processes.log("superlink").count(ACTIVATED) >= n_clients

        _wait(
            f"the SuperLink and {n_clients} SuperNode(s) to connect",
            connected,
            lambda: processes.check_alive(*servers),
            min(deadline, time.monotonic() + READY_TIMEOUT_S),
        )
        startup = time.perf_counter() - started
        submitted = time.perf_counter()
        run = processes.start(
            "flwr-run", [_script("flwr"), "run", str(root / "app"), CONNECTION, "--stream"]
        )
        _wait(
            "the Flower run to finish",
            lambda: (out / RESULT_FILE).exists() or (out / ERROR_FILE).exists(),
            lambda: _check_run(processes, servers, run, out),
            deadline,
        )
        run_seconds = time.perf_counter() - submitted
        if (out / ERROR_FILE).exists():
            error = json.loads((out / ERROR_FILE).read_text())["error"]
            raise MaaslabError(
                f"the ServerApp failed: {error} (run with workdir= to keep the logs)"
            )
        table = json.loads((out / RESULT_FILE).read_text())
        state = read_safetensors(out / FINAL_WEIGHTS)
    finally:
        processes.stop()
    return FlowerResult(
        config=spec.federated,
        partition=partition,
        rounds=tuple(_round(r) for r in table["rounds"]),
        test_loss=table["test_loss"],
        test_accuracy=table["test_accuracy"],
        state=state,
        startup_seconds=startup,
        run_seconds=run_seconds,
        wall_time=time.perf_counter() - started,
    )


def _check_run(processes: _Processes, servers: list[str], run: subprocess.Popen, out: Path) -> None:
    processes.check_alive(*servers)
    if run.poll() is not None:  # `flwr run --stream` returns when the run has ended
        time.sleep(1.0)  # the result is written before the run ends; allow the file system
        if not (out / RESULT_FILE).exists() and not (out / ERROR_FILE).exists():
            raise MaaslabError(
                f"the Flower run ended without a result:\n{processes.tail('flwr-run', 12)}"
            )


def _round(fields: dict[str, Any]) -> RoundRecord:
    clients = [ClientRecord(**c) for c in fields.pop("clients")]
    return RoundRecord(clients=clients, **fields)
