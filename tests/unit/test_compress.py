"""maaslab.compress: int8 and ONNX variants agree with fp32, the table is honest, exports load."""

import dataclasses
import threading

import numpy as np
import pytest
import torch
from torch import nn

from maaslab import MaaslabError
from maaslab.auto import load
from maaslab.compress import (
    build_variant,
    compare,
    export_onnx,
    export_variant,
    interleaved_latency,
    shap_difference,
    torch_dynamic_int8,
    variants_for,
)
from maaslab.compress import variants as variants_module
from maaslab.compress.distill import STUDENT_NAME
from maaslab.compress.splits import held_out
from maaslab.data import load_dataset
from maaslab.explain import Cancelled
from maaslab.registry import save_model
from maaslab.reviews import load_reviews, validation_split
from maaslab.zoo import DigitsClassifier, SentimentModel

# sentiment-minilm's accuracy on its 159 validation and 264 test reviews, measured when it was built
TEACHER_VAL, TEACHER_TEST = 0.8553, 0.8220
TEXTS = ["A fine film, warm and funny.", "Dull, long and badly acted.", "Not bad at all!"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def sentiment():
    return load("sentiment-minilm")


@pytest.fixture(scope="module")
def digits_table():
    return compare("digits-cnn", ["int8-dynamic", "onnx-int8"], repeats=2, shap_inputs=1)


def _logits(module, x):
    with torch.no_grad():
        return module(torch.as_tensor(x)).double().numpy()


def test_variants_apply_by_model_and_bad_names_are_refused():
    digits = variants_for("digits-cnn")
    assert digits[:4] == ["fp32", "int8-dynamic", "onnx-fp32", "onnx-int8"]
    assert "distilled" not in digits
    with pytest.raises(MaaslabError, match=r"'mini-gpt' cannot be compressed.*digits-cnn"):
        variants_for("mini-gpt")
    with pytest.raises(MaaslabError, match=r"'int4' not a variant of digits-cnn: choose from fp32"):
        compare("digits-cnn", ["int4"])
    with pytest.raises(MaaslabError, match="does not apply to digits-cnn"):
        build_variant("digits-cnn", "distilled")
    with pytest.raises(MaaslabError, match="repeats must be at least 1"):
        compare("digits-cnn", ["fp32"], repeats=-1)


def test_digits_variants_match_fp32_logits(digits):
    X = digits.X_test.astype(np.float32)
    ref = _logits(build_variant("digits-cnn", "fp32").module, X)
    onnx = _logits(build_variant("digits-cnn", "onnx-fp32").module, X)
    np.testing.assert_allclose(onnx, ref, atol=1e-4)  # same graph, same fp32 arithmetic
    for name in ("int8-dynamic", "onnx-int8"):
        out = _logits(build_variant("digits-cnn", name).module, X)
        # int8 rounding moves logits by a few percent of their range, rarely the answer
        assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max(), name
        assert (out.argmax(1) == ref.argmax(1)).mean() > 0.97, name


def test_sentiment_torch_int8_tracks_fp32(sentiment):
    model = sentiment.model
    ids, _ = model.encode(TEXTS)
    ref = _logits(model, ids)
    int8 = _logits(torch_dynamic_int8(model), ids)
    assert (int8.argmax(1) == ref.argmax(1)).all()
    # one scale per weight tensor: torch.ao's int8 moves MiniLM's logits the most
    assert np.abs(int8 - ref).max() < 0.4 * np.abs(ref).max()


def test_sentiment_onnx_int8_tracks_fp32_and_exports(tmp_path, sentiment):
    module = build_variant("sentiment-minilm", "onnx-int8").module
    ids, _ = sentiment.model.encode(TEXTS)
    ref = _logits(sentiment.model, ids)
    onnx = _logits(module, ids)
    assert (onnx.argmax(1) == ref.argmax(1)).all()
    # activations get one range per tensor: in a batch every review and its padding share it,
    # and these three together move the logits (up to 2.61) by 0.78 (torch.ao: 0.60)
    assert np.abs(onnx - ref).max() < 0.4 * np.abs(ref).max()
    # one review at a time, no padding: at most 0.37 of 2.48 (torch.ao: 1.57)
    for text in TEXTS:
        one, _ = sentiment.model.encode([text])
        alone, ref_one = _logits(module, one), _logits(sentiment.model, one)
        assert np.abs(alone - ref_one).max() < 0.2 * np.abs(ref_one).max(), text
    # the folder the server loads gives the variant's own answers
    folder = export_variant("sentiment-minilm", "onnx-int8", tmp_path / "s8")
    loaded = load(str(folder))
    assert isinstance(loaded, SentimentModel) and loaded.compression["runtime"] == "onnx-int8"
    expected = torch.softmax(torch.as_tensor(onnx), 1).numpy()
    np.testing.assert_allclose(loaded.predict(TEXTS).probabilities, expected, atol=1e-6)


def test_table_rows_are_measured(digits_table, digits):
    table = digits_table
    assert table.names == ["fp32", "int8-dynamic", "onnx-int8"]
    fp32 = table.row("fp32")
    assert table.split == "validation" and table.test_examples == table.examples
    n = table.examples  # fast mode: the first 100 of the validation and of the test split
    cnn = load("digits-cnn")
    for X, y, got in (
        (digits.X_val, digits.y_val, fp32.accuracy),
        (digits.X_test, digits.y_test, fp32.test_accuracy),
    ):
        assert got == pytest.approx(
            (cnn.predict(X[:n] * 16).probabilities.argmax(1) == y[:n]).mean()
        )
    assert fp32.accuracy_drop == 0 and fp32.speedup_1 == 1 and fp32.shap_difference == 0
    assert fp32.test_drop == 0
    for row in table.rows:
        assert row.error is None and row.latency_ms_1 > 0 and row.latency_ms_32 > 0
        assert row.accuracy_drop == pytest.approx((fp32.accuracy - row.accuracy) * 100)
        assert row.test_drop == pytest.approx((fp32.test_accuracy - row.test_accuracy) * 100)
        assert row.speedup_32 == pytest.approx(fp32.latency_ms_32 / row.latency_ms_32)
        assert 0 <= row.shap_difference < 0.5
    # int8 weights take about a quarter of the fp32 bytes (biases and scales stay fp32)
    assert table.row("int8-dynamic").size_mb < 0.5 * fp32.size_mb
    frame = table.frame()
    assert list(frame.index) == table.names and "speedup_1" in frame.columns
    assert table.best(100.0).speedup_1 == max(r.speedup_1 for r in table.rows)
    assert table.best(-1.0) is None


def test_fp32_accuracy_is_the_shipped_accuracy(sentiment):
    table = compare("sentiment-minilm", ["fp32"], repeats=1, examples=264, shap_inputs=0)
    row = table.row("fp32")
    # chosen on the 159 validation reviews, reported on the 264 test reviews
    assert table.split == "validation" and (table.examples, table.test_examples) == (159, 264)
    assert table.test_examples == len(load_reviews("test"))
    # the recipe stored assets.sentiment_accuracy(model) when it built the shipped folder
    assert row.test_accuracy == sentiment.metadata["test_accuracy"]["overall"]
    assert row.test_accuracy == pytest.approx(TEACHER_TEST, abs=1e-4)
    assert row.accuracy == pytest.approx(TEACHER_VAL, abs=1e-4)
    assert row.shap_difference is None and row.size_mb > 50  # every MiniLM weight, fp32


def test_a_failing_variant_is_reported_in_its_row(monkeypatch):
    def refuse(model, example, path):
        raise MaaslabError("ONNX export of CNN failed: the exporter refused this test model")

    monkeypatch.setattr(variants_module, "export_onnx", refuse)
    # seed 5: a cache key no other test builds, so the export really runs (and fails)
    table = compare("digits-cnn", ["onnx-fp32", "int8-dynamic"], repeats=1, shap_inputs=0, seed=5)
    broken = table.row("onnx-fp32")
    assert broken.error == "ONNX export of CNN failed: the exporter refused this test model"
    assert broken.accuracy is None and broken.latency_ms_1 is None
    assert table.row("int8-dynamic").error is None and table.row("int8-dynamic").accuracy > 0.9
    assert table.best(1.0) is not None


def test_the_exporter_refusing_a_model_gives_a_clear_error(tmp_path):
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if int(x.sum().item()) > 0 else x  # depends on the values: untraceable

    with pytest.raises(MaaslabError, match="ONNX export of DataDependent failed"):
        export_onnx(DataDependent(), torch.ones(2, 3), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_cancel_stops_the_comparison():
    cancel = threading.Event()
    stages = []

    def progress(stage, fraction):
        stages.append(stage)
        if stage.startswith("latency"):
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled"):
        compare("digits-cnn", ["int8-dynamic"], repeats=1, progress=progress, cancel=cancel)
    assert not any(s.startswith("SHAP") for s in stages)


@pytest.mark.parametrize("variant", ["int8-dynamic", "onnx-int8", "pruned-structured"])
def test_export_round_trip_digits(tmp_path, digits, variant):
    folder = export_variant("digits-cnn", variant, tmp_path / variant)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "model.safetensors"] + (["model.onnx"] if "onnx" in variant else [])
    )
    loaded = load(folder)
    assert isinstance(loaded, DigitsClassifier) and loaded.compression["variant"] == variant
    module = build_variant("digits-cnn", variant).module
    expected = torch.softmax(torch.as_tensor(_logits(module, digits.X_test)), 1).numpy()
    got = loaded.predict(digits.X_test * 16).probabilities
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(MaaslabError, match="already exists"):
        export_variant("digits-cnn", variant, folder)


