"""The compressed variants of a model: which float model they start from, and how it runs.

Every variant is one float model (the shipped one, a pruned and fine-tuned copy, or the distilled
student) run by one runtime (torch eager, torch.ao dynamic int8, ONNX Runtime fp32 or ONNX
Runtime int8). `build_variant` makes one, with the files that are its serialized form (their
size is the variant's size on disk), and remembers the last few built so a comparison, its
export and a page re-run do not pay for pruning or export twice.
"""

from __future__ import annotations

import importlib.util
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maaslab.backends import OnnxModule, torch_dynamic_int8
from maaslab.compress.onnx import export_onnx
from maaslab.compress.quantize import ort_dynamic_int8, save_int8_state
from maaslab.errors import MaaslabError
from maaslab.runtime import fast_mode

COMPRESSIBLE = ("sentiment-minilm", "digits-cnn")
SOURCES = ("base", "pruned-unstructured", "pruned-structured", "distilled")
PRUNE_AMOUNT = {"unstructured": 0.5, "structured": 0.25}  # share of weights / of channels removed
# Passes of fine-tuning after pruning (prune() cuts them to one short epoch in fast mode).
FINETUNE_EPOCHS = {"sentiment-minilm": 1, "digits-cnn": 3}
# The validation rows (load_dataset's and review_dataset's, seed 0) choose each model's variant;
# none of its variants trains on them (maaslab.assets.VAL_FRACTION is the shipped recipes'; a test
# holds the two equal)
VAL_FRACTION = 0.15
CACHE_SIZE = 6  # built variants kept in memory (a MiniLM copy is ~90 MB)
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Variant:
    """One way to run a model: a float source model and a runtime."""

    name: str
    description: str
    source: str  # one of SOURCES: the float weights the variant starts from
    runtime: str  # one of maaslab.backends.RUNTIMES
    models: tuple[str, ...] = COMPRESSIBLE  # shipped models it applies to
    needs: str | None = None  # module of maaslab.compress it needs ("prune", "distill")


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fp32", "the shipped model, fp32, torch eager (the reference)", "base", "torch"),
        Variant(
            "int8-dynamic",
            "torch.ao dynamic int8 on every nn.Linear (per tensor)",
            "base",
            "torch-int8",
        ),
        Variant(
            "onnx-fp32", "exported with torch.onnx (dynamo), run by ONNX Runtime", "base", "onnx"
        ),
        Variant(
            "onnx-int8",
            "ONNX Runtime quantize_dynamic: int8 weights, one scale per output channel",
            "base",
            "onnx-int8",
        ),
        Variant(
            "pruned-unstructured",
            f"{PRUNE_AMOUNT['unstructured']:.0%} of weights with the "
            "smallest magnitude set to 0, then fine-tuned",
            "pruned-unstructured",
            "torch",
            needs="prune",
        ),
        Variant(
            "pruned-structured",
            f"{PRUNE_AMOUNT['structured']:.0%} of the FFN neurons "
            "(MiniLM) or channels (CNN) with the smallest L1 norm removed, then fine-tuned",
            "pruned-structured",
            "torch",
            needs="prune",
        ),
        Variant(
            "distilled",
            "a student with fewer MiniLM blocks, distilled from the classifier",
            "distilled",
            "torch",
            ("sentiment-minilm",),
            "distill",
        ),
        Variant(
            "distilled-onnx-int8",
            "the distilled student, ONNX Runtime int8 (per channel)",
            "distilled",
            "onnx-int8",
            ("sentiment-minilm",),
            "distill",
        ),
    )
}


def _available(variant: Variant) -> bool:
    return variant.needs is None or importlib.util.find_spec(f"maaslab.compress.{variant.needs}")


def check_model_name(model_name: str) -> str:
    """`model_name` if it can be compressed here, else a MaaslabError naming the ones that can."""
    if model_name not in COMPRESSIBLE:
        raise MaaslabError(
            f"{model_name!r} cannot be compressed here: choose one of {', '.join(COMPRESSIBLE)}"
        )
    return model_name


def variants_for(model_name: str) -> list[str]:
    """The variant names that apply to `model_name`, the fp32 reference first."""
    check_model_name(model_name)
    return [k for k, v in VARIANTS.items() if model_name in v.models and _available(v)]


def check_variant(model_name: str, variant: str) -> Variant:
    """The Variant called `variant`, checked to apply to `model_name`."""
    usable = variants_for(model_name)
    if variant not in usable:
        why = "is not a variant" if variant not in VARIANTS else f"does not apply to {model_name}"
        raise MaaslabError(f"{variant!r} {why}: choose one of {', '.join(usable)}")
    return VARIANTS[variant]


