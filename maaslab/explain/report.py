"""One input explained by several methods, with every trust number, as one cancellable run.

The Explain page and lesson 11 call `build_report`: each method's Attribution, its deletion and
insertion curves, the agreement of every pair of methods, and optionally stability across seeds
and the sanity check. Progress is reported per stage and per model evaluation; a set `cancel`
event stops the run at the next model call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

import pandas as pd

from maaslab.errors import MaaslabError
from maaslab.explain.core import Attribution, Cancelled, Explainable
from maaslab.explain.methods import METHODS, explain, methods_for
from maaslab.explain.quality import (
    Faithfulness,
    SanityCheck,
    Stability,
    agreement,
    faithfulness,
    sanity_check,
    stability,
)

STABILITY_SEEDS = (0, 1, 2)
Progress = Callable[[str, float], None]  # (what is running, fraction of the whole run done)


@dataclass
class Report:
    """Everything known about one explained input."""

    model: str
    kind: str
    x: Any
    attributions: dict[str, Attribution] = field(default_factory=dict)
    faithfulness: dict[str, Faithfulness] = field(default_factory=dict)
    agreement: dict[tuple[str, str], float] = field(default_factory=dict)
    stability: dict[str, Stability] = field(default_factory=dict)
    sanity: dict[str, SanityCheck] = field(default_factory=dict)
    seconds: float = 0.0

    def trust_table(self) -> pd.DataFrame:
        """How far to trust each method's answer: see trust_table."""
        return trust_table(self.attributions, self.faithfulness, self.stability, self.sanity)

    def faithfulness_by_label(self) -> dict[str, Faithfulness]:
        """Each method's deletion and insertion curves, keyed by its label (for a legend)."""
        return {_label(m): f for m, f in self.faithfulness.items()}

    def agreement_table(self) -> pd.DataFrame:
        """Each pair of methods and the rank agreement of their attributions."""
        pairs = [
            {"methods": f"{_label(a)} vs {_label(b)}", "agreement": v}
            for (a, b), v in self.agreement.items()
        ]
        return pd.DataFrame(pairs, columns=["methods", "agreement"]).round(3).set_index("methods")


def _label(method: str) -> str:
    return METHODS[method].label if method in METHODS else method


def trust_table(
    attributions: dict[str, Attribution],
    faithfulness: dict[str, Faithfulness],
    stability: dict[str, Stability] | None = None,
    sanity: dict[str, SanityCheck] | None = None,
) -> pd.DataFrame:
    """One row per method (its label): deletion and insertion AUC against a random order, cost,
    and when measured the rank agreement across seeds and the sanity check; rounded to 3.

    Parameters
    ----------
    attributions : method key (or label) -> its Attribution.
    faithfulness : the same keys -> its Faithfulness.
    stability, sanity : the same keys -> Stability / SanityCheck, for the methods that have one.
    """
    stability, sanity = stability or {}, sanity or {}
    rows = []
    for method, attr in attributions.items():
        f = faithfulness[method]
        row = {
            "method": _label(method),
            "deletion AUC (lower is better)": f.deletion.auc,
            "random order": f.random_deletion.auc,
            "insertion AUC (higher is better)": f.insertion.auc,
            "random order ": f.random_insertion.auc,
            "evaluations": attr.evaluations,
            "seconds": attr.seconds,
        }
        if method in stability:
            row["rank agreement across seeds"] = stability[method].rank_agreement
        if method in sanity:
            row["similarity to random weights"] = sanity[method].similarity
            row["sanity check"] = "passed" if sanity[method].passed else "FAILED"
        rows.append(row)
    return pd.DataFrame(rows).round(3).set_index("method")


def build_report(
    model: Explainable,
    x: Any,
    methods: Sequence[str],
    *,
    seed: int = 0,
    with_stability: bool = False,
    with_sanity: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Report:
    """Explain `x` with each of `methods` and measure faithfulness and agreement (and more).

    Parameters
    ----------
    model : the Explainable; a private copy counts this run's evaluations.
    x : the input (a row, 64 pixels in 0..1, or a text).
    methods : keys of METHODS that apply to the model.
    seed : seeds every method (stability adds seeds 1 and 2).
    with_stability : also explain with STABILITY_SEEDS and report the spread (3x the cost).
    with_sanity : also explain a copy with random weights (torch models only; 2x the cost).
    progress : called with (stage, fraction done) as the run goes.
    cancel : set it to stop; the run raises maaslab.explain.Cancelled at the next model call.
    """
    if not methods:
        raise MaaslabError("choose at least one method")
    usable = methods_for(model)
    wrong = [m for m in methods if m not in usable]
    if wrong:
        raise MaaslabError(
            f"{', '.join(METHODS[m].label if m in METHODS else m for m in wrong)} does not apply "
            f"to {model.name}; choose from {', '.join(usable)}"
        )
    if with_sanity and model.rebuild is None:
        raise MaaslabError(f"the sanity check needs a torch model; {model.name} is not one")
    x = model.check_input(x)
    per_method = 1 + (len(STABILITY_SEEDS) - 1) * with_stability + 2 * with_sanity
    total, done = len(methods) * per_method, 0
    stage = ""

    def report_progress(evaluations: int, budget: int) -> None:
        if progress is not None:
            within = min(evaluations / max(budget, 1), 0.99)
            progress(f"{stage}: {evaluations:,} model evaluations", (done + within) / total)

    run = replace(
        model, progress=report_progress, cancel=cancel, evaluations=0, _lock=threading.Lock()
    )
    report = Report(model.name, model.kind, x)
    started = time.perf_counter()
    for method in methods:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the explanation was cancelled")
        label = METHODS[method].label
        stage = label
        report.attributions[method] = explain(run, x, method, seed=seed)
        report.faithfulness[method] = faithfulness(run, x, report.attributions[method], seed=seed)
        done += 1
        if with_stability:
            stage = f"{label}, stability over seeds {STABILITY_SEEDS}"
            report.stability[method] = stability(run, x, method, seeds=STABILITY_SEEDS)
            done += len(STABILITY_SEEDS) - 1
        if with_sanity:
            stage = f"{label}, sanity check (random weights)"
            report.sanity[method] = sanity_check(run, x, method, seed=seed)
            done += 2
    for a, b in combinations(methods, 2):
        report.agreement[(a, b)] = agreement(report.attributions[a], report.attributions[b])
    report.seconds = time.perf_counter() - started
    if progress is not None:
        progress("done", 1.0)
    return report
