"""A multi-layer perceptron: the model of the Training Studio and the first lessons."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from maaslab.errors import MaaslabError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class MLPConfig:
    """Shape of an MLP; saved as config.json next to the weights."""

    in_features: int = 2  # input width (2 for the toy sets, 64 for digits)
    hidden: tuple[int, ...] = (16, 16)  # width of each hidden layer; () gives a linear model
    out_features: int = 2  # one logit per class, or 1 for regression
    activation: str = "relu"  # one of ACTIVATIONS
    dropout: float = 0.0  # dropout probability after each hidden activation

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.activation not in ACTIVATIONS:
            raise MaaslabError(
                f"unknown activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.in_features < 1 or self.out_features < 1 or any(h < 1 for h in self.hidden):
            raise MaaslabError("layer widths must be positive integers")
        if not 0.0 <= self.dropout < 1.0:
            raise MaaslabError(f"dropout must be in [0, 1), got {self.dropout}")


class MLP(nn.Module):
    """Linear layers with an activation (and optional dropout) between them."""

    model_type: ClassVar[str] = "mlp"

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = config.in_features
        for i, h in enumerate(config.hidden, start=1):
            layers[f"hidden{i}"] = nn.Linear(width, h)
            layers[f"act{i}"] = ACTIVATIONS[config.activation]()
            if config.dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(config.dropout)
            width = h
        layers["output"] = nn.Linear(width, config.out_features)
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_features) -> (B, out_features) logits (or predictions for regression)."""
        return self.layers(x.flatten(1))
