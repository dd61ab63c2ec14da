"""The Inference page through AppTest: every shipped model answers; bad input gets a message.
(The chat with a language model: test_inference_chat.py.)"""

import re

import numpy as np

from maaslab.auto import LANGUAGE_MODELS, LOADERS, load
from maaslab.data import load_dataset
from maaslab.paths import MODELS_DIR
from maaslab.zoo import paint


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
