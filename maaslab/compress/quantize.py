"""Dynamic int8 quantization: torch's eager path and ONNX Runtime's, and what each weighs.

Dynamic quantization stores each weight matrix as int8 with a scale (per tensor, or one per
output channel) and quantizes the activations on the fly, per call, from their observed range;
nothing needs a calibration set. The int8 matrix products (VNNI / AVX2 integer kernels) read
4x fewer weight bytes and do 4 multiply-adds per instruction where fp32 does 1.

Three int8 paths were measured on the merged sentiment-minilm (accuracy on its 159 validation
reviews, then its 264 test reviews; one 17-token review at batch 1, 32 reviews at batch 32, torch
and ORT on the same threads, interleaved runs):
- ONNX Runtime `quantize_dynamic`, per-channel scales: the fastest at batch 1 and the int8 path
  closest to fp32's accuracy (0.849 against 0.855 on validation; 0.818 against 0.822 on test).
  This is the path the lesson teaches: ORT fuses the graph (attention, LayerNorm, GELU) and runs
  int8 MatMuls from a plain file, no compile step. Per-tensor scales lost 6.9 points (0.786 on
  validation, 0.803 on test): one scale per matrix wastes int8 levels on rows with small weights.
  On an earlier build of the model, per-tensor scales were as fast, `reduce_range` (7-bit) cost
  accuracy for nothing on a CPU with VNNI, and leaving the FFN output MatMuls in fp32 kept
  accuracy but gave back speed.
- torch.ao dynamic int8 (per tensor, eager): faster than fp32 but 0.780 on validation
  (-7.5 points; 0.803 on test); it is deprecated in torch 2.13 in favour of torchao.
- torchao 0.18 (`Int8DynamicActivationInt8WeightConfig`, `Int8WeightOnlyConfig`), on the earlier
  build: kept the accuracy but was slower than fp32 in eager mode (0.5x and 0.85x); it needs
  `torch.compile` (minutes of compiling on 2 cores) to get ahead, so it is not shipped here.
bench/bench_compress.py prints the figures for the shipped variants, measured in one run.
`torch_dynamic_int8` lives in maaslab.backends (a loaded variant folder re-applies it) and is
re-exported by maaslab.compress.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from maaslab.errors import MaaslabError


def int8_weight_error(weight: torch.Tensor, scale: torch.Tensor | float) -> float:
    """Relative error ||W_hat - W|| / ||W|| of symmetric int8: W_hat = clamp(round(W / s)) * s.

    Parameters
    ----------
    weight : the float weight matrix W.
    scale : one scale for the whole tensor (a number), or one per output row (shape (rows, 1)).
    """
    weight = torch.as_tensor(weight, dtype=torch.float32)
    restored = torch.clamp(torch.round(weight / scale), -128, 127) * scale
    return float((restored - weight).norm() / weight.norm())


def int8_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a torch.ao dynamic int8 model stores: int8 weights, scales, fp32 rest."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        packed = getattr(module, "_packed_params", None)
        if packed is None or not hasattr(module, "weight"):
            continue
        weight = module.weight()
        out[f"{name}.weight"] = weight.int_repr()
        out[f"{name}.weight_scale"] = torch.tensor([weight.q_scale()], dtype=torch.float32)
        out[f"{name}.weight_zero_point"] = torch.tensor([weight.q_zero_point()])
        if module.bias() is not None:
            out[f"{name}.bias"] = module.bias().detach()
    quantized = {n.rsplit(".", 1)[0] for n in out}
    for name, tensor in model.state_dict().items():
        kept = not any(name.startswith(q + ".") for q in quantized)
        if isinstance(tensor, torch.Tensor) and not tensor.is_quantized and kept:
            out[name] = tensor
    return out


def save_int8_state(model: nn.Module, path: str | Path) -> Path:
    """Write `int8_state(model)` as safetensors (what a dynamic int8 model weighs on disk)."""
    path = Path(path)
    state = {k: v.detach().contiguous().clone() for k, v in int8_state(model).items()}
    save_file(state, str(path))
    return path


def ffn_output_matmuls(onnx_path: str | Path) -> list[str]:
    """Names of the MatMul nodes fed by a Gelu: the second (down) projection of each FFN.

    These see the widest activation ranges in a transformer (GELU outputs with long tails), so
    one int8 scale per call fits them worst; leaving them fp32 is a classic accuracy fix.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[0] in producer
        and producer[node.input[0]].op_type == "Gelu"
    ]


def ort_dynamic_int8(
    source: str | Path,
    target: str | Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    exclude: tuple[str, ...] = (),
) -> Path:
    """Quantize an fp32 .onnx file with ONNX Runtime's quantize_dynamic (int8 weights).

    Parameters
    ----------
    source, target : the fp32 .onnx file and where the int8 one goes.
    per_channel : one scale per output channel of each weight (more accurate) or one per tensor.
    reduce_range : 7-bit weights, for old CPUs without VNNI whose int8 products can overflow.
    exclude : node names left in fp32 (e.g. `ffn_output_matmuls(source)`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    # quantize_dynamic logs "consider pre-processing" on the root logger for every model; the
    # pre-processing it means (shape inference) changes nothing for dynamic quantization.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
        )
    except Exception as err:  # the quantizer raises assorted types for graphs it cannot read
        raise MaaslabError(
            f"ONNX Runtime quantization failed: {type(err).__name__}: {err}"
        ) from None
    finally:
        root.setLevel(level)
    return Path(target)
