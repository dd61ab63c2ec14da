import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from federated_helpers import digits_data, seeded_mlp

import maaslab.federated.fedavg as fedavg_module
from maaslab import MaaslabError
from maaslab.data import load_dataset
from maaslab.federated import (
    FederatedCallback,
    FederatedConfig,
    Partition,
    client_dataset,
    client_seed,
    fedprox_loss,
    local_update,
    partition_dataset,
    proximal_term,
    run_federated,
    sample_clients,
    weighted_average,
)


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Rounds(FederatedCallback):
    """Keeps the global weights after every round; may stop after round `stop_after`."""

    def __init__(self, stop_after=None, stop_at_client=None):
        self.states, self.clients_seen = [], 0
        self.stop_after, self.stop_at_client = stop_after, stop_at_client

    def on_client_end(self, state, record):
        self.clients_seen += 1
        if self.stop_at_client == self.clients_seen:
            state.stop = True

    def on_round_end(self, state):
        self.states.append(_state(state.model))
        if self.stop_after == state.round:
            state.stop = True


def test_one_client_one_full_batch_step_per_round_is_centralized_gradient_descent(digits):
    # The oracle: FedAvg with one client holding everything, full participation and one local
    # step over the whole client dataset is full-batch gradient descent, step for step.
    n, lr, rounds = len(digits.y_train), 0.5, 4
    model = seeded_mlp(digits)
    reference = copy.deepcopy(model)
    watch = Rounds()
    cfg = FederatedConfig(
        rounds=rounds, local_epochs=1, batch_size=n, optimizer="sgd", lr=lr, device="cpu"
    )
    run_federated(model, digits, partition_dataset(digits, 1), cfg, [watch])

    X, y = torch.from_numpy(digits.X_train), torch.from_numpy(digits.y_train)
    params = list(reference.parameters())
    start = _state(reference)
    for r in range(rounds):
        grads = torch.autograd.grad(F.cross_entropy(reference(X), y), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= lr * g
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(watch.states[r][name], value, atol=1e-6, rtol=1e-5)
            assert not torch.allclose(value, start[name])  # the step moved every tensor


def test_identical_client_weights_average_to_themselves_exactly():
    model = seeded_mlp(load_dataset("moons", n_samples=40))
    state = {**_state(model), "steps": torch.tensor(7)}
    averaged = weighted_average([state, state, state], [1, 3, 5])
    assert all(torch.equal(averaged[k], state[k]) for k in state)
    assert averaged["steps"].dtype == torch.int64


def test_weights_are_averaged_by_example_count_by_hand():
    small = {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([1.0])}
    large = {"w": torch.tensor([4.0, 8.0]), "b": torch.tensor([5.0])}
    averaged = weighted_average([small, large], [1, 3])
    assert torch.equal(averaged["w"], torch.tensor([3.0, 7.0]))  # the plain mean is [2, 6]
    assert torch.equal(averaged["b"], torch.tensor([4.0]))
    for states, weights in (([], []), ([small], [1, 2]), ([small, large], [0, 0])):
        with pytest.raises(MaaslabError, match="weight"):
            weighted_average(states, weights)


def test_the_server_weights_each_client_by_its_examples(digits):
    # Two clients of 1 and 3 examples: one round's global model is (1 w_0 + 3 w_1) / 4.
    part = Partition(
        indices=(np.array([0]), np.array([1, 2, 3])),
        label_counts=np.zeros((2, 10), dtype=np.int64),
        alpha=None,
        seed=0,
    )
    cfg = FederatedConfig(rounds=1, batch_size=4, lr=0.5, seed=5, device="cpu")
    model = seeded_mlp(digits)
    start = copy.deepcopy(model)
    run_federated(model, digits, part, cfg)

    updates = []
    for k in (0, 1):
        local = cfg.train_config(client_seed(cfg.seed, 1, k))
        data = client_dataset(digits, part, k)
        updates.append(local_update(copy.deepcopy(start), start, data, local, client=k).state)
    expected = weighted_average(updates, [1, 3])
    plain = weighted_average(updates, [1, 1])
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-7, rtol=0)
    assert any(not torch.allclose(plain[k], expected[k]) for k in expected)


