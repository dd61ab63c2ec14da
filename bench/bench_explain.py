"""Explanation cost, measured side by side in one run.

P6: one digit of the test split explained by DeepSHAP (gradient-based) and by KernelSHAP with
shap's own default sample count (2 x 64 + 2048 coalitions), same digits CNN, same digit, same
50 background rows; runs interleaved (deep, kernel, deep, kernel, ...) so machine noise hits
both alike. Goal: KernelSHAP time / DeepSHAP time >= 50.

Text: sentiment-minilm sentences explained with Partition SHAP and with LIME at the project's
default budgets (what the Explain page uses), with each explanation's deletion AUC next to its
time and a random-order AUC for comparison. Goal: <= 3 s each on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from maaslab.data import load_dataset
from maaslab.device import describe
from maaslab.explain import METHODS, explain, explainable, faithfulness

SENTENCES = (
    "I expected to hate it, but honestly it was not bad at all.",
    "The trailer looked awful, but the film itself is a gem.",
    "Oh great, another two-hour wait. Just what I needed.",
)


def main() -> None:
    """Print the P6 ratio and the text timings; one summary line at the end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per method")
    args = parser.parse_args()
    print(f"device: {describe().summary()}")

    cnn = explainable("digits-cnn")
    digit = load_dataset("digits", seed=0).X_test[0]
    kernel_budget = 2 * 64 + 2048  # KernelExplainer's nsamples="auto" for 64 features
    explain(cnn, digit, "deep_shap")  # first calls pay one-time setup; not timed
    explain(cnn, digit, "kernel_shap", budget=64)
    times: dict[str, list[float]] = {"deep_shap": [], "kernel_shap": []}
    last = {}
    for _ in range(args.repeats):
        for method in times:
            budget = kernel_budget if method == "kernel_shap" else None
            last[method] = explain(cnn, digit, method, budget=budget)
            times[method].append(last[method].seconds)
    med = {m: statistics.median(t) for m, t in times.items()}
    for method, attr in last.items():
        f = faithfulness(cnn, digit, attr)
        print(
            f"digit 0, {METHODS[method].label:11s}: median {med[method]:.3f} s over "
            f"{args.repeats} · {attr.evaluations:,} model rows · deletion AUC "
            f"{f.deletion.auc:.3f} (random {f.random_deletion.auc:.3f}) · additivity gap "
            f"{attr.additivity_gap:+.1e}"
        )
    p6 = med["kernel_shap"] / med["deep_shap"]
    print(f"P6: KernelSHAP / DeepSHAP time = {p6:.1f}x (goal >= 50)")

    sentiment = explainable("sentiment-minilm")
    explain(sentiment, "warm up", "partition_shap")  # numba compiles shap's text code once
    worst = {"partition_shap": 0.0, "lime": 0.0}
    for text in SENTENCES:
        for method in worst:
            runs = [explain(sentiment, text, method) for _ in range(args.repeats)]
            seconds = statistics.median(r.seconds for r in runs)
            worst[method] = max(worst[method], seconds)
            f = faithfulness(sentiment, text, runs[0])
            print(
                f"{METHODS[method].label:14s} {seconds:5.2f} s · {runs[0].evaluations:4d} "
                f"evaluations · deletion AUC {f.deletion.auc:.3f} (random "
                f"{f.random_deletion.auc:.3f}) · {text!r}"
            )
    print(
        f"threads: {torch.get_num_threads()}; summary: P6 {p6:.1f}x (goal >= 50); text "
        f"slowest Partition SHAP {worst['partition_shap']:.2f} s, LIME {worst['lime']:.2f} s "
        f"(goal <= 3 s each)"
    )
    np.testing.assert_array_equal(last["deep_shap"].values, explain(cnn, digit, "deep_shap").values)


if __name__ == "__main__":
    main()
