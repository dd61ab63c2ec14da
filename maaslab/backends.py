"""Where a float model runs besides eager torch: torch.ao dynamic int8 and ONNX Runtime.

Each runtime keeps the torch model's call (one tensor in, logits out), so everything that calls a
classifier (accuracy, latency, SHAP, the zoo wrappers) calls it unchanged. Lesson 12 builds its
variants with these (maaslab.compress); a compressed-variant folder names its runtime in
config.json and maaslab.auto re-applies it on load, so both sit below them here.

ORT sessions are set up for latency on a small shared CPU: `threads` intra-op threads (the same
count torch uses, so the comparison is fair), one inter-op thread, and spinning off. With
spinning on, idle worker threads busy-wait for the next op; that wins a little on an idle
machine and loses a lot when the cores are shared with anything else.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maaslab.errors import MaaslabError

# The runtimes a compressed variant names in its folder (config.json "compression" block).
RUNTIMES = ("torch", "torch-int8", "onnx", "onnx-int8")
# What a model built on the tokenizer brings along, so an ONNX copy still encodes texts.
TEXT_ATTRIBUTES = ("encode", "config", "tokenizer", "pad_id")


def torch_dynamic_int8(model: nn.Module, *, exclude: str | None = None) -> nn.Module:
    """A copy of `model` with its nn.Linear layers as torch.ao dynamic int8 (per tensor).

    Parameters
    ----------
    model : any torch model; only its nn.Linear layers change.
    exclude : a regular expression; Linear layers whose qualified name matches stay fp32.
    """
    names = {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not (exclude and re.search(exclude, name))
    }
    if not names:
        raise MaaslabError(f"{type(model).__name__} has no nn.Linear layer to quantize")
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.ao.quantization in favour of torchao. This lesson measures
        # it on purpose (it is still the fastest eager int8 path here), so the notice, which
        # names nothing the learner can act on, is silenced for this call only.
        # Only these two notices are dropped, and only during this call.
        warnings.filterwarnings(
            "ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", category=UserWarning, module=r"torch\.ao\.", message=r".*deprecated.*"
        )
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), names, dtype=torch.qint8
        )


def session_options(threads: int):
    """ORT options for low-latency CPU inference: `threads` intra-op threads, spinning off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's notes are not for the learner
    return options


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime, called like the torch model it was exported from."""

    def __init__(
        self, path: str | Path, *, threads: int | None = None, like: nn.Module | None = None
    ) -> None:
        import onnxruntime as ort

        super().__init__()
        self.path = Path(path)
        self.threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(self.threads), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # ORT raises its own exception types for bad files
            raise MaaslabError(f"ONNX Runtime cannot open {self.path.name}: {err}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.model_type = getattr(like, "model_type", None)
        # A text model keeps its tokenizer so `encode(texts)` still gives the ids to feed in.
        for name in TEXT_ATTRIBUTES:
            if like is not None and hasattr(like, name):
                setattr(self, name, getattr(like, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same input and output as the exported model; runs in ONNX Runtime on the CPU."""
        array = x.detach().cpu().numpy()
        if array.dtype.kind == "f":
            array = array.astype(np.float32, copy=False)
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(np.asarray(logits))

    def extra_repr(self) -> str:
        return f"{self.path.name}, threads={self.threads}"
