"""maaslab.serve.client against a real digits server on 127.0.0.1: bodies, calls, readers."""

import socket
import threading
import time

import numpy as np
import pytest

from maaslab.auto import load
from maaslab.data import load_dataset
from maaslab.errors import MaaslabError
from maaslab.serve import client
from maaslab.serve.app import create_app
from maaslab.serve.config import ServeConfig
from maaslab.serve.runner import bind_socket, uvicorn_server


@pytest.fixture(scope="module")
def url():
    """digits-cnn served in this process on an ephemeral port."""
    config = ServeConfig(models=("digits-cnn",), port=0, device="cpu")
    sock = bind_socket(config.host, 0)
    server = uvicorn_server(create_app(config), config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the digits server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture(scope="module")
def digit():
    """The first test digit on sklearn's 0..16 scale."""
    return load_dataset("digits", seed=0).X_test[0] * 16


def test_a_digit_answer_is_the_in_process_prediction(url, digit):
    body = client.digits_body(digit)
    assert body["inputs"][0]["shape"] == [1, 64] and len(body["inputs"][0]["data"]) == 64
    done = client.call(url, "/v2/models/digits-cnn/infer", body)
    assert done.ok and done.status == 200 and done.error is None and done.seconds > 0
    served = client.output(done.response, "probabilities")
    local = load("digits-cnn").predict(digit[None, :]).probabilities
    assert served.shape == (1, 10)
    np.testing.assert_allclose(served, local, atol=1e-4)


def test_refusals_come_back_as_messages(url, digit):
    bad = client.digits_body(digit)
    bad["inputs"][0]["data"][0] = 99.0
    done = client.call(url, "/v2/models/digits-cnn/infer", bad)
    assert not done.ok and done.status == 400
    assert done.error.startswith("HTTP 400: ") and "0..16" in done.error
    missing = client.call(url, "/v2/models/nope/infer", client.text_body("hi"))
    assert missing.status == 404 and "unknown model 'nope'" in missing.error


def test_a_server_that_is_not_there_is_a_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    done = client.call(f"http://127.0.0.1:{port}", "/v2/health/ready", None, timeout=2)
    assert done.status is None and not done.ok and done.method == "GET"
    assert "cannot reach" in done.error and "is the server running?" in done.error


def test_an_explanation_reads_back_as_an_additive_attribution(url, digit):
    body = client.explain_body(client.digits_body(digit), "shap", seed=0)
    assert body["parameters"] == {"method": "shap", "seed": 0}
    done = client.call(url, "/v2/models/digits-cnn/explain", body)
    assert done.ok, done.error
    attr = client.attribution_of(done.response, "digits", seconds=done.seconds)
    assert attr.method == "deep_shap" and attr.kind == "image" and attr.shape == (8, 8)
    assert len(attr.values) == len(attr.features) == 64 and attr.features[0] == "r0c0"
    assert abs(attr.additivity_gap) < 1e-3
    assert attr.target_name == str(attr.target)


def test_bodies_and_readers_of_the_openai_side():
    body = client.completion_body("mini-gpt", "The ", 20, 0.7, seed=3)
    assert body == {
        "model": "mini-gpt",
        "prompt": "The ",
        "max_tokens": 20,
        "temperature": 0.7,
        "seed": 3,
    }
    assert client.embedding_body("minilm-embed", "a") == {"model": "minilm-embed", "input": "a"}
    answer = {"choices": [{"text": "cat sat"}], "data": [{"embedding": [0.5, -0.5]}]}
    assert client.completion_text(answer) == "cat sat"
    assert client.embedding_of(answer).tolist() == [0.5, -0.5]
    openai_error = {"error": {"message": "prompt: too long", "type": "invalid_request_error"}}
    assert client.error_text(400, openai_error) == "HTTP 400: prompt: too long"
    assert client.error_text(503, "") == "HTTP 503: no details"


def test_kinds_sizes_and_what_a_page_shows():
    kinds = [
        client.kind_of(n) for n in ("digits-mlp", "sentiment-minilm", "mini-gpt", "minilm-embed")
    ]
    assert kinds == ["digits", "sentiment", "generator", "embedder"]
    with pytest.raises(MaaslabError, match="unknown model"):
        client.kind_of("resnet")
    with pytest.raises(MaaslabError, match="64 pixels"):
        client.digits_body(np.zeros(10))
    long = client.shown({"data": list(range(5000))})
    assert long.endswith("more characters)") and len(long) < client.SHOWN_CHARS + 40
    assert client.shown({"a": 1}) == '{\n  "a": 1\n}'


def test_requests_per_kind_and_their_answers(url, digit):
    ask = client.request_for("digits-cnn", digit)
    assert (ask.kind, ask.path) == ("digits", client.infer_path("digits-cnn"))
    assert ask.body == client.digits_body(digit)
    calls = client.ask(url, ask, explain="shap")
    assert [c.status for c in calls] == [200, 200]
    assert calls[1].url.endswith("/v2/models/digits-cnn/explain")
    assert calls[1].request == client.explain_body(ask.body, "shap")
    answer = client.answer_of("digits", calls[0].response)
    local = load("digits-cnn").predict(digit[None, :]).probabilities[0]
    np.testing.assert_allclose(answer.probabilities, local, atol=1e-4)
    two = client.digits_body(np.stack([digit, digit]))["inputs"][0]
    assert two["shape"] == [2, 64] and len(two["data"]) == 128

    text = client.request_for("sentiment-minilm", "fine")
    assert text.body == client.text_body("fine") and text.path.endswith("/infer")
    gen = client.request_for("mini-gpt", "The ", max_tokens=5, temperature=0.5, seed=2)
    assert gen.path == "/v1/completions"
    assert gen.body == client.completion_body("mini-gpt", "The ", 5, 0.5, 2)
    emb = client.request_for("minilm-embed", "a")
    assert (emb.path, emb.body) == ("/v1/embeddings", client.embedding_body("minilm-embed", "a"))
    with pytest.raises(MaaslabError, match="explanations cover"):
        client.explain_request(gen, "shap")
    read = client.answer_of("generator", {"choices": [{"text": "x"}], "usage": {"a": 1}})
    assert (read.text, read.usage) == ("x", {"a": 1})
    sentiment = {
        "outputs": [
            {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.2, 0.8]},
            {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["positive"]},
        ]
    }
    assert client.answer_of("sentiment", sentiment).label == "positive"


