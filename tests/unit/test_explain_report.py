"""The trust table of an explanation report: what the Explain page and lesson 11 both show."""

import pytest

from maaslab.data import load_dataset
from maaslab.explain import build_report, explainable
from maaslab.explain.report import trust_table


@pytest.fixture(scope="module")
def report():
    """deep_shap and gradient_shap on one test digit, with stability."""
    x = load_dataset("digits", seed=0).X_test[0]
    return build_report(
        explainable("digits-cnn"), x, ["deep_shap", "gradient_shap"], with_stability=True
    )


def test_one_row_per_method_with_the_reports_numbers(report):
    table = report.trust_table()
    assert list(table.index) == ["DeepSHAP", "GradientSHAP"]
    assert list(table.columns) == [
        "deletion AUC (lower is better)",
        "random order",
        "insertion AUC (higher is better)",
        "random order ",
        "evaluations",
        "seconds",
        "rank agreement across seeds",
    ]
    f = report.faithfulness["deep_shap"]
    row = table.loc["DeepSHAP"]
    assert row["deletion AUC (lower is better)"] == round(f.deletion.auc, 3)
    assert row["random order "] == round(f.random_insertion.auc, 3)
    assert row["evaluations"] == report.attributions["deep_shap"].evaluations
    assert row["rank agreement across seeds"] == pytest.approx(1.0)  # DeepSHAP does not sample


def test_the_table_without_a_report_and_the_agreement_pairs(report):
    bare = trust_table(report.attributions, report.faithfulness)
    assert "rank agreement across seeds" not in bare.columns and len(bare) == 2
    pairs = report.agreement_table()
    assert list(pairs.index) == ["DeepSHAP vs GradientSHAP"]
    assert pairs["agreement"].iloc[0] == round(report.agreement[("deep_shap", "gradient_shap")], 3)


def test_what_the_page_writes_under_each_method(report):
    attr = report.attributions["deep_shap"]
    line = attr.summary()
    assert line.startswith(f"{attr.evaluations:,} model evaluations · ")
    assert f"base {attr.base_value:.3f} + sum {attr.values.sum():+.3f}" in line
    assert line.endswith(f"vs prediction {attr.prediction:.3f}")
    named = report.faithfulness_by_label()
    assert list(named) == ["DeepSHAP", "GradientSHAP"]
    assert named["GradientSHAP"] is report.faithfulness["gradient_shap"]
