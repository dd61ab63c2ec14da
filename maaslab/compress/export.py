"""A compressed variant as a model folder that `maaslab.auto.load(folder)` serves.

The folder is an ordinary model folder (config.json + model.safetensors) holding the variant's
float weights (the merged MiniLM, the pruned copy or the student), plus a `compression` block in
config.json naming the runtime (maaslab.backends) the loader re-applies: torch int8 again from
the float weights, or the variant's own .onnx file (`model.onnx`) next to them. maaslab.auto
reads the folder back (`load_variant`), the way it loads every other folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from maaslab import __version__
from maaslab.auto import FORMAT, ONNX_FILE
from maaslab.compress.variants import build_variant, save_weights
from maaslab.models import model_config
from maaslab.registry import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_folder,
    write_json,
)


def _float_config(module) -> dict[str, Any]:
    config = model_config(module)
    if getattr(module, "merged", False) and config["model_type"] == "sentiment":
        # Adapters folded in: the folder stores every encoder weight, like full fine-tuning.
        config["config"]["lora_rank"] = 0
    return config


def export_variant(
    model_name: str, variant: str, folder: str | Path, *, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write `variant` of `model_name` as a model folder that maaslab.auto.load(folder) loads.

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
