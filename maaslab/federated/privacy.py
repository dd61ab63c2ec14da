"""Differentially private local training: DP-SGD on each client, with Opacus (Abadi et al., 2016).

A client's weights are a function of its examples, and weights can give examples away (see
attack.py). DP-SGD bounds how much any one example can change what a client sends: each step
1. draws its batch by Poisson sampling: every example joins independently with probability
   q = 1 / ceil(n / batch_size), so a batch holds batch_size examples on average (sometimes none);
2. computes one gradient per example (Opacus's GradSampleModule),
3. clips each to L2 norm at most C = max_grad_norm: g_i * min(1, C / ||g_i||),
4. adds Gaussian noise N(0, (sigma * C)^2) to their sum, sigma = noise_multiplier,
5. divides by the expected batch size and takes the optimizer's step.
One example moves the noiseless sum by at most C, and the noise hides a move of that size; that
is the whole guarantee. These are the objects of Opacus's PrivacyEngine.make_private, handed to
`maaslab.train.train` through its `prepare` argument, so a private client runs the same loop as
every other run.

Accounting. Each step is a subsampled Gaussian mechanism; a client's accountant composes every
step it has taken, in every round it trained, and converts them into one (epsilon, delta)
guarantee for each of its examples: a client that trains in k rounds of s steps has composed
k * s steps. The default is Opacus's RDP accountant (Mironov, 2017; the moments accountant of
Abadi et al.): Renyi divergences of the steps simply add up, it is the textbook way to explain
composition, it works for every sigma a page's slider offers, and it is cheap enough to ask
after every round. Its epsilon is an upper bound; the PRV accountant (Gopi et al., 2021), also
offered, computes a tighter one (8-11 % lower for lesson 18's settings) by composing the
privacy loss distributions numerically, at a higher cost per call.

What is protected is example-level privacy against whoever sees a client's weights (the server,
and anyone who sees the global model that averages them). Each example belongs to one client, so
the federation's guarantee is the largest epsilon any client has spent (RoundRecord.epsilon).
No amplification by the server's sampling of clients is claimed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from opacus import GradSampleModule, PrivacyEngine
from opacus.accountants import create_accountant
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.train import History, Prepare, TrainConfig, train

ACCOUNTANTS = ("rdp", "prv")
# Opacus's own notices for an experiment like ours: the noise comes from torch's seeded generator
# (reproducible runs; not secure_mode's cryptographic one), and the inputs need no gradient.
_NOTICES = (
    "Secure RNG turned off",
    "Full backward hook is firing",
    "PrivacyEngine detected new dataset object",  # train builds new tensors over the same rows
    # RDP at an epsilon in the hundreds (sigma near 0): the bound is loose, and far past any
    # epsilon that protects anything
    "Optimal order is the smallest alpha",
)


def check_dp_settings(
    noise_multiplier: float, max_grad_norm: float, delta: float, accountant: str
) -> None:
    """Refuse DP-SGD settings that mean nothing, saying what to change."""
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise MaaslabError(
            f"noise_multiplier must be 0 or a positive number, got {noise_multiplier} "
            "(typical values 0.5-2; 0 clips without noise and guarantees nothing)"
        )
    if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
        raise MaaslabError(
            f"max_grad_norm must be a positive number, got {max_grad_norm} (the L2 norm every "
            "example's gradient is clipped to; 1.0 is a usual start)"
        )
    if not 0 < delta < 1:
        raise MaaslabError(
            f"delta must lie strictly between 0 and 1, got {delta} "
            "(choose it well below 1 / the number of examples, e.g. 1e-5)"
        )
    if accountant not in ACCOUNTANTS:
        raise MaaslabError(
            f"unknown accountant {accountant!r}: choose one of {', '.join(ACCOUNTANTS)}"
        )


def check_private(model: nn.Module) -> None:
    """Refuse a model DP-SGD cannot train, naming its layers (Opacus's ModuleValidator).

    A BatchNorm layer mixes the examples of a batch, so one example's gradient is not its own;
    Opacus asks for GroupNorm instead (ModuleValidator.fix makes that swap).
    """
    was_training = model.training
    model.train()  # the validator also refuses eval mode, which is not the model's fault
    try:
        errors = ModuleValidator.validate(model, strict=False)
    finally:
        model.train(was_training)
    if errors:
        found = "; ".join(str(e).strip() for e in errors)
        raise MaaslabError(
            f"DP-SGD needs one gradient per example, and this model mixes examples or has layers "
            f"Opacus cannot compute them for: {found}. Use a model without them (the mlp and "
            "cnn models work), or convert it with opacus.validators.ModuleValidator.fix"
        )


def sample_rate(n_examples: int, batch_size: int) -> float:
    """q: the chance an example joins a Poisson batch, 1 / ceil(n / batch_size) as in Opacus."""
    if n_examples < 1 or batch_size < 1:
        raise MaaslabError(
            f"need at least one example and a batch size of at least 1, "
            f"got {n_examples} examples and batch_size={batch_size}"
        )
    return 1.0 / math.ceil(n_examples / batch_size)


def dp_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """epsilon at `delta` after `steps` DP-SGD steps of (noise_multiplier, sample_rate).

    Parameters
    ----------
    noise_multiplier : sigma; 0 gives math.inf (clipping alone hides nothing).
    sample_rate : q, the probability that an example is in a step's batch.
    steps : every step composed so far (all rounds of a client together).
    accountant : "rdp" (the default, see the module's docstring) or "prv".
    """
    check_dp_settings(noise_multiplier, 1.0, delta, accountant)
    if not 0 < sample_rate <= 1:
        raise MaaslabError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    if steps < 0:
        raise MaaslabError(f"steps must be 0 or more, got {steps}")
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    ledger = create_accountant(accountant)
    ledger.history = [(noise_multiplier, sample_rate, steps)]
    with _quiet():
        return float(ledger.get_epsilon(delta))


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for notice in _NOTICES:
            warnings.filterwarnings("ignore", message=notice)
        yield


class ClientPrivacy:
    """One client's DP-SGD: its noise and clipping, and the accountant that keeps every step."""

    def __init__(
        self,
        noise_multiplier: float,
        max_grad_norm: float,
        delta: float = 1e-5,
        accountant: str = "rdp",
    ) -> None:
        check_dp_settings(noise_multiplier, max_grad_norm, delta, accountant)
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta
        with _quiet():
            self.engine = PrivacyEngine(accountant=accountant)

    @property
    def steps(self) -> int:
        """DP-SGD steps this client has taken, over all its rounds."""
        return sum(n for _, _, n in self.engine.accountant.history)

    def epsilon(self) -> float:
        """epsilon at this client's delta for every step so far (0 before the first)."""
        if self.steps == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        with _quiet():
            return float(self.engine.get_epsilon(self.delta))

    def prepare(self, batch_size: int, wrapped: list[GradSampleModule]) -> Prepare:
        """train()'s `prepare`: Opacus's make_private on the run's model, optimizer and data.

        The wrapper it makes is appended to `wrapped`, for the caller to close after the run.
        """

        def make_private(model, optimizer, loader):
            check_private(model)
            # make_private samples from a loader that collates single examples; train's loader
            # hands out whole index batches, so it is rebuilt over the same tensors and generator
            plain = DataLoader(loader.dataset, batch_size=batch_size, generator=loader.generator)
            with _quiet():
                module, optimizer, loader = self.engine.make_private(
                    module=model,
                    optimizer=optimizer,
                    data_loader=plain,
                    noise_multiplier=self.noise_multiplier,
                    max_grad_norm=self.max_grad_norm,
                    poisson_sampling=True,
                )
            wrapped.append(module)
            return module, optimizer, loader

        return make_private


def private_train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    privacy: ClientPrivacy,
) -> History:
    """`maaslab.train.train` with DP-SGD; the steps are added to `privacy`'s accountant.

    The model comes back as it went in, without Opacus's hooks, so it can be trained again
    (a federated worker serves every client in turn).

    Parameters
    ----------
    model : the model to train in place (no BatchNorm: see check_private).
    data : the training rows are the ones protected; the validation split is only measured.
    cfg : epochs, batch size (the expected size of a Poisson batch), optimizer, lr, seed; the
        seed also fixes the batches drawn and the noise.
    privacy : the noise, the clipping norm and the accountant that composes the steps.
    """
    wrapped: list[GradSampleModule] = []
    try:
        with _quiet():
            return train(model, data, cfg, prepare=privacy.prepare(cfg.batch_size, wrapped))
    finally:
        for module in wrapped:
            module._close()  # removes the per-example hooks and the grad_sample buffers
