"""ONNX export (torch.onnx, dynamo) and an ONNX Runtime session that looks like a torch model.

`export_onnx` traces a model with `torch.export` and writes one self-contained .onnx file (the
weights inside, not as external data, so one file is the whole model). `OnnxModule` runs that
file in an ONNX Runtime InferenceSession behind an `nn.Module` forward, so everything that calls
a torch classifier (accuracy, latency, SHAP, the zoo wrappers) calls it unchanged.

ORT sessions are set up for latency on a small shared CPU: `threads` intra-op threads (the same
count torch uses, so the comparison is fair), one inter-op thread, and spinning off. With
spinning on, idle worker threads busy-wait for the next op; that wins a little on an idle
machine and loses a lot when the cores are shared with anything else.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maaslab.errors import MaaslabError

# What a model built on the tokenizer brings along, so an ONNX copy still encodes texts.
TEXT_ATTRIBUTES = ("encode", "config", "tokenizer", "pad_id")


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    # torch.export and onnxscript print progress lines ("[torch.onnx] Obtain model graph...")
    # and log optimizer notes; a library call must not write to the learner's output.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export `model` (one input tensor -> logits) to a single .onnx file; return its path.

    Parameters
    ----------
    model : a torch classifier taking one tensor, e.g. token ids (B, L) or pixels (B, 64).
    example : an example input; its dimensions 0 (batch) and, for 2-D integer ids, 1
        (sequence) are exported as dynamic, so any batch size and text length run.
    path : where to write the .onnx file.
    """
    from torch.export import Dim

    path = Path(path)
    dims: dict[int, Any] = {0: Dim.DYNAMIC}
    if example.dtype in (torch.int64, torch.int32) and example.dim() == 2:
        dims[1] = Dim.DYNAMIC  # token ids: texts of any length
    model = model.eval()
    try:
        with _quiet_export(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes=({**dims},),
                verbose=False,
            )
            if program is None:
                raise MaaslabError("torch.onnx.export returned nothing")
            program.save(str(path), external_data=False)
    except MaaslabError:
        raise
    except Exception as err:  # the exporter raises many types; all mean "cannot export"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MaaslabError(
            f"ONNX export of {type(model).__name__} failed: {type(err).__name__}: {first[:300]}"
        ) from None
    return path


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