def test_one_kind_of_for_wrappers_and_names():
    from maaslab.serve.models import kind_of

    assert client.kind_of is kind_of
    assert kind_of(load("digits-cnn")) == kind_of("digits-cnn") == "digits"
    assert kind_of("digits-cnn-onnx-int8") == "digits"  # an exported variant's default name
    with pytest.raises(MaaslabError, match="not a model the server can serve"):
        kind_of(object())


def test_a_call_and_an_answer_as_a_page_writes_them():
    down = client.Call("POST", "http://h/v2/models/m/infer", {}, None, None, 0.5, "cannot reach")
    good = client.Call("GET", "http://h/v2/health/ready", None, 200, {}, 0.01234)
    assert (down.status_text, down.latency_text) == ("no answer", "500.0 ms")
    assert good.line() == "`GET http://h/v2/health/ready` → **200** in 12.3 ms"
    proba = np.array([0.1, 0.7, 0.2])
    assert client.Answer("digits", probabilities=proba).lines(4) == (
        "**Prediction: 1** (label 4)",
        "",
    )
    sentiment = client.Answer("sentiment", probabilities=np.array([0.25, 0.75]), label="positive")
    assert sentiment.lines() == ("**Sentiment: positive** (75% sure)", "")
    usage = {"prompt_tokens": 3, "completion_tokens": 9}
    assert client.Answer("generator", text="x", usage=usage).lines() == (
        "",
        "3 prompt tokens · 9 completion tokens",
    )
    headline, caption = client.Answer("embedder", embedding=np.full(16, 0.25)).lines()
    assert headline == "**16 dimensions** · length 1.000"
    assert caption == "First values: " + ", ".join(["+0.2500"] * 8) + ", …"


def test_only_the_tensor_models_are_load_tested():
    from maaslab.serve.loadtest import loadable

    served = ["mini-gpt", "digits-cnn", "minilm-embed", "sentiment-minilm"]
    assert loadable(served) == ["digits-cnn", "sentiment-minilm"]
    assert loadable(["mini-gpt"]) == []
