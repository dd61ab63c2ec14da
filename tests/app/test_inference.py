"""The Inference page through AppTest: every shipped model answers; bad input gets a message."""

import numpy as np

from maaslab.data import load_dataset
from maaslab.registry import load
from maaslab.zoo import LOADERS, paint


def test_every_model_renders(open_page, page_text):
    at = open_page("inference")
    for name in LOADERS:
        at.selectbox(key="infer.model").set_value(name).run()
        assert not at.exception, at.exception
        assert f"Model `{name}` · device cpu" in page_text(at)


def test_digits_prediction_is_the_models_and_changes_with_the_image(open_page, page_text):
    at = open_page("inference")
    at.selectbox(key="infer.model").set_value("digits-cnn").run()
    data = load_dataset("digits", seed=0)
    expected = load("digits-cnn").predict(data.X_test[:8] * 16).labels
    shown = []
    for index in range(8):
        at.slider(key="infer.index").set_value(index).run()
        line = next(m.value for m in at.markdown if m.value.startswith("**Prediction:"))
        shown.append(line.split("**")[1].removeprefix("Prediction: "))
    assert tuple(shown) == expected and len(set(shown)) > 3


def test_drawing_starts_blank_and_says_so(open_page, page_text):
    at = open_page("inference")
    at.segmented_control(key="infer.source").set_value("Draw").run()
    assert "The image is blank" in page_text(at)
    at.session_state["infer.canvas"] = paint(np.zeros(64), 27)  # a click on row 3, column 3
    at.run()
    assert "**Prediction:" in page_text(at) and not at.exception


def test_embedding_search_and_bad_text(open_page, page_text):
    at = open_page("inference")
    at.selectbox(key="infer.model").set_value("minilm-embed").run()
    at.text_area(key="infer.query").set_value("How does momentum damp oscillations?").run()
    table = at.table[0].value
    assert len(table) == 5 and table["cosine similarity"].is_monotonic_decreasing
    assert table["sentence"].str.contains("omentum").any()
    at.text_area(key="infer.query").set_value("   ").run()
    assert "nothing to embed" in page_text(at) and not at.exception
    at.text_area(key="infer.query").set_value("word " * 20_000).run()
    assert "truncated" in page_text(at) and not at.exception
