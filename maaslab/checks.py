"""Auto-checked exercises: a `check_…` function says whether an answer is right, and why not.

Each lesson module offers its own `check_…` functions (for example
`maaslab.linreg.check_gradient`); they all return a `CheckResult` built with the helpers here,
so every notebook prints verdicts the same way and tests can assert on `.passed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one exercise answer."""

    name: str  # what was checked, e.g. "gradient of the MSE loss"
    passed: bool  # True when the answer is right
    message: str  # why it passed, or what is wrong and a hint to fix it

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        mark = "✅ correct" if self.passed else "❌ not yet"
        return f"{mark}: {self.name}. {self.message}"

    def _repr_markdown_(self) -> str:
        # Jupyter shows the verdict as a line of text instead of the dataclass repr.
        return str(self)


def passed(name: str, message: str) -> CheckResult:
    """A passing verdict."""
    return CheckResult(name, True, message)


def failed(name: str, message: str) -> CheckResult:
    """A failing verdict; `message` says what is wrong and how to fix it."""
    return CheckResult(name, False, message)


def check_array(
    name: str,
    answer: object,
    expected: np.ndarray,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    hint: str = "",
) -> CheckResult:
    """Compare an array answer with the expected one: shape first, then values within tolerance.

    Parameters
    ----------
    name: what the answer is, as the learner would say it.
    answer: the learner's value (array-like; torch tensors are converted).
    expected: the right value.
    rtol, atol: tolerances as in `np.allclose`.
    hint: appended to the message when the values are wrong.
    """
    expected = np.asarray(expected, dtype=float)
    try:
        got = np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer, float)
    except (TypeError, ValueError):
        return failed(name, f"expected an array of numbers, got {type(answer).__name__}")
    if got.shape != expected.shape:
        return failed(name, f"shape {got.shape}, expected {expected.shape}")
    if not np.all(np.isfinite(got)):
        return failed(name, "the answer contains NaN or inf. " + hint)
    if np.allclose(got, expected, rtol=rtol, atol=atol):
        return passed(name, f"matches the reference within rtol={rtol:g}")
    error = np.abs(got - expected)
    worst = np.unravel_index(int(np.argmax(error)), error.shape) if error.ndim else ()
    message = (
        f"largest difference {error.max():.3g} at index {tuple(int(i) for i in worst)}: "
        f"got {got[worst]:.6g}, expected {expected[worst]:.6g}. "
    )
    if np.allclose(got, -expected, rtol=rtol, atol=atol):
        message += "Every value has the wrong sign. "
    return failed(name, message + hint)


def call_answer(name: str, fn: Callable, *args: object) -> tuple[object, CheckResult | None]:
    """Run a learner's function on copies of its arrays and tensors: (answer, None), or
    (None, a failed verdict) when it raised or returned None — a verdict, never a traceback."""
    copies = (
        a.clone() if hasattr(a, "clone") else a.copy() if isinstance(a, np.ndarray) else a
        for a in args
    )
    try:
        got = fn(*copies)
    except Exception as err:  # any error in the answer is a verdict
        return None, failed(name, f"your function raised {type(err).__name__}: {err}")
    if got is None:
        return None, failed(name, "your function returned None: did you forget `return`?")
    return got, None


def answer_array(name: str, got: object) -> tuple[np.ndarray | None, CheckResult | None]:
    """An answer as a float array (tensors detached), or (None, a failed verdict)."""
    try:
        return np.asarray(got.detach().cpu() if hasattr(got, "detach") else got, float), None
    except (TypeError, ValueError):
        return None, failed(name, f"expected a tensor or array, got {type(got).__name__}")


def first_mistake(
    got: np.ndarray, mistakes, *, rtol: float = 1e-4, atol: float = 1e-6, equal_nan: bool = False
) -> str | None:
    """The message of the first known wrong answer that `got` equals (within tolerance), if any.

    `mistakes` is a sequence of (wrong answer, message naming the mistake) pairs.
    """
    for wrong, why in mistakes:
        wrong = np.asarray(wrong.detach().cpu() if hasattr(wrong, "detach") else wrong, float)
        if got.shape == wrong.shape and np.allclose(
            got, wrong, rtol=rtol, atol=atol, equal_nan=equal_nan
        ):
            return why
    return None
