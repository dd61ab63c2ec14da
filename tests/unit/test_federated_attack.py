import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from federated_helpers import digits_data, seeded_mlp
from sklearn.metrics import roc_auc_score, roc_curve

from maaslab import MaaslabError
from maaslab.data import load_dataset
from maaslab.evaluation import small_subset
from maaslab.federated import (
    DEFAULT_FEDERATION,
    FederatedCallback,
    TradeoffConfig,
    advantage_bound,
    example_losses,
    loss_threshold_attack,
    membership_attack,
    partition_dataset,
    privacy_utility,
    roc,
)
from maaslab.models import build_model


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def test_auc_and_roc_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    members = np.round(rng.gamma(1.0, 0.5, size=300), 1)  # rounded: many tied losses
    others = np.round(rng.gamma(1.5, 0.5, size=300), 1)
    result = loss_threshold_attack(members, others, yeom_threshold=0.5)
    labels = np.r_[np.ones(300), np.zeros(300)]
    scores = -np.r_[members, others]  # a lower loss says "member"
    assert result.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert 0.55 < result.auc < 0.8  # 0.59: far enough from 0.5 and 1 for a slip to show
    fpr, tpr, _ = roc_curve(labels, scores)
    assert result.advantage == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert (result.fpr[0], result.tpr[0], result.fpr[-1], result.tpr[-1]) == (0, 0, 1, 1)
    tpr_at = np.mean(members <= result.threshold) - np.mean(others <= result.threshold)
    assert tpr_at == pytest.approx(result.advantage)
    assert result.accuracy == pytest.approx(0.5 + result.advantage / 2)
    yeom = np.mean(members <= 0.5) - np.mean(others <= 0.5)
    assert result.yeom_advantage == pytest.approx(yeom) and result.n == 300


def test_a_perfect_a_reversed_and_a_blind_attack_by_hand():
    perfect = loss_threshold_attack([0.1, 0.2], [0.3, 0.4], yeom_threshold=0.25)
    assert (perfect.auc, perfect.advantage, perfect.threshold) == (1.0, 1.0, 0.2)
    assert perfect.yeom_advantage == 1.0
    reversed_ = loss_threshold_attack([0.3, 0.4], [0.1, 0.2], yeom_threshold=0.25)
    assert (reversed_.auc, reversed_.advantage) == (0.0, 0.0)  # calling nobody is the best
    assert reversed_.yeom_advantage == -1.0
    blind = loss_threshold_attack([0.5, 0.5], [0.5, 0.5], yeom_threshold=0.5)
    assert (blind.auc, blind.advantage, blind.yeom_advantage) == (0.5, 0.0, 0.0)
    fpr, tpr, thresholds = roc(np.array([1.0]), np.array([2.0]))
    assert fpr.tolist() == [0, 0, 1] and tpr.tolist() == [0, 1, 1]
    assert thresholds[0] == -np.inf
    with pytest.raises(MaaslabError, match="at least one member"):
        roc(np.array([]), np.array([1.0]))


def test_example_losses_are_each_examples_cross_entropy(digits):
    model = seeded_mlp(digits)
    X, y = digits.X_test[:700], digits.y_test[:700]  # more than one 512-row chunk
    with torch.no_grad():
        expected = F.cross_entropy(
            model(torch.from_numpy(X)), torch.from_numpy(y), reduction="none"
        )
    np.testing.assert_allclose(
        example_losses(model, X, y, digits.task), expected.numpy(), rtol=1e-6
    )
    assert model.training  # left in the mode it came in
    moons = load_dataset("diabetes")
    reg = build_model("mlp", in_features=moons.n_features, hidden=(4,), out_features=1)
    with torch.no_grad():
        out = reg(torch.from_numpy(moons.X_test)).squeeze(1).numpy()
    np.testing.assert_allclose(
        example_losses(reg, moons.X_test, moons.y_test, "regression"),
        (out - moons.y_test) ** 2,
        rtol=1e-5,
    )
    with pytest.raises(MaaslabError, match="one loss per example"):
        example_losses(model, X, y, "language_model")