def _non_iid_run(digits, **overrides):
    part = partition_dataset(digits, 4, alpha=0.1, seed=1)
    cfg = FederatedConfig(rounds=2, local_epochs=3, batch_size=32, lr=0.1, seed=3, **overrides)
    model = seeded_mlp(digits)
    return model, run_federated(model, digits, part, cfg)


def test_fedprox_with_mu_zero_takes_fedavgs_steps_exactly(digits):
    avg_model, avg = _non_iid_run(digits)
    prox_model, prox = _non_iid_run(digits, algorithm="fedprox", mu=0.0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            avg_model.state_dict().values(), prox_model.state_dict().values(), strict=True
        )
    )
    assert avg.column("val_loss") == prox.column("val_loss")
    assert np.array_equal(avg.client_table("drift"), prox.client_table("drift"), equal_nan=True)


def test_the_proximal_term_keeps_clients_closer_to_the_global_weights(digits):
    _, avg = _non_iid_run(digits)
    _, prox = _non_iid_run(digits, algorithm="fedprox", mu=1.0)
    drift_avg, drift_prox = avg.client_table("drift")[1:], prox.client_table("drift")[1:]
    assert (drift_prox[0] < drift_avg[0]).all()  # round 1: same start, every client closer
    assert drift_prox.mean() < 0.8 * drift_avg.mean()


def test_the_proximal_loss_adds_mu_over_two_times_the_squared_distance():
    data = load_dataset("moons", n_samples=40)
    model = seeded_mlp(data)
    anchor = [p.detach() + 1.0 for p in model.parameters()]  # every weight 1 away
    size = sum(p.numel() for p in model.parameters())
    assert proximal_term(model, anchor).item() == pytest.approx(size)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    out = model(X)
    loss = fedprox_loss(model, anchor, 0.2, data.task)(out, X, y)
    assert loss.item() == pytest.approx(F.cross_entropy(out, y).item() + 0.1 * size, rel=1e-6)


def test_a_short_iid_digits_run_improves_and_reads_the_test_split_once(digits, monkeypatch):
    reads = []
    real = fedavg_module.evaluate_split

    def counted(model, data, split="test", **kwargs):
        reads.append(split)
        return real(model, data, split, **kwargs)

    monkeypatch.setattr(fedavg_module, "evaluate_split", counted)
    part = partition_dataset(digits, 5, seed=0)
    cfg = FederatedConfig(rounds=4, local_epochs=2, lr=0.3)
    result = run_federated(seeded_mlp(digits), digits, part, cfg)
    accuracy = result.column("val_accuracy")
    assert result.column("round") == [0, 1, 2, 3, 4]
    assert accuracy[-1] > accuracy[0] + 0.5 and accuracy[-1] > 0.75  # measured: 0.11 -> 0.87
    assert reads == ["val"] * 5 + ["test"] and 0.7 < result.test_accuracy <= 1.0
    drift = result.client_table("drift")
    assert np.isnan(drift[0]).all() and (drift[1:] > 0).all()
    assert np.isfinite(result.client_table("val_accuracy")[1:]).all()
    assert sum(c.examples for c in result.rounds[1].clients) == len(digits.y_train)
    # without dp nobody counts an epsilon
    assert result.epsilon is None and np.isnan(result.client_table("epsilon")).all()
    assert (result.client_table("dp_steps")[1:] == 0).all()


