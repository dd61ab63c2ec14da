import copy
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from federated_helpers import digits_data, seeded_mlp
from opacus import PrivacyEngine
from opacus.accountants import PRVAccountant, RDPAccountant
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from maaslab import MaaslabError
from maaslab.data import load_dataset
from maaslab.evaluation import small_subset
from maaslab.federated import (
    ClientPrivacy,
    FederatedConfig,
    check_private,
    dp_epsilon,
    local_update,
    partition_dataset,
    private_train,
    run_federated,
    sample_rate,
)
from maaslab.models import build_model
from maaslab.train import TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return digits_data()


@pytest.fixture(scope="module")
def small(digits):
    return small_subset(digits, 60, seed=0)


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("accountant", "reference"), [("rdp", RDPAccountant), ("prv", PRVAccountant)]
)
def test_epsilon_is_opacus_accountant_stepped_one_step_at_a_time(accountant, reference):
    sigma, q, steps, delta = 1.1, 0.05, 120, 1e-5
    ledger = reference()
    for _ in range(steps):
        ledger.step(noise_multiplier=sigma, sample_rate=q)
    expected = ledger.get_epsilon(delta)
    assert dp_epsilon(sigma, q, steps, delta, accountant) == pytest.approx(expected, rel=1e-9)
    assert 0.5 < expected < 10  # a guarantee in the usual range, not a degenerate one
    assert dp_epsilon(sigma, q, 0, delta) == 0.0
    assert dp_epsilon(0.0, q, steps, delta) == math.inf  # clipping alone hides nothing
    if accountant == "rdp":  # the RDP bound lies above the tighter PRV estimate
        assert expected > dp_epsilon(sigma, q, steps, delta, "prv")


@pytest.mark.filterwarnings("ignore:Secure RNG turned off", "ignore:Full backward hook")
def test_private_training_through_train_is_opacus_make_private_step_for_step(small):
    # The oracle: Opacus's own recipe (a DataLoader, PrivacyEngine.make_private, the usual
    # loop) from the same weights and seeds gives the same weights and the same epsilon.
    cfg = TrainConfig(epochs=2, batch_size=12, optimizer="sgd", lr=0.5, seed=4, device="cpu")
    model, privacy = seeded_mlp(small), ClientPrivacy(1.3, 0.7, delta=1e-4)
    reference = copy.deepcopy(model)
    history = private_train(model, small, cfg, privacy)

    torch.manual_seed(cfg.seed)
    X, y = torch.from_numpy(small.X_train), torch.from_numpy(small.y_train)
    loader = DataLoader(
        TensorDataset(X, y),
        batch_size=cfg.batch_size,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    engine = PrivacyEngine(accountant="rdp")
    module, optimizer, loader = engine.make_private(
        module=reference,
        optimizer=torch.optim.SGD(reference.parameters(), lr=cfg.lr),
        data_loader=loader,
        noise_multiplier=1.3,
        max_grad_norm=0.7,
    )
    steps = 0
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(module(xb), yb).backward()
            optimizer.step()
            steps += 1
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)
    assert privacy.steps == steps == len(history.step_loss) == 2 * math.ceil(60 / 12)
    assert privacy.epsilon() == pytest.approx(engine.get_epsilon(1e-4), rel=1e-9)
    # the worker is left as it came: no Opacus hooks or per-example gradients on it
    assert not hasattr(model, "autograd_grad_sample_hooks")
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())


def test_each_examples_gradient_is_clipped_before_the_sum_by_hand():
    # Oracle by hand: per-example gradients from torch.func, each clipped to C, summed and
    # divided by the batch size (sigma = 0: no noise; q = 1: every example in the one batch).
    data = replace(
        load_dataset("moons", n_samples=60),
        X_train=np.float32(np.random.default_rng(0).normal(size=(8, 2)) * 3),
        y_train=np.arange(8) % 2,
    )
    model = seeded_mlp(data, hidden=(5,))
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}

    def loss_of_one(p, x, t):
        return F.cross_entropy(torch.func.functional_call(model, p, (x[None],)), t[None])

    per_example = torch.func.vmap(torch.func.grad(loss_of_one), in_dims=(None, 0, 0))(params, X, y)
    norms = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in per_example.values()))
    C, lr = norms.median().item(), 1.0  # half the examples are clipped, half are not
    factor = (C / (norms + 1e-6)).clamp(max=1.0)  # min(1, C / ||g_i||), as Opacus computes it
    assert (factor < 1).sum() >= 3 and (factor == 1).sum() >= 3

    def clipped(g):
        return g * factor.view(-1, *[1] * (g.dim() - 1))

    assert all(
        n <= C + 1e-6
        for n in torch.sqrt(
            sum(clipped(g).flatten(1).square().sum(1) for g in per_example.values())
        )
    )
    cfg = TrainConfig(epochs=1, batch_size=8, optimizer="sgd", lr=lr, device="cpu")
    private_train(model, data, cfg, ClientPrivacy(0.0, C))
    for name, p in model.named_parameters():
        g = per_example[name]
        expected = params[name] - lr * clipped(g).sum(0) / len(y)
        torch.testing.assert_close(p.detach(), expected, atol=1e-7, rtol=1e-5)
        assert not torch.allclose(p.detach(), params[name] - lr * g.mean(0), atol=1e-4)


