"""Grading for every exercise: a verdict (`CheckResult`) and the helpers that build one.

Each lesson's module in `maaslab.exercises` offers `check_…` functions (for example
`maaslab.exercises.gradient_descent.check_mse_gradient`); they all return a `CheckResult` built
with the helpers here, so every notebook prints verdicts the same way and tests can assert on
`.passed`. A wrong answer is compared with the lesson's known mistakes by `first_mistake`, so the
message names the slip instead of saying only "wrong"; `right_or_first_mistake` does the whole
"right answer, else the first known mistake, else the largest difference" verdict for arrays.

A verdict has three states: passed, failed, and not attempted yet (the answer is still the
student edition's stub, see `maaslab.exercises.unanswered`). Every `check_…` function is
decorated with `exercise`, which gives that third verdict. In a notebook a verdict shows as one
line of text and carries a JSON twin (`VERDICT_MIME`) that `maaslab.classroom` reads to grade.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from maaslab.exercises.unanswered import NotAttempted, unanswered_in

# Output type of a verdict's JSON twin in an executed notebook (read by maaslab.classroom).
VERDICT_MIME = "application/vnd.maaslab.verdict+json"


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one exercise answer."""

    name: str  # what was checked, e.g. "gradient of the MSE loss"
    passed: bool  # True when the answer is right
    message: str  # why it passed, or what is wrong and a hint to fix it
    attempted: bool = True  # False while the answer is still the student edition's stub

    def __bool__(self) -> bool:
        return self.passed

    @property
    def status(self) -> str:
        """ "passed", "failed" or "not attempted"."""
        return "passed" if self.passed else "failed" if self.attempted else "not attempted"

    def __str__(self) -> str:
        mark = {"passed": "✅ correct", "failed": "❌ not yet"}.get(
            self.status, "⏳ not attempted yet"
        )
        return f"{mark}: {self.name}. {self.message}"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        # Jupyter shows the verdict as a line of text instead of the dataclass repr; the JSON
        # twin lets a grader read it without parsing that text.
        record = {"name": self.name, "status": self.status, "message": self.message}
        return {"text/markdown": str(self), "text/plain": str(self), VERDICT_MIME: record}


def passed(name: str, message: str) -> CheckResult:
    """A passing verdict."""
    return CheckResult(name, True, message)


def failed(name: str, message: str) -> CheckResult:
    """A failing verdict; `message` says what is wrong and how to fix it."""
    return CheckResult(name, False, message)


def not_attempted(name: str, message: str) -> CheckResult:
    """The verdict on an answer not written yet: neither a pass nor a mistake."""
    return CheckResult(name, False, message, attempted=False)


def exercise(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Decorate a `check_…` function: an answer not written yet (an `Unanswered` argument, or a
    function that raises `NotAttempted` or nbgrader's bare `NotImplementedError()`) gets a "not
    attempted yet" verdict, not a failure."""
    name = check.__name__.removeprefix("check_").replace("_", " ")

    @functools.wraps(check)
    def graded(*args: object, **kwargs: object) -> CheckResult:
        for value in (*args, *kwargs.values()):
            if (stub := unanswered_in(value)) is not None:
                return not_attempted(name, str(NotAttempted(stub.answer)))
        args = tuple(_stub_aware(a) for a in args)
        kwargs = {key: _stub_aware(value) for key, value in kwargs.items()}
        try:
            return check(*args, **kwargs)
        except NotAttempted as why:  # the learner's function is still the stub, or calls one
            return not_attempted(name, str(why))

    return graded


def _stub_aware(value: object) -> object:
    # A learner's function (a plain def or lambda) whose bare `raise NotImplementedError()`,
    # nbgrader's own stub, raises NotAttempted instead: the check's `except Exception` lets it
    # through to `exercise`. A NotImplementedError with a message is the learner's own error.
    if not isinstance(value, types.FunctionType):
        return value

    @functools.wraps(value)
    def call(*args: object, **kwargs: object) -> object:
        try:
            return value(*args, **kwargs)
        except NotImplementedError as err:
            if err.args:
                raise
            tb = err.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            stub = tb.tb_frame.f_code.co_name if tb is not None else value.__name__
            raise NotAttempted("this answer" if stub == "<lambda>" else stub) from None

    return call


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
    got = _as_floats(answer)
    if got is None:
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
    array = _as_floats(got)
    if array is None:
        return None, failed(name, f"expected a tensor or array, got {type(got).__name__}")
    return array, None


def answer_number(name: str, got: object, where: str) -> tuple[float | None, CheckResult | None]:
    """An answer as one float, or (None, a failed verdict saying what came back `where`)."""
    try:
        return float(got), None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None, failed(name, f"expected one number, got {type(got).__name__} on {where}")


def _as_floats(value: object) -> np.ndarray | None:
    # Numbers, lists, arrays and tensors (detached) as a float array; None when not numeric.
    try:
        return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, float)
    except (TypeError, ValueError):
        return None


def matches(
    got: object, wrong: object, *, rtol: float = 1e-4, atol: float = 1e-6, equal_nan: bool = False
) -> bool:
    """True when `got` has the shape of `wrong` and equals it within tolerance (as np.allclose)."""
    got, wrong = _as_floats(got), _as_floats(wrong)
    if got is None or wrong is None or got.shape != wrong.shape:
        return False
    return bool(np.allclose(got, wrong, rtol=rtol, atol=atol, equal_nan=equal_nan))


def first_mistake(
    got: object,
    mistakes: Iterable[tuple[object, str]],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    equal_nan: bool = False,
) -> str | None:
    """The message of the first known wrong answer that `got` equals (within tolerance), if any.

    Parameters
    ----------
    got: the learner's answer: a number, a list, an array or a tensor.
    mistakes: (wrong answer, message naming the mistake) pairs, most telling first.
    rtol, atol, equal_nan: as in `np.allclose`; rtol=0, atol=0 asks for exact equality.
    """
    for wrong, why in mistakes:
        if matches(got, wrong, rtol=rtol, atol=atol, equal_nan=equal_nan):
            return why
    return None


def right_or_first_mistake(
    name: str,
    got: object,
    expected: object,
    mistakes: Iterable[tuple[object, str]],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    equal_nan: bool = False,
    hint: str = "",
) -> CheckResult:
    """The verdict on an array answer: right, or the first known mistake it equals, or else
    `check_array`'s message (shape, or the largest difference) with `hint`."""
    expected = _as_floats(expected)
    result = check_array(name, got, expected, rtol=rtol, atol=atol, hint=hint)
    if result.passed:
        return result
    why = first_mistake(got, mistakes, rtol=rtol, atol=atol, equal_nan=equal_nan)
    return failed(name, why) if why else result
