"""A client's round: start from the global weights, train on local data, send the weights back.

The local training is `maaslab.train.train`, the project's one loop, on the client's own
Dataset (see partition.client_dataset). FedProx (Li et al., 2020) changes only the loss the
client minimises: the task loss plus a proximal term

    mu / 2 * ||w - w_global||^2

that pulls the local weights back towards the round's global weights, so clients with very
different data drift apart less. It reaches train through its `loss` argument; with mu = 0 the
term adds exactly nothing, and FedProx takes FedAvg's steps.

A private client (privacy.ClientPrivacy) trains with DP-SGD instead: the same loop, with
per-example clipping, noise and Poisson batches, and an accountant that keeps its epsilon.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from maaslab.data import Dataset
from maaslab.device import get_device
from maaslab.errors import MaaslabError
from maaslab.federated.privacy import ClientPrivacy, private_train
from maaslab.train import LossFn, TrainConfig, task_loss, train


@dataclass
class ClientRecord:
    """What one client's round measured (the weights themselves go to the server, not here)."""

    client: int  # the client's index in the partition
    examples: int  # training examples it holds: its weight in the average
    train_loss: float  # mean training loss of its last local epoch (FedProx's with its term)
    train_accuracy: float | None  # accuracy of its last local epoch; None for regression
    val_accuracy: float | None  # its local model on the server's validation split
    drift: float  # ||w_client - w_global||: how far local training moved it this round
    seconds: float  # wall time of the local training
    # DP-SGD only (None / 0 otherwise): the client's epsilon at its delta after this round, all
    # the rounds it trained in composed, and the DP steps those rounds took together.
    epsilon: float | None = None
    dp_steps: int = 0


@dataclass
class ClientUpdate:
    """A client's answer to the server: its new weights and what its round measured."""

    state: dict[str, torch.Tensor]  # the local model's state_dict after training (copies)
    record: ClientRecord


def proximal_term(model: nn.Module, anchor: list[torch.Tensor]) -> torch.Tensor:
    """||w - w_anchor||^2 summed over every parameter of `model` (anchor in parameters() order)."""
    return sum(
        ((p - a).square().sum() for p, a in zip(model.parameters(), anchor, strict=True)),
        torch.zeros((), device=anchor[0].device),
    )


def fedprox_loss(model: nn.Module, anchor: list[torch.Tensor], mu: float, task: str) -> LossFn:
    """The FedProx training loss for train(): task loss + mu / 2 * ||w - w_anchor||^2."""

    def loss(out: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return task_loss(out, yb, task) + 0.5 * mu * proximal_term(model, anchor)

    return loss


def weight_distance(model: nn.Module, anchor: list[torch.Tensor]) -> float:
    """||w - w_anchor||, the L2 distance over all parameters (a client's drift)."""
    with torch.no_grad():
        return proximal_term(model, anchor).sqrt().item()


def local_update(
    worker: nn.Module,
    global_model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    client: int = 0,
    mu: float | None = None,
    privacy: ClientPrivacy | None = None,
) -> ClientUpdate:
    """Train a copy of the global weights on one client's data; return its weights and record.

    Parameters
    ----------
    worker : a model of the global model's architecture; its weights are overwritten with the
        global ones first (one worker serves every client in turn).
    data : the client's Dataset (its training rows; its validation split is the server's).
    cfg : the local training: epochs, batch size, optimizer, learning rate, seed. The optimizer
        starts fresh every round, as the client keeps no state between rounds.
    mu : None for FedAvg (the task loss); a number for FedProx's proximal weight.
    privacy : this client's DP-SGD settings and accountant (kept across its rounds); None
        trains without it.
    """
    if privacy is not None and mu is not None:
        raise MaaslabError(
            "DP-SGD clips each example's gradient, and FedProx's proximal term belongs to no "
            "example: train a private client with FedAvg (mu=None)"
        )
    device = get_device(cfg.device)
    worker.to(device).load_state_dict(global_model.state_dict())
    # the global weights where the worker trains (the server may keep them elsewhere)
    anchor = [p.detach().to(device, copy=True) for p in global_model.parameters()]
    loss = None if mu is None else fedprox_loss(worker, anchor, mu, data.task)
    started = time.perf_counter()
    if privacy is None:
        history = train(worker, data, cfg, loss=loss)
    else:
        history = private_train(worker, data, cfg, privacy)
    last = history.epochs[-1]
    record = ClientRecord(
        client=client,
        examples=len(data.y_train),
        train_loss=last.train_loss,
        train_accuracy=last.train_accuracy,
        val_accuracy=last.val_accuracy,
        drift=weight_distance(worker, anchor),
        seconds=time.perf_counter() - started,
        epsilon=None if privacy is None else privacy.epsilon(),
        dp_steps=0 if privacy is None else privacy.steps,
    )
    state = {k: v.detach().clone() for k, v in worker.state_dict().items()}
    return ClientUpdate(state=state, record=record)
