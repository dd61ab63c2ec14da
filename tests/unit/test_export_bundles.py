"""maaslab.scale.export: Triton, KServe and Ray Serve bundles, validated by the real parsers.

Triton: config.pbtxt parsed by protobuf's text_format into tritonclient's ModelConfig, and the
ONNX file run in ONNX Runtime against the MaaS Lab model. KServe: the manifest against the
v1beta1 schema. Ray: the config file through Ray's own ServeDeploySchema.
"""

import shutil

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from maaslab import MaaslabError
from maaslab.__main__ import main
from maaslab.auto import load
from maaslab.models import build_model
from maaslab.paths import MODELS_DIR
from maaslab.registry import save_model
from maaslab.scale import export_triton
from maaslab.scale.export import ExportConfig, export_bundle
from maaslab.scale.export_kserve import check_manifest
from maaslab.scale.export_ray import check_serve_config
from maaslab.scale.export_triton import check_config, parse_config

ATOL = 1e-4  # float32 probabilities: ONNX Runtime and torch differ by ~1e-7 here


def _model_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _ort(path, name, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {name: x})[0]


@pytest.fixture(scope="module")
def cnn_triton(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "triton"
    return export_bundle(ExportConfig("digits-cnn", "triton", out))


@pytest.fixture(scope="module")
def cnn_kserve(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "kserve"
    config = ExportConfig(
        "digits-cnn", "kserve", out, canary_percent=20, storage_uri="s3://models/digits"
    )
    return export_bundle(config)


def test_triton_repository_layout_and_config(cnn_triton):
    out = cnn_triton.out
    assert set(cnn_triton.files) == {
        "README.md",
        "digits-cnn/config.pbtxt",
        "digits-cnn/1/model.onnx",
    }
    parsed = _model_config(out / "digits-cnn" / "config.pbtxt")
    assert (parsed.name, parsed.platform, parsed.max_batch_size) == (
        "digits-cnn",
        "onnxruntime_onnx",
        32,
    )
    (pixels,) = parsed.input
    (probabilities,) = parsed.output
    # the batch dimension is max_batch_size's, not in dims
    assert (pixels.name, pixels.data_type, list(pixels.dims)) == (
        "pixels",
        model_config_pb2.TYPE_FP32,
        [64],
    )
    assert (probabilities.name, list(probabilities.dims)) == ("probabilities", [10])
    assert list(parsed.dynamic_batching.preferred_batch_size) == [32]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 5000
    assert parsed.instance_group[0].count == 1
    readme = (out / "README.md").read_text()
    assert f"tritonserver --model-repository={out.resolve()}" in readme
    assert cnn_triton.command in readme
    assert cnn_triton.max_abs_diff is not None and cnn_triton.max_abs_diff <= ATOL


def test_triton_graph_answers_like_the_server(cnn_triton):
    # pixels on the 0-16 scale in, probabilities out: what `maaslab serve` answers
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, size=(3, 64)).astype(np.float32)
    got = _ort(cnn_triton.out / "digits-cnn" / "1" / "model.onnx", "pixels", x)
    want = load("digits-cnn").predict(x).probabilities
    np.testing.assert_allclose(got, want, atol=ATOL)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_broken_config_pbtxt_fails_the_parse(cnn_triton):
    folder = cnn_triton.out / "digits-cnn"
    text = (folder / "config.pbtxt").read_text()
    onnx_path = folder / "1" / "model.onnx"
    assert len(check_config(text, onnx_path)) == 2
    for broken in (
        text.replace("data_type: TYPE_FP32", "data_type: TYPE_FLOAT32", 1),  # no such enum
        text.replace("max_batch_size: 32", 'max_batch_size: "32"'),  # a string for an int
        text.replace("max_batch_size: 32", "max_batch: 32"),  # no such field
    ):
        with pytest.raises(MaaslabError, match="not a Triton ModelConfig"):
            parse_config(broken)
    # parses, but disagrees with the graph it serves
    with pytest.raises(MaaslabError, match="declares inputs"):
        check_config(text.replace("dims: [ 64 ]", "dims: [ 63 ]"), onnx_path)
    with pytest.raises(MaaslabError, match="exceed max_batch_size"):
        check_config(
            text.replace("preferred_batch_size: [ 32 ]", "preferred_batch_size: [ 64 ]"), onnx_path
        )


def test_mlp_triton_options_reach_the_config(tmp_path):
    config = ExportConfig(
        "digits-mlp",
        "triton",
        tmp_path / "repo",
        max_batch_size=16,
        preferred_batch_sizes=(4, 16),
        max_queue_delay_us=250,
        instance_count=2,
        instance_kind="cpu",
        model_name="digits",
    )
    result = export_bundle(config)
    parsed = _model_config(tmp_path / "repo" / "digits" / "config.pbtxt")
    assert result.model_name == parsed.name == "digits"
    assert parsed.max_batch_size == 16
    assert list(parsed.dynamic_batching.preferred_batch_size) == [4, 16]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    group = parsed.instance_group[0]
    assert (group.count, group.kind) == (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)


def test_text_model_goes_to_triton_with_token_ids(tmp_path):
    result = export_bundle(ExportConfig("sentiment-minilm-student", "triton", tmp_path / "r"))
    folder = tmp_path / "r" / "sentiment-minilm-student"
    parsed = _model_config(folder / "config.pbtxt")
    (ids,) = parsed.input
    assert (ids.name, ids.data_type, list(ids.dims)) == (
        "input_ids",
        model_config_pb2.TYPE_INT64,
        [-1],  # any text length
    )
    wrapper = load("sentiment-minilm-student")
    texts = ["Loved it.", "A slow, dull and far too long film with nothing to say."]
    x, _ = wrapper.model.encode(texts)
    got = _ort(folder / "1" / "model.onnx", "input_ids", x)
    np.testing.assert_allclose(got, wrapper.predict(texts).probabilities, atol=ATOL)
    assert result.max_abs_diff <= ATOL


def test_kserve_manifest_and_its_repository(cnn_kserve):
    out = cnn_kserve.out
    doc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["kind"] == "InferenceService"
    assert doc["metadata"]["name"] == "digits-cnn"
    predictor = doc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"] == {
        "modelFormat": {"name": "triton"},
        "protocolVersion": "v2",
        "storageUri": "s3://models/digits",
    }
    # storageUri's content is beside it, and it is a valid Triton repository
    parsed = _model_config(out / "model_repository" / "digits-cnn" / "config.pbtxt")
    assert parsed.name == "digits-cnn"
    assert (out / "model_repository" / "digits-cnn" / "1" / "model.onnx").is_file()
    assert (
        f"kubectl apply -f {out.resolve() / 'inferenceservice.yaml'}"
        in (out / "README.md").read_text()
    )


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "predictor", "canaryTrafficPercent"), 150, "0..100"),
        (("spec", "predictor", "canaryTrafficPercent"), "20", "must be int"),
        (("spec", "predictor", "minReplicas"), True, "must be int"),
        (("spec", "predictor", "model", "storageUri"), "/tmp/models", "must start with"),
        (("spec", "predictor", "model", "protocolVersion"), "v3", "protocolVersion"),
        (("metadata", "name"), "Digits_CNN", "DNS-1035"),
        (("apiVersion",), "serving.kserve.io/v1alpha2", "expected apiVersion"),
        (("spec", "predictor", "model", "storageURI"), "s3://x", "outside the v1beta1"),
    ],
)
def test_kserve_schema_refuses_broken_manifests(cnn_kserve, path, value, message):
    doc = yaml.safe_load((cnn_kserve.out / "inferenceservice.yaml").read_text())
    assert check_manifest(doc)
    where = doc
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    with pytest.raises(MaaslabError, match=message):
        check_manifest(doc)


