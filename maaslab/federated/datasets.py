"""The datasets a federation is drawn from: the digits images, and the reviews as MiniLM features.

A federated client holds rows of one of these; `partition.partition_dataset` deals the training
rows among the clients. The reviews are a text task, but a federation of language models does
not fit a lesson on a laptop: each review is turned once into its 384-number MiniLM sentence
embedding (the pretrained encoder stays frozen and is the same on every client), and the clients
train a small classifier on those features. That is how federated fine-tuning of a frozen
backbone is often done in practice, with only a head's weights crossing the network.
"""

from __future__ import annotations

import functools

import numpy as np

from maaslab.data import Dataset, load_dataset, split_train_val
from maaslab.errors import MaaslabError
from maaslab.models.encoder import SentenceEncoder
from maaslab.reviews import LABELS, load_reviews

DATASETS = ("digits", "reviews-minilm")
VAL_FRACTION = 0.15  # share of the training rows kept back for validation, as load_dataset does


@functools.lru_cache(maxsize=2)
def _review_features(split: str) -> tuple[np.ndarray, np.ndarray]:
    # Embedding the corpus takes seconds on a CPU; the features never change, so once a process.
    reviews = load_reviews(split)
    encoded = SentenceEncoder("minilm", device="cpu").encode(list(reviews.texts))
    X = encoded.embeddings
    # Unit-length rows of 384 numbers are about 0.05 each: scaled by sqrt(384) each feature is
    # about 1, the range the digits' pixels have, so one SGD learning rate suits both sets. A
    # fixed factor needs no statistics pooled from the clients' data.
    return (X * np.sqrt(X.shape[1])).astype(np.float32), reviews.labels.astype(np.int64)


def review_features_dataset(seed: int = 0, val_fraction: float = VAL_FRACTION) -> Dataset:
    """The review corpus as MiniLM sentence embeddings: the corpus's own train/test split, and a
    seeded, stratified validation split of the training rows."""
    X, y = _review_features("train")
    X_test, y_test = _review_features("test")
    X_train, y_train, X_val, y_val = split_train_val(X, y, val_fraction, seed, stratify=True)
    return Dataset(
        name="reviews-minilm",
        task="classification",
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        X_test=X_test,
        y_test=y_test,
        feature_names=tuple(f"minilm_{i}" for i in range(X.shape[1])),
        class_names=LABELS,
        input_shape=(X.shape[1],),
        description="Short reviews (negative/positive) as frozen MiniLM-L6 sentence embeddings, "
        "scaled by sqrt(384).",
        meta={"encoder": "minilm", "seed": seed, "val_fraction": val_fraction},
    )


def federated_dataset(name: str, seed: int = 0) -> Dataset:
    """A dataset a federation can be drawn from, by name (one of DATASETS)."""
    if name == "digits":
        return load_dataset("digits", seed=seed, val_fraction=VAL_FRACTION)
    if name == "reviews-minilm":
        return review_features_dataset(seed)
    raise MaaslabError(f"unknown federated dataset {name!r}: choose one of {', '.join(DATASETS)}")
