"""The same federation as a Flower app: a ServerApp with Flower's own FedAvg, a ClientApp per node.

`run_federated` (fedavg.py) writes the server's loop by hand. Here the loop is Flower's: the
ServerApp hands `flwr.serverapp.strategy.FedAvg` the initial weights, and the strategy samples
the nodes, sends them the global weights as an ArrayRecord, averages their replies weighted by
the "num-examples" each reports, and calls back after every round so the server can measure the
new global model on the validation split. Each ClientApp is one client of our partition: it
reads its partition id from its node config, deals the same `partition_dataset` with the same
seed, keeps its own rows, and trains them with `client.local_update`, the very local step
`run_federated` takes, seeded with the same `client_seed(seed, round, client)`. So the two runs
differ only in who averages (Flower in float32, ours in float64) and in which order the replies
arrive (flower_runner.py runs this app on a SuperLink and SuperNodes; the oracle tests compare).

How the Deployment Engine maps to real devices
----------------------------------------------
- The SuperLink is the one long-running server process (a cloud VM, a hospital network's
  coordinator). It holds no model code: it relays messages between the ServerApp and the
  nodes through its Fleet API (`--fleet-api-address`, port 9092 by default), takes runs from
  `flwr run` through its Control API (9093) and serves the ServerApp through the ServerAppIo
  API (9091). For every run it starts the ServerApp (this module's `server_app`) as a process
  of its own (`--isolation subprocess`), or leaves it to a separately managed process
  (`--isolation process`, e.g. a container of its own).
- A SuperNode runs where the data lives: one per phone, per hospital, per bank branch. It
  connects out to the SuperLink (`--superlink host:9092`; the device needs no open port, which
  is what lets phones behind NAT take part), pulls the messages addressed to it, and runs the
  ClientApp (`client_app`) for each one as a process of its own, handing it the node config
  (`--node-config "partition-id=3"`: here which slice of the data the node holds; on a real
  device, e.g. the path of its local data). The examples never leave the node; only weights
  and the metrics the ClientApp chooses to return travel.
- `flwr run APP CONNECTION` builds the app folder into a FAB (a zip of its .py/.toml files),
  sends it to the SuperLink, which ships it to the nodes with the run; the connection
  (address, TLS or not) is a named entry of $FLWR_HOME/config.toml.
- In production every link is TLS: the SuperLink gets `--ssl-ca-certfile`, `--ssl-certfile`
  and `--ssl-keyfile`; each SuperNode `--root-certificates` (the CA that signed the SuperLink's
  certificate); the CLI's connection `root-certificates`. Nodes authenticate with a key pair:
  the SuperLink runs with `--enable-supernode-auth` and admits only the public keys registered
  with `flwr supernode register` (or `--trusted-entities` on a node for the apps it accepts),
  and each SuperNode signs its requests with `--auth-supernode-private-key`. The loopback runs
  of this lesson use `--insecure` (plain gRPC) on 127.0.0.1 only: fine on one machine, never on
  a network.

The run config (what every process of one run reads) is a `FlowerSpec`, sent as JSON strings.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from torch import nn

from maaslab.data import Dataset, load_dataset
from maaslab.device import get_device
from maaslab.errors import MaaslabError
from maaslab.federated.client import ClientRecord, local_update
from maaslab.federated.fedavg import FederatedConfig, RoundRecord, client_seed
from maaslab.federated.partition import Partition, client_dataset, partition_dataset
from maaslab.models import build_model
from maaslab.registry import load_model, state_to_safetensors, write_json
from maaslab.runtime import torch_threads
from maaslab.train import cpu_threads, evaluate_split

RESULT_FILE = "result.json"  # what the ServerApp writes into FlowerSpec.output when it is done
ERROR_FILE = "error.json"  # what it writes there instead when it fails
FINAL_WEIGHTS = "final.safetensors"  # the final global weights, beside the result
WEIGHT_KEY = "num-examples"  # the MetricRecord key Flower's FedAvg weights each reply by
_CLIENT_METRICS = ("train_loss", "train_accuracy", "val_accuracy", "drift", "seconds")


@dataclass(frozen=True)
class FlowerSpec:
    """What the ServerApp and every ClientApp of one run agree on (the app's run config)."""

    federated: FederatedConfig  # rounds, clients per round, local epochs, batch size, lr, seed
    n_clients: int  # SuperNodes in the federation, one partition id each (0..n_clients-1)
    model: dict[str, Any]  # registry.model_config of the global model: clients build it from this
    initial_model: str  # model folder with the initial global weights (read by the ServerApp)
    output: str  # folder the ServerApp writes result.json and the final weights into
    dataset: str = "digits"  # load_dataset name: every process loads it itself, nothing is sent
    # load_dataset keyword arguments (val_fraction, seed, ...) as (name, value) pairs
    dataset_options: tuple[tuple[str, Any], ...] = ()
    alpha: float | None = None  # partition_dataset: None = IID, else Dirichlet(alpha) skew
    partition_seed: int = 0  # partition_dataset's seed: the same seed deals the same clients
    reply_timeout_s: float = 300.0  # how long the ServerApp waits for a round's replies

    def to_run_config(self) -> dict[str, str]:
        """The run config Flower carries to every process ([tool.flwr.app.config])."""
        fields = dataclasses.asdict(self)
        fields["federated"] = dataclasses.asdict(self.federated)
        return {"spec": json.dumps(fields, sort_keys=True)}

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FlowerSpec:
        """Read the spec back from a Context's run config."""
        fields = json.loads(str(run_config["spec"]))
        fields["federated"] = FederatedConfig(**fields["federated"])
        fields["dataset_options"] = tuple(tuple(pair) for pair in fields["dataset_options"])
        return cls(**fields)

    def load_data(self) -> tuple[Dataset, Partition]:
        """The dataset and its partition, dealt exactly as run_federated's caller deals them."""
        data = load_dataset(self.dataset, **dict(self.dataset_options))
        partition = partition_dataset(
            data, self.n_clients, alpha=self.alpha, seed=self.partition_seed
        )
        return data, partition


def sampling(cfg: FederatedConfig, n_clients: int) -> dict[str, float | int]:
    """FedAvg's sampling arguments for cfg.clients_per_round of n_clients (None = all).

    Flower samples `max(int(fraction_train * connected), min_train_nodes)` nodes, drawn with
    Python's `random.sample`: the same number as ours, not the same clients (see the tests).
    """
    per_round = n_clients if cfg.clients_per_round is None else cfg.clients_per_round
    if per_round > n_clients:
        raise MaaslabError(
            f"clients_per_round={per_round} but the federation has {n_clients} SuperNodes: "
            f"sample at most {n_clients}, or None for all"
        )
    return {
        "fraction_train": per_round / n_clients,
        "min_train_nodes": per_round,
        "min_available_nodes": n_clients,  # no round starts before every SuperNode is there
        "fraction_evaluate": 0.0,  # the server measures the global model itself, as ours does
        "min_evaluate_nodes": 0,
    }


def flower_average(
    states: list[dict[str, torch.Tensor]], weights: list[float]
) -> dict[str, torch.Tensor]:
    """Flower's FedAvg aggregate of client states: its aggregate_train on reply Messages."""
    replies = []
    for state, n in zip(states, weights, strict=True):
        content = RecordDict(
            {
                "arrays": ArrayRecord.from_torch_state_dict(state),
                "metrics": MetricRecord({WEIGHT_KEY: n}),
            }
        )
        instruction = Message(RecordDict(), dst_node_id=len(replies) + 1, message_type="train")
        replies.append(Message(content, reply_to=instruction))
    arrays, _ = FedAvg().aggregate_train(1, replies)
    if arrays is None:
        raise MaaslabError("Flower's FedAvg returned no aggregate: give it at least one state")
    return dict(arrays.to_torch_state_dict())


# ---------------------------------------------------------------- the ClientApp: one node


client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """One node's round: the global weights in, local_update on its own rows, its weights out."""
    spec = FlowerSpec.from_run_config(context.run_config)
    client = int(context.node_config["partition-id"])
    data, partition = spec.load_data()
    own = client_dataset(data, partition, client)  # the only rows this node ever touches
    global_model = build_model(spec.model["model_type"], **spec.model["config"])
    global_model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    round_ = int(msg.content["config"]["server-round"])
    local = spec.federated.train_config(client_seed(spec.federated.seed, round_, client))
    update = local_update(copy.deepcopy(global_model), global_model, own, local, client=client)
    metrics = {name: getattr(update.record, name) for name in _CLIENT_METRICS}
    metrics = {k: math.nan if v is None else float(v) for k, v in metrics.items()}
    reply = RecordDict(
        {
            "arrays": ArrayRecord.from_torch_state_dict(update.state),
            "metrics": MetricRecord({**metrics, "client": client, WEIGHT_KEY: len(own.y_train)}),
        }
    )
    return Message(reply, reply_to=msg)


# ---------------------------------------------------------------- the ServerApp


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Run Flower's FedAvg over the connected nodes; write the per-round table and final weights."""
    spec = FlowerSpec.from_run_config(context.run_config)
    output = Path(spec.output)
    try:
        _serve(grid, spec, output)
    except BaseException as err:
        write_json(output / ERROR_FILE, {"error": f"{type(err).__name__}: {err}"})
        raise


def _serve(grid: Grid, spec: FlowerSpec, output: Path) -> None:
    started = time.perf_counter()
    cfg = spec.federated
    data, _ = spec.load_data()
    model: nn.Module = load_model(spec.initial_model, device=get_device(cfg.device))
    device = next(model.parameters()).device
    threads = cpu_threads(model, cfg.train_config(0)) if device.type == "cpu" else None
    rounds: list[RoundRecord] = []
    replies: dict[int, list[ClientRecord]] = {}
    mark = [started]  # when the last round ended: a round's seconds run from there

    def collect(records: list[RecordDict], key: str) -> MetricRecord:
        # the strategy's own aggregate, after keeping each client's figures for the table
        metrics = [next(iter(r.metric_records.values())) for r in records]
        round_ = len(rounds)
        replies[round_] = sorted((_client_record(m) for m in metrics), key=lambda c: c.client)
        return aggregate_metricrecords(records, key)

    def evaluate(round_: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        with torch_threads(threads):
            val_loss, val_accuracy = evaluate_split(model, data, "val")
        now = time.perf_counter()
        rounds.append(
            RoundRecord(
                round=round_,
                clients=replies.get(round_, []),
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                seconds=now - mark[0],
            )
        )
        mark[0] = now
        return MetricRecord({"val-loss": val_loss, "val-accuracy": _number(val_accuracy)})

    strategy = FedAvg(train_metrics_aggr_fn=collect, **sampling(cfg, spec.n_clients))
    initial = ArrayRecord.from_torch_state_dict(model.state_dict())
    result = strategy.start(
        grid,
        initial,
        num_rounds=cfg.rounds,
        timeout=spec.reply_timeout_s,
        evaluate_fn=evaluate,
    )
    # Flower averages whichever replies came back (a real node may drop out); a round that got
    # none kept the old weights, which is no round at all
    silent = [r.round for r in rounds[1:] if not r.clients]
    if len(rounds) != cfg.rounds + 1 or silent:
        raise MaaslabError(
            f"no client replied in round(s) {silent or 'after the last'} of {cfg.rounds}: "
            "a ClientApp failed (its error is in its SuperNode's log)"
        )
    model.load_state_dict(result.arrays.to_torch_state_dict())
    with torch_threads(threads):
        test_loss, test_accuracy = evaluate_split(model, data, "test")
    state_to_safetensors(model.state_dict(), output / FINAL_WEIGHTS)
    table = {
        "rounds": [dataclasses.asdict(r) for r in rounds],
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "seconds": time.perf_counter() - started,
    }
    partial = output / f".{RESULT_FILE}.{os.getpid()}"
    write_json(partial, table)
    partial.replace(output / RESULT_FILE)  # whoever waits for it never reads half of it


def _client_record(metrics: MetricRecord) -> ClientRecord:
    figures = {name: float(metrics[name]) for name in _CLIENT_METRICS}
    for name in ("train_accuracy", "val_accuracy"):
        figures[name] = None if math.isnan(figures[name]) else figures[name]
    return ClientRecord(client=int(metrics["client"]), examples=int(metrics[WEIGHT_KEY]), **figures)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)
