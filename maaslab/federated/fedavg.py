"""The server's loop: FedAvg and FedProx over clients that keep their data (McMahan et al., 2017).

Each round the server
1. samples clients (all of them, or `clients_per_round` drawn from a seeded stream),
2. sends each one the global weights; the client trains them on its own data with
   `maaslab.train.train` for `local_epochs` (client.local_update) and sends its weights back,
3. replaces the global weights by the average of the clients' weights, each weighted by the
   number of examples it trained on (weighted_average; cfg.aggregation chooses whether the
   server computes it in the clear, from masked updates or from encrypted ones: aggregation.py),
4. evaluates the new global model on the validation split.
The test split is read once, after the last round. The examples never leave their client: the
server sees only weights. With one client, full participation and one full-batch local step,
a round is exactly one step of centralized full-batch gradient descent (the oracle test).

Round 0 of the history is the initial model, evaluated before any client trained.

With `dp=True` every client trains with DP-SGD (privacy.py) and keeps its own accountant over
the rounds it takes part in; each round records the largest epsilon any client has spent.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from maaslab.data import Dataset
from maaslab.device import get_device
from maaslab.errors import MaaslabError
from maaslab.federated.aggregation import AGGREGATIONS, aggregate
from maaslab.federated.client import ClientRecord, local_update
from maaslab.federated.homomorphic import make_keys
from maaslab.federated.partition import Partition, client_dataset
from maaslab.federated.privacy import ClientPrivacy, check_dp_settings, check_private
from maaslab.runtime import torch_threads
from maaslab.train import TrainConfig, cpu_threads, evaluate_split

ALGORITHMS = ("fedavg", "fedprox")


@dataclass(frozen=True)
class FederatedConfig:
    """How the federation trains; the partition (who holds what) is given beside it."""

    rounds: int = 20  # communication rounds: send weights, train locally, average, evaluate
    # Clients that train each round, drawn anew every round from a seeded stream;
    # None = every client (full participation).
    clients_per_round: int | None = None
    local_epochs: int = 1  # passes a client makes over its own data each round
    # Local batch size; one at least as large as a client's data gives one full-batch step
    # per local epoch.
    batch_size: int = 32
    optimizer: str = "sgd"  # the clients' optimizer (train.OPTIMIZERS), started fresh each round
    lr: float = 0.1  # the clients' learning rate
    # "fedavg", or "fedprox": each client's loss gains mu / 2 * ||w - w_global||^2.
    algorithm: str = "fedavg"
    mu: float = 0.0  # FedProx's proximal weight (0 takes FedAvg's steps); FedAvg needs 0
    seed: int = 0  # seeds the client sampling and every client's shuffling and dropout
    device: str | None = None  # None -> maaslab.device.get_device() (MAASLAB_DEVICE honoured)
    # DP-SGD on every client (privacy.py): per-example clipping, Gaussian noise, Poisson batches
    # of `batch_size` examples on average, epsilon per round. The four fields below are read
    # only with dp=True (their values are checked either way).
    dp: bool = False
    # sigma: the noise's standard deviation as a multiple of max_grad_norm; more noise, smaller
    # epsilon, lower accuracy (0 clips without noise: epsilon is infinite).
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0  # C: every example's gradient is clipped to this L2 norm
    # delta of the (epsilon, delta) guarantee: keep it well below 1 / (a client's examples)
    delta: float = 1e-5
    accountant: str = "rdp"  # privacy.ACCOUNTANTS: "rdp" (upper bound, cheap) or "prv" (tighter)
    # How the server sums the clients' updates (aggregation.py): "plain" sees each update;
    # "masked" (secure aggregation) and "ckks" (homomorphic encryption) see only their sum.
    # All three give the same average, within the bounds aggregation.py states.
    aggregation: str = "plain"

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.local_epochs < 1:
            raise MaaslabError("rounds and local_epochs must be at least 1")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise MaaslabError(
                f"clients_per_round must be at least 1 (or None for all clients), "
                f"got {self.clients_per_round}"
            )
        if self.algorithm not in ALGORITHMS:
            raise MaaslabError(
                f"unknown algorithm {self.algorithm!r}: choose one of {', '.join(ALGORITHMS)}"
            )
        if not (self.mu >= 0 and math.isfinite(self.mu)):
            raise MaaslabError(f"mu must be 0 or a positive number, got {self.mu}")
        if self.algorithm == "fedavg" and self.mu != 0:
            raise MaaslabError(
                f"mu={self.mu} is FedProx's proximal weight: set algorithm='fedprox' to use it, "
                "or mu=0 for FedAvg"
            )
        if self.aggregation not in AGGREGATIONS:
            raise MaaslabError(
                f"unknown aggregation {self.aggregation!r}: choose one of {', '.join(AGGREGATIONS)}"
            )
        self.train_config(0)  # the local training's own checks: optimizer, lr, batch_size
        check_dp_settings(self.noise_multiplier, self.max_grad_norm, self.delta, self.accountant)
        if self.dp and self.algorithm != "fedavg":
            raise MaaslabError(
                "dp=True clips each example's gradient, and FedProx's proximal term belongs to "
                "no example: use algorithm='fedavg' with dp"
            )

    def client_privacy(self) -> ClientPrivacy | None:
        """A fresh DP-SGD accountant for one client, or None without dp."""
        if not self.dp:
            return None
        return ClientPrivacy(self.noise_multiplier, self.max_grad_norm, self.delta, self.accountant)

    def train_config(self, seed: int) -> TrainConfig:
        """The TrainConfig of one client's local training (seeded per client and round)."""
        return TrainConfig(
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            seed=seed,
            device=self.device,
            grad_norm_samples=0,  # nobody reads a client's gradient norms; skip measuring them
        )


