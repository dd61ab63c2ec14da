"""The Training Studio through AppTest: trains MLPs and CNNs, stops, saves, and keeps its URL."""

import json

from streamlit.testing.v1 import AppTest


def _wait_for_job(at: AppTest, timeout: float = 60) -> None:
    job = at.session_state["studio.job"]
    assert job.join(timeout), "training did not end"
    at.run()
    assert not at.exception, [e.stack_trace for e in at.exception]


def _train(at: AppTest) -> None:
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    _wait_for_job(at)


def test_trains_a_toy_set_to_the_end_with_a_decision_boundary(open_page, page_text):
    at = open_page("training_studio")
    assert "press **Train**" in page_text(at)
    at.selectbox(key="studio.dataset").set_value("circles")
    at.number_input(key="studio.epochs").set_value(15)
    at.select_slider(key="studio.pace").set_value(0.0).run()
    _train(at)
    text = page_text(at)
    assert "Status: finished" in text and "epoch 15/15" in text
    assert "validation accuracy" in text and "test accuracy" not in text  # read only on saving
    charts = at.get("plotly_chart")
    assert len(charts) == 5  # loss, accuracy, decision boundary, gradient norms, weights
    assert any("Decision boundary" in c.proto.spec for c in charts)
    assert at.query_params["dataset"] == "circles" and at.query_params["epochs"] == "15"


def test_changing_a_widget_changes_the_result(open_page, page_text):
    def val_loss(width: int) -> float:
        at = open_page("training_studio")
        at.number_input(key="studio.epochs").set_value(5)
        at.slider(key="studio.width").set_value(width)
        at.select_slider(key="studio.pace").set_value(0.0).run()
        _train(at)
        return at.session_state["studio.job"].history.last.val_loss

    assert val_loss(2) != val_loss(32)


def test_trains_a_cnn_on_digits_and_saves_it(runs_dir, open_page, page_text):
    at = open_page("training_studio")
    assert at.radio(key="studio.model").disabled  # a CNN needs images
    at.selectbox(key="studio.dataset").set_value("digits").run()
    at.radio(key="studio.model").set_value("cnn")
    at.number_input(key="studio.epochs").set_value(2)
    at.select_slider(key="studio.pace").set_value(0.0).run()
    assert at.slider(key="studio.depth").label == "Conv blocks"
    _train(at)
    job = at.session_state["studio.job"]
    assert job.model.model_type == "cnn" and "epoch 2/2" in page_text(at)
    assert job.history.last.val_accuracy > 0.5
    charts = at.get("plotly_chart")
    assert not any("Decision boundary" in c.proto.spec for c in charts)
    assert any("Confusion matrix" in c.proto.spec for c in charts)
    next(b for b in at.button if b.label == "Save model").click().run()
    assert (runs_dir / "models" / "digits-cnn" / "model.safetensors").is_file()
    # the test split is read once, on saving: the message and the folder give its figure
    saved = json.loads((runs_dir / "models" / "digits-cnn" / "config.json").read_text())
    metrics = saved["metadata"]["metrics"]
    assert set(metrics) == {"val_loss", "val_accuracy", "test_loss", "test_accuracy"}
    assert f"test accuracy {metrics['test_accuracy']:.3f}" in page_text(at)


def test_stop_then_save_refuses_bad_names(runs_dir, open_page, page_text):
    at = open_page("training_studio")
    at.number_input(key="studio.epochs").set_value(5000)
    at.select_slider(key="studio.pace").set_value(0.2).run()
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state["studio.job"]
    assert job.running and "Status: training" in page_text(at)
    next(b for b in at.button if b.label == "Stop").click().run()
    _wait_for_job(at)
    text = page_text(at)
    assert "Status: stopped" in text and "/5000" in text
    assert len(job.history.epochs) < 50

    at.text_input[0].set_value("../escape")
    next(b for b in at.button if b.label == "Save model").click().run()
    assert "is not a model name" in page_text(at)
    at.text_input[0].set_value("stopped-moons")
    next(b for b in at.button if b.label == "Save model").click().run()
    assert (runs_dir / "models" / "stopped-moons" / "model.safetensors").is_file()
    next(b for b in at.button if b.label == "Save model").click().run()
    assert "already exists" in page_text(at)


def test_a_shared_link_reopens_the_same_settings(open_page, page_text):
    at = open_page(
        "training_studio",
        dataset="digits",
        model="cnn",
        depth="3",
        lr="0.003",
        batch_size="64",
        weight_decay="0.0001",
        epochs="7",
        seed="5",
    )
    assert not at.warning
    assert at.selectbox(key="studio.dataset").value == "digits"
    assert at.radio(key="studio.model").value == "cnn"
    assert at.slider(key="studio.depth").value == 3
    assert at.select_slider(key="studio.lr").value == 0.003
    assert at.number_input(key="studio.epochs").value == 7
    assert at.query_params["seed"] == "5" and at.query_params["batch_size"] == "64"


def test_nonsense_in_the_link_is_named_and_replaced_by_defaults(open_page, page_text):
    at = open_page(
        "training_studio",
        dataset="mnist",
        lr="-1",
        epochs="0",
        noise="nan",
        batch_size="lots",
        model="cnn",
        pace="1e9",
    )
    warnings = " ".join(w.value for w in at.warning)
    for name in ("dataset", "lr", "epochs", "noise", "batch_size", "model", "pace"):
        assert f"ignored {name}=" in warnings
    assert at.selectbox(key="studio.dataset").value == "moons"
    assert at.select_slider(key="studio.lr").value == 0.01
    # a link value between the slider's stops is kept, not snapped
    at = open_page("training_studio", lr="0.005")
    assert at.select_slider(key="studio.lr").value == 0.005 and not at.warning


def test_a_diverging_run_stops_itself_and_says_so(open_page, page_text):
    at = open_page("training_studio", optimizer="adam", lr="3", epochs="300", pace="0")
    _train(at)
    job = at.session_state["studio.job"]
    assert "diverged" in job.notes and len(job.history.epochs) < 300
    text = page_text(at)
    assert "Status: stopped" in text and "Training stopped on its own" in text
    assert "smaller learning rate" in text