def test_export_round_trip_structured_pruning_keeps_the_smaller_layers(tmp_path, monkeypatch):
    pytest.importorskip("maaslab.compress.prune")
    # No fine-tuning: this checks the folder format (shrunk FFN layers), not the pruning.
    monkeypatch.setitem(variants_module.FINETUNE_EPOCHS, "sentiment-minilm", 0)
    module = build_variant("sentiment-minilm", "pruned-structured", seed=6).module
    folder = export_variant("sentiment-minilm", "pruned-structured", tmp_path / "p", seed=6)
    variants_module.clear_cache()  # the unfine-tuned copy must not stand in for the real one
    width = module.encoder.encoder.layer[0].intermediate.dense.out_features
    assert width < 1536  # MiniLM's FFN has 1536 neurons; structured pruning removed some
    loaded = load(folder)
    assert loaded.model.encoder.encoder.layer[0].intermediate.dense.out_features == width
    ids, _ = module.encode(TEXTS)
    expected = torch.softmax(torch.as_tensor(_logits(module, ids)), 1).numpy()
    np.testing.assert_allclose(loaded.predict(TEXTS).probabilities, expected, atol=1e-6)


def test_auto_loads_plain_folders_and_refuses_unknown_names(tmp_path, digits):
    folder = save_model(load("digits-cnn").model, tmp_path / "cnn")
    assert isinstance(load(folder), DigitsClassifier)
    pixels = digits.X_test[:5] * 16
    np.testing.assert_array_equal(
        load(folder).predict(pixels).probabilities, load("digits-cnn").predict(pixels).probabilities
    )
    with pytest.raises(MaaslabError, match=r"unknown model 'nope'.*path of a model folder"):
        load("nope")
    with pytest.raises(MaaslabError, match=r"has no model\.safetensors"):
        load(tmp_path)


