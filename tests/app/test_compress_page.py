"""The Compress page through AppTest: variants measured as the backend measures them, failures in
their rows, Cancel, and an exported folder that loads and predicts."""

import time

import numpy as np
import pytest

import maaslab.compress.measure as measure
from maaslab import auto
from maaslab.compress import compare
from maaslab.errors import MaaslabError

DIGITS = ["int8-dynamic", "onnx-fp32"]


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    """Exports go to a fresh runs folder, never the repository's."""
    monkeypatch.setenv("MAASLAB_RUNS", str(tmp_path))
    return tmp_path


def finish(at, timeout=240):
    """Rerun until the background comparison is done, as the page's 0.5 s poll would."""
    deadline = time.time() + timeout
    while "compress.task" in at.session_state and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    assert "compress.task" not in at.session_state, "the comparison did not finish"
    return at


def compared(open_page, model, variants, repeats=2, shap=0):
    at = open_page("compress")
    at.selectbox(key="compress.model").set_value(model).run()
    at.multiselect(key=f"compress.variants.{model}").set_value(variants).run()
    at.number_input(key="compress.repeats").set_value(repeats).run()
    at.number_input(key="compress.shap").set_value(shap).run()
    at.button(key="compress.go").click().run()
    return finish(at)


def test_the_page_renders_with_cheap_defaults(open_page, page_text):
    at = open_page("compress")
    assert at.title[0].value == "Compress"
    assert at.selectbox(key="compress.model").value == "digits-cnn"
    assert at.multiselect(key="compress.variants.digits-cnn").value == ["int8-dynamic", "onnx-int8"]
    assert "fp32" not in at.multiselect(key="compress.variants.digits-cnn").options
    assert "press Compare" in page_text(at) and not at.table


def test_digits_table_is_the_backends_and_the_export_loads(open_page, page_text, runs):
    at = compared(open_page, "digits-cnn", DIGITS, shap=1)
    assert not at.exception and not at.error, [e.value for e in at.error]
    got = at.session_state["compress.result"]
    shown = at.table[0].value
    assert list(shown.index) == ["fp32", *DIGITS]
    for row in got.rows:  # every number shown is the Comparison's (rounded for display)
        line = shown.loc[row.name]
        assert line["accuracy (%)"] == pytest.approx(100 * row.accuracy, abs=1e-3)
        assert line["test accuracy (%)"] == pytest.approx(100 * row.test_accuracy, abs=1e-3)
        assert line["ms batch 1"] == pytest.approx(row.latency_ms_1, abs=1e-3)
        assert line["speed-up batch 32"] == pytest.approx(row.speedup_32, abs=1e-3)
        assert line["MB on disk"] == pytest.approx(row.size_mb, abs=1e-3)
        assert line["SHAP difference"] == pytest.approx(row.shap_difference, abs=1e-3)
        assert line["error"] == ""
    # accuracy is deterministic: the same call in-process gives the same numbers
    again = compare("digits-cnn", ["fp32", *DIGITS], repeats=1, shap_inputs=0, seed=0, threads=1)
    assert [r.accuracy for r in again.rows] == [r.accuracy for r in got.rows]
    assert "P5" in page_text(at) and "the best variant is" in page_text(at)
    # the choice reads the validation digits; the test split is the report's
    assert got.split == "validation" and "points on validation (test accuracy" in page_text(at)
    assert "on 100 validation examples" in page_text(at)  # the caption (fast mode: 100)
    assert len(at.get("plotly_chart")) == 2

    # export: a bad name and an existing folder get messages, a good one writes a loadable folder
    at.selectbox(key="compress.export.variant").set_value("onnx-fp32").run()
    name_box = at.text_input(key="compress.export.name.digits-cnn.onnx-fp32")
    assert name_box.value == "digits-cnn-onnx-fp32"
    for bad in ("../escape", "a/b", ".."):
        name_box.set_value(bad).run()
        at.button(key="compress.export.go").click().run()
        assert "is not a folder name" in page_text(at) and not at.exception
    assert not (runs / "exports").exists() and not (runs.parent / "escape").exists()
    name_box.set_value("cnn-onnx").run()
    at.button(key="compress.export.go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    folder = runs / "exports" / "cnn-onnx"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.onnx",
        "model.safetensors",
    ]
    assert f"python -m maaslab serve --models {folder.resolve()}" in at.code[0].value
    assert "Loaded back with `auto.load`" in page_text(at)
    from maaslab.data import load_dataset

    data = load_dataset("digits", seed=0)
    pred = auto.load(folder).predict(data.X_test[:1] * 16)
    assert f"predicted {pred.labels[0]}" in page_text(at)
    at.button(key="compress.export.go").click().run()
    assert "already exists" in page_text(at)
    at.checkbox(key="compress.export.overwrite").check().run()
    at.button(key="compress.export.go").click().run()
    assert not at.error and folder.is_dir()


def test_a_failing_variant_reports_in_its_row(open_page, page_text, monkeypatch):
    real = measure.build_variant

    def build(model_name, variant, **kw):
        if variant == "onnx-int8":
            raise MaaslabError("ONNX export failed: this graph cannot be exported")
        return real(model_name, variant, **kw)

    monkeypatch.setattr(measure, "build_variant", build)
    at = compared(open_page, "digits-cnn", ["int8-dynamic", "onnx-int8"])
    shown = at.table[0].value
    assert shown.loc["onnx-int8", "error"] == "ONNX export failed: this graph cannot be exported"
    assert np.isnan(shown.loc["onnx-int8", "accuracy (%)"])
    assert shown.loc["int8-dynamic", "accuracy (%)"] > 90 and shown.loc["fp32", "error"] == ""
    assert "Not measured: onnx-int8" in page_text(at) and not at.exception


def test_cancel_stops_a_comparison(open_page, page_text):
    at = open_page("compress")
    at.multiselect(key="compress.variants.digits-cnn").set_value(["int8-dynamic"]).run()
    at.number_input(key="compress.repeats").set_value(200).run()
    at.number_input(key="compress.shap").set_value(5).run()
    at.button(key="compress.go").click().run()
    assert at.button(key="compress.go").disabled and len(at.get("progress")) == 1
    at.button(key="compress.cancel").click().run()
    finish(at)
    assert "the comparison was cancelled" in page_text(at) and not at.exception
    assert "compress.result" not in at.session_state


def test_sentiment_int8(open_page, page_text):
    at = compared(open_page, "sentiment-minilm", ["int8-dynamic"], repeats=1)
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = at.table[0].value
    assert list(shown.index) == ["fp32", "int8-dynamic"]
    # first 100 validation reviews (fast mode): fp32 85 %, torch.ao's per-tensor int8 79 %
    assert shown["accuracy (%)"].between(70, 100).all()
    # chosen on the validation reviews, the test reviews' accuracy beside it for the report
    assert shown["test accuracy (%)"].between(70, 100).all()  # 83 % and 82 % there
    assert "points on validation" in page_text(at) and "none are held out" not in page_text(at)
    # int8 Linear weights are a quarter of fp32's; the fp32 embedding table stays as it is
    assert shown.loc["int8-dynamic", "MB on disk"] < 0.75 * shown.loc["fp32", "MB on disk"]
