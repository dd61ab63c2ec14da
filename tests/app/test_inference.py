"""The Inference page through AppTest: every shipped model answers; bad input gets a message;
a classifier's test-split scores are scikit-learn's.
(The chat with a language model: test_inference_chat.py.)"""

import dataclasses
import json
import re

import numpy as np
import streamlit as st
from sklearn.metrics import f1_score, precision_recall_fscore_support, recall_score

from maaslab import metrics
from maaslab.auto import LANGUAGE_MODELS, LOADERS, load
from maaslab.data import load_dataset
from maaslab.paths import MODELS_DIR
from maaslab.reviews import load_reviews
from maaslab.zoo import DigitsClassifier, paint


def test_every_model_renders(open_page, page_text):
    at = open_page("inference")
    assert at.selectbox(key="infer.model").options == [*LOADERS, *LANGUAGE_MODELS]
    for name in [*LOADERS, *LANGUAGE_MODELS]:
        at.selectbox(key="infer.model").set_value(name).run()
        assert not at.exception, at.exception
        if name in LANGUAGE_MODELS and not (MODELS_DIR / name).is_dir():  # still training
            assert f"{name} is not built yet" in page_text(at)
        else:
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
    assert "the text is empty" in page_text(at) and not at.exception
    at.text_area(key="infer.query").set_value("word " * 20_000).run()
    assert "only its first 256 tokens were used" in page_text(at) and not at.exception


def test_sentiment_label_probabilities_latency_and_attention(open_page, page_text):
    at = open_page("inference", model="sentiment-minilm")  # a link may name the model
    assert at.selectbox(key="infer.model").value == "sentiment-minilm"
    for text in ["Not bad at all, I would watch it again.", "A dull, joyless slog."]:
        at.text_area(key="infer.review").set_value(text).run()
        expected = load("sentiment-minilm").predict([text])
        shown = page_text(at)
        assert f"**Sentiment: {expected.labels[0]}**" in shown
        assert re.search(r"device cpu · [\d.]+ ms", shown) and not at.exception
    accuracy = load("sentiment-minilm").metadata["test_accuracy"]["overall"]
    reviews = len(load_reviews("test"))  # 264: reviews.csv and reviews-2.csv
    assert f"{accuracy:.1%} right on the {reviews} test reviews of assets/reviews" in shown
    at.selectbox(key="infer.sent_att.layer").set_value(2).run()
    at.selectbox(key="infer.sent_att.head").set_value(5).run()
    assert not at.exception


def test_sentiment_bad_and_long_text(open_page, page_text):
    at = open_page("inference", model="sentiment-minilm")
    at.text_area(key="infer.review").set_value("  \n ").run()
    assert "the text is empty" in page_text(at) and not at.exception
    at.text_area(key="infer.review").set_value("great " * 16_667).run()  # 100,002 characters
    text = page_text(at)
    assert "only its first 128 tokens were used" in text and "**Sentiment: positive**" in text


def test_generation_writes_the_text_the_model_samples(open_page, page_text):
    at = open_page("inference", model="mini-gpt")
    assert "Press Generate" in page_text(at)
    at.number_input(key="infer.max_tokens").set_value(30).run()
    at.slider(key="infer.temperature").set_value(0.5).run()
    at.number_input(key="infer.seed").set_value(7).run()
    at.button(key="infer.generate").click().run()
    expected = load("mini-gpt").complete("The for statement ", 30, 0.5, None, 0.95, 7).text
    shown = "\n".join(c.value for c in at.code)
    assert shown == "The for statement " + expected and not at.exception
    assert re.search(r"30 tokens · \d+ tokens/s · device cpu", page_text(at))
    at.selectbox(key="infer.gpt_att.head").set_value(3).run()  # the answer stays on rerun
    assert at.code[0].value == shown and not at.exception


def test_generation_refuses_bad_settings_with_a_message(open_page, page_text):
    at = open_page("inference", model="mini-gpt")
    for key, value, message in [
        ("infer.max_tokens", 5000, "between 1 and 1000, got 5000"),
        ("infer.max_tokens", 0, "between 1 and 1000, got 0"),
    ]:
        at.number_input(key=key).set_value(value).run()
        at.button(key="infer.generate").click().run()
        assert message in page_text(at) and not at.exception
    at.number_input(key="infer.max_tokens").set_value(10).run()
    at.text_area(key="infer.prompt").set_value(" \t\n ").run()
    at.button(key="infer.generate").click().run()
    assert "the prompt is empty" in page_text(at) and not at.exception


