"""A compressed variant as a model folder that `maaslab.registry.load(folder)` serves.

The folder is an ordinary model folder (config.json + model.safetensors) holding the variant's
float weights (the merged MiniLM, the pruned copy or the student), plus a `compression` block in
config.json saying what the loader re-applies:

- torch int8: `torch_dynamic_int8` again on load. Dynamic quantization is a pure function of
  the float weights, so the loaded model gives exactly the variant's outputs, and only
  safetensors are ever read (no pickled quantized modules).
- ONNX Runtime: the variant's own .onnx file sits next to the weights (`model.onnx`) and is run
  as is; it is a protobuf graph, not code, and re-exporting at every load would cost seconds.
  The float weights stay in the folder so the tokenizer, labels and config load as usual.

The loader returns the same zoo wrapper as the shipped model (SentimentModel / DigitsClassifier)
with its `.model` swapped for the variant, so `.predict` works unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maaslab import __version__
from maaslab.compress.onnx import OnnxModule
from maaslab.compress.quantize import torch_dynamic_int8
from maaslab.compress.variants import build_variant, save_weights
from maaslab.errors import MaaslabError
from maaslab.models import build_model, model_config
from maaslab.registry import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_folder,
    load_weights,
    read_config,
    read_safetensors,
    write_json,
)

ONNX_FILE = "model.onnx"
FORMAT = 1  # version of the compression block; a loader refuses blocks it does not know


def _float_config(module) -> dict[str, Any]:
    config = model_config(module)
    if getattr(module, "merged", False) and config["model_type"] == "sentiment":
        # Adapters folded in: the folder stores every encoder weight, like full fine-tuning.
        config["config"]["lora_rank"] = 0
    return config


def export_variant(
    model_name: str, variant: str, folder: str | Path, *, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write `variant` of `model_name` as a model folder that registry.load(folder) loads.

    Parameters
    ----------
    model_name : "sentiment-minilm" or "digits-cnn".
    variant : one of `variants_for(model_name)`.
    folder : the new folder; refused if it exists unless `overwrite`.
    seed : the seed the variant was built with (pruning's fine-tuning).
    overwrite : replace an existing folder (atomically).
    """
    built = build_variant(model_name, variant, seed=seed)
    config = _float_config(built.float_module)
    config["maaslab_version"] = __version__
    config["metadata"] = {
        "compressed_from": model_name,
        "variant": variant,
        "description": built.variant.description,
    }
    runtime = built.variant.runtime
    config["compression"] = {
        "format": FORMAT,
        "variant": variant,
        "base_model": model_name,
        "runtime": runtime,
        "onnx": ONNX_FILE if runtime.startswith("onnx") else None,
    }
    with atomic_folder(folder, overwrite=overwrite) as staging:
        write_json(staging / CONFIG_FILE, config)
        save_weights(built.float_module, staging / WEIGHTS_FILE)
        if runtime.startswith("onnx"):
            shutil.copyfile(built.module.path, staging / ONNX_FILE)
    return Path(folder)


def _fit_linears(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    # Structured pruning shrinks MiniLM's FFN layers below what its config says; rebuild each
    # Linear whose stored weight has another shape at that shape before loading.
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if (
            isinstance(module, nn.Linear)
            and weight is not None
            and weight.shape != module.weight.shape
        ):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(
                parent,
                child,
                nn.Linear(weight.shape[1], weight.shape[0], bias=f"{name}.bias" in state),
            )


def _text_model(folder: Path, config: dict[str, Any]) -> nn.Module:
    # The float text model of a variant folder: the merged MiniLM, a pruned copy, or the student.
    model = build_model(config["model_type"], **config.get("config", {}))
    state = read_safetensors(folder / WEIGHTS_FILE)
    _fit_linears(model, state)
    load_weights(model, state, folder)
    if hasattr(model, "merge"):
        model.merge()
    return model.eval()


def load_variant(folder: str | Path, device: str = "cpu"):
    """The zoo wrapper for an exported variant folder, running the variant (CPU only)."""
    from maaslab.zoo import DigitsClassifier, SentimentModel

    folder = Path(folder)
    config = read_config(folder)
    block = config.get("compression")
    if not isinstance(block, dict) or block.get("format") != FORMAT:
        raise MaaslabError(
            f"{folder / CONFIG_FILE} has a compression block this version cannot read"
        )
    runtime = block.get("runtime")
    if runtime not in ("torch", "torch-int8", "onnx", "onnx-int8"):
        raise MaaslabError(f"{folder} names an unknown runtime {runtime!r}")
    if runtime != "torch" and str(device) != "cpu":
        raise MaaslabError(
            f"{block.get('variant')} runs on the CPU only; load it with device='cpu'"
        )
    if config["model_type"] in ("mlp", "cnn"):
        wrapper = DigitsClassifier(folder.name, folder, device)
    else:
        wrapper = SentimentModel(
            folder.name, device, folder=folder, model=_text_model(folder, config).to(device)
        )
    if runtime == "torch-int8":
        wrapper.model = torch_dynamic_int8(wrapper.model)
    elif runtime.startswith("onnx"):
        onnx_path = folder / str(block.get("onnx") or ONNX_FILE)
        if not onnx_path.is_file():
            raise MaaslabError(f"{folder} has no {onnx_path.name}; export the variant again")
        wrapper.model = OnnxModule(onnx_path, like=wrapper.model)
    wrapper.compression = dict(block)
    return wrapper
