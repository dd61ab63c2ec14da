"""A KServe InferenceService (serving.kserve.io/v1beta1) with its Triton model repository.

The manifest asks KServe for its Triton runtime (`modelFormat: triton`, Open Inference Protocol
v2), which downloads `storageUri` to the pod and serves it as a Triton model repository. So the
bundle holds that repository too (`model_repository/`, written and checked as the triton target
writes it): upload it to where `storageUri` points and the manifest points at something real.

    OUT/inferenceservice.yaml
    OUT/model_repository/<name>/config.pbtxt
    OUT/model_repository/<name>/1/model.onnx

With a canary percent the predictor carries `canaryTrafficPercent`: applied over a running
InferenceService, the new revision gets that share of the traffic and the last good one the rest.

The manifest is checked against SCHEMA, a small schema written here from KServe's v1beta1 API
reference (V1beta1InferenceService, ComponentExtensionSpec, ModelSpec, ModelFormat in KServe's
python/kserve/docs): the fields this export writes, their types and their allowed values. It is
a subset, not KServe's CRD: a field outside it is refused rather than guessed at.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from maaslab.errors import MaaslabError
from maaslab.scale.export_config import NAME_PATTERN, ExportConfig, Source, Written, write_readme
from maaslab.scale.export_triton import write_repository

MANIFEST_FILE = "inferenceservice.yaml"
REPOSITORY_DIR = "model_repository"
API_VERSION = "serving.kserve.io/v1beta1"
DEFAULT_PVC = "maaslab-models"  # the PersistentVolumeClaim the default storageUri names
# Where KServe's storage initializer can fetch a model from.
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "hdfs://", "webhdfs://", "https://", "http://")
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")  # ModelSpec.protocolVersion
# The model formats KServe's shipped serving runtimes declare (config/runtimes).
MODEL_FORMATS = (
    "triton", "onnx", "tensorrt", "tensorflow", "pytorch", "sklearn", "xgboost", "lightgbm",
    "huggingface", "pmml", "paddle", "mlflow",
)  # fmt: skip

# field -> (type, required); a dict type is a nested object checked the same way.
SCHEMA: dict[str, tuple[Any, bool]] = {
    "apiVersion": (str, True),
    "kind": (str, True),
    "metadata": (
        {"name": (str, True), "namespace": (str, False), "labels": (dict, False)},
        True,
    ),
    "spec": (
        {
            "predictor": (
                {
                    # ComponentExtensionSpec
                    "minReplicas": (int, False),
                    "maxReplicas": (int, False),
                    "canaryTrafficPercent": (int, False),
                    "containerConcurrency": (int, False),
                    "timeout": (int, False),
                    # ModelSpec
                    "model": (
                        {
                            "modelFormat": ({"name": (str, True), "version": (str, False)}, True),
                            "runtime": (str, False),
                            "storageUri": (str, True),
                            "protocolVersion": (str, False),
                            "runtimeVersion": (str, False),
                        },
                        True,
                    ),
                },
                True,
            )
        },
        True,
    ),
}


def _check_object(value: object, schema: dict[str, tuple[Any, bool]], where: str) -> None:
    if not isinstance(value, dict):
        raise MaaslabError(f"{where} must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - set(schema))
    if unknown:
        raise MaaslabError(f"{where} has fields outside the v1beta1 schema checked: {unknown}")
    for key, (kind, required) in schema.items():
        path = f"{where}.{key}"
        if key not in value:
            if required:
                raise MaaslabError(f"{path} is missing (required)")
            continue
        item = value[key]
        if isinstance(kind, dict):
            _check_object(item, kind, path)
        elif (isinstance(item, bool) and kind is not bool) or not isinstance(item, kind):
            raise MaaslabError(f"{path} must be {kind.__name__}, got {item!r}")


def check_manifest(doc: object) -> list[str]:
    """Check an InferenceService manifest against SCHEMA and KServe's rules; the checks passed."""
    _check_object(doc, SCHEMA, "InferenceService")
    assert isinstance(doc, dict)
    if doc["apiVersion"] != API_VERSION or doc["kind"] != "InferenceService":
        raise MaaslabError(
            f"expected apiVersion {API_VERSION} and kind InferenceService, got "
            f"{doc['apiVersion']} {doc['kind']}"
        )
    name = doc["metadata"]["name"]
    if not NAME_PATTERN.fullmatch(name):
        raise MaaslabError(f"metadata.name {name!r} is not a DNS-1035 label (a-z, 0-9, '-')")
    predictor = doc["spec"]["predictor"]
    model = predictor["model"]
    if model["modelFormat"]["name"] not in MODEL_FORMATS:
        raise MaaslabError(f"no KServe runtime serves model format {model['modelFormat']['name']}")
    if not model["storageUri"].startswith(STORAGE_SCHEMES):
        raise MaaslabError(
            f"storageUri {model['storageUri']!r} must start with one of "
            f"{', '.join(STORAGE_SCHEMES)}"
        )
    if model.get("protocolVersion", "v1") not in PROTOCOLS:
        raise MaaslabError(f"protocolVersion must be one of {', '.join(PROTOCOLS)}")
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None and not 0 <= canary <= 100:
        raise MaaslabError(f"canaryTrafficPercent must be 0..100, got {canary}")
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 1)
    if low < 0 or high < max(low, 1):
        raise MaaslabError(
            f"replicas must satisfy 0 <= minReplicas <= maxReplicas, got {low}..{high}"
        )
    return [
        f"{MANIFEST_FILE} loads as YAML and fits the v1beta1 InferenceService schema "
        "(a subset written from KServe's API reference: fields, types, allowed values)"
    ]


