"""Export bundles (lesson 17): a model handed to an engine that already runs at scale.

`export_bundle(ExportConfig(model, target, out))` writes one folder and checks it before it
appears (the folder is staged and renamed into place, so a failed export leaves nothing):

- triton: a Triton model repository, `OUT/<name>/config.pbtxt` + `OUT/<name>/1/model.onnx`
  (maaslab.scale.export_triton). The ONNX graph is the served contract in one piece: for digits,
  pixels on the 0-16 scale in and probabilities out, as `python -m maaslab serve` answers.
- kserve: an InferenceService manifest (serving.kserve.io/v1beta1) with that model repository
  beside it for its storageUri (maaslab.scale.export_kserve).
- ray: a Ray Serve config file in `serve deploy` format that runs MaaS Lab's own routes on a
  Ray cluster (maaslab.scale.export_ray).

Each bundle's README.md says the one command that runs it there and what that needs.
Triton and KServe take what ONNX can carry: the digits classifiers and the sentiment models.
Language models, mini-gpt and the embedder go to Ray, which runs MaaS Lab's own engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maaslab.errors import MaaslabError
from maaslab.registry import atomic_folder
from maaslab.scale import export_kserve, export_ray, export_triton
from maaslab.scale.export_config import ONNX_TARGETS, TARGETS, ExportConfig, resolve_model

__all__ = ["TARGETS", "ExportConfig", "ExportResult", "export_bundle", "resolve_model"]
WRITERS = {
    "triton": export_triton.write_bundle,
    "kserve": export_kserve.write_bundle,
    "ray": export_ray.write_bundle,
}


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and what it checked."""

    out: Path  # the bundle folder
    target: str  # triton, kserve or ray
    model_name: str  # the name it is served under
    files: tuple[str, ...]  # every file written, relative to `out`
    checks: tuple[str, ...]  # each check passed, in words
    command: str  # the one command that runs the bundle (also in its README.md)
    max_abs_diff: float | None  # ONNX Runtime vs the MaaS Lab model (None: no graph exported)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MaaslabError(f"{out} is a file: give a new or empty folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MaaslabError(
            f"{out} is not empty: give a new or empty folder, or pass --force to replace it"
        )


def export_bundle(config: ExportConfig) -> ExportResult:
    """Write and check the bundle `config` asks for; nothing is left behind if a step fails.

    Parameters
    ----------
    config : the model, the target (triton, kserve, ray), the folder and the engine's options.
    """
    source = resolve_model(config.model)
    if config.target in ONNX_TARGETS and source.kind is None:
        raise MaaslabError(
            f"{config.model} is {source.reason}: Triton and KServe receive ONNX graphs of the "
            "digits and sentiment classifiers only; export it with --to ray, which runs MaaS "
            "Lab's own engine"
        )
    name = config.model_name or source.served_name
    out = Path(config.out)
    _check_out(out, config.force)
    writer = WRITERS[config.target]
    with atomic_folder(out, overwrite=True) as staging:
        # The README names where the bundle will be, not where it is being staged.
        written = writer(source, config, name, staging, out.resolve())
        files = tuple(
            sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        )
    return ExportResult(
        out=out,
        target=config.target,
        model_name=name,
        files=files,
        checks=written.checks,
        command=written.command,
        max_abs_diff=written.max_abs_diff,
    )
