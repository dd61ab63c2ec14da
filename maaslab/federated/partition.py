"""Clients and their data: a dataset's training examples dealt among K clients, IID or not.

Federated learning trains where the data lives, and the data of real clients is rarely alike: a
hospital sees its own patients, a phone its owner's words. The standard way to simulate that is
label skew drawn from a Dirichlet distribution (Hsu et al., 2019): for each class c, draw
proportions p_c ~ Dir(alpha * 1_K) over the K clients and deal that class's shuffled examples
by them. A large alpha gives every client nearly the overall label mix (close to IID); a small
alpha gives most of a class to one or two clients, so each client sees only a few labels.

Every training example goes to exactly one client; the validation and test splits stay with the
server. A draw that leaves a client with fewer than `min_size` examples is drawn again from the
same seeded stream, up to MAX_DRAWS times (as Flower's DirichletPartitioner does), and then
refused with what to change: the same arguments always give the same clients.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from maaslab.data import Dataset
from maaslab.errors import MaaslabError

MAX_DRAWS = 10  # Dirichlet draws tried before a partition with a too-small client is refused


@dataclass(frozen=True)
class Partition:
    """Which training examples each client holds, and the label mix that gives them."""

    indices: tuple[np.ndarray, ...]  # per client: row indices into the dataset's X_train
    label_counts: np.ndarray  # (K, C) examples of each class per client; (K, 0) for regression
    alpha: float | None  # the Dirichlet concentration; None for an IID split
    seed: int  # the seed that drew it

    @property
    def n_clients(self) -> int:
        """Number of clients K."""
        return len(self.indices)

    @property
    def sizes(self) -> np.ndarray:
        """(K,) examples per client: the weights FedAvg averages with."""
        return np.array([len(i) for i in self.indices], dtype=np.int64)

    @property
    def label_mix(self) -> np.ndarray:
        """(K, C) each client's share of each class (rows sum to 1): the per-client figure."""
        totals = self.label_counts.sum(axis=1, keepdims=True)
        return self.label_counts / np.maximum(totals, 1)


def split_iid(n_examples: int, n_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle `n_examples` row indices and cut them into `n_clients` near-equal parts."""
    _check_clients(n_examples, n_clients)
    order = np.random.default_rng(seed).permutation(n_examples)
    return [np.sort(part) for part in np.array_split(order, n_clients)]


def split_dirichlet(
    labels: np.ndarray, n_clients: int, alpha: float, seed: int = 0, *, min_size: int = 1
) -> list[np.ndarray]:
    """Deal each class's examples among clients by proportions drawn from Dir(alpha * 1_K).

    Parameters
    ----------
    labels : (N,) integer class of each training example.
    alpha : concentration, > 0; small (0.1) gives skewed clients, large (100) near-IID ones.
    seed : the same seed gives the same clients (re-draws included).
    min_size : the fewest examples a client may hold; a draw below it is drawn again.
    """
    labels = np.asarray(labels)
    _check_clients(len(labels), n_clients)
    if not (alpha > 0 and math.isfinite(alpha)):
        raise MaaslabError(
            f"the Dirichlet alpha must be a positive number, got {alpha}: small values (0.1) "
            "give skewed clients, large ones (100) near-IID ones; split IID for equal clients"
        )
    if not 1 <= min_size <= len(labels) // n_clients:
        raise MaaslabError(
            f"min_size must be between 1 and {len(labels) // n_clients} (the training examples "
            f"per client if they were dealt equally), got {min_size}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(MAX_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for k, piece in enumerate(np.split(members, cuts)):
                parts[k].append(piece)
        clients = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(c) for c in clients) >= min_size:
            return clients
    raise MaaslabError(
        f"{MAX_DRAWS} Dirichlet draws with alpha={alpha:g} each left a client with fewer than "
        f"{min_size} example(s) of {len(labels)} among {n_clients} clients: raise alpha, use "
        "fewer clients, lower min_size, or try another seed"
    )


def partition_dataset(
    data: Dataset,
    n_clients: int,
    *,
    alpha: float | None = None,
    seed: int = 0,
    min_size: int = 1,
) -> Partition:
    """Deal `data`'s training examples among `n_clients`: IID (alpha None) or Dirichlet(alpha).

    Parameters
    ----------
    data : a classification Dataset (a regression one can only be split IID).
    n_clients : K, at least 1 and at most the number of training examples.
    alpha : None for an IID split; a positive Dirichlet concentration for label skew.
    seed : the same seed gives the same clients.
    min_size : the fewest examples a Dirichlet client may hold (see split_dirichlet).
    """
    classify = data.task != "regression"
    if alpha is None:
        indices = split_iid(len(data.y_train), n_clients, seed)
    elif not classify:
        raise MaaslabError(
            f"{data.name} is a regression set: label skew needs classes; split it IID (alpha=None)"
        )
    else:
        indices = split_dirichlet(data.y_train, n_clients, alpha, seed, min_size=min_size)
    n_classes = data.n_classes if classify else 0
    counts = np.zeros((len(indices), n_classes), dtype=np.int64)
    if classify:
        for k, idx in enumerate(indices):
            counts[k] = np.bincount(data.y_train[idx], minlength=n_classes)
    return Partition(indices=tuple(indices), label_counts=counts, alpha=alpha, seed=seed)


def label_skew(partition: Partition) -> float:
    """Mean total-variation distance between each client's label mix and the overall one.

    0 when every client holds the overall mix (IID); near 1 - 1/C when each holds one class.
    """
    counts = partition.label_counts
    if counts.shape[1] == 0:
        raise MaaslabError("a regression partition has no label mix to compare")
    overall = counts.sum(axis=0) / counts.sum()
    return float(0.5 * np.abs(partition.label_mix - overall).sum(axis=1).mean())


def client_dataset(data: Dataset, partition: Partition, client: int) -> Dataset:
    """The Dataset client `client` trains on: its own training rows, no test split.

    Its validation split is the server's, so the loop's per-epoch figure measures the client's
    local model on the same held-out data as the global one; local training never reads it.
    """
    if not 0 <= client < partition.n_clients:
        raise MaaslabError(f"client must be between 0 and {partition.n_clients - 1}, got {client}")
    idx = partition.indices[client]
    if len(idx) and idx.max() >= len(data.y_train):
        raise MaaslabError(
            f"this partition indexes {idx.max() + 1}+ training examples but {data.name} has "
            f"{len(data.y_train)}: partition the dataset it is used with"
        )
    return dataclasses.replace(
        data,
        name=f"{data.name}/client{client}",
        X_train=data.X_train[idx],
        y_train=data.y_train[idx],
        # the test split stays with the server, read once at the end (not even sliced here)
        X_test=data.X_train[:0],
        y_test=data.y_train[:0],
        meta={**data.meta, "client": client},
    )


def _check_clients(n_examples: int, n_clients: int) -> None:
    if n_clients < 1:
        raise MaaslabError(f"the number of clients must be at least 1, got {n_clients}")
    if n_clients > n_examples:
        raise MaaslabError(
            f"{n_clients} clients for {n_examples} training examples would leave clients empty: "
            f"use at most {n_examples} clients"
        )
