"""The two steps every numeric check of lesson 15 (exercises 1, 2 and 4) starts with: the
learner's answers as numbers, and the first case where they differ from the engine's."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from maaslab.exercises.grading import CheckResult, call_answer, failed


def answer_numbers(
    name: str, fn: Callable, cases: Iterable[tuple]
) -> tuple[np.ndarray | None, CheckResult | None]:
    """The learner's answer for every case as floats; a crash, a None or a non-number is a
    verdict instead."""
    out = []
    for args in cases:
        got, bad = call_answer(name, fn, *args)
        if bad is not None:
            return None, bad
        try:
            out.append(float(got))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None, failed(name, f"expected a number, got {type(got).__name__}")
    return np.array(out), None


def first_wrong(got: np.ndarray, want: np.ndarray, labels: list[str]) -> str:
    """'for <case> you gave x, expected y' at the first case where got differs from want."""
    i = int(np.argmax(~np.isclose(got, want, rtol=1e-6, atol=1e-9)))
    return f"for {labels[i]} you gave {got[i]:,.6g}, expected {want[i]:,.6g}"
