"""The P5 verdict and the checked export: one rule for the Compress page and lesson 12."""

import dataclasses

import numpy as np
import pytest

from maaslab.compress.checked_export import export_checked, export_folder
from maaslab.compress.measure import Comparison, VariantRow
from maaslab.compress.verdict import GOAL_SPEEDUP, MAX_DROP_POINTS, p5_verdict
from maaslab.errors import MaaslabError
from maaslab.paths import runs_dir


def comparison(*rows: tuple[str, float, float] | str) -> Comparison:
    """A Comparison of (name, speed-up at batch 1, accuracy drop) rows; a bare name failed."""
    made = [
        VariantRow(r, "", error="failed")
        if isinstance(r, str)
        else VariantRow(r[0], "", accuracy=0.9, accuracy_drop=r[2], speedup_1=r[1])
        for r in rows
    ]
    return Comparison("digits-cnn", made, repeats=1, examples=10, shap_inputs=0, threads=1)


def test_the_goal_is_met_short_or_not_beaten():
    assert (GOAL_SPEEDUP, MAX_DROP_POINTS) == (2.0, 1.0)
    met = p5_verdict(comparison(("fp32", 1.0, 0.0), ("onnx-int8", 2.5, 0.5), ("a", 3.0, 1.5)))
    assert met.met and met.outcome == "met" and met.best.name == "onnx-int8"
    assert met.text().endswith("2.50x at batch 1, +0.5 points on validation: goal met.")
    assert "**onnx-int8**" in met.text(markdown=True) and "**" not in met.text()
    short = p5_verdict(comparison(("fp32", 1.0, 0.0), ("int8-dynamic", 1.4, 0.0)))
    assert short.outcome == "short" and not short.met
    assert short.text().endswith("short of the 2x goal.")
    beaten = p5_verdict(comparison(("fp32", 1.0, 0.0), ("slow", 0.5, 0.0), "broken"))
    assert beaten.outcome == "fp32" and "no compressed variant beat fp32" in beaten.text()
    none = p5_verdict(comparison("fp32"))
    assert none.best is None and none.outcome == "none" and "No variant" in none.text()
    looser = p5_verdict(comparison(("fp32", 1.0, 0.0), ("a", 3.0, 1.5)), max_drop_points=2.0)
    assert looser.met and looser.best.name == "a"


def test_best_and_the_verdict_choose_on_validation_and_report_test():
    """Validation and test disagree: the choice follows validation, the test figure is shown."""
    rows = [
        VariantRow("fp32", "", accuracy=0.95, accuracy_drop=0.0, speedup_1=1.0),
        # within budget on validation, 3 points down on test: chosen, and its test drop shown
        VariantRow("onnx-int8", "", accuracy=0.945, accuracy_drop=0.5, speedup_1=2.5),
        # over budget on validation, none lost on test and faster: not chosen
        VariantRow("int8-dynamic", "", accuracy=0.92, accuracy_drop=3.0, speedup_1=4.0),
    ]
    tests = {"fp32": (0.96, 0.0), "onnx-int8": (0.93, 3.0), "int8-dynamic": (0.96, 0.0)}
    rows = [dataclasses.replace(r, test_accuracy=tests[r.name][0], test_drop=tests[r.name][1])
            for r in rows]  # fmt: skip
    c = Comparison("digits-cnn", rows, 1, 10, 0, 1, split="validation", test_examples=10)
    assert c.best(1.0).name == "onnx-int8" and c.best(0.1).name == "fp32"
    said = p5_verdict(c)
    assert said.best.name == "onnx-int8" and said.met and said.split == "validation"
    assert said.text() == (
        "P5 (≥ 2x faster than fp32 at batch 1, accuracy within 1 point): the best variant is "
        "onnx-int8, 2.50x at batch 1, +0.5 points on validation (test accuracy 93.0 %, +3.0 "
        "points): goal met."
    )
    # the same rows with validation and test swapped choose int8-dynamic: only validation counts
    swapped = [
        dataclasses.replace(
            r,
            accuracy=r.test_accuracy,
            accuracy_drop=r.test_drop,
            test_accuracy=r.accuracy,
            test_drop=r.accuracy_drop,
        )
        for r in rows
    ]
    assert p5_verdict(dataclasses.replace(c, rows=swapped)).best.name == "int8-dynamic"


def test_export_folder_takes_one_plain_name():
    assert export_folder("cnn-onnx") == runs_dir() / "exports" / "cnn-onnx"
    for bad in ("../escape", "a/b", "..", "", "-x"):
        with pytest.raises(MaaslabError, match="is not a folder name"):
            export_folder(bad)


def test_export_checked_loads_the_folder_back(tmp_path):
    from maaslab.auto import load
    from maaslab.data import DIGIT_PIXEL_MAX, load_dataset

    folder = tmp_path / "cnn"
    done = export_checked("digits-cnn", "fp32", folder, threads=1, examples=3)
    assert done.folder == folder and "config.json" in [name for name, _ in done.files]
    data = load_dataset("digits", seed=0)
    expected = load(folder).predict(data.X_test[:3] * DIGIT_PIXEL_MAX)
    assert done.predicted == list(expected.labels)
    assert done.labels.tolist() == data.y_test[:3].tolist()
    np.testing.assert_allclose(done.confidence, expected.probabilities.max(1), atol=1e-5)
    assert done.check().startswith("Loaded back with `auto.load`: test example 0 (label")
    with pytest.raises(MaaslabError, match="already exists"):
        export_checked("digits-cnn", "fp32", folder)
    assert export_checked("digits-cnn", "fp32", folder, overwrite=True).folder == folder


def test_the_table_a_page_shows_and_the_runs_conditions():
    from maaslab.compress.verdict import TABLE_FORMATS, comparison_table, conditions

    c = comparison(("fp32", 1.0, 0.0), "onnx-int8", ("int8-dynamic", 2.5, 0.4))
    assert c.measured == ["fp32", "int8-dynamic"] and c.failed == ["onnx-int8"]
    table = comparison_table(c)
    assert list(table.index) == ["fp32", "onnx-int8", "int8-dynamic"]
    assert table.columns[-1] == "error" and set(TABLE_FORMATS) == set(table.columns[:-1])
    assert table.loc["fp32", "accuracy (%)"] == pytest.approx(90.0)
    assert table.loc["int8-dynamic", "speed-up batch 1"] == 2.5
    assert np.isnan(table.loc["onnx-int8", "accuracy (%)"])
    assert table["error"].tolist() == ["", "failed", ""]
    c.seconds = 12.34
    said = conditions(c)
    assert "median of 1 calls" in said and "1 CPU thread(s)" in said
    assert "Accuracy and drop (what the choice reads) on 10 validation examples" in said
    assert "the test split was not read" in said and said.endswith("took 12.3 s.")
    assert np.isnan(table.loc["fp32", "test accuracy (%)"])
    c.test_examples = 10
    assert "test accuracy on 10 test examples, read once after every other number" in (
        conditions(c)
    )


def test_an_export_says_its_files_and_how_to_serve_it(tmp_path):
    from maaslab.compress.checked_export import CheckedExport

    folder = tmp_path / "my cnn"
    files = [("config.json", 0.001), ("model.safetensors", 0.25)]
    empty = np.array([])
    done = CheckedExport("digits-cnn", "fp32", folder, files, empty, [], empty, empty)
    assert done.files_table()["MB"].to_dict() == {"config.json": 0.001, "model.safetensors": 0.25}
    assert done.serve_command() == f"python -m maaslab serve --models '{folder.resolve()}'"
