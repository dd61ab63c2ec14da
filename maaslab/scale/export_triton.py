"""A Triton model repository: `<root>/<name>/config.pbtxt` + `<root>/<name>/1/model.onnx`.

The graph is exported with maaslab.compress.export_onnx around the model the MaaS Lab server
runs, wrapped so it answers what the server answers: a digits model takes `pixels` FP32 [N, 64]
on the 0-16 scale (the division by 16 is inside the graph) and a sentiment model takes
`input_ids` INT64 [N, L] (MiniLM's tokenizer, padded with its pad id); both return
`probabilities` FP32 [N, C] (the softmax is inside too). The same tritonclient call then
works against `python -m maaslab serve` and against Triton for digits.

config.pbtxt is written from the graph itself: names, data types and dims read from the ONNX
file, the dynamic batch dimension turned into `max_batch_size` and left out of `dims`, as
Triton wants. Two checks run before the repository is kept: config.pbtxt parses into the
`ModelConfig` message tritonclient ships (an unknown field or a wrong type fails) and agrees
with the graph, and ONNX Runtime runs model.onnx on real inputs, batch sizes other than the
one traced, and matches the MaaS Lab model's own probabilities within ATOL.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maaslab.compress.onnx import export_onnx
from maaslab.data import DIGIT_PIXEL_MAX
from maaslab.errors import MaaslabError
from maaslab.scale.export_config import ExportConfig, Source, Written, write_readme

ONNX_FILE = "model.onnx"  # the ONNX Runtime backend's default_model_filename
CONFIG_FILE = "config.pbtxt"
VERSION = "1"  # the one version folder
PLATFORM = "onnxruntime_onnx"
ATOL = 1e-4  # largest |ONNX Runtime - MaaS Lab| allowed on a probability (float32 math)
INPUT_NAMES = {"digits": "pixels", "text": "input_ids"}  # the server's name for pixels too
OUTPUT_NAME = "probabilities"
# ONNX TensorProto element types -> Triton data types.
TRITON_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}


class Served(nn.Module):
    """The served contract as one module: the wrapper's input scaling, the model, softmax."""

    def __init__(self, model: nn.Module, scale: float | None) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (0-16) or token ids -> class probabilities (N, C)."""
        logits = self.model(x / self.scale if self.scale else x)
        return torch.softmax(logits.float(), dim=-1)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph, as Triton describes it."""

    name: str
    data_type: str  # TYPE_FP32, TYPE_INT64...
    dims: tuple[int, ...]  # every dimension, the batch one included; -1 where dynamic


def graph_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of an ONNX file with their Triton data types and dims."""
    import onnx

    graph = onnx.load(str(path)).graph

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in TRITON_TYPES:
            raise MaaslabError(f"{value.name} has ONNX type {tensor.elem_type}, unknown to Triton")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorSpec(value.name, TRITON_TYPES[tensor.elem_type], dims)

    initializers = {t.name for t in graph.initializer}
    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def rename_io(path: Path, names: dict[str, str]) -> None:
    """Rename a graph's inputs and outputs in place (export_onnx names them x and logits)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(specs: list[TensorSpec]) -> str:
    items = [  # dims without the batch dimension
        f'  {{\n    name: "{s.name}"\n    data_type: {s.data_type}\n'
        f"    dims: {_dims(s.dims[1:])}\n  }}"
        for s in specs
    ]
    return ",\n".join(items)


