"""A model by name or by folder, as a wrapper ready to call: `maaslab.auto.load`.

This sits above the wrappers (maaslab.zoo) and the folders (maaslab.registry), the way
transformers' `auto` module sits above its model files: it reads a name or a folder's
config.json and picks the wrapper. Nothing below imports it.

- A shipped name (digits-mlp, digits-cnn, sentiment-minilm, sentiment-minilm-student, mini-gpt,
  minilm-embed, mini-llama) loads from assets/models (maaslab.paths.MODELS_DIR).
- A folder loads by its `model_type`: a saved digits or sentiment model, or a Hugging Face
  causal language model (llama, mistral, qwen2, gpt2) saved with its tokenizer.json, as a
  ChatModel that the server runs through maaslab.llm's engine.
- A compressed variant's folder (written by maaslab.compress.export_variant) has a `compression`
  block in config.json naming the runtime the loader re-applies:
  torch int8: `torch_dynamic_int8` again on load. Dynamic quantization is a pure function of
  the float weights, so the loaded model gives exactly the variant's outputs, and only
  safetensors are ever read (no pickled quantized modules).
  ONNX Runtime: the variant's own .onnx file sits next to the weights (`model.onnx`) and is run
  as is; it is a protobuf graph, not code, and re-exporting at every load would cost seconds.
  The float weights stay in the folder so the tokenizer, labels and config load as usual.
  The wrapper is the shipped model's (SentimentModel / DigitsClassifier) with its `.model`
  swapped for the variant, so `.predict` works unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from maaslab.backends import RUNTIMES, OnnxModule, torch_dynamic_int8
from maaslab.errors import MaaslabError
from maaslab.models import build_model
from maaslab.registry import CONFIG_FILE, WEIGHTS_FILE, load_weights, read_config, read_safetensors
from maaslab.zoo import (
    CAUSAL_LM_TYPES,
    ChatModel,
    DigitsClassifier,
    SentimentModel,
    TextEmbedder,
    TextGenerator,
    shipped_folder,
)

ONNX_FILE = "model.onnx"  # an ONNX variant's graph, next to its float weights
FORMAT = 1  # version of the compression block; a loader refuses blocks it does not know


def _digits(name: str, device: str) -> DigitsClassifier:
    return DigitsClassifier(name, shipped_folder(name), device)


LOADERS = {
    "digits-mlp": _digits,
    "digits-cnn": _digits,
    "sentiment-minilm": SentimentModel,
    "sentiment-minilm-student": SentimentModel,  # a StudentClassifier; merge() is a no-op
    "mini-gpt": TextGenerator,
    "minilm-embed": TextEmbedder,
}
# Language models, run by maaslab.llm's engine. Apart from LOADERS, which the Inference and
# Serve pages offer: they have no panel for a language model yet.
LANGUAGE_MODELS = {
    "mini-llama": lambda name, device: ChatModel(name, device=device),
}


def shipped(name: object) -> bool:
    """True for the name of a shipped model (LOADERS or LANGUAGE_MODELS)."""
    return isinstance(name, str) and (name in LOADERS or name in LANGUAGE_MODELS)


def is_language_model(name: str | Path) -> bool:
    """True for a model the engine serves: a shipped language model, or a folder holding a
    causal LM of a family the engine runs (without loading it)."""
    if isinstance(name, str) and name in LANGUAGE_MODELS:
        return True
    if (isinstance(name, str) and name in LOADERS) or not Path(name).is_dir():
        return False
    try:
        return read_config(Path(name)).get("model_type") in CAUSAL_LM_TYPES
    except (MaaslabError, OSError, ValueError):  # not a model folder: the loader will say why
        return False


def load(name: str | Path, *, device: str = "cpu"):
    """A shipped model by name (digits-mlp, digits-cnn, sentiment-minilm, mini-gpt,
    minilm-embed, mini-llama), or a model folder (a saved digits or sentiment model, a compressed
    variant from maaslab.compress.export_variant, a Hugging Face causal LM), ready to call.

    Returns a wrapper from maaslab.zoo with a predict-style method (`predict` for classifiers,
    `generate` / `complete` for mini-gpt, `embed` for the encoder, tokenizer and chat template
    for a ChatModel); an unknown name that is not a folder either is refused with the list of
    known names.
    """
    if isinstance(name, str) and name in LOADERS:
        return LOADERS[name](name, device)
    if isinstance(name, str) and name in LANGUAGE_MODELS:
        return LANGUAGE_MODELS[name](name, device)
    if Path(name).is_dir():
        return load_folder(name, device)
    raise MaaslabError(
        f"unknown model {str(name)!r}: choose one of {', '.join([*LOADERS, *LANGUAGE_MODELS])}, "
        "or give the path of a model folder (config.json + model.safetensors)"
    )


def load_folder(folder: str | Path, device: str = "cpu"):
    """The wrapper for a model folder: a saved digits or sentiment model, a compressed variant
    written by maaslab.compress.export_variant, or a Hugging Face causal LM (a ChatModel)."""
    folder = Path(folder)
    config = read_config(folder)
    if "compression" in config:
        return load_variant(folder, device)
    if config["model_type"] in ("mlp", "cnn"):
        return DigitsClassifier(folder.name, folder, device)
    if config["model_type"] == "sentiment":
        return SentimentModel(folder.name, device, folder=folder)
    if config["model_type"] in CAUSAL_LM_TYPES:
        return ChatModel(folder.name, folder, device)
    raise MaaslabError(
        f"{folder} holds a {config['model_type']!r} model; folders load for digits and "
        f"sentiment classifiers and for {', '.join(CAUSAL_LM_TYPES)} language models (load a "
        "shipped name for the others)"
    )


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
    folder = Path(folder)
    config = read_config(folder)
    block = config.get("compression")
    if not isinstance(block, dict) or block.get("format") != FORMAT:
        raise MaaslabError(
            f"{folder / CONFIG_FILE} has a compression block this version cannot read"
        )
    runtime = block.get("runtime")
    if runtime not in RUNTIMES:
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