@dataclass
class RoundRecord:
    """One round: the clients that trained and the global model they produced."""

    round: int  # 1-based; 0 is the initial global model, before any client trained
    clients: list[ClientRecord]  # the sampled clients, by index (empty in round 0)
    val_loss: float  # the new global model on the validation split
    val_accuracy: float | None  # None for regression
    seconds: float  # wall time of the round, evaluation included
    # With dp: the largest epsilon (at cfg.delta) any client has spent up to this round, every
    # round it trained in composed (0 in round 0); None without dp.
    epsilon: float | None = None
    upload_bytes: float = 0.0  # what one client sent the server this round (cfg.aggregation)
    aggregation_seconds: float = 0.0  # encoding, summing and decoding the clients' updates


@dataclass
class FederatedResult:
    """A federated run: its config, who held what, every round, and the one test figure."""

    config: FederatedConfig
    partition: Partition
    rounds: list[RoundRecord] = field(default_factory=list)  # round 0 first
    test_loss: float = math.nan  # the final global model on the test split, read once
    test_accuracy: float | None = None
    wall_time: float = 0.0  # seconds in run_federated
    stopped_early: bool = False  # a callback stopped it before cfg.rounds

    @property
    def epsilon(self) -> float | None:
        """The run's privacy guarantee: the last round's epsilon (None without dp)."""
        return self.rounds[-1].epsilon if self.rounds else None

    def column(self, name: str) -> list[Any]:
        """One global figure across rounds (round 0 first), e.g. result.column("val_accuracy")."""
        return [getattr(r, name) for r in self.rounds]

    def client_table(self, name: str) -> np.ndarray:
        """(rounds + 1, K) one client figure per round ("drift", "val_accuracy", ...).

        NaN where a client did not train that round (and in round 0).
        """
        table = np.full((len(self.rounds), self.partition.n_clients), np.nan)
        for i, rec in enumerate(self.rounds):
            for c in rec.clients:
                value = getattr(c, name)
                table[i, c.client] = np.nan if value is None else value
        return table


@dataclass
class FederatedState:
    """What the server's loop shares with callbacks while it runs."""

    model: nn.Module  # the global model
    result: FederatedResult  # filled in as rounds finish
    round: int = 0  # finished rounds
    stop: bool = False  # set True to end the run; a round stopped midway is not averaged
    info: dict[str, Any] = field(default_factory=dict)  # free space for callbacks


class FederatedCallback:
    """Base class: override the hooks you need (a page streams rounds through these)."""

    def on_run_begin(self, state: FederatedState) -> None:
        """Called once, after round 0 (the initial model) is evaluated."""

    def on_client_end(self, state: FederatedState, record: ClientRecord) -> None:
        """Called after each client's local training, before the round's average."""

    def on_round_end(self, state: FederatedState) -> None:
        """Called after each round's average and evaluation, once result.rounds has it."""

    def on_run_end(self, state: FederatedState) -> None:
        """Called once when the run ends, finished or stopped, after the test split is read."""


