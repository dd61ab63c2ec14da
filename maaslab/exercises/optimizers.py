"""Lesson 03's auto-checked exercises: hand-written optimizer steps and a hand-derived gradient.

Each check feeds the learner's update rule a fixed, seeded stream of gradients of very different
sizes (1 down to 1e-4, where eps and bias correction visibly matter), carries the learner's own
state from step to step and compares every step with torch.optim's rule. When the answer matches
a known mistake (no bias correction, eps inside the square root...) the message names it. Tests
prove the reference rules here equal the optimizers of `maaslab.optimization.optim`, which equal
torch.
"""

from __future__ import annotations

import numpy as np

from maaslab.exercises.grading import CheckResult, exercise, failed, first_mistake, passed
from maaslab.optimization.surfaces import SURFACES

_CHECK_STEPS = 6  # enough for bias correction and carried state to show


def _trajectory(fn, n_state: int, hyper: tuple, with_t: bool) -> np.ndarray:
    rng = np.random.default_rng(3)
    params = rng.normal(size=3)
    state = [np.zeros(3) for _ in range(n_state)]
    grads = rng.normal(size=(_CHECK_STEPS, 3)) * np.array([1.0, 1e-2, 1e-4])
    out = []
    for t, grad in enumerate(grads, start=1):
        extra = (t,) if with_t else ()
        result = fn(params.copy(), grad.copy(), *(s.copy() for s in state), *extra, *hyper)
        if not isinstance(result, tuple | list) or len(result) != 1 + n_state:
            raise TypeError(f"return a tuple of {1 + n_state} arrays, got {type(result).__name__}")
        params, *state = (np.asarray(r, dtype=float).reshape(3) for r in result)
        out.append(params)
    return np.array(out)


def _check_rule(title, fn, reference, n_state, hyper, with_t, wrong, hint) -> CheckResult:
    try:
        got = _trajectory(fn, n_state, hyper, with_t)
    except Exception as error:  # the learner's code may fail in any way; say how
        return failed(title, f"calling your function failed: {type(error).__name__}: {error}")
    expected = _trajectory(reference, n_state, hyper, with_t)
    if np.allclose(got, expected, rtol=1e-6, atol=1e-12):
        return passed(title, f"all {_CHECK_STEPS} steps match the reference update")
    mistakes = [(_trajectory(v, n_state, hyper, with_t), why) for why, v in wrong.items()]
    why = first_mistake(got, mistakes, rtol=1e-6, atol=1e-12)
    if why:
        return failed(title, why)
    bad = int(np.argmax(~np.all(np.isclose(got, expected, rtol=1e-6, atol=1e-12), axis=1)))
    return failed(
        title,
        f"step {bad + 1} gives params {np.round(got[bad], 6)}, expected "
        f"{np.round(expected[bad], 6)}. "
        + (
            hint
            if bad == 0
            else "Step 1 is right, so check "
            "the state you return and carry to the next step. " + hint
        ),
    )


def _adam_variant(correct: bool = True, eps_inside: bool = False, swap: bool = False):
    def step(p, g, m, v, t, lr, b1, b2, eps):
        if swap:
            b1, b2 = b2, b1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = (m / (1 - b1**t), v / (1 - b2**t)) if correct else (m, v)
        denom = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
        return p - lr * m_hat / denom, m, v

    return step


@exercise
def check_adam_step(fn) -> CheckResult:
    """Grade a hand-written Adam step against torch.optim.Adam's rule.

    Parameters
    ----------
    fn : `fn(params, grad, m, v, t, lr, beta1, beta2, eps) -> (params, m, v)`, t counting
        from 1; called with lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8.
    """
    hyper = (0.1, 0.9, 0.999, 1e-8)
    wrong = {
        "without bias correction: divide m by (1 - beta1**t) and v by (1 - beta2**t) before "
        "the update; otherwise the first steps are far too small or too large.": _adam_variant(
            correct=False
        ),
        "eps is inside the square root: torch adds eps after it, sqrt(v_hat) + eps.": (
            _adam_variant(eps_inside=True)
        ),
        "beta1 and beta2 are swapped: m decays with beta1 (0.9), v with beta2 (0.999).": (
            _adam_variant(swap=True)
        ),
    }
    hint = "Hint: m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g**2, then bias-correct both."
    return _check_rule("Adam step", fn, _adam_variant(), 2, hyper, True, wrong, hint)


