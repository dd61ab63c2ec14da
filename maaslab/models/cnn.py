"""A small convolutional network for 8x8 digits: the model of lesson 06 and `digits-cnn`."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from maaslab.errors import MaaslabError
from maaslab.models.mlp import ACTIVATIONS


@dataclass(frozen=True)
class CNNConfig:
    """Shape of a CNN; saved as config.json next to the weights."""

    in_channels: int = 1  # 1 for grey-scale digits
    image_size: int = 8  # input images are image_size x image_size (8 for sklearn digits)
    upsample: int = 2  # nearest-neighbour upsampling factor first; 8x8 is small for two poolings
    channels: tuple[int, ...] = (16, 32)  # output channels of each conv block (conv, act, pool)
    kernel_size: int = 3  # square kernels, padded so a conv keeps the spatial size
    hidden: int = 64  # width of the fully connected layer before the output; 0 for none
    out_features: int = 10  # one logit per class
    activation: str = "relu"  # one of maaslab.models.mlp.ACTIVATIONS
    dropout: float = 0.0  # dropout before the fully connected layers

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.activation not in ACTIVATIONS:
            raise MaaslabError(
                f"unknown activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}"
            )
        if min((self.in_channels, self.out_features, self.upsample, *self.channels), default=1) < 1:
            raise MaaslabError("channels, upsample and out_features must be positive integers")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise MaaslabError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.feature_size < 1:
            raise MaaslabError(
                f"{len(self.channels)} poolings shrink a {self.image_size * self.upsample}-pixel "
                "image to nothing: use fewer conv blocks or more upsampling"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise MaaslabError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def feature_size(self) -> int:
        """Side of the feature maps after the last pooling."""
        return (self.image_size * self.upsample) // 2 ** len(self.channels)


class CNN(nn.Module):
    """[upsample] -> (conv -> act -> maxpool) x len(channels) -> flatten -> [fc -> act] -> out."""

    model_type: ClassVar[str] = "cnn"

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        act = ACTIVATIONS[config.activation]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if config.upsample > 1:
            layers["upsample"] = nn.Upsample(scale_factor=config.upsample, mode="nearest")
        width = config.in_channels
        for i, c in enumerate(config.channels, start=1):
            layers[f"conv{i}"] = nn.Conv2d(width, c, config.kernel_size, padding="same")
            layers[f"act{i}"] = act()
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            width = c
        layers["flatten"] = nn.Flatten(1)
        if config.dropout > 0:
            layers["drop"] = nn.Dropout(config.dropout)
        width = width * config.feature_size**2
        if config.hidden:
            layers["fc"] = nn.Linear(width, config.hidden)
            layers["act_fc"] = act()
            width = config.hidden
        layers["output"] = nn.Linear(width, config.out_features)
        self.layers = nn.Sequential(layers)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        # Flat pixel rows (B, C*H*W), as the datasets store them, become images (B, C, H, W).
        size = self.config.image_size
        return x.reshape(x.shape[0], self.config.in_channels, size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C*H*W) or (B, C, H, W) -> (B, out_features) logits."""
        return self.layers(self._images(x))

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The output of every conv block's activation, {"act1": (B, C1, H, W), ...}."""
        maps: dict[str, torch.Tensor] = {}
        h = self._images(x)
        for name, layer in self.layers.named_children():
            h = layer(h)
            if name.startswith("act") and h.dim() == 4:
                maps[name] = h
            if name == "flatten":
                break
        return maps
