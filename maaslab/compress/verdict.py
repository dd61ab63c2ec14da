"""The P5 verdict of a comparison: is a compressed variant fast enough without losing accuracy?

P5 asks for a variant at least GOAL_SPEEDUP times faster than fp32 at batch 1 while losing at
most MAX_DROP_POINTS points of accuracy. The variant is chosen on the comparison's choice split
(`Comparison.split`: validation, which no variant trained on, see maaslab.compress.splits); the
chosen variant's test accuracy is then reported beside it, never used to choose. The Compress page
and lesson 12 both read their verdict here, so the page's banner and the notebook's line say the
same thing; the page also shows the comparison as `comparison_table` and the run's `conditions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from maaslab.compress.measure import Comparison, VariantRow

GOAL_SPEEDUP = 2.0  # P5: at least 2x faster than fp32 at batch 1 ...
MAX_DROP_POINTS = 1.0  # ... losing at most 1 point of accuracy on the split chosen on


@dataclass(frozen=True)
class Verdict:
    """What a comparison says about P5."""

    model: str
    best: VariantRow | None  # the fastest variant within the accuracy budget (fp32 included)
    outcome: str  # "met", "short" (best is slower than the goal), "fp32" (none beat it), "none"
    goal_speedup: float
    max_drop_points: float
    split: str = "validation"  # the split the choice read (Comparison.split)

    @property
    def met(self) -> bool:
        """True when a compressed variant reaches the goal within the accuracy budget."""
        return self.outcome == "met"

    def text(self, markdown: bool = False) -> str:
        """The verdict in one line (with markdown bold for a page)."""
        b = "**" if markdown else ""
        if self.best is None:
            return (
                f"No variant (fp32 included) could be measured within "
                f"{self.max_drop_points:g} point."
            )
        line = (
            f"{b}P5{b} (≥ {self.goal_speedup:g}x faster than fp32 at batch 1, accuracy within "
            f"{self.max_drop_points:g} point): the best variant is {b}{self.best.name}{b}, "
            f"{self.best.speedup_1:.2f}x at batch 1, {self.best.accuracy_drop:+.1f} points "
            f"on {self.split}"
        )
        if self.best.test_accuracy is not None:
            line += f" (test accuracy {100 * self.best.test_accuracy:.1f} %"
            if self.best.test_drop is not None:
                line += f", {self.best.test_drop:+.1f} points"
            line += ")"
        if self.outcome == "fp32":
            return f"{line}: no compressed variant beat fp32 within the accuracy budget."
        if self.outcome == "met":
            return f"{line}: goal met."
        return f"{line}: short of the {self.goal_speedup:g}x goal."


def p5_verdict(
    comparison: Comparison,
    goal_speedup: float = GOAL_SPEEDUP,
    max_drop_points: float = MAX_DROP_POINTS,
) -> Verdict:
    """The P5 verdict: the fastest variant within the accuracy budget, against the goal.

    The budget is checked on the comparison's choice split (`accuracy_drop`); the test
    figures of the chosen row are only reported.

    Parameters
    ----------
    comparison : what `compare` measured (fp32 is the reference row).
    goal_speedup : how many times faster than fp32 at batch 1 counts as met.
    max_drop_points : accuracy points a variant may lose and still count.
    """
    best = comparison.best(max_drop_points=max_drop_points)
    if best is None:
        outcome = "none"
    elif best.name == "fp32":
        outcome = "fp32"
    else:
        outcome = "met" if best.speedup_1 >= goal_speedup else "short"
    return Verdict(comparison.model, best, outcome, goal_speedup, max_drop_points, comparison.split)


# column shown -> how its numbers are written (Styler.format strings; None is shown as "—")
TABLE_FORMATS = {
    "accuracy (%)": "{:.1f}",
    "drop (points)": "{:+.1f}",
    "test accuracy (%)": "{:.1f}",
    "test drop (points)": "{:+.1f}",
    "ms batch 1": "{:.3g}",
    "ms batch 32": "{:.3g}",
    "speed-up batch 1": "{:.2f}x",
    "speed-up batch 32": "{:.2f}x",
    "MB on disk": "{:.3f}",
    "SHAP difference": "{:.3f}",
    "build s": "{:.1f}",
}


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    """The comparison as a page shows it: one row per variant, accuracy on the choice split and
    on the test split in %, and the error (if any) in the last column ("" for a measured
    variant); format it with TABLE_FORMATS."""
    rows = [
        {
            "variant": r.name,
            "accuracy (%)": None if r.accuracy is None else 100 * r.accuracy,
            "drop (points)": r.accuracy_drop,
            "test accuracy (%)": None if r.test_accuracy is None else 100 * r.test_accuracy,
            "test drop (points)": r.test_drop,
            "ms batch 1": r.latency_ms_1,
            "ms batch 32": r.latency_ms_32,
            "speed-up batch 1": r.speedup_1,
            "speed-up batch 32": r.speedup_32,
            "MB on disk": r.size_mb,
            "SHAP difference": r.shap_difference,
            "build s": r.build_seconds,
            "error": r.error or "",
        }
        for r in comparison.rows
    ]
    numbers = dict.fromkeys(TABLE_FORMATS, float)  # None -> NaN, also in a column of Nones
    return pd.DataFrame(rows).set_index("variant").astype({**numbers, "error": str})


def conditions(comparison: Comparison) -> str:
    """How the comparison's numbers were taken: repeats, threads, splits, SHAP inputs, time."""
    c = comparison
    accuracy = f"Accuracy and drop (what the choice reads) on {c.examples} {c.split} examples; " + (
        f"test accuracy on {c.test_examples} test examples, read once after every "
        "other number, for the report"
        if c.test_examples
        else "the test split was not read"
    )
    return (
        f"Latency: median of {c.repeats} calls per variant and batch size, taken in "
        f"turn across the variants, {c.threads} CPU thread(s); timings on a shared "
        f"machine move from run to run, accuracy does not. {accuracy}. SHAP difference on "
        f"{c.shap_inputs} {c.split} input(s) (0 = the same explanation as fp32). The "
        f"comparison took {c.seconds:.1f} s."
    )