def config_text(name: str, onnx_path: Path, config: ExportConfig) -> str:
    """config.pbtxt for the graph at `onnx_path`, served as `name` with `config`'s batching."""
    inputs, outputs = graph_io(onnx_path)
    if not all(s.dims[:1] == (-1,) for s in [*inputs, *outputs]):
        raise MaaslabError(f"{onnx_path.name} has a fixed batch dimension: Triton cannot batch it")
    return (
        f"# Triton model configuration for {name} (python -m maaslab export).\n"
        f'name: "{name}"\nplatform: "{PLATFORM}"\n'
        "# Rows one batch holds at most. Every dims below leaves the batch dimension out.\n"
        f"max_batch_size: {config.max_batch_size}\n"
        f"input [\n{_tensor_block(inputs)}\n]\n"
        f"output [\n{_tensor_block(outputs)}\n]\n"
        "# Requests that arrive within max_queue_delay_microseconds run as one batch.\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: {_dims(config.preferred)}\n"
        f"  max_queue_delay_microseconds: {config.max_queue_delay_us}\n"
        "}\n"
        "# Copies of the model running side by side (KIND_AUTO: on GPUs if any, else the CPU).\n"
        f"instance_group [\n  {{\n    count: {config.instance_count}\n"
        f"    kind: {KINDS[config.instance_kind]}\n  }}\n]\n"
    )