def test_sampled_runs_draw_their_clients_per_round_and_repeat_with_the_seed(digits):
    part = partition_dataset(digits, 5, alpha=1.0, seed=0)
    cfg = FederatedConfig(rounds=4, clients_per_round=2, seed=9)
    runs = [run_federated(seeded_mlp(digits), digits, part, cfg) for _ in range(2)]
    chosen = [tuple(c.client for c in r.clients) for r in runs[0].rounds[1:]]
    assert all(len(c) == 2 for c in chosen) and len(set(chosen)) > 1
    assert chosen == [tuple(sample_clients(5, 2, 9, r)) for r in range(1, 5)]
    assert runs[0].column("val_loss") == runs[1].column("val_loss")
    assert np.array_equal(
        runs[0].client_table("drift"), runs[1].client_table("drift"), equal_nan=True
    )
    assert np.isnan(runs[0].client_table("drift")[1:]).sum() == 4 * 3  # 3 idle clients a round


def test_callbacks_see_every_round_and_a_stop_ends_the_run(digits):
    part = partition_dataset(digits, 3, seed=0)
    cfg = FederatedConfig(rounds=5)
    watch = Rounds(stop_after=2)
    result = run_federated(seeded_mlp(digits), digits, part, cfg, [watch])
    assert len(watch.states) == 2 and watch.clients_seen == 6
    assert result.column("round") == [0, 1, 2] and result.stopped_early

    # stopped in the middle of round 2: that round is not averaged
    model, watch = seeded_mlp(digits), Rounds(stop_at_client=4)
    result = run_federated(model, digits, part, cfg, [watch])
    assert result.column("round") == [0, 1] and result.stopped_early
    assert all(torch.equal(v, watch.states[0][k]) for k, v in model.state_dict().items())
    assert math.isfinite(result.test_loss)  # the test split is still read once, at the end


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rounds": 0}, "at least 1"),
        ({"local_epochs": 0}, "at least 1"),
        ({"clients_per_round": 0}, "clients_per_round"),
        ({"algorithm": "fedadam"}, "choose one of fedavg, fedprox"),
        ({"mu": 0.1}, "set algorithm='fedprox'"),
        ({"algorithm": "fedprox", "mu": -1.0}, "mu must be"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"lr": 0.0}, "learning rate"),
    ],
)
def test_a_bad_config_says_what_to_change(fields, message):
    with pytest.raises(MaaslabError, match=message):
        FederatedConfig(**fields)


def test_a_run_refuses_more_sampled_clients_than_it_has_or_no_validation_split(digits):
    part = partition_dataset(digits, 3)
    with pytest.raises(MaaslabError, match="sample at most 3"):
        run_federated(seeded_mlp(digits), digits, part, FederatedConfig(clients_per_round=4))
    no_val = dataclasses.replace(digits, X_val=digits.X_val[:0], y_val=digits.y_val[:0])
    with pytest.raises(MaaslabError, match="val_fraction > 0"):
        run_federated(seeded_mlp(digits), no_val, part, FederatedConfig())


@pytest.mark.parametrize(("method", "atol"), [("masked", 1e-6), ("ckks", 1e-5)])
def test_masked_and_encrypted_servers_reach_the_plain_servers_weights(digits, method, atol):
    # The server loop averages through aggregation.aggregate: the same run with the server seeing
    # only masked or encrypted updates ends with the plain run's weights (within their bounds).
    partition = partition_dataset(digits, 3, seed=0)
    runs = {}
    for how in ("plain", method):
        model = seeded_mlp(digits)
        cfg = FederatedConfig(rounds=2, lr=0.3, device="cpu", aggregation=how)
        result = run_federated(model, digits, partition, cfg)
        runs[how] = (_state(model), result)
    (plain, plain_result), (other, other_result) = runs["plain"], runs[method]
    for name, value in plain.items():
        torch.testing.assert_close(other[name], value, atol=atol, rtol=0)
    assert other_result.rounds[1].upload_bytes > plain_result.rounds[1].upload_bytes > 0
    with pytest.raises(MaaslabError, match="unknown aggregation 'secret'"):
        FederatedConfig(aggregation="secret")
