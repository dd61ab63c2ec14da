"""Model zoo: one model per file, each with a frozen config dataclass and a `model_type` name.

`build_model(model_type, **config)` makes a model from its name and config fields; the registry
uses the same table to rebuild a model from a folder's config.json.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from maaslab.errors import MaaslabError
from maaslab.models.cnn import CNN, CNNConfig
from maaslab.models.gpt import GPTConfig, MiniGPT
from maaslab.models.mlp import MLP, MLPConfig
from maaslab.models.sentiment import SentimentClassifier, SentimentConfig
from maaslab.models.student import StudentClassifier, StudentConfig

# model_type -> (config class, model class). Later models (gpt, ...) register here.
MODEL_TYPES: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
    "cnn": (CNNConfig, CNN),
    "gpt": (GPTConfig, MiniGPT),
    "sentiment": (SentimentConfig, SentimentClassifier),
    "sentiment-student": (StudentConfig, StudentClassifier),
}


def build_model(model_type: str, **config: Any) -> nn.Module:
    """Build a freshly initialised model of `model_type` from its config fields."""
    if model_type not in MODEL_TYPES:
        raise MaaslabError(
            f"unknown model type {model_type!r}: choose one of {', '.join(MODEL_TYPES)}"
        )
    config_cls, model_cls = MODEL_TYPES[model_type]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise MaaslabError(
            f"unknown {model_type} config field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    try:
        cfg = config_cls(**config)
    except TypeError as err:
        raise MaaslabError(f"bad {model_type} config: {err}") from None
    return model_cls(cfg)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The `{"model_type": ..., "config": {...}}` description a model folder stores."""
    model_type = getattr(model, "model_type", None)
    config = getattr(model, "config", None)
    if model_type not in MODEL_TYPES or not dataclasses.is_dataclass(config):
        raise MaaslabError(
            f"{type(model).__name__} is not a MaaS Lab model (needs model_type and a config "
            "dataclass); register it in maaslab.models.MODEL_TYPES"
        )
    return {"model_type": model_type, "config": dataclasses.asdict(config)}


__all__ = [
    "CNN",
    "MLP",
    "MODEL_TYPES",
    "CNNConfig",
    "GPTConfig",
    "MLPConfig",
    "MiniGPT",
    "SentimentClassifier",
    "SentimentConfig",
    "StudentClassifier",
    "StudentConfig",
    "build_model",
    "model_config",
]
