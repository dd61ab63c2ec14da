"""sentiment-minilm: LoRA adapters on MiniLM, what a folder stores, and the accuracy floors."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from maaslab import MaaslabError
from maaslab.assets import (
    SENTIMENT_MAX_EPOCHS,
    SENTIMENT_PATIENCE,
    VAL_FRACTION,
    sentiment_accuracy,
)
from maaslab.auto import load
from maaslab.models.encoder import MAX_TEXT_CHARS
from maaslab.models.sentiment import SentimentClassifier, SentimentConfig, review_dataset
from maaslab.paths import MODELS_DIR
from maaslab.registry import WEIGHTS_FILE, load_model, read_safetensors, save_model
from maaslab.reviews import load_reviews, tfidf_baseline, validation_split
from maaslab.runtime import seed_everything
from maaslab.train import TrainConfig, train

FOLDER = MODELS_DIR / "sentiment-minilm"
# The earlier goal, 0.88 test accuracy, was met on the 214 test reviews of reviews.csv alone
# (0.883) while the held-out reviews scored 0.838: the test split overstated. With reviews-2.csv
# the test split holds other voices too, and the rebuilt model measures 0.822 on its 264 test
# reviews (0.841 on the 214 of reviews.csv), 0.854 on the 260 held-out reviews
# (assets/reviews/heldout.csv); TF-IDF + logistic regression 0.708 on test. The floors say that.
TEST_FLOOR = 0.80  # test accuracy on the 264 test reviews (measured 0.822)
LEAD_OVER_TFIDF = 0.10  # on test, above TF-IDF + logistic regression (measured 0.114)
HELDOUT_FLOOR = 0.82  # on the held-out reviews (measured 0.854)
AGREEMENT = 0.05  # test and held-out accuracy at most this far apart (measured 0.032)


@pytest.fixture(scope="module")
def shipped():
    return load_model(FOLDER)


@pytest.fixture(scope="module")
def fresh():
    seed_everything(0)
    return SentimentClassifier(SentimentConfig())


def test_shipped_model_clears_the_floors_on_the_test_split(shipped):
    scores = sentiment_accuracy(shipped, "test")
    baseline = tfidf_baseline(load_reviews("train"), load_reviews("test"))
    assert scores["overall"] >= TEST_FLOOR
    assert scores["overall"] >= baseline.accuracy + LEAD_OVER_TFIDF  # well above bag-of-words
    # The hard cases are where the fine-tuned encoder earns its keep.
    for name in ("negation", "contrast"):
        assert scores[name] > baseline.per_phenomenon[name]
    recorded = load("sentiment-minilm").metadata["test_accuracy"]["overall"]
    assert scores["overall"] == pytest.approx(recorded, abs=1e-9)


def test_the_shipped_epochs_were_chosen_on_validation():
    """The recipe held the validation reviews out and kept the epoch of lowest validation loss."""
    meta = load("sentiment-minilm").metadata
    assert meta["data_args"] == {"seed": 0, "val_fraction": VAL_FRACTION}
    choice = meta["epoch_choice"]
    losses = choice["val_loss"]
    assert len(losses) == meta["epochs_trained"] <= choice["max_epochs"] == SENTIMENT_MAX_EPOCHS
    assert choice["chosen_epoch"] == int(np.argmin(losses)) + 1
    # it stopped after SENTIMENT_PATIENCE epochs without improvement, or at the last epoch
    assert len(losses) - choice["chosen_epoch"] in (SENTIMENT_PATIENCE, 0) or (
        len(losses) == SENTIMENT_MAX_EPOCHS
    )
    assert meta["metrics"]["val_loss"] == pytest.approx(min(losses), abs=1e-4)


def test_cli_evaluate_prints_the_accuracy_and_the_baseline(shipped):
    out = subprocess.run(
        [sys.executable, "-m", "maaslab", "evaluate", "sentiment-minilm"],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    line = out.stdout.splitlines()[0]
    accuracy = float(line.split("accuracy ")[1].split(" ")[0])
    assert accuracy >= TEST_FLOOR and "TF-IDF + logistic regression 0.7083" in line
    assert "sarcasm" in out.stdout and "negation" in out.stdout
    # then the reviews written apart from the corpus, with the baseline fitted on train
    (heldout,) = [s for s in out.stdout.splitlines() if "held-out reviews, heldout.csv" in s]
    scores = sentiment_accuracy(shipped, "heldout")
    assert f"({len(load_reviews('heldout'))} reviews): accuracy {scores['overall']:.4f}" in heldout
    assert scores["overall"] >= HELDOUT_FLOOR
    # the test split holds the harder voices too, so it no longer overstates the held-out score
    assert abs(scores["overall"] - accuracy) <= AGREEMENT
    assert f"{scores['sarcasm']:.4f}" in out.stdout.split(heldout)[1]


def test_no_heldout_review_reaches_the_training_validation_or_test_arrays(fresh):
    data = review_dataset(fresh)  # the default validation split, as notebooks and the Studio
    assert len(data.X_train) + len(data.X_val) + len(data.X_test) == len(load_reviews())

    def unpadded(ids):
        return {tuple(t for t in row.tolist() if t != fresh.pad_id) for row in ids}

    seen = unpadded(np.concatenate([data.X_train, data.X_val, data.X_test]))
    heldout_ids, _ = fresh.encode(list(load_reviews("heldout").texts))
    assert not unpadded(heldout_ids) & seen
    assert unpadded(fresh.encode(list(load_reviews("test").texts[:5]))[0]) <= seen  # the probe


def test_only_adapters_and_head_train_and_are_saved(fresh, tmp_path):
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    count = sum(p.numel() for n, p in fresh.named_parameters() if n in trainable)
    assert 300_000 < count < 400_000  # 6 blocks x 6 linears x r(in + out) + head
    folder = save_model(fresh, tmp_path / "s")
    assert set(read_safetensors(folder / WEIGHTS_FILE)) == set(fresh.trained_state())
    assert (folder / WEIGHTS_FILE).stat().st_size < 2_000_000  # vs ~90 MB for the encoder


def test_a_saved_model_reloads_to_the_same_logits(shipped, tmp_path):
    ids, _ = shipped.encode(["not bad at all", "what a waste of an evening"])
    folder = save_model(shipped, tmp_path / "copy")
    again = load_model(folder)
    with torch.no_grad():
        torch.testing.assert_close(again(torch.as_tensor(ids)), shipped(torch.as_tensor(ids)))


def test_merge_folds_the_adapters_without_changing_answers(tmp_path):
    model = load_model(FOLDER)
    ids = torch.as_tensor(model.encode(["I expected to hate it. I did not.", "meh"])[0])
    with torch.no_grad():
        before = model(ids)
        model.merge()
        after = model(ids)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    with pytest.raises(MaaslabError, match="merged"):
        save_model(model, tmp_path / "merged")


def test_lora_matches_its_formula(fresh):
    # W x + (alpha / r) B A x, with B set to non-zero values (it starts at zero).
    layer = fresh.encoder.base_model.model.encoder.layer[0].attention.self.query
    torch.manual_seed(1)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
        x = torch.randn(3, 384)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        expected = layer.base_layer(x) + (16.0 / 8) * x @ a.T @ b.T
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
        layer.lora_B["default"].weight.zero_()


def test_a_few_steps_change_the_adapters_and_not_the_encoder(fresh):
    data = review_dataset(fresh)
    # 1056 training reviews: 897 to train on, 159 (15 %, stratified) for validation
    assert data.X_train.dtype == np.int64 and data.X_train.shape[0] == 897
    assert np.bincount(data.y_val).tolist() == [80, 79] and len(data.y_test) == 264
    rows = {r.tobytes() for r in data.X_train}
    assert not rows & {r.tobytes() for r in data.X_val}
    assert len(review_dataset(fresh, val_fraction=0.0).y_train) == 1056
    # the validation rows are validation_split's reviews, the ones lesson 12 chooses on
    _, val = validation_split(load_reviews("train"))
    np.testing.assert_array_equal(data.y_val, val.labels)
    val_ids, _ = fresh.encode(list(val.texts))
    np.testing.assert_array_equal(data.X_val[:, : val_ids.shape[1]], val_ids)
    frozen = {n: p.detach().clone() for n, p in fresh.named_parameters() if not p.requires_grad}
    head = fresh.head.weight.detach().clone()
    small = replace(
        data,
        X_train=data.X_train[:32],
        y_train=data.y_train[:32],
        X_test=data.X_test[:16],
        y_test=data.y_test[:16],
    )
    train(
        fresh,
        small,
        TrainConfig(
            epochs=1,
            batch_size=16,
            optimizer="adamw",
            lr=1e-3,
            schedule="warmup_linear",
            device="cpu",
        ),
    )
    assert not torch.equal(fresh.head.weight, head)
    for n, p in fresh.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_wrapper_predicts_truncates_and_refuses_bad_text():
    model = load("sentiment-minilm")
    out = model.predict(
        ["An absolute delight from start to finish.", "Dull, slow and far too long."]
    )
    assert out.labels == ("positive", "negative")
    np.testing.assert_allclose(out.probabilities.sum(1), 1.0, rtol=1e-5)
    long = model.predict(["good " * 20_000])  # 100,000 characters
    assert long.truncated == (True,) and out.truncated == (False, False)
    for bad, message in [
        ([""], "empty"),
        (["   "], "empty"),
        ("just a string", "list"),
        ([], "no text"),
        (["x" * (MAX_TEXT_CHARS + 1)], "at most"),
    ]:
        with pytest.raises(MaaslabError, match=message):
            model.predict(bad)
    att = model.attention("not bad at all")
    assert att.tokens[0] == "[CLS]" and att.weights.shape == (
        6,
        12,
        len(att.tokens),
        len(att.tokens),
    )
    np.testing.assert_allclose(att.weights.sum(-1), 1.0, rtol=1e-4)


def test_weights_that_do_not_fit_are_refused(tmp_path, fresh):
    folder = save_model(fresh, tmp_path / "s")
    from safetensors.torch import save_file

    save_file({"head.weight": torch.zeros(2, 384)}, str(folder / WEIGHTS_FILE))
    with pytest.raises(MaaslabError, match="do not fit"):
        load_model(folder)


def test_bad_configs_are_named():
    with pytest.raises(MaaslabError, match="lora_rank"):
        SentimentConfig(lora_rank=-1)
    with pytest.raises(MaaslabError, match="2 labels"):
        SentimentConfig(labels=("only",))
