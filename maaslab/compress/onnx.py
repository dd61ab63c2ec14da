"""ONNX export (torch.onnx, dynamo): one self-contained .onnx file per model.

`export_onnx` traces a model with `torch.export` and writes one self-contained .onnx file (the
weights inside, not as external data, so one file is the whole model). `OnnxModule` (in
maaslab.backends, re-exported by maaslab.compress) runs that file in an ONNX Runtime
InferenceSession behind an `nn.Module` forward, so everything that calls a torch classifier
(accuracy, latency, SHAP, the zoo wrappers) calls it unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maaslab.errors import MaaslabError


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
