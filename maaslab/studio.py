"""The Training Studio's backend: one config for every knob, the run it builds, and live views.

The page only draws widgets for `StudioConfig` fields (ranges from `LIMITS`, `STOPS` and
`depth_range`), calls `build_run`, and redraws figures from what `boundary_grid` and the job's
weight snapshots return.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from maaslab.data import TOY_SETS, Dataset, load_dataset
from maaslab.errors import MaaslabError
from maaslab.evaluation import confusion_matrix, predict, predict_proba
from maaslab.jobs import TrainingJob
from maaslab.models import build_model
from maaslab.models.mlp import ACTIVATIONS
from maaslab.paths import runs_dir
from maaslab.registry import read_metadata, save_model
from maaslab.runtime import seed_everything
from maaslab.train import OPTIMIZERS, TrainConfig, run_metadata

DATASETS = (*TOY_SETS, "digits")
MODELS = ("mlp", "cnn")
LR_CHOICES = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
BATCH_CHOICES = (1, 4, 8, 16, 32, 64, 128, 256)
WEIGHT_DECAY_CHOICES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PACE_CHOICES = (0.0, 0.02, 0.05, 0.2, 0.5)
# field -> the stops of its select slider on the page (a value between two stops, from a link,
# is shown as one more stop).
STOPS: dict[str, tuple[float, ...]] = {
    "lr": LR_CHOICES,
    "batch_size": BATCH_CHOICES,
    "weight_decay": WEIGHT_DECAY_CHOICES,
    "pace": PACE_CHOICES,
}
# field -> (lowest, highest) allowed. The page's widgets take their ranges from here, so a value
# a config (or a shared link) accepts is one its widget can show, and the other way round.
LIMITS: dict[str, tuple[float, float]] = {
    "noise": (0.0, 1.0),
    "n_samples": (100, 5000),
    "depth": (0, 4),
    "width": (1, 64),
    "dropout": (0.0, 0.9),
    "epochs": (1, 5000),
    "seed": (0, 2**31 - 1),
    **{name: (min(stops), max(stops)) for name, stops in STOPS.items()},
}
CNN_MAX_BLOCKS = 3  # 8x8 digits upsampled to 16x16 survive three 2x poolings


def depth_range(model: str) -> tuple[int, int]:
    """The depths a model may have: hidden layers of an MLP, conv blocks of a CNN."""
    return (1, CNN_MAX_BLOCKS) if model == "cnn" else LIMITS["depth"]


@dataclass(frozen=True)
class StudioConfig:
    """Every setting of a Training Studio run; also what the page's URL carries."""

    dataset: str = "moons"  # a 2-D toy set (decision boundary shown) or "digits" (8x8 images)
    noise: float = 0.2  # toy sets: spread of the points around their pattern
    n_samples: int = 400  # toy sets: points generated (25 % held out for test, 15 % for validation)
    model: str = "mlp"  # "mlp", or "cnn" for digits
    depth: int = 2  # MLP: hidden layers; CNN: conv blocks (conv, activation, 2x max-pool)
    width: int = 16  # MLP: neurons per hidden layer; CNN: filters of the first block (doubling)
    activation: str = "relu"  # one of maaslab.models.mlp.ACTIVATIONS
    dropout: float = 0.0  # dropout probability (MLP: after each hidden layer; CNN: before the fc)
    optimizer: str = "adam"  # one of maaslab.train.OPTIMIZERS
    lr: float = 0.01  # learning rate
    batch_size: int = 32  # examples per optimizer step
    epochs: int = 200  # passes over the training split
    weight_decay: float = 0.0  # L2 penalty added by the optimizer
    seed: int = 0  # data, initial weights, shuffling and dropout
    pace: float = 0.05  # each epoch lasts at least this many seconds, so a class can watch

    def __post_init__(self) -> None:
        for name, choices in (
            ("dataset", DATASETS),
            ("model", MODELS),
            ("activation", tuple(ACTIVATIONS)),
            ("optimizer", OPTIMIZERS),
        ):
            if getattr(self, name) not in choices:
                raise MaaslabError(
                    f"unknown {name} {getattr(self, name)!r}: choose one of {', '.join(choices)}"
                )
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise MaaslabError(f"{name} must be between {low:g} and {high:g}, got {value}")
        if self.model == "cnn" and self.dataset != "digits":
            raise MaaslabError("a CNN needs images: choose the digits dataset, or an MLP")
        low, high = depth_range(self.model)
        if self.model == "cnn" and not low <= self.depth <= high:
            raise MaaslabError(f"a CNN on 8x8 digits takes {low} to {high} conv blocks")

    @property
    def is_2d(self) -> bool:
        """True for the toy sets, whose decision boundary can be drawn."""
        return self.dataset in TOY_SETS