def test_the_attack_draws_as_many_members_as_non_members_with_its_seed(digits):
    model = seeded_mlp(digits)
    a = membership_attack(model, digits, n=50, seed=1)
    b = membership_attack(model, digits, n=50, seed=1)
    c = membership_attack(model, digits, n=50, seed=2)
    assert len(a.member_loss) == len(a.nonmember_loss) == a.n == 50
    assert np.array_equal(a.member_loss, b.member_loss) and a.auc == b.auc
    assert not np.array_equal(a.member_loss, c.member_loss)
    full = membership_attack(model, digits)
    assert full.n == min(len(digits.y_train), len(digits.y_test))
    train_loss = example_losses(model, digits.X_train, digits.y_train, digits.task)
    assert full.yeom_threshold == pytest.approx(train_loss.mean())
    assert membership_attack(model, digits, nonmembers="val").n == len(digits.y_val)
    with pytest.raises(MaaslabError, match="choose 1 to 450"):
        membership_attack(model, digits, n=451)
    with pytest.raises(MaaslabError, match="'test' or 'val'"):
        membership_attack(model, digits, nonmembers="train")


def test_the_dp_bound_on_any_attack():
    assert advantage_bound(0.0, 0.0) == 0.0  # epsilon 0: nothing to tell apart
    assert advantage_bound(1.0, 0.0) == pytest.approx(math.tanh(0.5))  # (e - 1) / (e + 1)
    assert advantage_bound(1.0, 1e-5) == pytest.approx((math.e - 1 + 2e-5) / (math.e + 1))
    assert advantage_bound(math.inf, 1e-5) == advantage_bound(None, 1e-5) == 1.0
    values = [advantage_bound(e, 1e-5) for e in (0.1, 0.5, 1, 2, 4, 8)]
    assert values == sorted(values) and values[-1] < 1
    with pytest.raises(MaaslabError, match="epsilon >= 0"):
        advantage_bound(-1.0, 1e-5)


def test_dp_sgd_weakens_the_attack_on_a_deliberately_overfitted_model(digits):
    # 100 training examples, one client, a wide MLP trained far past fitting them: the plain
    # model's members stand out; the same run with DP-SGD (sigma 2) leaks much less.
    small = small_subset(digits, 100, seed=0)
    federated = replace(DEFAULT_FEDERATION, rounds=2, delta=1e-3)
    cfg = TradeoffConfig(noise_multipliers=(2.0,), federated=federated)
    result = privacy_utility(
        seeded_mlp(small, hidden=(256,)), small, partition_dataset(small, 1), cfg
    )
    plain, private = result.points
    assert result.column("noise_multiplier") == [None, 2.0]
    assert plain.epsilon == math.inf and plain.advantage_bound == 1.0
    assert plain.run.epsilon is None and private.run.epsilon == private.epsilon
    # measured: plain AUC 0.69, advantage 0.33, Yeom's 0.30, test accuracy 0.92;
    # DP (eps 4.6 at delta 1e-3): AUC 0.56, advantage 0.14, Yeom's 0.00, test accuracy 0.45
    assert plain.attack_auc > 0.65 and plain.attack_advantage > 0.25
    assert plain.attack.yeom_advantage > 0.2 > private.attack.yeom_advantage
    assert private.attack_auc < plain.attack_auc - 0.08
    assert private.attack_advantage < plain.attack_advantage - 0.1
    assert 1 < private.epsilon < 20
    assert plain.test_accuracy > private.test_accuracy  # the price of the noise
    assert result.column("attack_advantage") == [plain.attack.advantage, private.attack.advantage]


def test_a_sweep_config_says_what_to_change():
    with pytest.raises(MaaslabError, match="nothing to train"):
        TradeoffConfig(noise_multipliers=(), include_plain=False)
    with pytest.raises(MaaslabError, match="include_plain"):
        TradeoffConfig(noise_multipliers=(0.0,))
    assert TradeoffConfig().federation().dp is False


class StopInSetting(FederatedCallback):
    def __init__(self, setting):
        self.setting, self.begun = setting, 0

    def on_run_begin(self, state):
        self.begun += 1

    def on_round_end(self, state):
        state.stop = self.begun == self.setting


def test_a_stopped_sweep_keeps_the_settings_it_finished(digits):
    tiny = small_subset(digits, 30, seed=0)
    federated = replace(DEFAULT_FEDERATION, rounds=2, local_epochs=1, delta=1e-3)
    cfg = TradeoffConfig(noise_multipliers=(1.0, 2.0), federated=federated)
    stop = StopInSetting(2)
    result = privacy_utility(seeded_mlp(tiny), tiny, partition_dataset(tiny, 1), cfg, [stop])
    assert result.stopped_early and stop.begun == 2
    assert result.column("noise_multiplier") == [None]  # the stopped sigma=1 run is left out
