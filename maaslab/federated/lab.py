"""The Federated page's backend: one config for every knob, the federation it builds, a live job.

The page draws widgets for `LabConfig` fields (ranges from `LIMITS` and `ALPHAS`), calls
`build_federation`, runs it as a `FederatedJob` and redraws from the job's live result every
half second. A notebook builds the same federation with the same call, so the same settings give
the same numbers on both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from torch import nn

from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.evaluation import small_subset
from maaslab.federated.aggregation import Aggregation
from maaslab.federated.datasets import DATASETS, federated_dataset
from maaslab.federated.fedavg import (
    ALGORITHMS,
    FederatedCallback,
    FederatedConfig,
    FederatedResult,
    FederatedState,
    run_federated,
)
from maaslab.federated.partition import Partition, partition_dataset
from maaslab.federated.tradeoff import TradeoffConfig, TradeoffResult, privacy_utility
from maaslab.jobs import Task
from maaslab.models import build_model
from maaslab.runtime import seed_everything

# Dirichlet concentrations the page's slider stops at; None (the last stop) is an IID split.
ALPHAS: tuple[float | None, ...] = (0.05, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, None)
LR_CHOICES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MU_CHOICES = (0.0, 0.001, 0.01, 0.1, 1.0)
NOISE_CHOICES = (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 4.0)  # DP-SGD's noise multiplier sigma
CLIP_CHOICES = (0.1, 0.5, 1.0, 2.0, 5.0)  # DP-SGD's per-example gradient norm C
# field -> (lowest, highest) allowed; the page's widgets take their ranges from here.
LIMITS: dict[str, tuple[int, int]] = {
    "n_clients": (2, 20),
    "rounds": (1, 50),
    "local_epochs": (1, 10),
    "hidden": (0, 128),
    "batch_size": (1, 256),
    "seed": (0, 2**31 - 1),
}


@dataclass(frozen=True)
class LabConfig:
    """Every setting of a federated run on the Federated page (and in lesson 18's notebook)."""

    dataset: str = "digits"  # "digits" (8x8 images, 10 classes) or "reviews-minilm" (2 classes)
    n_clients: int = 5  # K: clients holding a share of the training rows each
    alpha: float | None = (
        0.3  # Dirichlet label skew (small: each client sees few classes); None: IID
    )
    hidden: int = 32  # neurons of the MLP's one hidden layer; 0 = a linear (softmax) model
    rounds: int = 15  # communication rounds
    clients_per_round: int | None = None  # sampled each round; None: every client, every round
    local_epochs: int = 2  # passes a client makes over its own rows each round
    batch_size: int = 32  # local batch size
    lr: float = 0.3  # the clients' SGD learning rate
    algorithm: str = "fedavg"  # "fedavg" or "fedprox"
    mu: float = 0.0  # FedProx's proximal weight (FedAvg needs 0)
    seed: int = 0  # the split, the initial weights, the sampling and every client's shuffling
    dp: bool = False  # DP-SGD on every client (Opacus): per-example clipping and Gaussian noise
    noise_multiplier: float = 1.0  # DP-SGD's sigma, in units of max_grad_norm
    max_grad_norm: float = 1.0  # DP-SGD's clipping norm C
    delta: float = 1e-5  # the delta of (epsilon, delta); well below 1 / a client's examples
    aggregation: str = "plain"  # what the server sees: "plain", "masked" or "ckks" (encrypted)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise MaaslabError(f"unknown dataset {self.dataset!r}: choose one of {DATASETS}")
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise MaaslabError(f"{name} must be between {low} and {high}, got {value}")
        if self.alpha is not None and not self.alpha > 0:
            raise MaaslabError(
                f"alpha must be a positive number (or None for IID), got {self.alpha}"
            )
        if self.clients_per_round is not None and not 1 <= self.clients_per_round <= self.n_clients:
            raise MaaslabError(
                f"clients_per_round must be between 1 and n_clients={self.n_clients} "
                f"(or None for all), got {self.clients_per_round}"
            )
        if self.algorithm not in ALGORITHMS:
            raise MaaslabError(f"unknown algorithm {self.algorithm!r}: choose one of {ALGORITHMS}")
        self.federated_config()  # FederatedConfig's own checks (mu with fedavg, lr, ...)

    def federated_config(self) -> FederatedConfig:
        """The server loop's config for these settings."""
        return FederatedConfig(
            rounds=self.rounds,
            clients_per_round=self.clients_per_round,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            optimizer="sgd",
            lr=self.lr,
            algorithm=self.algorithm,
            mu=self.mu,
            seed=self.seed,
            dp=self.dp,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            delta=self.delta,
            aggregation=self.aggregation,
        )


@dataclass
class Federation:
    """Everything a run needs: the global model, the data, who holds what, the loop's config."""

    model: nn.Module
    data: Dataset
    partition: Partition
    config: FederatedConfig


def build_model_for(data: Dataset, hidden: int) -> nn.Module:
    """The federation's global model: an MLP with one hidden layer (none: softmax regression)."""
    return build_model(
        "mlp",
        in_features=data.n_features,
        hidden=(hidden,) if hidden else (),
        out_features=data.out_features,
    )


def split_for(cfg: LabConfig) -> tuple[Dataset, Partition]:
    """The data and who holds which of its training rows, for these settings."""
    data = federated_dataset(cfg.dataset, seed=cfg.seed)
    return data, partition_dataset(data, cfg.n_clients, alpha=cfg.alpha, seed=cfg.seed)


def build_federation(cfg: LabConfig) -> Federation:
    """Data, its split among the clients, a seeded initial global model and the loop's config."""
    data, partition = split_for(cfg)
    seed_everything(cfg.seed)
    return Federation(build_model_for(data, cfg.hidden), data, partition, cfg.federated_config())


class _Live(FederatedCallback):
    # Hands the job the live result, and turns the job's cancel event into the loop's stop flag.
    def __init__(self, job: FederatedJob, cancel: threading.Event) -> None:
        self.job, self.cancel = job, cancel

    def on_run_begin(self, state: FederatedState) -> None:
        self.job.live = state.result
        state.stop = self.cancel.is_set()

    def on_client_end(self, state: FederatedState, record: Any) -> None:
        state.stop = state.stop or self.cancel.is_set()

    def on_round_end(self, state: FederatedState) -> None:
        self.job.aggregation = state.info.get("aggregation")
        state.stop = state.stop or self.cancel.is_set()


class FederatedJob(Task):
    """A federated run on a daemon thread: `live` fills in round by round, `cancel()` stops it."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.live: FederatedResult | None = None  # the run's result as rounds finish
        # the last round's Aggregation: what the server saw from each client, and the cost
        self.aggregation: Aggregation | None = None

        def run(progress: Any, cancel: threading.Event) -> FederatedResult:
            f = self.federation
            return run_federated(f.model, f.data, f.partition, f.config, [_Live(self, cancel)])

        super().__init__(run)


TRADEOFF_EXAMPLES = 100  # training digits of the trade-off's federation: few, so that it overfits
TRADEOFF_HIDDEN = 256  # a wide MLP, for the same reason (tradeoff.py's docstring has the figures)


class _Progress(FederatedCallback):
    # Reports which setting of the sweep runs, and stops it when the page cancels.
    def __init__(self, progress: Any, cancel: threading.Event, settings: int) -> None:
        self.progress, self.cancel, self.settings, self.started = progress, cancel, settings, 0

    def on_run_begin(self, state: FederatedState) -> None:
        self.progress(
            f"setting {self.started + 1} of {self.settings}", self.started / self.settings
        )
        self.started += 1
        state.stop = self.cancel.is_set()

    def on_client_end(self, state: FederatedState, record: Any) -> None:
        state.stop = state.stop or self.cancel.is_set()


def measure_tradeoff(
    progress: Any, cancel: threading.Event, cfg: TradeoffConfig | None = None, seed: int = 0
) -> TradeoffResult:
    """The page's privacy-utility sweep (a Task's function): 100 training digits over two IID
    clients, a 256-unit MLP, the plain run and every noise level of `cfg`."""
    cfg = TradeoffConfig() if cfg is None else cfg
    data = small_subset(federated_dataset("digits", seed=seed), TRADEOFF_EXAMPLES, seed)
    partition = partition_dataset(data, 2, seed=seed)
    seed_everything(seed)
    model = build_model_for(data, TRADEOFF_HIDDEN)
    settings = len(cfg.noise_multipliers) + int(cfg.include_plain)
    return privacy_utility(model, data, partition, cfg, [_Progress(progress, cancel, settings)])
