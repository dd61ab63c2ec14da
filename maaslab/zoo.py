"""Shipped models by name, each behind a small wrapper with a predict-style call.

`maaslab.registry.load(name)` returns one of these; the app, the notebooks and the server all
call the same wrapper, so a name gives the same numbers everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maaslab.assets import MODELS_DIR
from maaslab.errors import MaaslabError
from maaslab.evaluation import predict_proba
from maaslab.registry import load_model, read_metadata

DIGIT_PIXEL_MAX = 16.0  # sklearn digits pixels run 0..16; the models were trained on pixels / 16


@dataclass(frozen=True)
class Prediction:
    """What a classifier call returns."""

    probabilities: np.ndarray  # (N, C) float32, rows sum to 1
    labels: tuple[str, ...]  # the most likely class of each row
    seconds: float  # wall time of the call (model only, input checks included)


class DigitsClassifier:
    """digits-mlp / digits-cnn: (N, 64) pixels on sklearn's 0-16 scale -> 10 probabilities."""

    def __init__(self, name: str, folder: Path, device: str = "cpu") -> None:
        self.name, self.folder = name, folder
        self.model = load_model(folder, device=device)
        self.device = torch.device(device)
        self.metadata = read_metadata(folder)
        self.class_names = tuple(self.metadata.get("class_names", [str(i) for i in range(10)]))

    def predict(self, pixels: object) -> Prediction:
        """Class probabilities for a batch of 8x8 images given as 64 pixels each (0-16)."""
        try:
            x = np.asarray(pixels, dtype=np.float32)
        except (TypeError, ValueError):
            raise MaaslabError("pixels must be numbers") from None
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != 64 or x.shape[0] == 0:
            raise MaaslabError(f"pixels must have shape (N, 64) with N >= 1, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise MaaslabError("pixels contain NaN or infinity")
        if x.min() < 0 or x.max() > DIGIT_PIXEL_MAX:
            raise MaaslabError(f"pixels must lie in 0..16 (sklearn digits scale); got "
                               f"{x.min():g}..{x.max():g}")  # fmt: skip
        started = time.perf_counter()
        proba = predict_proba(self.model, x / DIGIT_PIXEL_MAX)
        labels = tuple(self.class_names[i] for i in proba.argmax(1))
        return Prediction(proba, labels, time.perf_counter() - started)


class TextEmbedder:
    """minilm-embed: texts -> unit-length MiniLM-L6 sentence embeddings (384 numbers each)."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        from maaslab.models.encoder import SentenceEncoder

        self.name = name
        self.encoder = SentenceEncoder("minilm", device=device)

    def embed(self, texts: list[str]):
        """Embeddings of `texts`: an Encoded (embeddings, truncated, seconds)."""
        return self.encoder.encode(texts)


def paint(pixels: np.ndarray, index: int) -> np.ndarray:
    """Pixels after a click on cell `index`: each click darkens it a step, 0 -> 8 -> 16 -> 0."""
    if not 0 <= index < 64:
        raise MaaslabError(f"a digit has 64 cells (0-63), not {index}")
    out = np.array(pixels, dtype=np.float32).reshape(64)
    out[index] = {0.0: 8.0, 8.0: 16.0}.get(float(out[index]), 0.0)
    return out


def _digits(name: str, device: str) -> DigitsClassifier:
    folder = MODELS_DIR / name
    if not folder.is_dir():
        raise MaaslabError(f"{folder} is missing: run `python -m maaslab assets` to rebuild it")
    return DigitsClassifier(name, folder, device)


LOADERS = {
    "digits-mlp": _digits,
    "digits-cnn": _digits,
    "minilm-embed": TextEmbedder,
}
