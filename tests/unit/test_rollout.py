"""Rollouts: the canary split, aliases, promote / rollback / remove, shadow agreement."""

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from maaslab.errors import MaaslabError
from maaslab.serve.rollout import ALIASES, Rollout, UnknownVersion, outputs_agree


def rollout(*versions, **traffic):
    """A Rollout of `digits` holding "model-<v>" strings for each version; first is champion."""
    out = Rollout[str]("digits")
    for version in versions:
        out.add(version, f"model-{version}")
    if traffic:
        out.set_traffic(**traffic)
    return out


def test_the_first_version_added_is_champion():
    r = rollout("1", "2")
    assert (r.champion, r.challenger, r.canary_percent, r.shadow) == ("1", None, 0.0, False)
    assert ALIASES == ("champion", "challenger")
    with pytest.raises(MaaslabError, match="already has version 2"):
        r.add("2", "again")
    with pytest.raises(MaaslabError, match="are aliases"):
        r.add("champion", "x")


def test_the_canary_split_is_exact_on_the_draw():
    r = rollout("1", "2", challenger="2", canary_percent=25)
    assert r.resolve(None, 0.0) == ("2", "model-2")
    assert r.resolve(None, 0.2499) == ("2", "model-2")
    assert r.resolve(None, 0.25) == ("1", "model-1")  # draw * 100 < 25 is strict
    assert r.resolve(None, 0.999) == ("1", "model-1")
    draws = np.random.default_rng(0).random(10_000)
    share = np.mean([r.resolve(None, float(d))[0] == "2" for d in draws])
    assert share == pytest.approx(0.25, abs=0.015)


def test_no_canary_or_no_challenger_means_the_champion():
    r = rollout("1", "2", challenger="2")
    assert r.resolve(None, 0.0) == ("1", "model-1")  # canary 0: nothing to the challenger
    r.set_traffic(canary_percent=100)
    assert r.resolve(None, 0.999) == ("2", "model-2")
    assert rollout("1").resolve(None, 0.0) == ("1", "model-1")


def test_aliases_and_versions_bypass_the_split():
    r = rollout("1", "2", "10", challenger="2", canary_percent=100)
    assert r.resolve("champion", 0.0) == ("1", "model-1")
    assert r.resolve("challenger", 0.9) == ("2", "model-2")
    assert r.resolve("10", 0.0) == ("10", "model-10")
    with pytest.raises(UnknownVersion, match=r"no version '3': choose one of 1, 2, 10") as caught:
        r.resolve("3", 0.0)
    assert caught.value.status == 404
    with pytest.raises(UnknownVersion, match="has no challenger"):
        rollout("1").resolve("challenger", 0.0)
    with pytest.raises(UnknownVersion, match="no versions loaded"):
        Rollout[str]("empty").resolve(None, 0.0)
    with pytest.raises(ValueError, match=r"draw must lie in \[0, 1\)"):
        r.resolve(None, 1.0)


def test_resolve_does_not_count_and_count_does():
    r = rollout("1", "2")
    r.resolve("1", 0.0)
    assert r.requests == {}
    r.count("1")
    r.count("1")
    r.count("2")
    r.count("9")  # removed while in flight: not counted
    assert r.requests == {"1": 2, "2": 1}


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({"challenger": "1"}, "already the champion"),
        ({"challenger": "7"}, "no version '7'"),
        ({"canary_percent": 10}, "needs a challenger"),
        ({"shadow": True}, "needs a challenger"),
        ({"challenger": "2", "canary_percent": 101}, r"0\.\.100, got 101"),
        ({"challenger": "2", "canary_percent": -1}, r"0\.\.100"),
        ({"challenger": "2", "canary_percent": float("nan")}, r"0\.\.100"),
    ],
)
def test_bad_traffic_is_refused_and_changes_nothing(traffic, message):
    r = rollout("1", "2")
    with pytest.raises(MaaslabError, match=message):
        r.set_traffic(**traffic)
    assert (r.challenger, r.canary_percent, r.shadow) == (None, 0.0, False)


def test_clearing_the_challenger_clears_its_traffic():
    r = rollout("1", "2", challenger="2", canary_percent=30, shadow=True)
    r.set_traffic(canary_percent=50)  # the challenger and shadow are kept
    assert (r.challenger, r.canary_percent, r.shadow) == ("2", 50.0, True)
    r.set_traffic(challenger=None)
    assert (r.challenger, r.canary_percent, r.shadow) == (None, 0.0, False)
    with pytest.raises(MaaslabError, match="needs a challenger"):
        r.set_traffic(challenger=None, canary_percent=5)


