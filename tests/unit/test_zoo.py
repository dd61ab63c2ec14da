"""Shipped models by name: digits-mlp, digits-cnn and minilm-embed through maaslab.auto.load."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from maaslab import MaaslabError
from maaslab.assets import build_assets
from maaslab.auto import load
from maaslab.data import load_dataset
from maaslab.paths import MODELS_DIR
from maaslab.registry import load_model, read_metadata
from maaslab.zoo import paint


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_shipped_digits_models_reach_their_recorded_accuracy(name, digits):
    model = load(name)
    out = model.predict(digits.X_test * 16)  # the wrapper takes sklearn's 0-16 pixels
    assert out.probabilities.shape == (len(digits.y_test), 10)
    np.testing.assert_allclose(out.probabilities.sum(1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(out.probabilities.argmax(1) == digits.y_test))
    recorded = read_metadata(MODELS_DIR / name)["metrics"]["test_accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-6)
    assert accuracy > (0.97 if name == "digits-cnn" else 0.95)
    assert out.labels[0] == str(out.probabilities[0].argmax()) and out.seconds >= 0


def test_the_recipe_rebuilds_the_shipped_model(tmp_path, digits):
    (folder,) = build_assets(["digits-mlp"], parent=tmp_path)
    rebuilt, shipped = load_model(folder), load_model(MODELS_DIR / "digits-mlp")
    x = torch.as_tensor(digits.X_test, dtype=torch.float32)
    agree = (rebuilt(x).argmax(1) == shipped(x).argmax(1)).float().mean().item()
    assert agree > 0.99
    assert read_metadata(folder)["metrics"]["test_accuracy"] == pytest.approx(
        read_metadata(MODELS_DIR / "digits-mlp")["metrics"]["test_accuracy"], abs=0.005
    )


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((2, 63)), r"shape \(N, 64\)"),
        (np.zeros((0, 64)), r"shape \(N, 64\)"),
        (np.full((1, 64), np.nan), "NaN"),
        (np.full((1, 64), 17.0), "0..16"),
        (np.full((1, 64), -1.0), "0..16"),
        ([["a"] * 64], "numbers"),
    ],
)
def test_bad_pixels_are_named(pixels, message):
    with pytest.raises(MaaslabError, match=message):
        load("digits-mlp").predict(pixels)


def test_one_image_may_be_a_flat_row(digits):
    out = load("digits-cnn").predict(digits.X_test[0] * 16)
    assert out.probabilities.shape == (1, 10)


def test_embedder_and_unknown_names():
    embedder = load("minilm-embed")
    out = embedder.embed(["a cat", "a kitten"])
    assert out.embeddings.shape == (2, 384)
    with pytest.raises(MaaslabError, match=r"unknown model 'gpt-5'.*digits-mlp"):
        load("gpt-5")


def test_cli_refuses_an_unknown_recipe_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "maaslab", "assets", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no recipe for nope" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_paint_cycles_a_cell_and_refuses_other_cells():
    pixels, seen = np.zeros(64, dtype=np.float32), []
    for _ in range(3):
        pixels = paint(pixels, 9)
        seen.append(float(pixels[9]))
    assert seen == [8.0, 16.0, 0.0] and np.count_nonzero(pixels) == 0
    assert np.count_nonzero(paint(np.zeros(64), 0)) == 1
    with pytest.raises(MaaslabError, match="64 cells"):
        paint(pixels, 64)


def test_mini_gpt_streams_the_same_text_it_completes_and_beats_chance():
    gpt = load("mini-gpt")
    meta = gpt.metadata
    assert meta["metrics"]["test_loss"] < 1.5 < np.log(gpt.tokenizer.vocab_size)  # 4.64 nats
    stream = gpt.generate("The for statement ", 40, temperature=0.8, seed=3)
    pieces = list(stream)
    assert len(pieces) == 40 and all(len(p) == 1 for p in pieces)
    done = gpt.complete("The for statement ", 40, temperature=0.8, seed=3)
    assert done.text == "".join(pieces) and done.completion_tokens == 40
    assert done.prompt_tokens == len("The for statement ") and done.tokens_per_second > 0
    # Greedy decoding from a common phrase writes mostly letters and spaces, as the corpus does.
    greedy = gpt.complete("The function ", 60, top_k=1, seed=0).text
    assert sum(c.isalpha() or c.isspace() for c in greedy) > 45


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"max_new_tokens": 0}, "between 1 and"),
        ({"max_new_tokens": 5000}, "between 1 and"),
        ({"temperature": 0}, "above 0"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_mini_gpt_bad_sampling_settings_are_named(kwargs, message):
    args = {"prompt": "The ", "max_new_tokens": 5} | kwargs
    with pytest.raises(MaaslabError, match=message):
        load("mini-gpt").generate(**args)


def test_attention_maps_of_the_text_models():
    gpt = load("mini-gpt")
    att = gpt.attention("x" * 100)  # longer than the 64-character window
    assert att.truncated and len(att.tokens) == 64 and att.weights.shape == (4, 4, 64, 64)
    assert np.allclose(np.triu(att.weights[0, 0], 1), 0)  # causal: nothing from the future
    np.testing.assert_allclose(att.weights.sum(-1), 1.0, rtol=1e-4)
    emb = load("minilm-embed").attention("a cat sat")
    assert emb.tokens == ("[CLS]", "a", "cat", "sat", "[SEP]") and not emb.truncated
    with pytest.raises(MaaslabError, match="empty"):
        gpt.attention(" ")


def test_one_head_of_an_attention_map_keeps_the_last_tokens():
    from maaslab.zoo import AttentionMap

    weights = np.arange(2 * 3 * 5 * 5, dtype=float).reshape(2, 3, 5, 5)
    att = AttentionMap(tuple("abcde"), weights, truncated=False)
    w, tokens = att.head(2, 3)
    np.testing.assert_array_equal(w, weights[1, 2])
    assert tokens == tuple("abcde")
    w, tokens = att.head(1, 2, last=2)
    np.testing.assert_array_equal(w, weights[0, 1, 3:, 3:])
    assert tokens == ("d", "e")
    assert att.head(1, 1, last=5)[1] == tuple("abcde")


def test_the_nearest_sentences_most_similar_first():
    from maaslab.zoo import nearest_sentences

    corpus = np.eye(3)
    sentences = ["x axis", "y axis", "z axis"]
    query = np.array([[0.6, 0.8, 0.0]])
    table = nearest_sentences(query, corpus, sentences, k=2)
    assert table["sentence"].tolist() == ["y axis", "x axis"]
    assert table["cosine similarity"].tolist() == [0.8, 0.6]
    assert len(nearest_sentences(query, corpus, sentences, k=10)) == 3