def test_rounds_compose_each_clients_steps_as_the_accountant_says(digits):
    # 3 clients, one trained per round: a client's epsilon after k of its rounds is that of
    # k * (local steps) composed; a round's epsilon is the largest any client has spent.
    part = partition_dataset(digits, 3, seed=0)
    cfg = FederatedConfig(
        rounds=4,
        clients_per_round=1,
        local_epochs=1,
        batch_size=90,
        lr=0.3,
        seed=2,
        dp=True,
        noise_multiplier=1.0,
        delta=1e-5,
        device="cpu",
    )
    result = run_federated(seeded_mlp(digits), digits, part, cfg)
    trained, spent = dict.fromkeys(range(3), 0), dict.fromkeys(range(3), 0.0)
    assert result.rounds[0].epsilon == 0.0
    for record in result.rounds[1:]:
        (client,) = record.clients
        n = client.examples
        trained[client.client] += 1
        steps = trained[client.client] * math.ceil(n / 90)
        assert client.dp_steps == steps
        expected = dp_epsilon(1.0, sample_rate(n, 90), steps, 1e-5)
        assert client.epsilon == pytest.approx(expected, rel=1e-9)
        spent[client.client] = client.epsilon
        assert record.epsilon == max(spent.values())
    assert max(trained.values()) >= 2  # some client composed more than one round
    assert result.epsilon == result.rounds[-1].epsilon
    eps = result.column("epsilon")
    assert all(a <= b for a, b in itertools.pairwise(eps))


def test_two_rounds_cost_more_epsilon_than_one_and_less_than_twice(small):
    part = partition_dataset(small, 1)
    cfg = FederatedConfig(
        rounds=2, batch_size=10, lr=0.3, dp=True, noise_multiplier=1.5, delta=1e-3, device="cpu"
    )
    result = run_federated(seeded_mlp(small), small, part, cfg)
    one, two = result.column("epsilon")[1:]
    assert one == pytest.approx(dp_epsilon(1.5, 1 / 6, 6, 1e-3), rel=1e-9)
    assert two == pytest.approx(dp_epsilon(1.5, 1 / 6, 12, 1e-3), rel=1e-9)
    assert one < two < 2 * one  # composition costs less than adding the epsilons


def test_a_private_run_repeats_with_its_seed_and_learns(digits):
    part = partition_dataset(digits, 2, seed=0)
    cfg = FederatedConfig(
        rounds=2, local_epochs=2, lr=0.3, dp=True, noise_multiplier=0.8, seed=5, device="cpu"
    )
    models = [seeded_mlp(digits) for _ in range(3)]
    runs = [
        run_federated(m, digits, part, c)
        for m, c in zip(models, (cfg, cfg, replace(cfg, seed=6)), strict=True)
    ]
    assert all(
        torch.equal(a, b) for a, b in zip(_weights(models[0]), _weights(models[1]), strict=True)
    )
    assert runs[0].column("val_loss") == runs[1].column("val_loss")
    assert runs[0].epsilon == runs[1].epsilon == runs[2].epsilon  # same steps, other noise
    assert not torch.equal(_weights(models[0])[0], _weights(models[2])[0])
    assert runs[0].rounds[-1].val_accuracy > 0.5  # measured 0.72: noisy, but it learns


def test_empty_poisson_batches_take_their_step_and_weigh_nothing(small):
    # batch_size 1 of 60 examples: q = 1/60, and about a third of the batches are empty
    cfg = TrainConfig(epochs=1, batch_size=1, optimizer="sgd", lr=0.1, device="cpu")
    model, privacy = seeded_mlp(small), ClientPrivacy(1.0, 1.0)
    history = private_train(model, small, cfg, privacy)
    assert privacy.steps == len(history.step_loss) == 60
    assert np.isnan(history.step_loss).sum() > 5  # the empty ones: a mean over no example
    assert math.isfinite(history.epochs[0].train_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_mlp_is_accepted_and_a_batchnorm_model_refused_by_name(digits):
    check_private(seeded_mlp(digits))
    check_private(build_model("cnn"))
    bn = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10)).eval()
    with pytest.raises(MaaslabError, match=r"BatchNorm.*ModuleValidator\.fix"):
        check_private(bn)
    assert not bn.training  # the check leaves the model in its mode
    cfg = FederatedConfig(rounds=1, dp=True)
    with pytest.raises(MaaslabError, match="BatchNorm"):
        run_federated(bn, digits, partition_dataset(digits, 2), cfg)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"noise_multiplier": -0.5}, "noise_multiplier must be"),
        ({"noise_multiplier": math.inf}, "noise_multiplier must be"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be"),
        ({"delta": 0.0}, "delta must lie"),
        ({"delta": 1.0}, "delta must lie"),
        ({"accountant": "gdp"}, "choose one of rdp, prv"),
        ({"dp": True, "algorithm": "fedprox", "mu": 0.1}, "use algorithm='fedavg' with dp"),
    ],
)
def test_a_bad_privacy_config_says_what_to_change(fields, message):
    with pytest.raises(MaaslabError, match=message):
        FederatedConfig(**fields)


def test_runs_that_cannot_be_private_are_refused(small, tmp_path):
    part = partition_dataset(small, 2)
    with pytest.raises(MaaslabError, match=r"well below 0\.033"):
        run_federated(seeded_mlp(small), small, part, FederatedConfig(dp=True, delta=0.05))
    cfg = TrainConfig(epochs=1, device="cpu")
    with pytest.raises(MaaslabError, match="FedAvg"):
        local_update(
            seeded_mlp(small), seeded_mlp(small), small, cfg, mu=0.1, privacy=ClientPrivacy(1, 1)
        )
    with pytest.raises(MaaslabError, match="checkpoint_dir"):
        train(
            seeded_mlp(small),
            small,
            replace(cfg, checkpoint_dir=str(tmp_path)),
            prepare=ClientPrivacy(1, 1).prepare(32, []),
        )
    for args in ((0, 8), (10, 0)):
        with pytest.raises(MaaslabError, match="at least"):
            sample_rate(*args)
    assert sample_rate(100, 32) == 1 / 4  # four batches an epoch, as Opacus counts them
