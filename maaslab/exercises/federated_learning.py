"""Lesson 18's auto-checked exercises: FedAvg's weighting, a pair of masks cancelling, composing
privacy budgets, and a membership-inference attack's advantage.

Each check runs the learner's answer on fixed probes and compares it with maaslab.federated
(whose averaging the tests compare with Flower's FedAvg). When an answer matches a known mistake
the message names it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from maaslab.exercises.grading import (
    CheckResult,
    answer_array,
    call_answer,
    exercise,
    failed,
    first_mistake,
    passed,
    right_or_first_mistake,
)
from maaslab.federated.fedavg import weighted_average

# --- exercise 1: FedAvg's weighted average --------------------------------------------------------

# Three clients' weights (one (2, 2) tensor each) and how many examples each trained on; sizes
# unequal so that a plain mean, or weighting by the wrong thing, cannot pass.
FEDAVG_SIZES = (10, 30, 60)


def _fedavg_probe() -> list[np.ndarray]:
    rng = np.random.default_rng(18)
    return [rng.normal(size=(2, 2)) + 3 * k for k in range(len(FEDAVG_SIZES))]


@exercise
def check_fedavg(fn: Callable) -> CheckResult:
    """Check `fn(client_weights: list of arrays, sizes: list of ints) -> the FedAvg average`."""
    name = "FedAvg: the clients' weights averaged by their example counts"
    probe, sizes = _fedavg_probe(), list(FEDAVG_SIZES)
    got, bad = call_answer(name, fn, probe, sizes)
    if bad is not None:
        return bad
    got, bad = answer_array(name, got)
    if bad is not None:
        return bad
    states = [{"w": torch.from_numpy(w)} for w in probe]
    expected = weighted_average(states, sizes)["w"].numpy()
    stacked, n = np.stack(probe), np.asarray(sizes, float)[:, None, None]
    mistakes = [
        (
            stacked.mean(0),
            "this is the plain mean: a client with 60 examples must count six times as much "
            "as one with 10 (weights n_k / sum n)",
        ),
        ((stacked * n).sum(0), "you forgot to divide by the total number of examples (100)"),
        (
            (stacked / n).sum(0) / (1 / n).sum(),
            "you weighted by 1 / n_k: small clients counted most; weight by n_k",
        ),
        (probe[-1], "this is the largest client's weights alone: average every client"),
    ]
    hint = "sum(n_k * w_k for each client) / sum(n_k)."
    return right_or_first_mistake(name, got, expected, mistakes, rtol=1e-6, atol=1e-9, hint=hint)


# --- exercise 2: pairwise masks cancel in the sum ----------------------------------------------


def _mask_probe() -> tuple[list[np.ndarray], int]:
    rng = np.random.default_rng(7)
    return [rng.normal(size=6) for _ in range(4)], 1234


@exercise
def check_masked_updates(fn: Callable) -> CheckResult:
    """Check `fn(updates: list of 1-D arrays, seed) -> masked updates`: each pair of clients i < j
    shares a random mask that i adds and j subtracts, so the sum is unchanged and no single
    masked update looks like its update."""
    name = "secure aggregation: pairwise masks that cancel"
    updates, seed = _mask_probe()
    got, bad = call_answer(name, fn, [u.copy() for u in updates], seed)
    if bad is not None:
        return bad
    got, bad = answer_array(name, got)
    if bad is not None:
        return bad
    true = np.stack(updates)
    if got.shape != true.shape:
        return failed(name, f"shape {got.shape}: return one masked update per client, {true.shape}")
    if np.allclose(got, true):
        return failed(
            name, "the updates came back unmasked: the server would see every client's update"
        )
    if not np.allclose(got.sum(0), true.sum(0), rtol=1e-6, atol=1e-6):
        off = np.abs(got.sum(0) - true.sum(0)).max()
        why = (
            "the masks do not cancel: client i must add the pair's mask and client j subtract "
            "the same mask"
        )
        return failed(name, f"{why} (the sum is off by up to {off:.3g})")
    hidden = [np.abs(np.corrcoef(g, u)[0, 1]) for g, u in zip(got, true, strict=True)]
    unmasked = [k for k, (g, u) in enumerate(zip(got, true, strict=True)) if np.allclose(g, u)]
    if unmasked:
        return failed(
            name,
            f"client(s) {unmasked} were sent unmasked: every client needs a mask from each "
            "other client",
        )
    return passed(
        name,
        "the server's sum equals the true sum while each masked update is far from its own "
        f"(largest correlation {max(hidden):.2f} on 6 numbers; masks far larger than the "
        "updates drive it to 0)",
    )


# --- exercise 3: composing privacy budgets ------------------------------------------------------

COMPOSITION_PROBES = (
    ([1.0, 1.0, 1.0], [1e-5, 1e-5, 1e-5]),
    ([0.5, 2.0], [0.0, 1e-6]),
    ([0.25] * 8, [1e-7] * 8),
)


@exercise
def check_basic_composition(fn: Callable) -> CheckResult:
    """Check `fn(epsilons, deltas) -> (epsilon, delta)` of running the mechanisms one after the
    other on the same data (the basic sequential composition theorem)."""
    name = "basic composition of (epsilon, delta) budgets"
    for epsilons, deltas in COMPOSITION_PROBES:
        got, bad = call_answer(name, fn, list(epsilons), list(deltas))
        if bad is not None:
            return bad
        got, bad = answer_array(name, got)
        if bad is not None:
            return bad
        want = np.array([sum(epsilons), sum(deltas)])
        if got.shape == want.shape and np.allclose(got, want, rtol=1e-9, atol=1e-15):
            continue
        where = f"for epsilons {epsilons} and deltas {deltas} you gave {got.tolist()}"
        why = first_mistake(
            got,
            [
                (
                    [max(epsilons), max(deltas)],
                    "the largest budget is not enough: each release leaks, so budgets add up",
                ),
                (
                    [np.mean(epsilons), np.mean(deltas)],
                    "the mean: budgets add, they do not average",
                ),
                ([sum(epsilons), max(deltas)], "delta adds up too"),
                ([float(np.prod(epsilons)), float(np.prod(deltas))], "budgets add, not multiply"),
            ],
            rtol=1e-9,
            atol=1e-15,
        )
        return failed(name, f"{where}. " + (why or f"expected {want.tolist()}."))
    return passed(
        name,
        "k releases on the same data cost the sum of their budgets; an accountant (RDP) proves "
        "a much smaller total for the Gaussian mechanism, as the notebook shows",
    )


# --- exercise 4: the advantage of a membership-inference attack ----------------------------------


def attack_advantage(members: np.ndarray, others: np.ndarray, threshold: float) -> float:
    """Advantage of the loss-threshold attack "a member if its loss is below `threshold`":
    true-positive rate on members minus false-positive rate on non-members."""
    return float(np.mean(members < threshold) - np.mean(others < threshold))


def _attack_probe() -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(18)
    members = rng.exponential(0.2, size=40)  # a model is confident on what it trained on
    others = rng.exponential(0.6, size=50)
    return members, others, 0.3


@exercise
def check_attack_advantage(fn: Callable) -> CheckResult:
    """Check `fn(member_losses, nonmember_losses, threshold) -> advantage` of the loss-threshold
    attack (guess "member" when the loss is below the threshold): TPR - FPR."""
    name = "membership-inference advantage (TPR - FPR)"
    members, others, threshold = _attack_probe()
    got, bad = call_answer(name, fn, members, others, threshold)
    if bad is not None:
        return bad
    got, bad = answer_array(name, got)
    if bad is not None:
        return bad
    want = attack_advantage(members, others, threshold)
    if got.shape == () and np.isclose(got, want, atol=1e-9):
        return passed(
            name,
            f"{want:.3f}: 0 is guessing, 1 tells every member from every non-member; a model "
            "trained with (epsilon, delta)-DP bounds every attack's advantage by "
            "(e^epsilon - 1 + 2 delta) / (e^epsilon + 1)",
        )
    tpr, fpr = np.mean(members < threshold), np.mean(others < threshold)
    pooled = np.concatenate([members < threshold, others >= threshold]).mean()
    why = first_mistake(
        got,
        [
            (-want, "the sign is reversed: members have the LOW losses, guess member below it"),
            (tpr, "this is the true-positive rate alone: subtract the false-positive rate"),
            (pooled, "this is the attack's accuracy over both groups; the advantage is TPR - FPR"),
            (fpr - tpr, "FPR - TPR: the other way round"),
        ],
        atol=1e-9,
    )
    return failed(name, why or f"got {got}, expected {want:.4f}. Hint: TPR - FPR.")
