"""Offline datasets behind one calling convention: `load_dataset(name, ...)` -> Dataset.

Nothing here downloads: the 2-D toy sets are generated from a seed, the others are the datasets
that ship inside scikit-learn. Splits are stratified and seeded, so the same arguments give the
same arrays on every machine and in every face (page, notebook, server, CLI).

Every Dataset has three disjoint splits. Training fits the weights on `train`; early stopping,
the choice between models and any hyper-parameter search look at `val` (validation); `test` is
read once, at the end, to report how the chosen model does on data nothing was chosen on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn import datasets as skds
from sklearn.model_selection import train_test_split
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from maaslab.errors import MaaslabError

TOY_SETS = ("moons", "circles", "xor", "spirals", "gaussians")
SKLEARN_SETS = ("digits", "breast_cancer", "diabetes")
# sklearn's digits come as pixels 0..16; load_dataset scales them to 0..1, while the digit models'
# predict, the server and the pages take the 0..16 scale (pixels = X * DIGIT_PIXEL_MAX).
DIGIT_PIXEL_MAX = 16.0


@dataclass(frozen=True)
class Dataset:
    """Arrays split into train, validation and test, plus what a model or a plot needs to know."""

    name: str
    task: str  # "classification" or "regression"
    X_train: np.ndarray  # (N_train, n_features) float32: what the weights are fitted on
    y_train: np.ndarray  # (N_train,) int64 labels, or float32 targets for regression
    X_val: np.ndarray  # validation: what early stopping and model choice look at
    y_val: np.ndarray
    X_test: np.ndarray  # test: read once at the end, for the figure a model is reported with
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] = ()  # empty for regression
    input_shape: tuple[int, ...] = ()  # per-example shape a model sees, e.g. (1, 8, 8) for digits
    description: str = ""
    meta: dict[str, object] = field(default_factory=dict)  # generation parameters, scaling stats

    @property
    def n_features(self) -> int:
        """Number of input features per example (flattened)."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.class_names)

    @property
    def out_features(self) -> int:
        """Width of the model output this task needs: one logit per class, or 1 for regression."""
        return self.n_classes if self.task == "classification" else 1


# --- 2-D toy sets --------------------------------------------------------------------------------


def _xor(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.uniform(-1.0, 1.0, size=(n, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    return X + rng.normal(0.0, noise, size=X.shape), y


def _spirals(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Two interleaved arms, as in TensorFlow Playground; radius grows with the angle.
    n0 = n // 2
    parts, labels = [], []
    for label, count in ((0, n0), (1, n - n0)):
        t = np.sqrt(rng.uniform(0.0, 1.0, size=count)) * 3.0 * np.pi
        arm = np.stack([t * np.cos(t + label * np.pi), t * np.sin(t + label * np.pi)], axis=1)
        parts.append(arm / (3.0 * np.pi) + rng.normal(0.0, noise * 0.3, size=arm.shape))
        labels.append(np.full(count, label, dtype=np.int64))
    return np.concatenate(parts), np.concatenate(labels)


def _toy(name: str, n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sk_seed = int(rng.integers(2**31 - 1))
    if name == "moons":
        return skds.make_moons(n_samples=n, noise=noise, random_state=sk_seed)
    if name == "circles":
        return skds.make_circles(n_samples=n, noise=noise, factor=0.5, random_state=sk_seed)
    if name == "gaussians":
        centers = np.array([[-1.0, -1.0], [1.0, 1.0]])
        return skds.make_blobs(
            n_samples=n, centers=centers, cluster_std=0.4 + 2.0 * noise, random_state=sk_seed
        )
    if name == "xor":
        return _xor(n, noise, rng)
    return _spirals(n, noise, rng)


# --- the sklearn sets that ship with the package ---------------------------------------------


def _digits() -> tuple[np.ndarray, np.ndarray, dict]:
    bunch = skds.load_digits()
    info = {
        "feature_names": tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)),
        "class_names": tuple(str(d) for d in range(10)),
        "input_shape": (1, 8, 8),
        "description": "8x8 handwritten digits, 1797 images; pixels scaled from 0-16 to 0-1",
    }
    return bunch.data / DIGIT_PIXEL_MAX, bunch.target, info


def _breast_cancer() -> tuple[np.ndarray, np.ndarray, dict]:
    bunch = skds.load_breast_cancer()
    info = {
        "feature_names": tuple(str(f) for f in bunch.feature_names),
        "class_names": tuple(str(c) for c in bunch.target_names),  # malignant, benign
        "input_shape": (30,),
        "description": "Wisconsin breast cancer, 569 tumours, 30 features",
    }
    return bunch.data, bunch.target, info


def _diabetes() -> tuple[np.ndarray, np.ndarray, dict]:
    bunch = skds.load_diabetes()
    info = {
        "feature_names": tuple(str(f) for f in bunch.feature_names),
        "class_names": (),
        "input_shape": (10,),
        "description": "diabetes progression after one year, 442 patients, 10 features",
    }
    return bunch.data, bunch.target, info


_SKLEARN: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, dict]]] = {
    "digits": _digits,
    "breast_cancer": _breast_cancer,
    "diabetes": _diabetes,
}


