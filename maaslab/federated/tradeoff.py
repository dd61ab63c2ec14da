"""The privacy-utility trade-off: the same federation trained at several noise levels.

More noise (a larger noise_multiplier sigma) buys a smaller epsilon and a weaker membership
attack, and costs accuracy. `privacy_utility` trains one federation per setting (the same
initial weights, clients, seeds), and measures for each the test accuracy of the final global
model, the epsilon its clients spent, the loss-threshold attack on it (attack.py) and the bound
DP puts on any such attack. With `include_plain` it trains once without DP-SGD too: the
reference point, at epsilon = infinity.

An attack needs something to find: a model that generalises well leaks little, with or without
DP. A small training set and a wide MLP trained for many local epochs make the plain model
overfit, so its members stand out. Measured with TradeoffConfig() on 100 digits
(`small_subset(digits, 100)`), two IID clients, an MLP with 256 hidden units, 4 rounds
(2 under MAASLAB_FAST=1), delta 1e-5:

    sigma   epsilon   test accuracy   attack AUC   advantage   Yeom's advantage
    plain   inf       0.90            0.69         0.31        0.31
    0.5     125       0.87            0.67         0.29        0.18
    1       37        0.79            0.66         0.25        0.18
    2       13.5      0.62            0.60         0.23        0.01
    4       5.6       0.38            0.56         0.13        0.06

(the best-threshold advantage of 100 + 100 examples reads about 0.1 even for a model that
leaks nothing). Clients this small pay dearly: an example joins half of its client's batches
(q = 25 / 50), so the sampling hides little. With all 1,077 training digits over two clients
(3 rounds of 5 local epochs, batches of 32, lr 0.5) the plain model leaks almost nothing to this
attack (AUC 0.51), while sigma 1.5 costs epsilon 3.5 and 9 points of test accuracy
(0.96 -> 0.86).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.federated.attack import AttackResult, advantage_bound, membership_attack
from maaslab.federated.fedavg import (
    FederatedCallback,
    FederatedConfig,
    FederatedResult,
    run_federated,
)
from maaslab.federated.partition import Partition
from maaslab.runtime import scaled

# The federation of the trade-off when none is given: few examples per client, many local epochs
# and a large learning rate, so that the plain model overfits. Rounds: see TradeoffConfig.
DEFAULT_FEDERATION = FederatedConfig(
    rounds=4, local_epochs=10, batch_size=25, optimizer="sgd", lr=1.0, max_grad_norm=1.0
)
FAST_ROUNDS = 2  # rounds of DEFAULT_FEDERATION under MAASLAB_FAST=1


@dataclass(frozen=True)
class TradeoffConfig:
    """Which noise levels to train, the federation each one trains, and the attack on it."""

    noise_multipliers: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # sigma of each private run
    include_plain: bool = True  # also train without DP-SGD (epsilon = inf): the reference point
    # The federation every setting trains; its dp and noise_multiplier are set per setting.
    # None: DEFAULT_FEDERATION, with FAST_ROUNDS rounds under MAASLAB_FAST=1.
    federated: FederatedConfig | None = None
    attack_examples: int | None = None  # members attacked (and non-members); None: all it can
    nonmembers: str = "test"  # the split the attack's non-members come from ("test" or "val")
    attack_seed: int = 0  # which members and non-members the attack draws

    def __post_init__(self) -> None:
        if not self.noise_multipliers and not self.include_plain:
            raise MaaslabError("nothing to train: give noise_multipliers or include_plain=True")
        for sigma in self.noise_multipliers:
            if not (sigma > 0 and math.isfinite(sigma)):
                raise MaaslabError(
                    f"every noise multiplier must be a positive number, got {sigma} "
                    "(the plain run is include_plain=True)"
                )

    def federation(self) -> FederatedConfig:
        """The federated config the settings start from."""
        if self.federated is not None:
            return self.federated
        return dataclasses.replace(
            DEFAULT_FEDERATION, rounds=scaled(DEFAULT_FEDERATION.rounds, FAST_ROUNDS)
        )


@dataclass
class TradeoffPoint:
    """One setting: its privacy (epsilon, the attack) and its utility (accuracy)."""

    noise_multiplier: float | None  # sigma; None for the plain run
    epsilon: float  # the largest epsilon any client spent, at the config's delta; inf if plain
    test_accuracy: float  # the final global model on the test split
    attack: AttackResult  # the loss-threshold attack on the final global model
    advantage_bound: float  # the most TPR - FPR any attack can reach at this epsilon (1 if plain)
    seconds: float  # wall time of the federated run and the attack
    run: FederatedResult = field(repr=False)  # the whole run (rounds, clients, epsilon per round)

    @property
    def attack_advantage(self) -> float:
        """The attack's advantage at its best threshold (TPR - FPR)."""
        return self.attack.advantage

    @property
    def attack_auc(self) -> float:
        """The attack's AUC (0.5: a coin)."""
        return self.attack.auc


@dataclass
class TradeoffResult:
    """Every setting of a privacy-utility sweep, plain first, then by noise multiplier."""

    config: TradeoffConfig
    federated: FederatedConfig  # the federation every setting trained (dp off for the plain one)
    points: list[TradeoffPoint]  # the finished settings, in the order they ran
    wall_time: float  # seconds for the whole sweep
    stopped_early: bool = False  # a callback stopped a run: that setting and the rest are absent

    def column(self, name: str) -> list[Any]:
        """One figure across settings, e.g. result.column("epsilon") or "attack_advantage"."""
        return [getattr(p, name) for p in self.points]


def privacy_utility(
    model: nn.Module,
    data: Dataset,
    partition: Partition,
    cfg: TradeoffConfig = TradeoffConfig(),
    callbacks: Sequence[FederatedCallback] = (),
) -> TradeoffResult:
    """Train the federation once per noise level (and once plain); measure each one.

    Parameters
    ----------
    model : the initial global model; every setting starts from a copy of these weights
        (it needs no BatchNorm: see privacy.check_private). `model` itself is not trained.
    data : a classification or regression Dataset; the attack's members are its training rows.
    partition : which training examples each client holds (the same for every setting).
    cfg : the noise levels, the federation and the attack.
    callbacks : given to every setting's run_federated (on_run_begin starts each setting);
        a stop ends the sweep, and the stopped setting is left out.
    """
    started = time.perf_counter()
    base = cfg.federation()
    settings: list[float | None] = [None] if cfg.include_plain else []
    settings += list(cfg.noise_multipliers)
    points: list[TradeoffPoint] = []
    stopped = False
    for sigma in settings:
        run_start = time.perf_counter()
        federated = dataclasses.replace(
            base,
            dp=sigma is not None,
            noise_multiplier=base.noise_multiplier if sigma is None else sigma,
        )
        trained = copy.deepcopy(model)
        run = run_federated(trained, data, partition, federated, callbacks)
        if run.stopped_early:
            stopped = True
            break
        attack = membership_attack(
            trained, data, n=cfg.attack_examples, nonmembers=cfg.nonmembers, seed=cfg.attack_seed
        )
        epsilon = math.inf if run.epsilon is None else run.epsilon
        points.append(
            TradeoffPoint(
                noise_multiplier=sigma,
                epsilon=epsilon,
                test_accuracy=math.nan if run.test_accuracy is None else run.test_accuracy,
                attack=attack,
                advantage_bound=advantage_bound(epsilon, base.delta),
                seconds=time.perf_counter() - run_start,
                run=run,
            )
        )
    return TradeoffResult(
        config=cfg,
        federated=base,
        points=points,
        wall_time=time.perf_counter() - started,
        stopped_early=stopped,
    )
