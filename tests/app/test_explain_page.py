"""The Explain page through AppTest: each data type explained side by side; bad input named."""

import time

import pytest

from maaslab.explain import explainable


def finish(at, timeout=240):
    """Rerun until the background report is done, as the page's 0.5 s poll would."""
    deadline = time.time() + timeout
    while "explain.task" in at.session_state and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    assert "explain.task" not in at.session_state, "the report did not finish"
    return at


@pytest.mark.parametrize(
    ("model", "methods", "labels"),
    [
        (
            "breast-cancer gradient boosting (scikit-learn)",
            ["kernel_shap", "lime"],
            ["KernelSHAP", "LIME"],
        ),
        ("digits-cnn", ["deep_shap", "lime"], ["DeepSHAP", "LIME"]),
        ("sentiment-minilm", ["partition_shap", "lime"], ["Partition SHAP", "LIME"]),
    ],
)
def test_each_data_type_is_explained_side_by_side(open_page, page_text, model, methods, labels):
    at = open_page("explain")
    at.selectbox(key="explain.model").set_value(model).run()
    ms = next(w for w in at.multiselect if w.key.startswith("explain.methods"))
    ms.set_value(methods).run()
    at.button(key="explain.go").click().run()
    finish(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader] == labels
    text = page_text(at)
    assert "How far to trust them" in text and "model evaluations" in text
    table = at.table[0].value
    assert list(table.index) == labels
    assert (table["deletion AUC (lower is better)"] < table["random order"]).any()
    assert at.table[1].value["agreement"].between(-1, 1).all()


def test_digits_report_with_stability_and_sanity(open_page):
    at = open_page("explain")
    at.selectbox(key="explain.model").set_value("digits-cnn").run()
    ms = next(w for w in at.multiselect if w.key.startswith("explain.methods"))
    ms.set_value(["deep_shap", "lime"]).run()
    at.toggle(key="explain.stability").set_value(True).run()
    at.toggle(key="explain.sanity").set_value(True).run()
    at.button(key="explain.go").click().run()
    finish(at)
    table = at.table[0].value
    assert set(table["sanity check"]) <= {"passed", "FAILED"}
    assert table["rank agreement across seeds"].iloc[0] == pytest.approx(
        1.0
    )  # DeepSHAP: no sampling
    assert table["rank agreement across seeds"].iloc[1] < 1.0  # LIME samples


def test_the_shown_values_are_the_backends(open_page):
    at = open_page("explain")
    at.selectbox(key="explain.model").set_value("sentiment-minilm").run()
    ms = next(w for w in at.multiselect if w.key.startswith("explain.methods"))
    ms.set_value(["lime"]).run()
    at.button(key="explain.go").click().run()
    finish(at)
    shown = at.session_state["explain.report"].attributions["lime"]
    from maaslab.explain import explain

    again = explain(explainable("sentiment-minilm"), at.text_area(key="explain.text").value, "lime")
    assert shown.features == again.features and (shown.values == again.values).all()


def test_bad_input_gets_a_message(open_page, page_text):
    at = open_page("explain")
    at.selectbox(key="explain.model").set_value("sentiment-minilm").run()
    for text, message in [("   ", "the text is empty"), ("word " * 70, "at most 64")]:
        at.text_area(key="explain.text").set_value(text).run()
        at.button(key="explain.go").click().run()
        assert message in page_text(at) and not at.exception
    at.text_area(key="explain.text").set_value("fine words").run()
    ms = next(w for w in at.multiselect if w.key.startswith("explain.methods"))
    ms.set_value([]).run()
    at.button(key="explain.go").click().run()
    assert "choose at least one method" in page_text(at)
    at.selectbox(key="explain.model").set_value(
        "breast-cancer gradient boosting (scikit-learn)"
    ).run()
    assert at.toggle(key="explain.sanity").disabled  # no torch model to randomize


def test_a_long_report_shows_progress_and_cancels(open_page, page_text):
    at = open_page("explain")
    at.selectbox(key="explain.model").set_value("digits-cnn").run()
    ms = next(w for w in at.multiselect if w.key.startswith("explain.methods"))
    ms.set_value(["kernel_shap"]).run()
    at.toggle(key="explain.stability").set_value(True).run()
    at.button(key="explain.go").click().run()
    assert at.button(key="explain.go").disabled  # no second run while one is going
    assert len(at.get("progress")) == 1
    at.button(key="explain.cancel").click().run()
    finish(at)
    assert "the explanation was cancelled" in page_text(at) and not at.exception
    assert "explain.report" not in at.session_state