def dataset_names() -> tuple[str, ...]:
    """Every name `load_dataset` accepts."""
    return TOY_SETS + SKLEARN_SETS


def split_train_val(
    X: np.ndarray, y: np.ndarray, val_fraction: float, seed: int, *, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_val, y_val): a seeded, stratified validation split of training data.

    Its own seed stream (derived from `seed`), so the validation rows do not depend on how the
    test split was drawn and the same seed always gives the same rows.
    """
    val_seed = int(np.random.default_rng([seed, 1]).integers(2**31 - 1))
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, test_size=val_fraction, random_state=val_seed, stratify=y if stratify else None
    )
    return X_train, y_train, X_val, y_val


def token_sequences(
    name: str, X: np.ndarray, y: np.ndarray, vocab_size: int, description: str, **meta: object
) -> Dataset:
    """Integer sequences (N, T) with labels as a Dataset: the first 70 % train, the next 10 %
    validation, the last 20 % test (the toy sequence tasks of lesson 07 share this split)."""
    val, cut = int(0.7 * len(X)), int(0.8 * len(X))
    return Dataset(
        name=name,
        task="classification",
        X_train=X[:val].astype(np.float32),
        y_train=y[:val].astype(np.int64),
        X_val=X[val:cut].astype(np.float32),
        y_val=y[val:cut].astype(np.int64),
        X_test=X[cut:].astype(np.float32),
        y_test=y[cut:].astype(np.int64),
        feature_names=tuple(f"t{i}" for i in range(X.shape[1])),
        class_names=tuple(str(i) for i in range(vocab_size)),
        input_shape=(X.shape[1],),
        description=description,
        meta=dict(meta),
    )


def load_dataset(
    name: str,
    *,
    n_samples: int = 400,
    noise: float = 0.2,
    test_fraction: float = 0.25,
    val_fraction: float = 0.15,
    standardize: bool = False,
    seed: int = 0,
) -> Dataset:
    """Load or generate a dataset and split it into train, validation and test, deterministically.

    The test split is drawn first and is the same as with no validation split at all (a figure
    measured on it stays comparable); the validation split is then drawn from the rest.

    Parameters
    ----------
    name : one of `dataset_names()`: moons, circles, xor, spirals, gaussians (2-D toy sets),
        digits, breast_cancer, diabetes (sklearn's bundled sets).
    n_samples : number of points for the toy sets (the sklearn sets have a fixed size).
    noise : spread of the toy sets' noise (0 = clean shapes); ignored by the sklearn sets.
    test_fraction : share of all examples held out for testing, stratified by class.
    val_fraction : share of all examples held out for validation, stratified by class. 0 leaves
        the validation split empty, for a fit that makes no choice on held-out data (least
        squares in lessons 01-02, a shipped model's fixed recipe); early stopping refuses it.
    standardize : z-score the features with the training split's mean and std (stored in meta).
    seed : the same seed gives the same points and the same three splits.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in dataset_names():
        raise MaaslabError(f"unknown dataset {name!r}: choose one of {', '.join(dataset_names())}")
    if not 0.0 < test_fraction < 1.0:
        raise MaaslabError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if not (val_fraction >= 0.0 and test_fraction + val_fraction < 1.0):
        raise MaaslabError(
            f"val_fraction must be 0 or more and leave training examples after the test split "
            f"(test_fraction + val_fraction < 1), got {val_fraction} with {test_fraction}"
        )
    if key in TOY_SETS:
        if not 8 <= n_samples <= 1_000_000:
            raise MaaslabError(f"n_samples must be between 8 and 1,000,000, got {n_samples}")
        if not 0.0 <= noise <= 5.0:
            raise MaaslabError(f"noise must be between 0 and 5, got {noise}")
        X, y = _toy(key, n_samples, noise, seed)
        info = {
            "feature_names": ("x1", "x2"),
            "class_names": ("0", "1"),
            "input_shape": (2,),
            "description": f"2-D {key}, {n_samples} points, noise {noise:g}",
        }
        meta: dict[str, object] = {"n_samples": n_samples, "noise": noise}
    else:
        X, y, info = _SKLEARN[key]()
        meta = {}

    task = "regression" if key == "diabetes" else "classification"
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32 if task == "regression" else np.int64)
    classify = task != "regression"
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y if classify else None
    )
    if val_fraction > 0:
        X_train, y_train, X_val, y_val = split_train_val(
            X_rest, y_rest, val_fraction / (1.0 - test_fraction), seed, stratify=classify
        )
    else:  # a fit that chooses nothing on held-out data
        X_train, y_train, X_val, y_val = X_rest, y_rest, X_rest[:0], y_rest[:0]
    if standardize:
        mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-8
        X_train, X_val, X_test = ((part - mean) / std for part in (X_train, X_val, X_test))
        meta.update(mean=mean.tolist(), std=std.tolist())
    meta.update(
        seed=seed, test_fraction=test_fraction, val_fraction=val_fraction, standardize=standardize
    )
    return Dataset(
        name=key,
        task=task,
        X_train=np.ascontiguousarray(X_train, dtype=np.float32),
        y_train=np.ascontiguousarray(y_train),
        X_val=np.ascontiguousarray(X_val, dtype=np.float32),
        y_val=np.ascontiguousarray(y_val),
        X_test=np.ascontiguousarray(X_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test),
        meta=meta,
        **info,
    )