def test_latency_is_interleaved_round_robin():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    ms = interleaved_latency(calls, 3)
    assert set(ms) == {"a", "b", "c"} and all(v >= 0 for v in ms.values())
    timed = order[-9:]  # after the warm-up calls
    assert timed == ["a", "b", "c"] * 3


def test_shap_difference_is_relative_l1():
    ref = [np.array([1.0, -1.0]), np.array([0.5, 0.5])]
    assert shap_difference(ref, ref) == 0
    assert shap_difference([np.zeros(2), np.zeros(2)], ref) == pytest.approx(1.0)
    assert shap_difference([np.array([1.0, 0.0]), np.array([0.5, 0.5])], ref) == pytest.approx(0.25)


def test_held_out_inputs_are_fixed(digits):
    text = held_out("sentiment-minilm", shap_inputs=2)
    _, val = validation_split(load_reviews("train"), variants_module.VAL_FRACTION, seed=0)
    assert text.split == "validation" and text.inputs == list(val.texts)
    assert text.batch_32 == list(val.texts[:32]) and set(text.explained) <= set(val.texts)
    assert text.test_inputs == list(load_reviews("test").texts)
    assert len(text.explained) == 2 and all(len(t.split()) <= 20 for t in text.explained)
    pixels = held_out("digits-cnn", examples=10)
    assert pixels.inputs.shape == (10, 64) and pixels.batch_32.shape == (32, 64)
    # digits: everything but the report's test split is validation rows
    assert pixels.split == "validation"
    np.testing.assert_array_equal(pixels.batch_32, digits.X_val[:32])
    np.testing.assert_array_equal(pixels.inputs, digits.X_val[:10])
    np.testing.assert_array_equal(pixels.test_inputs, digits.X_test[:10])


