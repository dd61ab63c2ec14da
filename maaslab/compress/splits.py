"""What a comparison reads: the split a variant is chosen on, and the test split for the report.

SELECTION_SPLIT names, per model, the split `Comparison.best` and the P5 verdict choose on: the
validation split, which no variant trained on. digits-cnn's validation rows (load_dataset, seed 0,
VAL_FRACTION) and sentiment-minilm's 159 validation reviews (maaslab.reviews.validation_split,
seed 0, VAL_FRACTION) are left out by the shipped models' recipes, by the distilled student's and
by pruning's fine-tuning. Latency batches and explained inputs come from the choice split too, so
only `HeldOut.test_inputs` holds test data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from maaslab.compress.variants import VAL_FRACTION, check_model_name

# model -> the split its variant is chosen on (the module docstring says why)
SELECTION_SPLIT = {"digits-cnn": "validation", "sentiment-minilm": "validation"}
LATENCY_TEXT = "The trailer looked awful, but the film itself is a gem, honestly."  # 17 tokens
SHAP_MAX_WORDS = 20  # explained reviews are the first short ones (cost grows with words)


@dataclass(frozen=True)
class HeldOut:
    """The choice split (inputs, labels, latency batches, explained inputs) and the test split."""

    inputs: Any  # texts (list[str]) or pixels (N, 64) in 0..1, of the split chosen on
    labels: np.ndarray
    batch_1: Any
    batch_32: Any
    explained: list[Any]
    background: np.ndarray | None = None  # digits: the rows SHAP uses for "absent"
    split: str = "validation"  # which split `inputs` are: SELECTION_SPLIT[model]
    test_inputs: Any = None  # the test split, read only for the report (first `examples`)
    test_labels: Any = None


def held_out(model_name: str, examples: int | None = None, shap_inputs: int = 3) -> HeldOut:
    """The choice split and the test split of `model_name` (first `examples` of each, None = all).

    Every input but `test_inputs` comes from the choice split, SELECTION_SPLIT[model_name].
    """
    split = SELECTION_SPLIT[check_model_name(model_name)]
    if model_name == "sentiment-minilm":
        from maaslab.reviews import load_reviews, validation_split

        _, val = validation_split(load_reviews("train"), VAL_FRACTION, seed=0)
        test = load_reviews("test")
        short = [t for t in val.texts if len(t.split()) <= SHAP_MAX_WORDS][:shap_inputs]
        return HeldOut(
            list(val.texts)[:examples],
            np.asarray(val.labels)[:examples],
            [LATENCY_TEXT],
            list(val.texts[:32]),
            short,
            split=split,
            test_inputs=list(test.texts)[:examples],
            test_labels=np.asarray(test.labels)[:examples],
        )
    from maaslab.data import load_dataset
    from maaslab.explain.adapters import background_rows

    data = load_dataset("digits", seed=0, val_fraction=VAL_FRACTION)
    return HeldOut(
        data.X_val[:examples],
        data.y_val[:examples],
        data.X_val[:1],
        data.X_val[:32],
        list(data.X_val[:shap_inputs]),
        background_rows(data.X_train),  # the rows digits-cnn trained on
        split,
        data.X_test[:examples],
        data.y_test[:examples],
    )


def model_inputs(module: nn.Module, batch: Any) -> torch.Tensor:
    """What the module's forward takes: token ids for texts, float pixels otherwise."""
    if isinstance(batch, list) and batch and isinstance(batch[0], str):
        ids, _ = module.encode(batch)
        return torch.as_tensor(ids)
    return torch.as_tensor(np.asarray(batch, dtype=np.float32))


def accuracy(module: nn.Module, inputs: Any, labels: np.ndarray) -> float:
    """Share of `inputs` (texts or pixels) the module classifies as `labels` say."""
    from maaslab.evaluation import predict_proba

    X = model_inputs(module, inputs).numpy()
    return float((predict_proba(module, X).argmax(1) == np.asarray(labels)).mean())
