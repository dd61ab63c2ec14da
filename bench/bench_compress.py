"""Compressed variants of the shipped models, measured side by side in one run.

For sentiment-minilm (and digits-cnn) every variant of `maaslab.compress` is built and measured
by `compare`: accuracy on the whole split the variant is chosen on (the validation rows or
reviews, which neither the shipped model nor any variant trained on) and, for the report, on the
whole test split, latency at batch 1 and 32 (median of
repeated calls taken round-robin across the variants, so machine noise hits all alike), size
on disk and SHAP drift from fp32.

P5: the best variant at batch 1 whose accuracy on the choice split is within 1 point of fp32
eager must be >= 2x faster than fp32 eager; both latencies come from the same interleaved run.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from maaslab.compress import compare, variants_for
from maaslab.device import describe

COLUMNS = {
    "accuracy": "acc",
    "accuracy_drop": "drop pts",
    "test_accuracy": "test acc",
    "test_drop": "test drop",
    "latency_ms_1": "ms @1",
    "latency_ms_32": "ms @32",
    "speedup_1": "x @1",
    "speedup_32": "x @32",
    "size_mb": "MB",
    "shap_difference": "SHAP diff",
    "build_seconds": "build s",
}


def table(comparison) -> str:
    """The comparison as aligned text, errors on their own lines."""
    frame = comparison.frame()[list(COLUMNS)].rename(columns=COLUMNS)
    with pd.option_context(
        "display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format
    ):
        text = frame.to_string()
    errors = [f"  {r.name}: {r.error}" for r in comparison.rows if r.error]
    return text + ("\nfailed variants:\n" + "\n".join(errors) if errors else "")


def main() -> None:
    """Print each model's variant table, then the P5 verdict for sentiment-minilm."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant/batch")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads, torch and ONNX Runtime (default: torch's)",
    )
    parser.add_argument("--models", default="sentiment-minilm,digits-cnn")
    parser.add_argument(
        "--variants", default=None, help="comma-separated variants (default: all that apply)"
    )
    args = parser.parse_args()
    print(f"device: {describe().summary()}")
    summary = []
    for model in args.models.split(","):
        usable = variants_for(model)
        chosen = [v for v in args.variants.split(",") if v in usable] if args.variants else None
        result = compare(model, chosen, repeats=args.repeats, threads=args.threads)
        print(
            f"\n{model}: {len(result.rows)} variants, chosen on {result.examples} "
            f"{result.split} examples, test accuracy on {result.test_examples}, "
            f"{result.repeats} interleaved calls per latency, "
            f"{result.threads} thread(s), SHAP diff over {result.shap_inputs} inputs, "
            f"{result.seconds:.0f} s"
        )
        print(table(result))
        best = result.best(max_drop_points=1.0)
        if best is None:
            summary.append(f"{model}: no variant within 1 point of fp32")
            continue
        verdict = "met" if best.speedup_1 >= 2.0 else "NOT met"
        line = (
            f"{model}: best within 1 point at batch 1 = {best.name}, {best.speedup_1:.2f}x "
            f"faster than fp32 eager ({best.latency_ms_1:.2f} vs "
            f"{result.row('fp32').latency_ms_1:.2f} ms), accuracy drop "
            f"{best.accuracy_drop:+.2f} points on {result.split}"
        )
        if result.split != "test":
            line += f" ({best.test_drop:+.2f} on test)"
        if model == "sentiment-minilm":
            line = f"P5 {verdict} (goal >= 2x): " + line
        print(line)
        summary.append(line)
    print(f"\nthreads: {args.threads or torch.get_num_threads()}; summary: " + " | ".join(summary))


if __name__ == "__main__":
    main()
