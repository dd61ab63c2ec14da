import numpy as np
import pytest
import torch

from maaslab import MaaslabError
from maaslab.data import TOY_SETS, dataset_names, load_dataset, make_loaders


@pytest.mark.parametrize("name", dataset_names())
def test_same_seed_same_arrays(name):
    a, b = load_dataset(name, seed=3), load_dataset(name, seed=3)
    for field in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("name", dataset_names())
def test_other_seed_other_split(name):
    a, b = load_dataset(name, seed=0), load_dataset(name, seed=1)
    assert not np.array_equal(a.X_train, b.X_train)


@pytest.mark.parametrize("name", TOY_SETS)
def test_toy_sets_shape_noise_and_balance(name):
    data = load_dataset(name, n_samples=200, noise=0.1, test_fraction=0.25)
    assert data.X_train.shape == (150, 2) and data.X_test.shape == (50, 2)
    assert data.X_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert set(np.unique(data.y_train)) == {0, 1}
    assert abs(data.y_train.mean() - 0.5) < 0.05  # stratified, balanced classes
    clean = load_dataset(name, n_samples=200, noise=0.0)
    noisy = load_dataset(name, n_samples=200, noise=0.5)
    assert not np.array_equal(clean.X_train, noisy.X_train)


def test_sklearn_sets():
    digits = load_dataset("digits")
    assert digits.n_features == 64 and digits.n_classes == 10 and digits.input_shape == (1, 8, 8)
    assert digits.X_train.min() >= 0.0 and digits.X_train.max() <= 1.0
    cancer = load_dataset("breast_cancer", standardize=True)
    np.testing.assert_allclose(cancer.X_train.mean(axis=0), 0.0, atol=1e-4)
    assert cancer.class_names == ("malignant", "benign")
    diabetes = load_dataset("diabetes")
    assert diabetes.task == "regression" and diabetes.out_features == 1
    assert diabetes.y_train.dtype == np.float32 and diabetes.n_classes == 0


def test_standardize_uses_training_statistics_only():
    raw = load_dataset("breast_cancer")
    std = load_dataset("breast_cancer", standardize=True)
    mean, sd = np.array(std.meta["mean"]), np.array(std.meta["std"])
    np.testing.assert_allclose(std.X_test, (raw.X_test - mean) / sd, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "mnist"}, "unknown dataset 'mnist'"),
        ({"name": "moons", "n_samples": 2}, "n_samples"),
        ({"name": "moons", "noise": -1.0}, "noise"),
        ({"name": "moons", "test_fraction": 1.5}, "test_fraction"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(MaaslabError, match=message):
        load_dataset(**kwargs)


def test_loaders_cover_the_split_in_a_seeded_order():
    data = load_dataset("moons", n_samples=100)
    train_a, test_a = make_loaders(data, 16, seed=5)
    train_b, _ = make_loaders(data, 16, seed=5)
    batches_a, batches_b = list(train_a), list(train_b)
    assert [len(y) for _, y in batches_a] == [16, 16, 16, 16, 11]
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    seen = torch.cat([x for x, _ in batches_a])
    assert sorted(seen[:, 0].tolist()) == sorted(data.X_train[:, 0].tolist())
    assert sum(len(y) for _, y in test_a) == len(data.y_test)


def test_batch_size_must_be_positive():
    with pytest.raises(MaaslabError, match="batch_size"):
        make_loaders(load_dataset("moons"), 0)
