"""Explanation drift: how far a variant's SHAP values move from fp32's on the same inputs.

Both explain the class fp32 predicts, with the same model-agnostic method, budget and seed
(Partition SHAP for text, Permutation SHAP for digits), so the number moves only when the model's
answers move: the mean over inputs of ||phi_variant - phi_fp32||_1 / ||phi_fp32||_1 (0 = the
same explanation, 1 = as far from fp32's as fp32's is from all zeros).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from maaslab.compress.splits import HeldOut, model_inputs
from maaslab.explain.core import Explainable

SHAP_METHOD = {"sentiment-minilm": "partition_shap", "digits-cnn": "permutation_shap"}
SHAP_BUDGET = {"sentiment-minilm": 64, "digits-cnn": 129}  # shap's minimum for 64 pixels: 2F+1


def explainable_variant(
    model_name: str,
    module: nn.Module,
    data: HeldOut,
    name: str,
    cancel: threading.Event | None = None,
) -> Explainable:
    """Any variant (torch or ONNX) as an Explainable for the model-agnostic SHAP methods."""

    @torch.no_grad()
    def predict(batch: Any) -> np.ndarray:
        if model_name == "sentiment-minilm":
            batch = [t if t.strip() else "." for t in batch]  # a mask may remove every word
        return torch.softmax(module(model_inputs(module, batch)).double(), -1).numpy()

    if model_name == "sentiment-minilm":
        labels = tuple(module.config.labels)
        return Explainable("text", predict, labels, name, cancel=cancel)
    return Explainable(
        "image",
        predict,
        tuple(str(i) for i in range(10)),
        name,
        background=data.background,
        cancel=cancel,
    )


def shap_values(
    model_name: str,
    module: nn.Module,
    data: HeldOut,
    targets: Sequence[int],
    seed: int,
    cancel: threading.Event | None = None,
) -> list[np.ndarray]:
    """SHAP values of each explained held-out input for the given classes, same method and seed."""
    from maaslab.explain import explain

    model = explainable_variant(model_name, module, data, model_name, cancel)
    return [
        explain(
            model,
            x,
            SHAP_METHOD[model_name],
            target=int(t),
            seed=seed,
            budget=SHAP_BUDGET[model_name],
        ).values
        for x, t in zip(data.explained, targets, strict=True)
    ]


def shap_difference(values: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Mean over inputs of ||values - reference||_1 / ||reference||_1."""
    return float(
        np.mean(
            [
                np.abs(v - r).sum() / max(np.abs(r).sum(), 1e-12)
                for v, r in zip(values, reference, strict=True)
            ]
        )
    )
