"""The explain extension over real HTTP: SHAP values that add up to the prediction and equal
maaslab.explain in process for the same seed, LIME too, binary requests, and clear refusals."""

import json

import httpx
import numpy as np
import pytest

from maaslab.data import load_dataset
from maaslab.explain import MAX_WORDS, explain, explainable

REVIEW = "Not bad at all: the plot was slow, but I loved the ending."


@pytest.fixture(scope="module")
def server(start_server):
    # Explanations take tens of model calls: on a busy 2-core machine shap's first text
    # explanation (it compiles code) can pass the default 30 s request timeout.
    return start_server(
        models=("digits-cnn", "sentiment-minilm", "mini-gpt"), request_timeout_s=600
    )


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_dataset("digits", seed=0).X_test[:2] * 16  # the protocol's 0..16 scale


def post(server, name: str, inputs: list[dict], timeout: float = 60, **params) -> httpx.Response:
    body = {"inputs": inputs, "parameters": params}
    return httpx.post(f"{server.url}/v2/models/{name}/explain", json=body, timeout=timeout)


def outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    out = {}
    for t in response.json()["outputs"]:
        out[t["name"]] = np.array(t["data"], dtype=object if t["datatype"] == "BYTES" else float)
        out[t["name"]] = out[t["name"]].reshape(t["shape"])
    return out


def pixels(x: np.ndarray) -> list[dict]:
    return [
        {"name": "pixels", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    ]


def texts(*items: str) -> list[dict]:
    return [{"name": "text", "shape": [len(items)], "datatype": "BYTES", "data": list(items)}]


def test_digit_shap_adds_up_and_equals_the_library(server, shared_wrappers, digits):
    r = post(server, "digits-cnn", pixels(digits), method="shap", seed=3)
    out = outputs(r)
    assert r.json()["parameters"]["method"] == "deep_shap"
    assert out["values"].shape == (2, 64) and out["features"][0, 9] == "r1c1"
    assert np.all(np.abs(out["values"].sum(1) + out["base_value"] - out["prediction"]) < 1e-4)
    model = explainable(shared_wrappers.get_or_load(("digits-cnn",))["digits-cnn"])
    for i, x in enumerate(digits):
        ref = explain(model, x / 16, "deep_shap", seed=3)
        assert np.allclose(out["values"][i], ref.values, atol=1e-6)
        assert out["target"][i] == ref.target and out["prediction"][i] == pytest.approx(
            ref.prediction, abs=1e-6
        )
    assert list(out["feature_count"]) == [64, 64]


def test_text_shap_and_lime_equal_the_library(server, shared_wrappers):
    r = post(
        server, "sentiment-minilm", texts(REVIEW, "What a dull, boring film"), method="shap", seed=1
    )
    out = outputs(r)
    assert r.json()["parameters"]["method"] == "partition_shap"
    model = explainable(shared_wrappers.get_or_load(("sentiment-minilm",))["sentiment-minilm"])
    ref = explain(model, REVIEW, "partition_shap", seed=1)
    assert tuple(out["features"][0]) == ref.features and out["target_name"][0] == "positive"
    assert np.allclose(out["values"][0], ref.values, atol=1e-6)
    # The shorter text's row is padded with zeros and empty feature names.
    n = int(out["feature_count"][1])
    assert n == 5 and tuple(out["features"][1, :n]) == ("What", "a", "dull", "boring", "film")
    assert np.all(out["values"][1, n:] == 0) and set(out["features"][1, n:]) == {""}
    assert out["target_name"][1] == "negative"
    gaps = out["values"].sum(1) + out["base_value"] - out["prediction"]
    assert np.all(np.abs(gaps) < 1e-4)
    # LIME for a chosen class: the same numbers as the library's for the same seed.
    out = outputs(post(server, "sentiment-minilm", texts(REVIEW), method="lime", target=0))
    ref = explain(model, REVIEW, "lime", target=0, seed=0)
    assert out["target"][0] == 0 and np.allclose(out["values"][0], ref.values, atol=1e-6)


def test_binary_tensor_request_and_outputs(server, digits):
    # Triton's binary extension: the pixels as raw float32 after the JSON header, and every
    # output asked for as binary except `features`.
    x = digits[:1].astype("<f4")
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [
                {"name": "values", "parameters": {"binary_data": True}},
                {"name": "features", "parameters": {"binary_data": False}},
            ],
            "parameters": {"method": "shap"},
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))}
    r = httpx.post(
        f"{server.url}/v2/models/digits-cnn/explain",
        content=head + x.tobytes(),
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    answer = json.loads(r.content[:n])
    meta = {t["name"]: t for t in answer["outputs"]}
    assert set(meta) == {"values", "features"} and meta["features"]["shape"] == [1, 64]
    values = np.frombuffer(r.content[n:], dtype="<f4")
    assert meta["values"]["parameters"]["binary_data_size"] == values.nbytes == 64 * 4
    ref = outputs(post(server, "digits-cnn", pixels(digits[:1]), method="shap"))["values"]
    assert np.allclose(values, ref[0], atol=1e-7)


@pytest.mark.parametrize(
    ("name", "inputs", "params", "status", "words"),
    [
        ("sentiment-minilm", texts("good film"), {"method": "magic"}, 400, "'shap' or 'lime'"),
        ("sentiment-minilm", texts("good film"), {}, 400, "parameters.method"),
        (
            "sentiment-minilm",
            texts(" ".join(["word"] * (MAX_WORDS + 1))),
            {"method": "shap"},
            400,
            f"at most {MAX_WORDS}",
        ),
        ("sentiment-minilm", texts(""), {"method": "lime"}, 400, "empty"),
        ("sentiment-minilm", texts("?!"), {"method": "lime"}, 400, "empty"),
        ("sentiment-minilm", texts("good film"), {"method": "lime", "target": 2}, 400, "target"),
        ("sentiment-minilm", texts("good film"), {"method": "lime", "seed": -1}, 400, "seed"),
        ("sentiment-minilm", texts(*["good film"] * 9), {"method": "lime"}, 400, "at most 8"),
        ("digits-cnn", texts("good film"), {"method": "shap"}, 400, "pixels"),
        ("digits-cnn", pixels(np.full((1, 64), 17.0)), {"method": "shap"}, 400, "0..16"),
        ("digits-cnn", pixels(np.zeros((1, 64))), {"method": "partition_shap"}, 400, "deep_shap"),
        ("mini-gpt", texts("good film"), {"method": "shap"}, 400, "cannot be explained"),
        ("nope", texts("good film"), {"method": "shap"}, 404, "unknown model"),
    ],
)
def test_bad_explain_requests_are_refused_with_a_message(
    server, name, inputs, params, status, words
):
    r = post(server, name, inputs, **params)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_an_explanation_past_the_request_timeout_gets_504(start_server, digits):
    quick = start_server(models=("digits-cnn",), request_timeout_s=0.05)
    x = np.repeat(digits, 4, axis=0)  # 8 digits of KernelSHAP: over a thousand rows each
    r = post(quick, "digits-cnn", pixels(x), method="kernel_shap")
    assert r.status_code == 504 and "did not finish within 0.05 s" in r.json()["error"]