def parse_config(text: str):
    """config.pbtxt parsed into tritonclient's ModelConfig message; MaaslabError if it fails."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise MaaslabError(f"{CONFIG_FILE} is not a Triton ModelConfig: {err}") from None


def check_config(text: str, onnx_path: Path) -> list[str]:
    """Parse config.pbtxt and compare it with the graph it serves; return the checks passed."""
    from tritonclient.grpc import model_config_pb2 as pb

    parsed = parse_config(text)
    inputs, outputs = graph_io(onnx_path)
    if parsed.platform != PLATFORM:
        raise MaaslabError(f"{CONFIG_FILE} names platform {parsed.platform!r}, not {PLATFORM}")
    batch = parsed.max_batch_size
    if batch > 0 and not all(s.dims[:1] == (-1,) for s in [*inputs, *outputs]):
        raise MaaslabError(f"max_batch_size {batch}, but {ONNX_FILE} has a fixed batch dimension")
    for label, declared, graph in (
        ("input", parsed.input, inputs),
        ("output", parsed.output, outputs),
    ):
        got = [(t.name, pb.DataType.Name(t.data_type), tuple(t.dims)) for t in declared]
        want = [(s.name, s.data_type, s.dims[1:] if batch > 0 else s.dims) for s in graph]
        if got != want:
            raise MaaslabError(f"{CONFIG_FILE} declares {label}s {got}, but the graph has {want}")
    if batch > 0 and parsed.HasField("dynamic_batching"):
        too_big = [s for s in parsed.dynamic_batching.preferred_batch_size if s > batch]
        if too_big:
            raise MaaslabError(f"preferred batch sizes {too_big} exceed max_batch_size {batch}")
    return [
        f"{CONFIG_FILE} parses as tritonclient's ModelConfig (protobuf text format)",
        f"its inputs, outputs, data types and dims match {ONNX_FILE} "
        f"(batch dimension -> max_batch_size {batch})",
    ]


def example_inputs(source: Source, wrapper) -> list[tuple[object, np.ndarray]]:
    """Real inputs in two batches (1 row, then several): what the wrapper takes, what ORT takes."""
    if source.kind == "digits":
        from sklearn.datasets import load_digits

        pixels = load_digits().data[:8].astype(np.float32)  # digits 0-7, on the 0-16 scale
        return [(pixels[:1], pixels[:1]), (pixels[1:], pixels[1:])]
    from maaslab.reviews import load_reviews

    texts = list(load_reviews("test").texts[:6])  # different lengths: padding is exercised
    batches = [texts[:1], texts[1:]]
    return [(batch, wrapper.model.encode(batch)[0]) for batch in batches]


def check_outputs(source: Source, wrapper, onnx_path: Path, batches: list) -> float:
    """Run the graph in ONNX Runtime on `batches` (from example_inputs) and compare with the
    wrapper's probabilities; MaaslabError past ATOL."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for given, fed in batches:
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAMES[source.kind]: fed})
        want = wrapper.predict(given).probabilities
        if got.shape != want.shape:
            raise MaaslabError(f"{ONNX_FILE} gives shape {got.shape}, the model {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > ATOL:
        raise MaaslabError(
            f"{ONNX_FILE} differs from {source.name} by {worst:.2e} (more than {ATOL:g}): "
            "the export is not faithful; report it with the model's name"
        )
    return worst


def write_repository(
    source: Source, config: ExportConfig, name: str, root: Path
) -> tuple[list[str], float]:
    """Export `source` into the repository `root` as `name`, check it; (checks, max |diff|)."""
    from maaslab.auto import load

    wrapper = load(source.name)
    model = wrapper.model.eval()
    if source.kind == "digits":
        served, example = Served(model, DIGIT_PIXEL_MAX), torch.zeros(2, 64)
    else:
        served = Served(model, None)
        example = torch.as_tensor(model.encode(["A fine film.", "Not good at all."])[0])
    version = root / name / VERSION
    version.mkdir(parents=True)
    try:
        onnx_path = export_onnx(served, example, version / ONNX_FILE)
    except MaaslabError as err:
        raise MaaslabError(f"{err}; export {source.name} with --to ray instead") from None
    rename_io(onnx_path, {"x": INPUT_NAMES[source.kind], "logits": OUTPUT_NAME})
    (root / name / CONFIG_FILE).write_text(config_text(name, onnx_path, config), encoding="utf-8")
    checks = check_config((root / name / CONFIG_FILE).read_text(encoding="utf-8"), onnx_path)
    batches = example_inputs(source, wrapper)
    worst = check_outputs(source, wrapper, onnx_path, batches)
    sizes = " and ".join(str(len(fed)) for _, fed in batches)
    checks.append(
        f"ONNX Runtime on {ONNX_FILE} matches {source.name}'s probabilities within {ATOL:g} "
        f"(max |diff| {worst:.1e}; batches of {sizes} rows, the graph was traced with 2)"
    )
    return checks, worst


def request_example(source: Source, name: str) -> str:
    """A tritonclient call for the served model, for the README."""
    if source.kind == "digits":
        prepare = (
            "    from sklearn.datasets import load_digits\n"
            "    # pixels on the 0-16 scale: the request `python -m maaslab serve` takes too\n"
            "    x = load_digits().data[:4].astype(np.float32)\n"
            '    tensor = httpclient.InferInput("pixels", list(x.shape), "FP32")\n'
        )
    else:
        prepare = (
            "    # token ids, not text: Triton's ONNX Runtime backend has no tokenizer, so the\n"
            "    # client runs the model's own (MiniLM's, padded with its pad id)\n"
            "    from maaslab.auto import load\n"
            f'    x, _ = load("{source.name}").model.encode(["A fine film."])\n'
            '    tensor = httpclient.InferInput("input_ids", list(x.shape), "INT64")\n'
        )
    return (
        "    import numpy as np\n    import tritonclient.http as httpclient\n\n"
        f"{prepare}    tensor.set_data_from_numpy(x)\n"
        '    client = httpclient.InferenceServerClient("localhost:8000")\n'
        f'    print(client.infer("{name}", [tensor]).as_numpy("probabilities"))\n'
    )


def write_bundle(
    source: Source, config: ExportConfig, name: str, staging: Path, final: Path
) -> Written:
    """The triton target: the repository in `staging` (bound for `final`) and its README."""
    checks, worst = write_repository(source, config, name, staging)
    command = f"tritonserver --model-repository={shlex.quote(str(final))}"
    write_readme(
        staging,
        f"Triton model repository: {name}",
        command,
        "Triton Inference Server with its ONNX Runtime backend, e.g. NVIDIA's container "
        f"(`docker run --rm -p 8000:8000 -p 8001:8001 -v {final}:/models "
        "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models`).",
        f"`{name}/config.pbtxt` serves `{name}/{VERSION}/{ONNX_FILE}` with dynamic batching "
        f"(up to {config.max_batch_size} rows, {config.max_queue_delay_us} µs queue delay) and "
        f"{config.instance_count} instance(s). Ask it over the Open Inference Protocol (v2):\n\n"
        + request_example(source, name),
    )
    return Written(tuple(checks), command, worst)