def weighted_average(
    states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """FedAvg's aggregate: sum_k n_k * w_k / sum_k n_k for every floating-point tensor.

    Summed in float64, so identical states average to themselves exactly. Integer buffers
    (a BatchNorm's step counter) are not averaged: the first state's are kept.
    """
    if not states or len(states) != len(weights):
        raise MaaslabError(
            f"averaging needs one weight per state and at least one state, got "
            f"{len(states)} states and {len(weights)} weights"
        )
    total = float(sum(weights))
    if not (total > 0 and all(w >= 0 for w in weights)):
        raise MaaslabError(f"weights must be non-negative with a positive sum, got {weights}")
    averaged = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            averaged[name] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for state, w in zip(states, weights, strict=True):
            acc += float(w) * state[name].to(torch.float64)
        averaged[name] = (acc / total).to(first.dtype)
    return averaged


def sample_clients(n_clients: int, per_round: int | None, seed: int, round_: int) -> np.ndarray:
    """The clients that train in round `round_`: all, or `per_round` drawn without replacement.

    Each round has its own seeded stream, so round 7's clients do not depend on rounds 1-6.
    """
    if per_round is None or per_round == n_clients:
        return np.arange(n_clients)
    if per_round > n_clients:
        raise MaaslabError(
            f"clients_per_round={per_round} but the partition has {n_clients} clients: "
            f"sample at most {n_clients}, or None for all"
        )
    rng = np.random.default_rng([seed, round_])
    return np.sort(rng.choice(n_clients, size=per_round, replace=False))


def client_seed(seed: int, round_: int, client: int) -> int:
    """The seed of one client's local training in one round (its shuffling and dropout)."""
    return int(np.random.default_rng([seed, round_, client, 1]).integers(2**31 - 1))


def run_federated(
    model: nn.Module,
    data: Dataset,
    partition: Partition,
    cfg: FederatedConfig = FederatedConfig(),
    callbacks: Sequence[FederatedCallback] = (),
) -> FederatedResult:
    """Train `model` federated over `partition`'s clients of `data`; return the result.

    Parameters
    ----------
    model : the initial global model; it is trained in place and ends as the final global one.
    data : the Dataset the partition was drawn from; its validation split measures every
        round, its test split is read once at the end.
    partition : which training examples each client holds (partition.partition_dataset).
    cfg : rounds, sampling, local training, algorithm, seed.
    callbacks : FederatedCallback objects; any may set `state.stop = True` to end the run.
    """
    if len(data.y_val) == 0:
        raise MaaslabError(
            "the global model is measured on the validation split every round, and this "
            "dataset's is empty: load it with val_fraction > 0 (the default)"
        )
    clients = [client_dataset(data, partition, k) for k in range(partition.n_clients)]
    # refuse a sample larger than the federation before any client trains
    sample_clients(partition.n_clients, cfg.clients_per_round, cfg.seed, 1)
    privacy = {k: cfg.client_privacy() for k in range(partition.n_clients)}
    if cfg.dp:
        _check_private_run(model, partition, cfg)
    spent = dict.fromkeys(privacy, 0.0)  # each client's epsilon so far
    device = get_device(cfg.device)
    model.to(device)
    worker = copy.deepcopy(model)  # trains each sampled client in turn
    threads = cpu_threads(model, cfg.train_config(0)) if device.type == "cpu" else None
    started = time.perf_counter()
    result = FederatedResult(config=cfg, partition=partition)
    state = FederatedState(model=model, result=result)
    mu = cfg.mu if cfg.algorithm == "fedprox" else None
    keys = make_keys() if cfg.aggregation == "ckks" else None  # once a run: the key holder's
    with torch_threads(threads):
        result.rounds.append(_evaluated(model, data, 0, [], started, 0.0 if cfg.dp else None))
        for cb in callbacks:
            cb.on_run_begin(state)
        while state.round < cfg.rounds and not state.stop:
            round_start, round_ = time.perf_counter(), state.round + 1
            states, records = [], []
            chosen = sample_clients(partition.n_clients, cfg.clients_per_round, cfg.seed, round_)
            for k in chosen:
                local = cfg.train_config(client_seed(cfg.seed, round_, int(k)))
                update = local_update(
                    worker, model, clients[k], local, client=int(k), mu=mu, privacy=privacy[k]
                )
                states.append(update.state)
                records.append(update.record)
                for cb in callbacks:
                    cb.on_client_end(state, update.record)
                if state.stop:
                    break
            if state.stop and len(records) < len(chosen):
                break  # a partial round is not averaged: the global model stays the last one
            summed = aggregate(
                states,
                [r.examples for r in records],
                cfg.aggregation,
                clients=[r.client for r in records],
                round_=round_,
                seed=cfg.seed,
                keys=keys,
            )
            model.load_state_dict(summed.average)
            state.info["aggregation"] = summed  # this round's: what the server saw, the cost
            spent.update((r.client, r.epsilon) for r in records if r.epsilon is not None)
            epsilon = max(spent.values()) if cfg.dp else None
            record = _evaluated(model, data, round_, records, round_start, epsilon)
            record.upload_bytes, record.aggregation_seconds = (
                summed.bytes_per_client,
                summed.seconds,
            )
            result.rounds.append(record)
            state.round = round_
            for cb in callbacks:
                cb.on_round_end(state)
        result.test_loss, result.test_accuracy = evaluate_split(model, data, "test")
    result.wall_time = time.perf_counter() - started
    result.stopped_early = state.stop and state.round < cfg.rounds
    for cb in callbacks:
        cb.on_run_end(state)
    model.eval()
    return result


def _check_private_run(model: nn.Module, partition: Partition, cfg: FederatedConfig) -> None:
    # before any client trains: a model DP-SGD cannot train, a delta too large for the clients
    check_private(model)
    smallest = int(partition.sizes.min())
    if cfg.delta >= 1 / smallest:
        raise MaaslabError(
            f"delta={cfg.delta} is not small next to the smallest client's {smallest} examples: "
            f"a guarantee with delta >= 1/n allows leaking an example outright; choose "
            f"delta well below {1 / smallest:.2g}"
        )


def _evaluated(
    model: nn.Module,
    data: Dataset,
    round_: int,
    records: list[ClientRecord],
    started: float,
    epsilon: float | None,
) -> RoundRecord:
    val_loss, val_accuracy = evaluate_split(model, data, "val")
    return RoundRecord(
        round=round_,
        clients=records,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        seconds=time.perf_counter() - started,
        epsilon=epsilon,
    )