@dataclass
class Built:
    """A variant ready to run, its float source, and the files that are its serialized form."""

    model_name: str
    variant: Variant
    module: nn.Module  # what runs: a torch module or an OnnxModule, same input and output
    float_module: nn.Module  # the float model it came from (what an exported folder stores)
    files: list[Path]  # the variant's serialized form; their total size is its size on disk
    seconds: float  # time to build (pruning, fine-tuning, export, quantization)
    workdir: Any = field(default=None, repr=False)  # TemporaryDirectory holding `files`

    @property
    def size_mb(self) -> float:
        """Total size of `files` in MB (10^6 bytes)."""
        return sum(p.stat().st_size for p in self.files) / 1e6


def base_module(model_name: str) -> nn.Module:
    """The shipped fp32 model as a torch module (sentiment: adapters merged into MiniLM)."""
    from maaslab.auto import load

    return load(check_model_name(model_name)).model.eval()


def example_input(model_name: str, module: nn.Module) -> torch.Tensor:
    """A two-row example input for tracing (ids of two short reviews, or two digits)."""
    if model_name == "sentiment-minilm":
        ids, _ = module.encode(["A fine film.", "Not good at all, sadly."])
        return torch.as_tensor(ids)
    return torch.zeros(2, 64)


def training_data(model_name: str, module: nn.Module):
    """The Dataset the variant's fine-tuning reads (the rows the shipped model trained on)."""
    # The rows the shipped model trained on: its validation rows choose the variant (measure.py),
    # so fine-tuning after pruning leaves them out, as the shipped model's recipe does.
    if model_name == "sentiment-minilm":
        from maaslab.models.sentiment import review_dataset

        return review_dataset(module, val_fraction=VAL_FRACTION, seed=0)
    from maaslab.data import load_dataset

    return load_dataset("digits", seed=0, val_fraction=VAL_FRACTION)  # pixels 0..1


def _float_source(
    model_name: str,
    source: str,
    seed: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> nn.Module:
    if source == "distilled":
        from maaslab.compress.distill import load_student

        return load_student().eval()
    base = base_module(model_name)
    if source == "base":
        return base
    from maaslab.compress.prune import prune

    kind = source.removeprefix("pruned-")
    data = training_data(model_name, base)
    return prune(
        base,
        kind=kind,
        amount=PRUNE_AMOUNT[kind],
        data=data,
        finetune_epochs=FINETUNE_EPOCHS[model_name],
        seed=seed,
        progress=progress,
        cancel=cancel,
    ).eval()


def save_weights(module: nn.Module, path: Path) -> Path:
    """The float model's weights as safetensors (a merged MiniLM stores every weight)."""
    from maaslab.registry import state_to_safetensors

    if hasattr(module, "trained_state") and not getattr(module, "merged", False):
        state = module.trained_state()
    else:
        state = module.state_dict()
    state_to_safetensors(state, path)
    return path


def _runtime(
    built_float: nn.Module, runtime: str, model_name: str, folder: Path
) -> tuple[nn.Module, list[Path]]:
    if runtime == "torch":
        return built_float, [save_weights(built_float, folder / "model.safetensors")]
    if runtime == "torch-int8":
        module = torch_dynamic_int8(built_float)
        return module, [save_int8_state(module, folder / "model-int8.safetensors")]
    fp32 = export_onnx(built_float, example_input(model_name, built_float), folder / "fp32.onnx")
    if runtime == "onnx":
        return OnnxModule(fp32, like=built_float), [fp32]
    int8 = ort_dynamic_int8(fp32, folder / "int8.onnx", per_channel=True)
    fp32.unlink()
    return OnnxModule(int8, like=built_float), [int8]


_cache: OrderedDict[tuple, Built] = OrderedDict()
_cache_lock = threading.Lock()


def build_variant(
    model_name: str,
    variant: str,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Built:
    """Build (or reuse) `variant` of the shipped `model_name`.

    Parameters
    ----------
    model_name : "sentiment-minilm" or "digits-cnn".
    variant : one of `variants_for(model_name)`.
    seed : seeds pruning's fine-tuning (the same seed gives the same weights).
    progress : progress(stage, fraction) while a slow step (fine-tuning) runs.
    cancel : a threading.Event; when set, fine-tuning stops and Cancelled is raised.
    """
    spec = check_variant(model_name, variant)
    # ONNX Runtime sessions take torch's thread count when built, so it is part of the key.
    key = (model_name, variant, seed, fast_mode(), torch.get_num_threads())
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    started = time.perf_counter()
    workdir = tempfile.TemporaryDirectory(prefix=f"maaslab-{variant}-")
    source = _float_source(model_name, spec.source, seed, progress, cancel)  # may fine-tune
    with torch.no_grad():
        module, files = _runtime(source, spec.runtime, model_name, Path(workdir.name))
    built = Built(
        model_name, spec, module.eval(), source, files, time.perf_counter() - started, workdir
    )
    with _cache_lock:
        _cache[key] = built
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return built


def logits(module: nn.Module, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Raw outputs of any variant (torch or ONNX) for a batch, as float64 numpy."""
    with torch.no_grad():
        return module(torch.as_tensor(x)).double().cpu().numpy()


def clear_cache() -> None:
    """Forget every built variant (the next build starts from the shipped weights again)."""
    with _cache_lock:
        _cache.clear()
