import numpy as np
import pytest
import torch

from maaslab import MaaslabError
from maaslab.data import TOY_SETS, dataset_names, load_dataset, make_loaders, split_loader


@pytest.mark.parametrize("name", dataset_names())
def test_same_seed_same_arrays(name):
    a, b = load_dataset(name, seed=3), load_dataset(name, seed=3)
    for field in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("name", dataset_names())
def test_other_seed_other_split(name):
    a, b = load_dataset(name, seed=0), load_dataset(name, seed=1)
    assert not np.array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.X_val, b.X_val)


def _rows(X):
    return {row.tobytes() for row in np.asarray(X)}


@pytest.mark.parametrize("name", dataset_names())
def test_three_disjoint_splits_cover_the_data(name):
    data = load_dataset(name, seed=2)
    train, val, test = _rows(data.X_train), _rows(data.X_val), _rows(data.X_test)
    assert not train & val and not train & test and not val & test
    sizes = [len(data.y_train), len(data.y_val), len(data.y_test)]
    assert len(train) + len(val) + len(test) == sum(sizes)  # no row twice inside a split either
    total = sum(sizes)
    assert len(data.y_test) == pytest.approx(0.25 * total, abs=1)
    assert len(data.y_val) == pytest.approx(0.15 * total, abs=1)
    assert data.X_val.dtype == np.float32 and data.y_val.dtype == data.y_train.dtype


@pytest.mark.parametrize("name", ["moons", "digits", "diabetes"])
def test_the_test_split_does_not_depend_on_the_validation_split(name):
    # The test split is drawn first, as it was before there was a validation split: a figure
    # measured on it stays comparable whatever val_fraction is.
    a = load_dataset(name, val_fraction=0.15, seed=4)
    b = load_dataset(name, val_fraction=0.3, seed=4)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(b.y_val) > len(a.y_val) and len(b.y_train) < len(a.y_train)
    # train and validation together are the same examples either way
    assert _rows(a.X_train) | _rows(a.X_val) == _rows(b.X_train) | _rows(b.X_val)


def test_val_fraction_zero_leaves_validation_empty_and_the_test_split_as_it_is():
    full = load_dataset("breast_cancer", val_fraction=0.0, standardize=True)
    split = load_dataset("breast_cancer", standardize=True)
    assert full.X_val.shape == (0, 30) and full.y_val.shape == (0,)
    np.testing.assert_array_equal(full.y_test, split.y_test)
    raw_full, raw_split = (
        load_dataset("breast_cancer", val_fraction=0.0),
        load_dataset("breast_cancer"),
    )
    assert _rows(raw_full.X_train) == _rows(raw_split.X_train) | _rows(raw_split.X_val)
    # standardized with the statistics of the split it trains on
    np.testing.assert_allclose(full.X_train.mean(axis=0), 0.0, atol=1e-4)


def test_validation_split_is_stratified():
    digits = load_dataset("digits")
    counts = np.bincount(digits.y_val, minlength=10)
    share = np.bincount(digits.y_train, minlength=10) / len(digits.y_train)
    np.testing.assert_allclose(counts / counts.sum(), share, atol=0.01)


@pytest.mark.parametrize("name", TOY_SETS)
def test_toy_sets_shape_noise_and_balance(name):
    data = load_dataset(name, n_samples=200, noise=0.1, test_fraction=0.25)
    assert data.X_train.shape == (120, 2) and data.X_test.shape == (50, 2)
    assert data.X_val.shape == (30, 2)
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
    np.testing.assert_allclose(std.X_val, (raw.X_val - mean) / sd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean, raw.X_train.mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "mnist"}, "unknown dataset 'mnist'"),
        ({"name": "moons", "n_samples": 2}, "n_samples"),
        ({"name": "moons", "noise": -1.0}, "noise"),
        ({"name": "moons", "test_fraction": 1.5}, "test_fraction"),
        ({"name": "moons", "val_fraction": -0.1}, "val_fraction"),
        ({"name": "moons", "val_fraction": 0.75}, "test_fraction \\+ val_fraction < 1"),
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
    assert [len(y) for _, y in batches_a] == [16, 16, 16, 12]  # 60 training points
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    seen = torch.cat([x for x, _ in batches_a])
    assert sorted(seen[:, 0].tolist()) == sorted(data.X_train[:, 0].tolist())
    # the second loader is validation's; the test split has its own
    assert torch.equal(torch.cat([y for _, y in test_a]), torch.from_numpy(data.y_val))
    test = list(split_loader(data, "test", 10))
    assert torch.equal(torch.cat([x for x, _ in test]), torch.from_numpy(data.X_test))
    with pytest.raises(MaaslabError, match="unknown split 'dev'"):
        split_loader(data, "dev")


def test_batch_size_must_be_positive():
    with pytest.raises(MaaslabError, match="batch_size"):
        make_loaders(load_dataset("moons"), 0)