def _momentum_variant(dampen: bool = False, old_velocity: bool = False):
    def step(p, g, velocity, lr, mu):
        new = mu * velocity + ((1 - mu) * g if dampen else g)
        return p - lr * (velocity if old_velocity else new), new

    return step


@exercise
def check_momentum_step(fn) -> CheckResult:
    """Grade a hand-written momentum step against torch SGD(momentum=...) .

    Parameters
    ----------
    fn : `fn(params, grad, velocity, lr, momentum) -> (params, velocity)`, velocity starting
        at zeros; called with lr=0.1, momentum=0.9.
    """
    wrong = {
        "the velocity is an average, mu*v + (1-mu)*g: torch's SGD adds the whole gradient, "
        "v = mu*v + g.": _momentum_variant(dampen=True),
        "the step uses the old velocity: update v first, then p = p - lr * v.": (
            _momentum_variant(old_velocity=True)
        ),
    }
    hint = "Hint: v = momentum * v + g, then p = p - lr * v."
    return _check_rule("momentum step", fn, _momentum_variant(), 1, (0.1, 0.9), False, wrong, hint)


def _rmsprop_variant(eps_inside: bool = False):
    def step(p, g, s, lr, alpha, eps):
        s = alpha * s + (1 - alpha) * g**2
        return p - lr * g / (np.sqrt(s + eps) if eps_inside else np.sqrt(s) + eps), s

    return step


@exercise
def check_rmsprop_step(fn) -> CheckResult:
    """Grade a hand-written RMSprop step against torch.optim.RMSprop's rule.

    Parameters
    ----------
    fn : `fn(params, grad, square_avg, lr, alpha, eps) -> (params, square_avg)`, square_avg
        starting at zeros; called with lr=0.01, alpha=0.99, eps=1e-8.
    """
    wrong = {"eps is inside the square root: torch uses sqrt(s) + eps.": _rmsprop_variant(True)}
    hint = "Hint: s = alpha*s + (1-alpha)*g**2, then p = p - lr * g / (sqrt(s) + eps)."
    hyper = (0.01, 0.99, 1e-8)
    return _check_rule("RMSprop step", fn, _rmsprop_variant(), 1, hyper, False, wrong, hint)


@exercise
def check_rosenbrock_gradient(fn) -> CheckResult:
    """Grade a hand-derived gradient of f(x, y) = (1 - x)^2 + 100 (y - x^2)^2.

    Parameters
    ----------
    fn : `fn(x, y) -> (df/dx, df/dy)` for float x and y.
    """
    title = "gradient of the Rosenbrock function"
    surface = SURFACES["rosenbrock"]
    points = np.random.default_rng(0).uniform(-2, 2, size=(8, 2))
    try:
        got = np.array([np.asarray(fn(float(x), float(y)), float).reshape(2) for x, y in points])
    except Exception as error:  # the learner's code may fail in any way; say how
        return failed(title, f"calling fn(x, y) failed: {type(error).__name__}: {error}")
    expected = surface.grad(points)
    ok = np.isclose(got, expected, rtol=1e-6, atol=1e-9).all(axis=0)
    if ok.all():
        return passed(title, f"matches the analytic gradient at {len(points)} points")
    i = int(np.argmin(np.isclose(got, expected, rtol=1e-6, atol=1e-9).all(axis=1)))
    which = " and ".join(n for n, good in zip(("df/dx", "df/dy"), ok, strict=True) if not good)
    return failed(
        title,
        f"{which} is wrong: at (x, y) = {tuple(np.round(points[i], 3))} you give "
        f"{np.round(got[i], 4)}, expected {np.round(expected[i], 4)}. Hint: use the chain rule "
        "on each square, d/dx of 100 (y - x^2)^2 is 100 * 2 (y - x^2) * (-2x).",
    )