def manifest(name: str, config: ExportConfig) -> dict[str, Any]:
    """The InferenceService for the repository served as `name`."""
    low, high = config.autoscale or (config.replicas, config.replicas)
    predictor: dict[str, Any] = {"minReplicas": low, "maxReplicas": high}
    if config.canary_percent is not None:
        predictor["canaryTrafficPercent"] = config.canary_percent
    predictor["model"] = {
        "modelFormat": {"name": "triton"},  # the storage holds a Triton model repository
        "protocolVersion": "v2",
        "storageUri": config.storage_uri or f"pvc://{DEFAULT_PVC}/{name}",
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": predictor},
    }


def write_bundle(
    source: Source, config: ExportConfig, name: str, staging: Path, final: Path
) -> Written:
    """The kserve target: the manifest, its model repository and README in `staging`."""
    checks, worst = write_repository(source, config, name, staging / REPOSITORY_DIR)
    doc = manifest(name, config)
    header = f"# KServe InferenceService for {name} (python -m maaslab export).\n"
    (staging / MANIFEST_FILE).write_text(
        header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8"
    )
    checks += check_manifest(yaml.safe_load((staging / MANIFEST_FILE).read_text(encoding="utf-8")))
    uri = doc["spec"]["predictor"]["model"]["storageUri"]
    command = f"kubectl apply -f {shlex.quote(str(final / MANIFEST_FILE))}"
    canary = (
        f"`canaryTrafficPercent: {config.canary_percent}`: applied over a running "
        f"InferenceService {name}, this revision gets {config.canary_percent}% of the traffic "
        "and the last good one the rest; raise it (or remove it) to promote, set 0 to roll back."
        if config.canary_percent is not None
        else "No canary: the first apply takes all the traffic. Export again with --canary "
        "PERCENT to roll a new model out to a share of the traffic."
    )
    write_readme(
        staging,
        f"KServe InferenceService: {name}",
        command,
        "a Kubernetes cluster with KServe and its Triton runtime (kserve-tritonserver), and "
        f"the contents of `{REPOSITORY_DIR}/` copied to {uri} before you apply (so that "
        f"{uri}/{name}/config.pbtxt exists); for a bucket, e.g. `aws s3 cp --recursive "
        f"{final / REPOSITORY_DIR} s3://BUCKET/PATH`, export with `--storage-uri "
        "s3://BUCKET/PATH`.",
        f"{canary}\n\nRequests use the Open Inference Protocol (v2): "
        f"`POST /v2/models/{name}/infer` on the InferenceService's URL "
        f"(`kubectl get inferenceservice {name}`).\n\n"
        "The manifest was checked by loading it and validating it against a small schema "
        "written from KServe's v1beta1 API reference (maaslab.scale.export_kserve.SCHEMA), "
        "not against the cluster's own CRD.",
    )
    return Written(tuple(checks), command, worst)