def test_promote_then_rollback_then_promote():
    r = rollout("1", "2", "3", challenger="2", canary_percent=10, shadow=True)
    assert r.promote() == "2"
    assert (r.champion, r.challenger, r.canary_percent, r.shadow) == ("2", None, 0.0, False)
    assert r.history == ["1"]
    with pytest.raises(MaaslabError, match="no challenger to promote"):
        r.promote()
    r.set_traffic(challenger="3")
    assert r.promote() == "3"
    assert r.history == ["1", "2"]
    assert r.rollback() == "2"
    assert (r.champion, r.challenger, r.canary_percent) == ("2", "3", 0.0)  # 3 kept to examine
    assert r.resolve("challenger", 0.0) == ("3", "model-3")
    assert r.resolve(None, 0.0) == ("2", "model-2")
    assert r.rollback() == "1"
    assert (r.champion, r.challenger, r.history) == ("1", "2", [])
    with pytest.raises(MaaslabError, match="no earlier champion to roll back to"):
        r.rollback()


def test_remove_refuses_the_champion_and_tidies_the_rest():
    r = rollout("1", "2", "3")
    with pytest.raises(MaaslabError, match=r"is the champion.*promote another version first"):
        r.remove("1")
    with pytest.raises(UnknownVersion, match="no version '8'"):
        r.remove("8")
    r.set_traffic(challenger="3", canary_percent=40, shadow=True)
    r.count("3")
    assert r.remove("3") == "model-3"
    assert (r.challenger, r.canary_percent, r.shadow) == (None, 0.0, False)
    assert "3" not in r.requests and list(r.versions) == ["1", "2"]


def test_removing_a_past_champion_keeps_rollback_meaningful():
    r = rollout("1", "2", "3")
    for challenger in ("2", "1", "3"):  # champions 1 -> 2 -> 1 -> 3
        r.set_traffic(challenger=challenger)
        r.promote()
    assert (r.champion, r.history) == ("3", ["1", "2", "1"])
    r.remove("2")
    assert r.history == ["1"]  # 1, 1 merged: one rollback goes back to 1
    assert r.rollback() == "1"
    assert (r.challenger, r.history) == ("3", [])


def test_shadow_goes_only_from_the_champion_to_the_challenger():
    r = rollout("1", "2")
    assert r.shadow_target("1") is None  # shadow off
    r.set_traffic(challenger="2", shadow=True)
    assert r.shadow_target("1") == ("2", "model-2")
    assert r.shadow_target("2") is None  # a canary request is not copied back
    for agreed in (True, True, False, None):
        r.record_shadow(agreed)
    assert (r.shadow_compared, r.shadow_agreed, r.shadow_skipped) == (3, 2, 1)


def test_state_is_json_ready_and_complete():
    r = rollout("10", "2", "1")
    r.set_traffic(challenger="2", canary_percent=12.5, shadow=True)
    r.count("10")
    r.record_shadow(True)
    r.record_shadow(False)
    assert r.state() == {
        "name": "digits",
        "versions": ["1", "2", "10"],
        "champion": "10",
        "challenger": "2",
        "canary_percent": 12.5,
        "shadow": True,
        "history": [],
        "requests": {"1": 0, "2": 0, "10": 1},
        "shadow_stats": {"compared": 2, "agreed": 1, "skipped": 0, "agreement": 0.5},
    }
    assert rollout("1").state()["shadow_stats"]["agreement"] is None


def test_a_rollout_built_inconsistent_is_refused():
    with pytest.raises(UnknownVersion, match="no version '3'"):
        Rollout("m", {"1": "a"}, "3")
    with pytest.raises(MaaslabError, match="needs a challenger"):
        Rollout("m", {"1": "a"}, "1", canary_percent=5)
    with pytest.raises(MaaslabError, match="name the champion"):
        Rollout("m", {"1": "a"})
    assert Rollout("m", {"1": "a", "2": "b"}, "1", "2", 5).resolve(None, 0.01) == ("2", "b")


PROBA = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])