def _charts(at) -> dict[str, dict]:
    """The page's plotly figures by title, as the browser receives them."""
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {f["layout"].get("title", {}).get("text", ""): f for f in figures}


def test_test_split_scores_are_sklearns_and_follow_the_bins(open_page, page_text):
    at = open_page("inference", model="digits-cnn")
    assert not at.toggle(key="infer.scores").value and not at.metric  # off: nothing is scored
    at.toggle(key="infer.scores").set_value(True).run()
    assert not at.exception, at.exception
    data = load_dataset("digits", seed=0)
    proba = load("digits-cnn").predict(data.X_test * 16).probabilities
    y_hat = proba.argmax(axis=1)
    shown = {m.label: m.value for m in at.metric}
    assert shown["accuracy"] == f"{np.mean(y_hat == data.y_test):.3f}"
    assert shown["macro F1"] == f"{f1_score(data.y_test, y_hat, average='macro'):.3f}"
    precision, recall, _, _ = precision_recall_fscore_support(data.y_test, y_hat, average="macro")
    assert shown["macro precision"] == f"{precision:.3f}"
    assert shown["macro recall"] == f"{recall:.3f}"
    ece = metrics.calibration(proba, data.y_test).ece
    assert shown["expected calibration error"] == f"{ece:.3f}"
    assert f"Reliability · expected calibration error {ece:.3f}" in _charts(at)
    table = at.dataframe[0].value
    assert list(table.index) == [*map(str, range(10)), "macro average"]
    np.testing.assert_allclose(
        table["recall"].iloc[:10], recall_score(data.y_test, y_hat, average=None)
    )
    assert "450 test images of the digits dataset" in page_text(at)
    at.slider(key="infer.bins").set_value(5).run()
    five = metrics.calibration(proba, data.y_test, n_bins=5).ece
    assert f"Reliability · expected calibration error {five:.3f}" in _charts(at)
    assert "5 confidence bins" in page_text(at) and not at.exception


def test_sentiment_scores_on_the_test_reviews(open_page, page_text):
    at = open_page("inference", model="sentiment-minilm-student")
    at.toggle(key="infer.scores").set_value(True).run()
    assert not at.exception, at.exception
    reviews = load_reviews("test")
    proba = load("sentiment-minilm-student").predict(list(reviews.texts)).probabilities
    shown = {m.label: m.value for m in at.metric}
    macro_f1 = f1_score(reviews.labels, proba.argmax(axis=1), average="macro")
    assert shown["macro F1"] == f"{macro_f1:.3f}"
    ece = metrics.calibration(proba, reviews.labels).ece
    assert shown["expected calibration error"] == f"{ece:.3f}"
    assert list(at.dataframe[0].value.index) == ["negative", "positive", "macro average"]
    assert f"{len(reviews)} test reviews of assets/reviews" in page_text(at)
    bars = _charts(at)[f"Per class · macro F1 {macro_f1:.3f} · accuracy {shown['accuracy']}"]
    assert [t["name"] for t in bars["data"]] == [
        "precision",
        "recall",
        "F1",
        f"macro F1 {macro_f1:.3f}",
    ]


def test_models_without_a_test_split_offer_no_scores(open_page, page_text):
    at = open_page("inference", model="mini-gpt")  # a generator: nothing to score
    assert "Press Generate" in page_text(at) and not at.toggle and not at.exception


def test_a_class_never_predicted_is_named_and_scored_zero(open_page, page_text, monkeypatch):
    real = DigitsClassifier.predict

    def never_seven(self, pixels):  # the same model, with class 7 never the most probable
        out = real(self, pixels)
        proba = out.probabilities.copy()
        proba[:, 7] = 0.0
        return dataclasses.replace(out, probabilities=proba / proba.sum(axis=1, keepdims=True))

    monkeypatch.setattr(DigitsClassifier, "predict", never_seven)
    st.cache_data.clear()  # the page keeps each model's test probabilities
    try:
        at = open_page("inference", model="digits-mlp")
        at.toggle(key="infer.scores").set_value(True).run()
        assert not at.exception, at.exception
        assert "Never predicted: 7, so its precision is undefined (0 of 0 right)" in page_text(at)
        table = at.dataframe[0].value
        assert table.loc["7", "precision"] == 0.0 and table.loc["7", "predicted"] == 0
    finally:
        st.cache_data.clear()