def test_the_shipped_digits_cnn_never_trained_on_the_validation_rows():
    """The rows digits-cnn's variant is chosen on were held out by its recipe and by pruning."""
    from maaslab import assets

    cnn = load("digits-cnn")
    args = cnn.metadata["data_args"]
    assert (args["seed"], args["val_fraction"]) == (0, variants_module.VAL_FRACTION)
    assert assets.VAL_FRACTION == variants_module.VAL_FRACTION
    fine_tune = variants_module.training_data("digits-cnn", cnn.model)
    chosen_on = held_out("digits-cnn")
    np.testing.assert_array_equal(fine_tune.X_val, chosen_on.inputs)
    trained = {row.tobytes() for row in fine_tune.X_train}
    assert not any(row.tobytes() in trained for row in chosen_on.inputs)


def test_sentiment_models_never_trained_on_the_validation_reviews(sentiment):
    """The reviews sentiment-minilm's variant is chosen on were held out by its recipe, by its
    distilled student's and by pruning's fine-tuning."""
    from maaslab import assets
    from maaslab.paths import MODELS_DIR
    from maaslab.registry import read_metadata

    args = sentiment.metadata["data_args"]
    assert (args["seed"], args["val_fraction"]) == (0, variants_module.VAL_FRACTION)
    assert assets.VAL_FRACTION == variants_module.VAL_FRACTION
    student = read_metadata(MODELS_DIR / STUDENT_NAME)["distillation"]
    assert (student["seed"], student["val_fraction"]) == (0, variants_module.VAL_FRACTION)
    # the student shares the teacher's tokenizer: the same ids for the same reviews
    fine_tune = variants_module.training_data("sentiment-minilm", sentiment.model)
    chosen_on = held_out("sentiment-minilm")
    trained = {row[row != 0].tobytes() for row in fine_tune.X_train}
    ids, _ = sentiment.model.encode(chosen_on.inputs)
    assert len(ids) == 159 and not any(row[row != 0].tobytes() in trained for row in ids)


def test_the_choice_never_reads_the_test_split(monkeypatch):
    """compare(report_test=False) and the P5 verdict run with the test split sealed."""
    from sealed import Sealed

    from maaslab.compress import measure
    from maaslab.compress.verdict import comparison_table, conditions, p5_verdict

    real = measure.held_out

    def sealed(*args, **kwargs):
        data = real(*args, **kwargs)
        return dataclasses.replace(data, test_inputs=Sealed(), test_labels=Sealed())

    monkeypatch.setattr(measure, "held_out", sealed)
    table = compare("digits-cnn", ["int8-dynamic"], repeats=1, shap_inputs=1, report_test=False)
    assert table.failed == []  # a read of the seal inside a step would be an error in its row
    assert table.test_examples == 0 and all(r.test_accuracy is None for r in table.rows)
    verdict = p5_verdict(table)
    assert verdict.best is not None and verdict.split == "validation"
    assert "on validation" in verdict.text() and "test accuracy" not in verdict.text()
    assert "the test split was not read" in conditions(table)
    assert comparison_table(table)["test accuracy (%)"].isna().all()
    with pytest.raises(AssertionError, match="the test split was read"):  # the seal holds
        compare("digits-cnn", ["int8-dynamic"], repeats=1, shap_inputs=0)


def test_int8_weight_error_is_zero_on_the_grid_and_smaller_per_row():
    from maaslab.compress import int8_weight_error

    on_grid = torch.tensor([[-128.0, 0.0, 127.0], [3.0, -5.0, 7.0]]) * 0.01
    assert int8_weight_error(on_grid, 0.01) == pytest.approx(0.0, abs=1e-7)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 32, generator=g) * torch.logspace(-3, 0, 8).unsqueeze(1)  # uneven rows
    per_tensor = int8_weight_error(W, W.abs().max() / 127.5)
    per_row = int8_weight_error(W, W.abs().amax(dim=1, keepdim=True) / 127.5)
    assert 0 < per_row < per_tensor
    restored = torch.round(W / 0.5).clamp(-128, 127) * 0.5
    assert int8_weight_error(W, 0.5) == pytest.approx(float((restored - W).norm() / W.norm()))
