"""Compression: quantization, pruning, distillation and ONNX, measured side by side.

`variants_for(model)` lists the variants of a shipped model; `compare(model)` builds and measures
them (accuracy on the split the variant is chosen on and on the test split, latency at batch 1
and 32, size, SHAP drift) into a Comparison table;
`export_variant(model, variant, folder)` writes one as a model folder the server can load;
`maaslab.auto.load(folder)` (also here as `load_variant`) reads it back.
"""

from maaslab.auto import load_variant
from maaslab.backends import OnnxModule, session_options, torch_dynamic_int8
from maaslab.compress.drift import shap_difference
from maaslab.compress.export import export_variant
from maaslab.compress.measure import Comparison, VariantRow, compare, interleaved_latency
from maaslab.compress.onnx import export_onnx
from maaslab.compress.quantize import (
    ffn_output_matmuls,
    int8_state,
    int8_weight_error,
    ort_dynamic_int8,
)
from maaslab.compress.variants import (
    COMPRESSIBLE,
    VARIANTS,
    Built,
    Variant,
    build_variant,
    variants_for,
)

__all__ = [
    "COMPRESSIBLE",
    "VARIANTS",
    "Built",
    "Comparison",
    "OnnxModule",
    "Variant",
    "VariantRow",
    "build_variant",
    "compare",
    "export_onnx",
    "export_variant",
    "ffn_output_matmuls",
    "int8_state",
    "int8_weight_error",
    "interleaved_latency",
    "load_variant",
    "ort_dynamic_int8",
    "session_options",
    "shap_difference",
    "torch_dynamic_int8",
    "variants_for",
]
