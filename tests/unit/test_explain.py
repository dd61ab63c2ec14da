"""maaslab.explain: seeded, additive where SHAP promises it, faithful, and sane."""

import threading

import numpy as np
import pytest
import torch

from maaslab import MaaslabError
from maaslab.data import load_dataset
from maaslab.explain import (
    METHODS,
    Cancelled,
    agreement,
    breast_cancer_models,
    explain,
    explainable,
    faithfulness,
    methods_for,
    sanity_check,
    stability,
    words_of,
)
from maaslab.explain.core import drop_words

REVIEW = "I expected to hate it, but honestly it was not bad at all."


@pytest.fixture(scope="module")
def tab():
    return breast_cancer_models()


@pytest.fixture(scope="module")
def cnn():
    return explainable("digits-cnn")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0).X_test  # pixels 0..1, as the networks read them


@pytest.fixture(scope="module")
def sentiment():
    return explainable("sentiment-minilm")


def test_the_tabular_pair_is_trained(tab):
    assert tab.mlp_accuracy > 0.93 and tab.boosting_accuracy > 0.9
    assert methods_for(tab.mlp) == [
        "kernel_shap",
        "permutation_shap",
        "deep_shap",
        "gradient_shap",
        "lime",
    ]
    assert methods_for(tab.boosting) == ["kernel_shap", "permutation_shap", "lime"]


@pytest.mark.parametrize(
    ("which", "method"),
    [
        ("mlp", "kernel_shap"),
        ("boosting", "permutation_shap"),
        ("mlp", "deep_shap"),
        ("mlp", "lime"),
    ],
)
def test_same_seed_same_attribution_on_a_table_row(tab, which, method):
    x, model = tab.data.X_test[3], getattr(tab, which)
    a = explain(model, x, method, seed=5, budget=200 if method != "deep_shap" else None)
    b = explain(model, x, method, seed=5, budget=200 if method != "deep_shap" else None)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.base_value == b.base_value and a.evaluations == b.evaluations > 0


@pytest.mark.parametrize("method", ["permutation_shap", "partition_shap", "lime"])
def test_same_seed_same_attribution_on_text(sentiment, method):
    a = explain(sentiment, REVIEW, method, seed=1, budget=48)
    b = explain(sentiment, REVIEW, method, seed=1, budget=48)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.features == words_of(REVIEW)[0] and len(a.values) == 13


def test_different_seeds_move_lime_and_stability_measures_it(tab):
    s = stability(tab.boosting, tab.data.X_test[0], "lime", seeds=(0, 1, 2), budget=300)
    assert not np.array_equal(s.attributions[0].values, s.attributions[1].values)
    assert 0.5 < s.rank_agreement < 1.0 and s.spread > 0


@pytest.mark.parametrize(
    ("which", "method", "tol"),
    [
        ("mlp", "kernel_shap", 1e-6),
        ("boosting", "kernel_shap", 1e-6),
        ("boosting", "permutation_shap", 1e-6),
        ("mlp", "deep_shap", 1e-5),
    ],
)
def test_shap_values_add_up_to_the_prediction_on_tables(tab, which, method, tol):
    model = getattr(tab, which)
    for row in tab.data.X_test[:3]:
        a = explain(model, row, method, seed=0, budget=300)
        proba = model.predict_fn(row[None, :])[0, a.target]
        assert a.prediction == pytest.approx(proba)
        assert abs(a.base_value + a.values.sum() - a.prediction) < tol


@pytest.mark.parametrize("method", ["kernel_shap", "permutation_shap", "deep_shap"])
def test_shap_values_add_up_on_a_digit(cnn, digits, method):
    a = explain(cnn, digits[0], method, seed=0, budget=512)
    assert a.values.shape == (64,) and a.shape == (8, 8) and a.features[9] == "r1c1"
    assert abs(a.additivity_gap) < 1e-5


def test_text_shap_adds_up_to_the_prediction(sentiment):
    from maaslab.reviews import load_reviews

    texts = [REVIEW, *load_reviews("test").where("contrast").texts[:2], "...wow! Not bad"]
    for text in texts:  # leading and final punctuation included
        for method in ("permutation_shap", "partition_shap"):
            a = explain(sentiment, text, method, seed=0)
            assert abs(a.additivity_gap) < 1e-4, (method, text)
    assert explain(sentiment, REVIEW, "partition_shap").target_name == "positive"


def test_a_one_word_text_gets_its_exact_shapley_value(sentiment):
    # One player: its value is f(text) - f(empty text), and it adds up exactly.
    full, empty = sentiment.predict(["boring.", ""])[:, 0]
    for method in ("permutation_shap", "partition_shap"):
        a = explain(sentiment, "boring.", method, target=0, seed=0)
        assert a.values == pytest.approx([full - empty], abs=1e-6)
        assert a.base_value == pytest.approx(empty, abs=1e-6)


