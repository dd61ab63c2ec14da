"""Every page through Streamlit's AppTest: renders with no exception, widgets do what they say."""

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from maaslab.lessons import load_lessons

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def _open(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _text(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.title, *at.header, *at.subheader, *at.info,
             *at.warning, *at.error, *at.success]  # fmt: skip
    return "\n".join(str(p.value) for p in parts)


def test_home_lists_every_lesson_with_links():
    at = _open()
    text = _text(at)
    assert "MaaS Lab" in text
    for lesson in load_lessons():
        assert lesson.title in text
    assert "Device: cpu" in _text(at) or "Device: cuda" in _text(at)
    assert any(".venv/bin/jupyter lab notebooks/00_tour.ipynb" in c.value for c in at.code)


def test_guide_page_reads_the_lesson_from_the_url():
    at = _open("guide", lesson="00_tour")
    assert at.selectbox(key="guide.lesson").value == "00_tour"
    text = _text(at)
    assert "A tour of MaaS Lab" in text and "Exercises" in text


def test_guide_page_survives_an_unknown_lesson():
    at = _open("guide", lesson="99_nope")
    assert "There is no lesson '99_nope'" in _text(at)
    assert at.selectbox(key="guide.lesson").value == load_lessons()[0].slug


def _wait_for_job(at: AppTest, timeout: float = 60) -> None:
    job = at.session_state["studio.job"]
    assert job.join(timeout), "training did not end"
    at.run()
    assert not at.exception, at.exception


def test_training_studio_trains_to_the_end():
    at = _open("training_studio")
    assert "press **Train**" in _text(at)
    at.selectbox(key="studio.dataset").set_value("circles")
    at.number_input(key="studio.epochs").set_value(15)
    at.selectbox(key="studio.pace").set_value("full speed")
    at.button[0].click().run()
    _wait_for_job(at)
    text = _text(at)
    assert "Status: finished" in text and "epoch 15/15" in text
    assert "test accuracy" in text
    assert len(at.get("plotly_chart")) == 4  # loss, accuracy, gradient norms, data


def test_training_studio_stop_button(runs_dir):
    at = _open("training_studio")
    at.number_input(key="studio.epochs").set_value(5000)
    at.selectbox(key="studio.pace").set_value("slow (≥0.2 s per epoch)")
    at.button[0].click().run()
    job = at.session_state["studio.job"]
    assert job.running and "Status: training" in _text(at)
    time.sleep(0.5)
    stop = next(b for b in at.button if b.label == "Stop")
    stop.click().run()
    _wait_for_job(at)
    text = _text(at)
    assert "Status: stopped" in text and "/5000" in text
    assert len(job.history.epochs) < 50

    # save the stopped model, then refuse a bad name and a duplicate
    at.text_input[0].set_value("../escape")
    form_button = next(b for b in at.button if b.label == "Save model")
    form_button.click().run()
    assert "Use letters, digits" in _text(at)
    at.text_input[0].set_value("stopped-moons")
    next(b for b in at.button if b.label == "Save model").click().run()
    assert (runs_dir / "models" / "stopped-moons" / "model.safetensors").is_file()
    next(b for b in at.button if b.label == "Save model").click().run()
    assert "already exists" in _text(at)