@dataclass(frozen=True)
class StudioRun:
    """What `build_run` makes: a fresh model, its data and the training config."""

    model: nn.Module
    data: Dataset
    train_config: TrainConfig


def load_studio_data(cfg: StudioConfig) -> Dataset:
    """The dataset a config names (toy sets generated from its seed)."""
    if cfg.is_2d:
        return load_dataset(cfg.dataset, n_samples=cfg.n_samples, noise=cfg.noise, seed=cfg.seed)
    return load_dataset(cfg.dataset, seed=cfg.seed)


def build_run(cfg: StudioConfig) -> StudioRun:
    """Data, a freshly initialised model (seeded) and the TrainConfig for one Studio run."""
    data = load_studio_data(cfg)
    seed_everything(cfg.seed)
    if cfg.model == "cnn":
        model = build_model(
            "cnn",
            channels=tuple(cfg.width * 2**i for i in range(cfg.depth)),
            activation=cfg.activation,
            dropout=cfg.dropout,
            out_features=data.out_features,
        )
    else:
        model = build_model(
            "mlp",
            in_features=data.n_features,
            hidden=(cfg.width,) * cfg.depth,
            out_features=data.out_features,
            activation=cfg.activation,
            dropout=cfg.dropout,
        )
    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
    )
    return StudioRun(model, data, train_cfg)


@dataclass(frozen=True)
class BoundaryGrid:
    """Class probabilities of a 2-D classifier on a regular grid over its data."""

    xs: np.ndarray  # (R,) grid x coordinates
    ys: np.ndarray  # (R,) grid y coordinates
    proba: np.ndarray  # (R, R, K) probability of each class at (ys[i], xs[j])


def boundary_grid(model: nn.Module, data: Dataset, resolution: int = 80) -> BoundaryGrid:
    """Class probabilities on a resolution x resolution grid over the data, with a 10% margin."""
    if data.n_features != 2 or data.task != "classification":
        raise MaaslabError(f"a decision boundary needs a 2-D classification set, not {data.name}")
    points = np.concatenate([data.X_train, data.X_val, data.X_test])
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.1 * (high - low)
    xs = np.linspace(low[0] - margin[0], high[0] + margin[0], resolution)
    ys = np.linspace(low[1] - margin[1], high[1] + margin[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    proba = predict_proba(model, grid, batch_size=len(grid))
    return BoundaryGrid(xs, ys, proba.reshape(resolution, resolution, -1))


def confusion_on_val(model: nn.Module, data: Dataset) -> np.ndarray:
    """Confusion matrix (C, C) of a classifier on the validation split; rows are the true classes.

    The Studio is where settings are tried and compared, so what it shows while training is
    validation; a saved run's folder also records its test figures (`save_run`).
    """
    predicted = predict(model, data.X_val)
    return confusion_matrix(data.y_val, predicted, n_classes=data.n_classes)


SAVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def save_run(job: TrainingJob, name: str) -> Path:
    """Save a finished or stopped Studio run as runs/models/<name> (refuses to overwrite).

    The folder's metadata holds the last epoch's validation figures and the saved model's test
    loss and accuracy, measured here: the run's one read of the test split.
    """
    if not SAVE_NAME.fullmatch(name):
        raise MaaslabError(
            f"{name!r} is not a model name: use up to 64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (no slashes)"
        )
    if job.running or job.history is None:
        raise MaaslabError("training is still running: stop it or let it finish, then save")
    meta = run_metadata(job.data, job.cfg, job.history, model=job.model)
    return save_model(job.model, runs_dir() / "models" / name, metadata=meta)


def saved_note(folder: Path) -> str:
    """What the page says after `save_run`: where the run went and its test figure."""
    metrics = read_metadata(folder)["metrics"]
    shown = (
        f"test accuracy {metrics['test_accuracy']:.3f}"
        if metrics.get("test_accuracy") is not None
        else f"test loss {metrics['test_loss']:.4f}"
    )
    return f"Saved to {folder} ({shown}, measured once, on saving)"