def test_lime_on_tables_reports_contributions_not_coefficients(tab):
    # Contributions (coefficient x standardized value) of LIME's surrogate add up to its own
    # local prediction, which is close to the model's for this confident row.
    a = explain(tab.boosting, tab.data.X_test[0], "lime", seed=0, budget=2000)
    assert abs(a.additivity_gap) < 0.2
    shap_values = explain(tab.boosting, tab.data.X_test[0], "kernel_shap", seed=0).values
    assert agreement(a, explain(tab.boosting, tab.data.X_test[0], "kernel_shap", seed=0)) > 0
    assert np.sign(a.values[np.argmax(np.abs(shap_values))]) == np.sign(shap_values.max())


def test_shap_on_the_digits_cnn_beats_random_deletion(cnn, digits):
    for i in range(2):
        for method in ("kernel_shap", "deep_shap"):
            a = explain(cnn, digits[i], method, seed=0, budget=1024)
            f = faithfulness(cnn, digits[i], a, seed=0)
            assert f.deletion.auc < f.random_deletion.auc - 0.1, (i, method)
            assert f.insertion.auc > f.random_insertion.auc, (i, method)
            assert f.deletion.scores[0] == pytest.approx(a.prediction)  # nothing removed yet
            assert f.deletion.fractions[-1] == 1.0


def test_deletion_curve_on_text_removes_words(sentiment):
    a = explain(sentiment, REVIEW, "lime", seed=0)
    f = faithfulness(sentiment, REVIEW, a, seed=0)
    assert f.deletion_gain > 0 and len(f.deletion.scores) == 14  # 0..13 words removed


def test_sanity_check_separates_trained_from_random_weights(cnn, digits):
    for i in range(2):
        check = sanity_check(cnn, digits[i], "kernel_shap", seed=0, budget=1024)
        assert check.passed, check.similarity
        assert check.trained.target == check.randomized.target
        assert not np.allclose(check.trained.values, check.randomized.values)
    random_model = cnn.randomized(0)
    x = torch.as_tensor(digits[:20], dtype=torch.float32)
    assert not np.allclose(cnn.predict_fn(x.numpy()), random_model.predict_fn(x.numpy()))
    assert cnn.module is not random_model.module  # the trained model is untouched


def test_sanity_check_needs_a_torch_model(tab):
    with pytest.raises(MaaslabError, match="sanity check needs a torch model"):
        sanity_check(tab.boosting, tab.data.X_test[0], "kernel_shap", budget=100)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(63), "64 numbers"),
        (np.zeros((2, 64)), "64 numbers"),
        (np.full(64, np.nan), "NaN"),
        ("a string", "must be numbers"),
    ],
)
def test_wrong_shaped_input_is_named(cnn, bad, message):
    with pytest.raises(MaaslabError, match=message):
        explain(cnn, bad, "kernel_shap")


def test_bad_text_and_methods_that_do_not_apply(sentiment, tab, cnn, digits):
    for bad, message in [("", "empty"), ("  ?! ", "empty"), ("word " * 65, "at most 64")]:
        with pytest.raises(MaaslabError, match=message):
            explain(sentiment, bad, "lime")
    with pytest.raises(MaaslabError, match="KernelSHAP does not apply to sentiment-minilm"):
        explain(sentiment, REVIEW, "kernel_shap")
    with pytest.raises(MaaslabError, match="not a torch model"):
        explain(tab.boosting, tab.data.X_test[0], "deep_shap")
    with pytest.raises(MaaslabError, match="unknown method"):
        explain(cnn, digits[0], "integrated_gradients")
    with pytest.raises(MaaslabError, match="target must be"):
        explain(cnn, digits[0], "deep_shap", target=10)
    with pytest.raises(MaaslabError, match="cannot be explained"):
        explainable("mini-gpt")


def test_progress_is_reported_and_cancel_stops_the_run(cnn, digits):
    seen = []
    cnn.progress = lambda done, budget: seen.append((done, budget))
    try:
        explain(cnn, digits[0], "kernel_shap", budget=256)
        assert seen and seen[-1][1] == 256 and seen[-1][0] == cnn.evaluations
        cnn.cancel = threading.Event()
        cnn.progress = lambda done, budget: cnn.cancel.set()  # cancel on the first call
        with pytest.raises(Cancelled):
            explain(cnn, digits[0], "kernel_shap", budget=256)
    finally:
        cnn.progress, cnn.cancel = None, None


def test_drop_words_keeps_punctuation_and_spacing():
    words, spans = words_of("Not bad, not bad at all!")
    assert words == ("Not", "bad", "not", "bad", "at", "all")
    keep = np.array([0, 1, 1, 1, 1, 1], dtype=bool)
    assert drop_words("Not bad, not bad at all!", spans, keep) == "bad, not bad at all!"
    assert set(METHODS) >= {"kernel_shap", "lime", "deep_shap"}


def test_a_test_row_comes_with_the_truth_and_the_models_answer(tab):
    x, line = tab.test_row(tab.boosting, 3)
    np.testing.assert_array_equal(x, tab.data.X_test[3])
    p = tab.boosting.predict_fn(x[None, :])[0]
    names = tab.data.class_names
    assert line == (
        f"Row 3: truly **{names[tab.data.y_test[3]]}**; the model says "
        f"{names[p.argmax()]} ({p.max():.0%})"
    )