@pytest.mark.parametrize(
    ("main", "shadow", "agree"),
    [
        ({"probabilities": PROBA}, {"probabilities": PROBA * 0.5 + 0.1}, True),  # same argmax
        ({"probabilities": PROBA}, {"probabilities": PROBA[:, ::-1]}, False),  # row 0 differs
        ({"probabilities": PROBA}, {"probabilities": PROBA[:1]}, False),  # another shape
        ({"label": ["cat", "dog"]}, {"label": ["cat", "dog"]}, True),
        ({"label": ["cat", "dog"]}, {"label": ["cat", "cow"]}, False),
        (
            {"probabilities": PROBA, "label": ["a", "b"]},
            {"probabilities": PROBA, "label": ["a", "c"]},
            False,
        ),
        ({"embedding": np.array([[1.0, 0.0]])}, {"embedding": np.array([[0.99, 0.1]])}, True),
        ({"embedding": np.array([[1.0, 0.0]])}, {"embedding": np.array([[0.9, 0.44]])}, False),
        ({"embedding": np.array([[1.0, 0.0]])}, {"embedding": np.array([[3.0, 0.0]])}, True),
        ({"logits": np.array([1.0, 2.0])}, {"logits": np.array([1.0, 2.0 + 1e-9])}, True),
        ({"logits": np.array([1.0, 2.0])}, {"logits": np.array([1.0, 2.1])}, False),
        ({"probabilities": PROBA}, {"embedding": PROBA}, False),  # nothing in common
        ({"text": np.array(["a"])}, {"text": np.array(["a"])}, True),
    ],
)
def test_outputs_agree(main, shadow, agree):
    assert outputs_agree(main, shadow) is agree


class RolloutMachine(RuleBasedStateMachine):
    """Any sequence of operations keeps the rollout consistent, refused ones change nothing."""

    def __init__(self):
        super().__init__()
        self.r = rollout("1", "2", "3")
        self.next_version = 4

    def attempt(self, action):
        before = self.r.state()
        try:
            action()
        except MaaslabError:
            assert self.r.state() == before  # a refusal leaves everything as it was

    @rule()
    def add(self):
        version = str(self.next_version)
        self.next_version += 1
        self.r.add(version, f"model-{version}")

    @rule(
        pick=st.integers(0, 20),
        canary=st.none() | st.sampled_from([0.0, 10.0, 100.0, -1.0, 101.0]) | st.floats(0, 100),
        shadow=st.none() | st.booleans(),
    )
    def traffic(self, pick, canary, shadow):
        # pick: mostly a loaded version, sometimes None (clear) or ... (keep the challenger)
        versions = sorted(self.r.versions)
        challenger = versions[pick % len(versions)] if pick < 16 else (None, ...)[pick % 2]
        self.attempt(
            lambda: self.r.set_traffic(challenger=challenger, canary_percent=canary, shadow=shadow)
        )

    @rule()
    def promote(self):
        self.attempt(self.r.promote)

    @rule(pick=st.integers(0, 20))
    def set_challenger_and_promote(self, pick):
        versions = sorted(self.r.versions)
        self.attempt(lambda: self.r.set_traffic(challenger=versions[pick % len(versions)]))
        self.attempt(self.r.promote)

    @rule()
    def rollback(self):
        self.attempt(self.r.rollback)

    @rule(pick=st.integers(0, 20))
    def remove(self, pick):
        versions = sorted(self.r.versions)
        self.attempt(lambda: self.r.remove(versions[pick % len(versions)]))

    @rule(selector=st.sampled_from([None, "champion", "challenger", "1", "2", "3", "9"]))
    def resolve(self, selector):
        draw = 0.37
        try:
            version, served = self.r.resolve(selector, draw)
        except UnknownVersion:
            assert selector not in self.r.versions
            assert selector == "challenger" or selector not in ALIASES
            return
        assert version in self.r.versions and served == f"model-{version}"
        if selector is None:
            canary = self.r.challenger is not None and draw * 100 < self.r.canary_percent
            assert version == (self.r.challenger if canary else self.r.champion)

    @invariant()
    def consistent(self):
        r = self.r
        assert r.champion in r.versions
        assert r.challenger is None or (r.challenger in r.versions and r.challenger != r.champion)
        assert 0 <= r.canary_percent <= 100
        if r.challenger is None:
            assert r.canary_percent == 0 and not r.shadow
        assert all(v in r.versions for v in r.history)
        assert not r.history or r.history[-1] != r.champion  # a rollback changes the champion


RolloutMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_rollout_sequences = RolloutMachine.TestCase