def test_kserve_schema_needs_a_storage_uri(cnn_kserve):
    doc = yaml.safe_load((cnn_kserve.out / "inferenceservice.yaml").read_text())
    del doc["spec"]["predictor"]["model"]["storageUri"]
    with pytest.raises(MaaslabError, match="storageUri is missing"):
        check_manifest(doc)


def test_ray_config_validates_with_rays_schema(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    result = export_bundle(
        ExportConfig(
            "digits-cnn", "ray", tmp_path / "ray", autoscale=(1, 4), max_queue_delay_us=2000
        )
    )
    doc = yaml.safe_load((tmp_path / "ray" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    (app,) = schema.applications
    assert app.import_path == "maaslab.scale.ray_serve:app_builder"
    assert app.route_prefix == "/"
    assert app.args == {
        "models": ["digits-cnn"],
        "replicas": 1,
        "autoscale": [1, 4],
        "max_batch_size": 32,
        "batch_timeout_ms": 2.0,
    }
    assert [d.name for d in app.deployments] == ["digits-cnn"]
    assert result.command == f"serve deploy {(tmp_path / 'ray').resolve() / 'serve_config.yaml'}"
    assert result.command in (tmp_path / "ray" / "README.md").read_text()
    assert result.max_abs_diff is None


def test_ray_check_refuses_what_ray_would_drop_or_refuse(tmp_path):
    export_bundle(ExportConfig("digits-cnn", "ray", tmp_path / "ray"))
    good = yaml.safe_load((tmp_path / "ray" / "serve_config.yaml").read_text())

    def broken(edit):
        doc = yaml.safe_load(yaml.safe_dump(good))
        edit(doc["applications"][0])
        return doc

    cases = [
        (lambda app: app.update(name=""), "ServeDeploySchema refuses"),
        (lambda app: app.update(import_path="a:b:c"), "ServeDeploySchema refuses"),
        (lambda app: app["deployments"][0].update(num_replica=2), "would ignore"),  # a typo
        (lambda app: app["args"].pop("replicas"), "args must hold"),
        (lambda app: app["args"].update(replicas="2"), "wrong type"),
    ]
    for edit, message in cases:
        with pytest.raises(MaaslabError, match=message):
            check_serve_config(broken(edit))


def test_language_models_and_folders_go_to_ray(tmp_path):
    export_bundle(ExportConfig("mini-llama", "ray", tmp_path / "llama"))
    doc = yaml.safe_load((tmp_path / "llama" / "serve_config.yaml").read_text())
    # a language model's replicas run the engine: a deployment of its own, as a tensor model's
    deployments = doc["applications"][0]["deployments"]
    assert deployments == [{"name": "mini-llama", "ray_actor_options": {"num_cpus": 1.0}}]
    export_bundle(ExportConfig("mini-gpt", "ray", tmp_path / "gpt"))
    doc = yaml.safe_load((tmp_path / "gpt" / "serve_config.yaml").read_text())
    assert doc["applications"][0]["deployments"] == []  # the ingress answers mini-gpt
    folder = tmp_path / "My_Digits"
    shutil.copytree(MODELS_DIR / "digits-mlp", folder)
    result = export_bundle(ExportConfig(str(folder), "ray", tmp_path / "folder"))
    app = yaml.safe_load((tmp_path / "folder" / "serve_config.yaml").read_text())["applications"][0]
    assert result.model_name == app["name"] == "my-digits"
    assert app["args"]["models"] == [str(folder.resolve())]
    assert app["deployments"][0]["name"] == "My_Digits"  # the server's name for a folder


def test_a_failed_check_leaves_nothing(tmp_path, monkeypatch):
    def unfaithful(*args, **kwargs):
        raise MaaslabError("model.onnx differs from digits-mlp")

    monkeypatch.setattr(export_triton, "check_outputs", unfaithful)
    with pytest.raises(MaaslabError, match="differs"):
        export_bundle(ExportConfig("digits-mlp", "triton", tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its staging folder


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "onnx"}, "unknown target"),
        ({"canary_percent": 101}, "0..100"),
        ({"autoscale": (3, 1)}, "MIN <= MAX"),
        ({"preferred_batch_sizes": (64,)}, "max_batch_size"),
        ({"model_name": "Digits_CNN"}, "lowercase"),
        ({"max_batch_size": 0}, "1..4096"),
    ],
)
def test_config_refuses_bad_options(tmp_path, kwargs, message):
    values = {"model": "digits-cnn", "target": "triton", "out": tmp_path, **kwargs}
    with pytest.raises(MaaslabError, match=message):
        ExportConfig(**values)


def test_cli_happy_path(tmp_path, capsys):
    out = tmp_path / "bundle"
    code = main(["export", "digits-cnn", "--to", "ray", str(out), "--replicas", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {out}: ray bundle of digits-cnn" in printed
    assert "checked: serve_config.yaml validates with Ray's ServeDeploySchema" in printed
    assert f"run it: serve deploy {out.resolve() / 'serve_config.yaml'}" in printed
    doc = yaml.safe_load((out / "serve_config.yaml").read_text())
    assert doc["applications"][0]["args"]["replicas"] == 2


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    moons = build_model("mlp", in_features=2, hidden=(4,), out_features=2)
    save_model(moons, tmp_path / "moons-mlp", metadata={"dataset": "moons"})
    cases = [
        (["nope", "--to", "ray"], "unknown model 'nope'"),
        (["mini-llama", "--to", "triton"], "export it with --to ray"),
        (["minilm-embed", "--to", "kserve"], "an embedding model"),
        ([str(tmp_path / "moons-mlp"), "--to", "triton"], "trained on moons"),
        (["digits-cnn", "--to", "triton", "--canary", "300"], "0..100"),
        (["digits-cnn", "--to", "ray", "--autoscale", "0,3"], "1 <= MIN <= MAX"),
    ]
    for argv, message in cases:
        out = tmp_path / "out"
        assert main(["export", *argv[:1], str(out), *argv[1:]]) == 2
        err = capsys.readouterr().err
        assert err.startswith("maaslab export: error: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists()


def test_cli_refuses_a_non_empty_out_unless_forced(tmp_path, capsys):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", "digits-cnn", "--to", "ray", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"  # untouched
    assert main(["export", "digits-cnn", "--to", "ray", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "serve_config.yaml"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine without --force
    assert main(["export", "digits-cnn", "--to", "ray", str(tmp_path / "empty")]) == 0
