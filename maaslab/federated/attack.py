"""Membership inference: can an attacker tell a model's training examples from its weights alone?

The loss-threshold attack (Yeom et al., 2018): a model fits the examples it trained on better
than examples it never saw, so an example whose loss is at most a threshold t is called a member.
It is measured on as many members (training examples) as non-members (held-out examples from the
same distribution), drawn with a seed:

- ROC and AUC of the score -loss. The AUC is the chance that a random member has a lower loss
  than a random non-member (ties count half): 0.5 is a coin, 1.0 tells every example apart.
- Membership advantage (Yeom et al., Definition 4): TPR - FPR, the attack's true-positive rate
  on members minus its false-positive rate on non-members; 0 for a coin. `advantage` is the
  largest over all thresholds (an attacker who tunes t on labelled examples; it is the
  Kolmogorov-Smirnov distance between the two loss distributions, and a small sample shows a
  little above 0 even for a model that leaks nothing). `yeom_advantage` uses Yeom's threshold,
  the model's mean loss over its whole training set, the one thing that attacker knows.
  The attack's balanced accuracy is 0.5 + advantage / 2.
- DP-SGD bounds every such attack: under (epsilon, delta)-DP, TPR - FPR <= (e^eps - 1 + 2 delta)
  / (e^eps + 1) (the hypothesis-testing view of DP, Kairouz et al., 2015; for membership,
  Humphries et al., 2023): `advantage_bound`.

tradeoff.py trains the same federation with several noise levels and measures accuracy,
epsilon and this attack for each: the privacy-utility trade-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maaslab.data import SPLITS, Dataset, to_tensors
from maaslab.errors import MaaslabError


@dataclass
class AttackResult:
    """The loss-threshold attack on one model: its ROC, AUC and advantage."""

    n: int  # members attacked, and as many non-members
    auc: float  # area under the ROC of -loss: P(member's loss < non-member's), ties half
    advantage: float  # max over thresholds of TPR - FPR (0: no better than a coin)
    threshold: float  # the loss at or below which the best threshold calls an example a member
    yeom_advantage: float  # TPR - FPR at Yeom's threshold (the mean training loss)
    yeom_threshold: float  # the model's mean loss over its whole training set
    fpr: np.ndarray  # (T,) the ROC's false-positive rates, from 0 to 1
    tpr: np.ndarray  # (T,) its true-positive rates
    member_loss: np.ndarray  # (n,) the members' losses
    nonmember_loss: np.ndarray  # (n,) the non-members' losses

    @property
    def accuracy(self) -> float:
        """Balanced accuracy of the attack at its best threshold: 0.5 + advantage / 2."""
        return 0.5 + self.advantage / 2


@torch.no_grad()
def example_losses(model: nn.Module, X: np.ndarray, y: np.ndarray, task: str) -> np.ndarray:
    """(N,) the loss of each example: cross-entropy, or the squared error for regression."""
    if task not in ("classification", "regression"):
        raise MaaslabError(
            f"the loss-threshold attack takes one loss per example; a {task!r} model has "
            "one per position: attack a classifier or a regression model"
        )
    first = next(model.parameters(), None)
    inputs, labels = to_tensors(X, y, first.device if first is not None else "cpu")
    was_training = model.training
    model.eval()
    losses = []
    for start in range(0, len(labels), 512):
        out, yb = model(inputs[start : start + 512]), labels[start : start + 512]
        if task == "regression":
            losses.append((out.view_as(yb) - yb).square())
        else:
            losses.append(F.cross_entropy(out, yb, reduction="none"))
    model.train(was_training)
    return torch.cat(losses).double().cpu().numpy() if losses else np.zeros(0)


def roc(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> tuple[np.ndarray, ...]:
    """(fpr, tpr, thresholds) of the rule "loss <= t: member", for every distinct loss t.

    The first point is t = -inf (nobody called a member: 0, 0), the last calls everyone.
    """
    members, others = np.sort(member_loss), np.sort(nonmember_loss)
    if len(members) == 0 or len(others) == 0:
        raise MaaslabError("the attack needs at least one member and one non-member")
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([members, others]))])
    tpr = np.searchsorted(members, thresholds, side="right") / len(members)
    fpr = np.searchsorted(others, thresholds, side="right") / len(others)
    return fpr, tpr, thresholds


def loss_threshold_attack(
    member_loss: np.ndarray, nonmember_loss: np.ndarray, yeom_threshold: float
) -> AttackResult:
    """The attack on given losses: ROC, AUC, the best threshold's and Yeom's advantage."""
    member_loss = np.asarray(member_loss, dtype=np.float64)
    nonmember_loss = np.asarray(nonmember_loss, dtype=np.float64)
    fpr, tpr, thresholds = roc(member_loss, nonmember_loss)
    gap = tpr - fpr
    best = int(np.argmax(gap))
    yeom_tpr = float(np.mean(member_loss <= yeom_threshold))
    yeom_fpr = float(np.mean(nonmember_loss <= yeom_threshold))
    return AttackResult(
        n=len(member_loss),
        auc=float(np.trapezoid(tpr, fpr)),  # ties are straight segments: they count half
        advantage=float(gap[best]),
        threshold=float(thresholds[best]),
        yeom_advantage=yeom_tpr - yeom_fpr,
        yeom_threshold=float(yeom_threshold),
        fpr=fpr,
        tpr=tpr,
        member_loss=member_loss,
        nonmember_loss=nonmember_loss,
    )


def membership_attack(
    model: nn.Module,
    data: Dataset,
    *,
    n: int | None = None,
    nonmembers: str = "test",
    seed: int = 0,
) -> AttackResult:
    """Attack `model`, trained on `data`'s training split, with the loss-threshold attack.

    Parameters
    ----------
    model : the trained model (a federated run's global model, or any other).
    data : members come from its training split (every example a federation's clients held);
        Yeom's threshold is the mean loss over the whole of it.
    n : members drawn, and as many non-members; None: as many as the smaller split holds.
    nonmembers : the split the non-members come from, "test" (the default) or "val": examples
        the model never trained on.
    seed : which members and non-members are drawn.
    """
    if nonmembers not in SPLITS or nonmembers == "train":
        raise MaaslabError(f"non-members come from 'test' or 'val', got {nonmembers!r}")
    X_out, y_out = getattr(data, f"X_{nonmembers}"), getattr(data, f"y_{nonmembers}")
    largest = min(len(data.y_train), len(y_out))
    n = largest if n is None else n
    if not 1 <= n <= largest:
        raise MaaslabError(
            f"n={n} members and as many non-members: choose 1 to {largest} (the training split "
            f"holds {len(data.y_train)} examples, the {nonmembers} split {len(y_out)})"
        )
    rng = np.random.default_rng(seed)
    member_rows = np.sort(rng.choice(len(data.y_train), size=n, replace=False))
    other_rows = np.sort(rng.choice(len(y_out), size=n, replace=False))
    train_loss = example_losses(model, data.X_train, data.y_train, data.task)
    return loss_threshold_attack(
        train_loss[member_rows],
        example_losses(model, X_out[other_rows], y_out[other_rows], data.task),
        yeom_threshold=float(train_loss.mean()),
    )


def advantage_bound(epsilon: float | None, delta: float) -> float:
    """The largest TPR - FPR any membership test can reach against an (epsilon, delta)-DP model.

    None or infinite epsilon (no guarantee) gives 1.
    """
    if epsilon is None or math.isinf(epsilon):
        return 1.0
    if epsilon < 0 or not 0 <= delta < 1:
        raise MaaslabError(f"need epsilon >= 0 and 0 <= delta < 1, got {epsilon}, {delta}")
    grown = math.expm1(epsilon)  # e^eps - 1, exact for a small epsilon
    return min(1.0, (grown + 2 * delta) / (grown + 2))
