"""Evaluating a trained classifier: predictions, confusion matrix, mistakes, model comparisons.

Also the overfitting experiment of lesson 05 (one MLP, four ways to regularize it, all trained
with `maaslab.train`); the exercises of lessons 05 and 06 are graded in `maaslab.exercises`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from maaslab.callbacks import Callback, EarlyStopping
from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.models import build_model
from maaslab.runtime import seed_everything
from maaslab.train import History, TrainConfig, train

# --- predictions -------------------------------------------------------------------------------


def _device_of(model: nn.Module) -> torch.device:
    # A model lives where its parameters are; a parameter-free module runs on the CPU.
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, C): softmax of the logits, batched, eval mode, model's device.

    Parameters
    ----------
    model : a classifier mapping a batch of inputs to logits (an MLP, a CNN, ...).
    X : inputs as a numpy array, one example per row (flat pixels are fine for the CNN).
    batch_size : examples per forward pass; bounds memory, does not change the result.
    """
    if len(X) == 0 or batch_size < 1:
        raise MaaslabError("predict_proba needs at least one row and a batch_size of 1 or more")
    was_training = model.training
    model.eval()  # dropout off: predictions must not be random
    device = _device_of(model)
    X = np.asarray(X)
    # Token ids stay integers (an embedding looks them up); everything else becomes float32.
    inputs = torch.as_tensor(X if X.dtype.kind in "iu" else X.astype(np.float32))
    try:
        chunks = [
            torch.softmax(model(inputs[i : i + batch_size].to(device)).float(), dim=1).cpu()
            for i in range(0, len(inputs), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()


def predict(model: nn.Module, X: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Predicted class (N,) of every row of X: the argmax of `predict_proba`."""
    return predict_proba(model, X, batch_size=batch_size).argmax(axis=1)


@torch.no_grad()
def feature_maps(model: nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    """The CNN's activation maps for one input, {"act1": (C1, H, W), ...}, as numpy arrays."""
    if not hasattr(model, "feature_maps"):
        raise MaaslabError(f"{type(model).__name__} has no feature maps: use a CNN")
    batch = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(1, -1)
    maps = model.feature_maps(batch.to(_device_of(model)))
    return {name: m[0].cpu().numpy() for name, m in maps.items()}


# --- metrics -----------------------------------------------------------------------------------


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None
) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class, as sklearn's confusion_matrix."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise MaaslabError(f"{y_true.shape[0]} true labels but {y_pred.shape[0]} predictions")
    n = n_classes or int(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)
    # Each (true, predicted) pair is one cell index true * n + predicted; count them all at once.
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Share of each true class predicted right (the diagonal over the row sums; NaN if absent)."""
    cm = np.asarray(cm, dtype=float)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / totals, np.nan)


@dataclass(frozen=True)
class Mistake:
    """One misclassified example."""

    index: int  # row in the evaluated array
    true: int  # the label
    predicted: int  # the model's class
    confidence: float  # probability the model gave its (wrong) prediction


def misclassified(
    proba: np.ndarray, y_true: np.ndarray, *, limit: int | None = None
) -> list[Mistake]:
    """The wrong predictions, most confident first (the mistakes worth looking at).

    Parameters
    ----------
    proba : class probabilities (N, C) from `predict_proba`.
    y_true : the labels (N,).
    limit : keep only the first `limit` mistakes (None keeps all).
    """
    predicted = proba.argmax(axis=1)
    confidence = proba.max(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(y_true))
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    return [Mistake(int(i), int(y_true[i]), int(predicted[i]), float(confidence[i])) for i in wrong]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable numbers (weights and biases) in the model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- comparing models --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelReport:
    """One row of a model comparison."""

    name: str  # how the table calls the model
    parameters: int  # trainable parameters
    epochs: int  # epochs trained
    train_seconds: float  # wall time of training (History.wall_time)
    split: str  # where accuracy and loss were measured: "val" to choose, "test" to report
    accuracy: float  # accuracy of the final weights on that split
    loss: float  # their mean cross-entropy there: lower = confident and right more often


def compare_models(
    runs: Mapping[str, tuple[nn.Module, History]], data: Dataset, split: str = "val"
) -> list[ModelReport]:
    """One ModelReport per trained model: size, training time and accuracy side by side.

    Parameters
    ----------
    runs : name -> (trained model, the History its training returned).
    data : the dataset they were trained on.
    split : "val" (the default) to choose between the models; the chosen one's test figures
        are then read once (maaslab.train.evaluate_split), so no choice is made on the test.
    """
    if split not in ("train", "val", "test"):
        raise MaaslabError(f"unknown split {split!r}: choose 'val', 'test' or 'train'")
    X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
    reports = []
    for name, (model, history) in runs.items():
        proba = predict_proba(model, X)
        p_true = proba[np.arange(len(proba)), y]
        reports.append(
            ModelReport(
                name=name,
                parameters=count_parameters(model),
                epochs=len(history.epochs),
                train_seconds=history.wall_time,
                split=split,
                accuracy=float(np.mean(proba.argmax(axis=1) == y)),
                loss=float(-np.mean(np.log(np.maximum(p_true, 1e-12)))),
            )
        )
    return reports


def comparison_frame(reports: Sequence[ModelReport]) -> pd.DataFrame:
    """The reports as a pandas DataFrame indexed by model name (a notebook shows it as a table)."""
    return pd.DataFrame([dataclasses.asdict(r) for r in reports]).set_index("name")


# --- the overfitting experiment of lesson 05 ---------------------------------------------------


@dataclass(frozen=True)
class RegularizationConfig:
    """A network far too big for its data, trained with and without each regularizer."""

    n_train: int = 100  # training examples kept (10 per digit): few examples overfit quickly
    hidden: tuple[int, ...] = (256, 256)  # ~83k parameters for 100 examples
    epochs: int = 100  # long enough for the validation loss to turn upwards
    lr: float = 3e-3  # Adam learning rate
    batch_size: int = 16  # small batches: several steps per epoch with only 100 examples
    weight_decay: float = 1e-3  # L2 penalty of the "weight decay" run
    dropout: float = 0.5  # drop probability of the "dropout" run
    patience: int = 10  # epochs without a better validation loss before "early stopping" stops
    seed: int = 0  # same initial weights and batch order for every run


REGULARIZERS = ("none", "weight decay", "dropout", "early stopping")


def small_subset(data: Dataset, n_train: int, seed: int = 0) -> Dataset:
    """The same dataset with only `n_train` training examples (stratified); validation and test
    stay as they are."""
    if not data.n_classes <= n_train < len(data.y_train):
        raise MaaslabError(
            f"n_train must be between {data.n_classes} and {len(data.y_train) - 1}, got {n_train}"
        )
    X, _, y, _ = train_test_split(
        data.X_train, data.y_train, train_size=n_train, stratify=data.y_train, random_state=seed
    )
    return dataclasses.replace(data, X_train=X, y_train=y, meta={**data.meta, "n_train": n_train})


def regularization_experiment(
    data: Dataset,
    cfg: RegularizationConfig = RegularizationConfig(),
    runs: Sequence[str] = REGULARIZERS,
    callbacks: Sequence[Callback] = (),
) -> dict[str, History]:
    """Train the same MLP on a small subset of `data` once per regularizer; return the Histories.

    Parameters
    ----------
    data : a classification Dataset (digits in lesson 05); its training split is cut to n_train.
    cfg : network, training and regularization strengths.
    runs : which of REGULARIZERS to train, in order.
    callbacks : extra callbacks given to every run (a progress bar, a stop button).
    """
    unknown = [r for r in runs if r not in REGULARIZERS]
    if unknown:
        raise MaaslabError(f"unknown run(s) {unknown}: choose from {', '.join(REGULARIZERS)}")
    small = small_subset(data, cfg.n_train, cfg.seed)
    histories: dict[str, History] = {}
    for run in runs:
        seed_everything(cfg.seed)  # every run starts from the same weights
        model = build_model(
            "mlp",
            in_features=small.n_features,
            hidden=cfg.hidden,
            out_features=small.out_features,
            dropout=cfg.dropout if run == "dropout" else 0.0,
        )
        train_cfg = TrainConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay if run == "weight decay" else 0.0,
            seed=cfg.seed,
        )
        stop = [EarlyStopping(cfg.patience)] if run == "early stopping" else []
        histories[run] = train(model, small, train_cfg, [*stop, *callbacks])
    return histories


def overfitting_gap(history: History) -> float:
    """Train minus validation accuracy after the last epoch (0 = no overfitting visible)."""
    last = history.last
    if last is None or last.train_accuracy is None:
        raise MaaslabError("overfitting_gap needs a classification History with one epoch or more")
    return last.train_accuracy - last.val_accuracy
