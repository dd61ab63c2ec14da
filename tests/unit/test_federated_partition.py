import numpy as np
import pytest

import maaslab.federated.partition as partition_module
from maaslab import MaaslabError
from maaslab.data import load_dataset
from maaslab.federated import (
    MAX_DRAWS,
    client_dataset,
    label_skew,
    partition_dataset,
    split_dirichlet,
    split_iid,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _every_example_once(indices, n):
    joined = np.concatenate(indices)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


def test_iid_split_deals_every_example_once_in_near_equal_parts():
    parts = split_iid(103, 10, seed=3)
    assert _every_example_once(parts, 103)
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_iid(103, 10, seed=3), strict=True))
    assert not all(
        np.array_equal(a, b) for a, b in zip(parts, split_iid(103, 10, seed=4), strict=True)
    )


def test_dirichlet_uses_every_example_once_and_the_seed_fixes_the_clients(digits):
    first = partition_dataset(digits, 8, alpha=0.5, seed=11)
    again = partition_dataset(digits, 8, alpha=0.5, seed=11)
    other = partition_dataset(digits, 8, alpha=0.5, seed=12)
    assert _every_example_once(first.indices, len(digits.y_train))
    assert all(np.array_equal(a, b) for a, b in zip(first.indices, again.indices, strict=True))
    assert not np.array_equal(first.label_counts, other.label_counts)
    # the label mix is what the clients hold: counts add up per class and per client
    assert np.array_equal(first.label_counts.sum(0), np.bincount(digits.y_train, minlength=10))
    assert np.array_equal(first.label_counts.sum(1), first.sizes)
    assert np.allclose(first.label_mix.sum(1), 1.0)


def test_large_alpha_gives_near_uniform_label_mixes_and_small_alpha_skewed_ones(digits):
    skew = {
        alpha: label_skew(partition_dataset(digits, 10, alpha=alpha, seed=0))
        for alpha in (1000.0, 1.0, 0.05)
    }
    assert skew[1000.0] < 0.05  # each client's mix within a few percent of the overall mix
    assert skew[1000.0] < skew[1.0] < skew[0.05]
    assert skew[0.05] > 0.6  # most clients hold one or two classes
    mix = partition_dataset(digits, 10, alpha=0.05, seed=0).label_mix
    assert np.median(mix.max(axis=1)) > 0.6  # the typical client is mostly one class
    assert np.abs(partition_dataset(digits, 10, alpha=1000.0).label_mix - 0.1).max() < 0.06


def test_a_draw_leaving_a_client_too_small_is_drawn_again(digits, monkeypatch):
    # A seed whose first draw misses min_size: a later draw of the same stream must fill it.
    def one_draw_fails(seed):
        monkeypatch.setattr(partition_module, "MAX_DRAWS", 1)
        try:
            split_dirichlet(digits.y_train, 10, 0.3, seed, min_size=30)
        except MaaslabError:
            return True
        finally:
            monkeypatch.setattr(partition_module, "MAX_DRAWS", MAX_DRAWS)
        return False

    seed = next(s for s in range(50) if one_draw_fails(s))
    parts = split_dirichlet(digits.y_train, 10, 0.3, seed, min_size=30)
    assert min(len(p) for p in parts) >= 30
    assert _every_example_once(parts, len(digits.y_train))
    again = split_dirichlet(digits.y_train, 10, 0.3, seed, min_size=30)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: split_iid(10, 0), "at least 1"),
        (lambda: split_iid(10, 11), "use at most 10 clients"),
        (lambda: split_dirichlet(np.zeros(10, int), 2, 0.0), "alpha must be a positive"),
        (lambda: split_dirichlet(np.zeros(10, int), 2, float("nan")), "alpha must be a positive"),
        (lambda: split_dirichlet(np.zeros(10, int), 2, 1.0, min_size=6), "min_size must be"),
        # 20 examples of 2 classes with alpha 0.01: each class lands on one client, 8 stay empty
        (lambda: split_dirichlet(np.arange(20) % 2, 10, 0.01), "raise alpha"),
        (lambda: partition_dataset(load_dataset("diabetes"), 3, alpha=1.0), "split it IID"),
    ],
)
def test_bad_partitions_are_refused_with_what_to_do(call, message):
    with pytest.raises(MaaslabError, match=message):
        call()


def test_a_regression_set_splits_iid_without_a_label_mix():
    data = load_dataset("diabetes")
    part = partition_dataset(data, 4)
    assert _every_example_once(part.indices, len(data.y_train))
    assert part.label_counts.shape == (4, 0)
    with pytest.raises(MaaslabError, match="no label mix"):
        label_skew(part)


def test_a_client_dataset_holds_its_rows_the_servers_validation_and_no_test(digits):
    part = partition_dataset(digits, 3, alpha=1.0, seed=2)
    client = client_dataset(digits, part, 1)
    rows = part.indices[1]
    assert np.array_equal(client.X_train, digits.X_train[rows])
    assert np.array_equal(client.y_train, digits.y_train[rows])
    assert client.X_val is digits.X_val and len(client.y_test) == 0
    assert client.X_test.shape == (0, digits.n_features)
    with pytest.raises(MaaslabError, match="between 0 and 2"):
        client_dataset(digits, part, 3)
    small = load_dataset("moons", n_samples=40)
    with pytest.raises(MaaslabError, match="partition the dataset it is used with"):
        client_dataset(small, part, 0)