# --- torch helpers -------------------------------------------------------------------------------


def to_tensors(
    X: np.ndarray, y: np.ndarray, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Arrays -> tensors on `device` (float32 inputs, int64 labels or float32 targets)."""
    return torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)


SPLITS = ("train", "val", "test")


def split_loader(
    data: Dataset, split: str, batch_size: int = 256, *, device: torch.device | str = "cpu"
) -> DataLoader:
    """A DataLoader over one split ("train", "val" or "test") in its stored order, for evaluation.

    Batches are drawn by index (a BatchSampler over the whole tensor), which avoids collating one
    example at a time: the loader costs microseconds per batch, not per example.
    """
    if split not in SPLITS:
        raise MaaslabError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if batch_size < 1:
        raise MaaslabError(f"batch_size must be at least 1, got {batch_size}")
    tensors = TensorDataset(
        *to_tensors(getattr(data, f"X_{split}"), getattr(data, f"y_{split}"), device)
    )
    sampler = BatchSampler(SequentialSampler(tensors), batch_size, False)
    # Its own generator: iterating it never draws from the global RNG, so evaluating between
    # epochs does not shift the dropout masks of the next one.
    return DataLoader(tensors, sampler=sampler, batch_size=None, generator=torch.Generator())


def make_loaders(
    data: Dataset,
    batch_size: int = 32,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Train and validation DataLoaders over in-memory tensors on `device` (never the test split).

    The training loader shuffles with `generator` (or one seeded with `seed`), so the order is
    reproducible and a checkpoint can save and restore it. The test split has its own loader,
    `split_loader(data, "test")`, read once when training is over.
    """
    if batch_size < 1:
        raise MaaslabError(f"batch_size must be at least 1, got {batch_size}")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    train_set = TensorDataset(*to_tensors(data.X_train, data.y_train, device))
    train_sampler = BatchSampler(RandomSampler(train_set, generator=generator), batch_size, False)
    return (
        DataLoader(train_set, sampler=train_sampler, batch_size=None, generator=generator),
        split_loader(data, "val", max(batch_size, 256), device=device),
    )
