"""What an export bundle is made from: ExportConfig, the model it reads, the README it gets.

maaslab.scale.export (export_bundle) and the three targets (export_triton, export_kserve,
export_ray) share these; it imports none of them, and reads models (maaslab.auto, the zoo,
transformers) only inside the functions that need one, so the CLI builds its flags from here
without loading the zoo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from maaslab.errors import MaaslabError
from maaslab.paths import MODELS_DIR

TARGETS = ("triton", "kserve", "ray")
ONNX_TARGETS = ("triton", "kserve")  # the targets that receive an ONNX graph
INSTANCE_KINDS = ("auto", "cpu", "gpu")  # Triton's KIND_AUTO, KIND_CPU, KIND_GPU
# Shipped models ONNX carries, and what their graph takes: pixels or token ids.
ONNX_SHIPPED = {
    "digits-mlp": "digits",
    "digits-cnn": "digits",
    "sentiment-minilm": "text",
    "sentiment-minilm-student": "text",
}
# Why the other shipped models cannot go to Triton or KServe.
NOT_ONNX = {
    "mini-gpt": "a text generator (it samples one token at a time in a loop ONNX does not hold)",
    "minilm-embed": "an embedding model (these bundles carry classifiers: probabilities out)",
}
# A Kubernetes object name (DNS-1035 label): what KServe accepts as an InferenceService name.
NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class ExportConfig:
    """What to export, where, and how the engine that receives it batches and scales it."""

    model: str  # a shipped model's name or the path of a model folder
    target: str  # "triton", "kserve" or "ray"
    out: str | Path  # the bundle folder to write (new, or empty unless `force`)
    # Rows one batch holds at most: Triton's max_batch_size, Ray's max_batch_size.
    max_batch_size: int = 32
    # Batch sizes Triton's dynamic batcher prefers to send; None: max_batch_size alone.
    preferred_batch_sizes: tuple[int, ...] | None = None
    # How long a request waits for others to batch with (µs; the server's 5 ms by default).
    max_queue_delay_us: int = 5000
    instance_count: int = 1  # Triton: copies of the model running side by side
    instance_kind: str = "auto"  # Triton: auto (GPU if any, else CPU), cpu or gpu
    # KServe: share of traffic sent to this revision when it replaces a running one (0-100);
    # None: the new revision takes all traffic at once.
    canary_percent: int | None = None
    # KServe: where the model repository is uploaded (s3://, gs://, pvc://...); None: a PVC
    # named maaslab-models holding it under the model's name.
    storage_uri: str | None = None
    replicas: int = 1  # Ray replicas / KServe pods (ignored with autoscale)
    # (min, max) replicas to autoscale between (Ray and KServe); None: a fixed `replicas`.
    autoscale: tuple[int, int] | None = None
    replica_cpus: float = 1.0  # Ray: CPUs each model replica reserves (placement, not threads)
    # The served name (Triton model, InferenceService, Ray app); None: from the model's name.
    model_name: str | None = None
    force: bool = False  # replace a non-empty `out` (atomically)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise MaaslabError(
                f"unknown target {self.target!r}: choose one of {', '.join(TARGETS)}"
            )
        for field, low, high in (
            ("max_batch_size", 1, 4096),
            ("max_queue_delay_us", 0, 10_000_000),
            ("instance_count", 1, 64),
            ("replicas", 1, 1000),
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise MaaslabError(
                    f"{field} must be a whole number in {low}..{high}, got {value!r}"
                )
        if self.preferred_batch_sizes is not None:
            sizes = tuple(self.preferred_batch_sizes)
            object.__setattr__(self, "preferred_batch_sizes", sizes)  # a list is taken as a tuple
            if not sizes or any(not 1 <= s <= self.max_batch_size for s in sizes):
                raise MaaslabError(
                    f"preferred batch sizes must lie in 1..max_batch_size ({self.max_batch_size}),"
                    f" got {sizes}: lower them or raise --max-batch-size"
                )
        if not 0 <= self.replica_cpus <= 1024:
            raise MaaslabError(f"replica_cpus must be 0..1024, got {self.replica_cpus}")
        if self.instance_kind not in INSTANCE_KINDS:
            raise MaaslabError(
                f"instance_kind must be one of {', '.join(INSTANCE_KINDS)}, "
                f"got {self.instance_kind!r}"
            )
        if self.canary_percent is not None and not 0 <= self.canary_percent <= 100:
            raise MaaslabError(f"the canary percent must be 0..100, got {self.canary_percent}")
        if self.autoscale is not None:
            low, high = tuple(self.autoscale)
            object.__setattr__(self, "autoscale", (low, high))
            if not 0 <= low <= high or high < 1:
                raise MaaslabError(
                    f"autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {low},{high}"
                )
        if self.model_name is not None and not NAME_PATTERN.fullmatch(self.model_name):
            raise MaaslabError(
                f"model name {self.model_name!r} will not do: use lowercase letters, digits and "
                "'-', starting with a letter (at most 63 characters, as Kubernetes names)"
            )

    @property
    def preferred(self) -> tuple[int, ...]:
        """The batch sizes Triton's dynamic batcher prefers."""
        return self.preferred_batch_sizes or (self.max_batch_size,)


