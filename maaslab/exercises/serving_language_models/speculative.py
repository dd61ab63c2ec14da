"""Exercise 4: the tokens a speculative target pass yields, (1 - a^(k+1)) / (1 - a).

The check compares with `maaslab.llm.speculative.expected_tokens` and names the known slips:
the target's own token forgotten, one term short, a^k, 1 + k a, the k -> infinity limit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maaslab.exercises.grading import (
    CheckResult,
    call_answer,
    exercise,
    failed,
    passed,
    right_or_first_mistake,
)
from maaslab.exercises.serving_language_models.answers import answer_numbers, first_wrong
from maaslab.llm.speculative import expected_tokens

SPEC_PROBES = tuple((a, k) for a in (0.0, 0.5, 0.8, 0.9) for k in (1, 4, 7))


@exercise
def check_expected_tokens(fn: Callable) -> CheckResult:
    """Check `fn(acceptance, k) -> mean tokens per target pass` with k guesses per pass."""
    name = "expected tokens per target pass"
    got, bad = answer_numbers(name, fn, SPEC_PROBES)
    if bad is not None:
        return bad
    a, k = (np.array(c, dtype=float) for c in zip(*SPEC_PROBES, strict=True))
    want = np.array([expected_tokens(x, int(n)) for x, n in SPEC_PROBES])
    mistakes = [
        (
            a * (1 - a**k) / (1 - a),
            "that counts the accepted guesses only: the target pass always adds one token of "
            "its own (the correction at the first rejection, or a bonus token after k hits)",
        ),
        (
            (1 - a**k) / (1 - a),
            "one term short: with k guesses there are k + 1 terms, 1 + a + ... + a^k",
        ),
        (
            a**k,
            "a^k is the chance that all k guesses are kept; the expected count sums the chances "
            "of keeping the first 1, 2, ..., k: 1 + a + a^2 + ... + a^k",
        ),
        (
            1 + k * a,
            "guess i counts only if every guess before it was kept too (a rejection ends the "
            "pass): its chance is a^i, not a",
        ),
        (k * a, "guess i is kept with chance a^i (all before it kept), and add the target's token"),
        (1 / (1 - a), "that is the limit for k -> infinity: stop the sum at a^k"),
    ]
    labels = [f"acceptance {x} and k = {n}" for x, n in SPEC_PROBES]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=1e-6, atol=1e-9)
    if not result.passed:
        return failed(name, f"{first_wrong(got, want, labels)}: {result.message}")
    for k_ in (1, 4):
        got_one, bad = call_answer(name, fn, 1.0, k_)
        if bad is not None:
            return failed(
                name,
                f"at acceptance 1 your function failed ({bad.message}): every guess is kept, "
                f"so a pass yields k + 1 tokens; handle a == 1 before dividing by 1 - a",
            )
        try:
            ok = np.isclose(float(got_one), k_ + 1)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return failed(
                name, f"at acceptance 1 and k = {k_} you gave {got_one!r}, expected {k_ + 1}"
            )
    return passed(
        name,
        "(1 - a^(k+1)) / (1 - a): at a = 0.8 and k = 4 a target pass yields 3.36 tokens "
        "instead of 1, as maaslab.llm.speculative.expected_tokens",
    )
