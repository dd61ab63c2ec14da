"""Auto-checked exercises: a `check_…` function says whether an answer is right, and why not.

Each lesson module offers its own `check_…` functions (for example
`maaslab.linreg.check_gradient`); they all return a `CheckResult` built with the helpers here,
so every notebook prints verdicts the same way and tests can assert on `.passed`.
"""

from __future__ import annotations

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