@dataclass(frozen=True)
class Source:
    """The model an export reads: its name, its folder and what ONNX makes of it."""

    name: str  # as given: a shipped name or a folder path
    folder: Path | None  # its model folder (None: a shipped model without one)
    kind: str | None  # "digits" or "text" when ONNX carries it, else None
    reason: str  # why ONNX cannot carry it (empty when it can)

    @property
    def served_name(self) -> str:
        """The default served name: the model's name as a Kubernetes object name."""
        text = Path(self.name).name.lower()  # a folder by its own name
        text = re.sub(r"[^a-z0-9-]+", "-", text).strip("-")
        text = text if text[:1].isalpha() else f"model-{text}".rstrip("-")
        return text[:63].rstrip("-")


def _folder_kind(config: dict) -> tuple[str | None, str]:
    from maaslab.zoo import CAUSAL_LM_TYPES

    model_type = config["model_type"]
    if "compression" in config:
        base = config["compression"].get("base_model", "the model it was made from")
        return None, f"a compressed variant of {base} (export {base} itself)"
    if model_type in ("mlp", "cnn"):
        dataset = config.get("metadata", {}).get("dataset")
        if dataset == "digits":
            return "digits", ""
        return None, f"a {model_type} trained on {dataset or 'an unrecorded dataset'}, not digits"
    if model_type == "sentiment":
        return "text", ""
    if model_type in CAUSAL_LM_TYPES:
        return None, f"a {model_type} language model (its engine keeps a KV cache between steps)"
    return None, f"a {model_type!r} model"


def resolve_model(name: str) -> Source:
    """The model `name` names (a shipped model or a model folder), and whether ONNX carries it."""
    from maaslab.auto import LANGUAGE_MODELS, LOADERS, shipped
    from maaslab.registry import read_config

    if shipped(name):
        folder = MODELS_DIR / name
        folder = folder if folder.is_dir() else None
        if name in ONNX_SHIPPED:
            return Source(name, folder, ONNX_SHIPPED[name], "")
        if name in LANGUAGE_MODELS:
            return Source(name, folder, None, "a language model (its engine keeps a KV cache)")
        return Source(name, folder, None, NOT_ONNX.get(name, "not an ONNX classifier"))
    if Path(name).is_dir():
        folder = Path(name)
        kind, reason = _folder_kind(read_config(folder))  # refuses non-model folders
        return Source(name, folder, kind, reason)
    raise MaaslabError(
        f"unknown model {name!r}: choose one of {', '.join([*LOADERS, *LANGUAGE_MODELS])}, "
        "or give the path of a model folder (config.json + model.safetensors)"
    )


@dataclass(frozen=True)
class Written:
    """What a target's writer reports back to export_bundle."""

    checks: tuple[str, ...]  # each check passed, in words
    command: str  # the one command that runs the bundle
    max_abs_diff: float | None = None  # ONNX Runtime vs the MaaS Lab model, when exported


def write_readme(folder: Path, title: str, command: str, needs: str, body: str) -> None:
    """A bundle's README.md: the one command that runs it, what it needs, then the details."""
    text = (
        f"# {title}\n\nRun it:\n\n    {command}\n\nIt needs: {needs}\n\n{body.strip()}\n\n"
        "Written by `python -m maaslab export` (maaslab.scale.export).\n"
    )
    (folder / "README.md").write_text(text, encoding="utf-8")
