"""One table comparing a model's variants: accuracy, latency, size, and explanation drift.

`compare(model_name)` builds every variant and measures, for each:
- accuracy on the split the variant is chosen on, and its drop against fp32 in percentage points
  (what `Comparison.best` and the P5 verdict read), then the same on the test split, read once
  after every other number, for the report (`test_accuracy`, `test_drop`; never chosen on);
- latency of one model call at batch 1 and batch 32: the median of `repeats` calls, taken
  round-robin across the variants (fp32, int8, onnx, fp32, int8, onnx, ...) so a burst of load on
  the machine slows every variant alike instead of one; the speed-up is fp32's median / this one;
- size on disk: the bytes of the variant's serialized form (safetensors, or the .onnx file);
- shap_difference: how far its SHAP values move from fp32's on a few fixed inputs of the choice
  split (maaslab.compress.drift).

A variant is chosen on the validation split, which none of the variants trained on
(maaslab.compress.splits). Latency batches and explained inputs come from the validation split
too, so `compare(..., report_test=False)` never reads the test split.

A variant that cannot be built or run (an export the ONNX exporter refuses, say) gets a row with
`error` set and empty numbers; the rest of the table still comes out.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from maaslab.compress.drift import shap_difference, shap_values
from maaslab.compress.splits import accuracy, held_out, model_inputs
from maaslab.compress.variants import Built, build_variant, check_model_name, variants_for
from maaslab.errors import MaaslabError
from maaslab.explain.core import Cancelled
from maaslab.runtime import fast_mode, scaled, torch_threads

Progress = Callable[[str, float], None]
REFERENCE = "fp32"
WARMUP_CALLS = 2  # untimed calls per variant and batch (first calls allocate and pack weights)


@dataclass(frozen=True)
class VariantRow:
    """One variant measured; numbers are None when `error` says why it could not be."""

    name: str
    description: str
    accuracy: float | None = None  # share of the choice split (Comparison.split) classified right
    accuracy_drop: float | None = None  # (fp32 accuracy - this) in percentage points
    latency_ms_1: float | None = None  # median ms of one call on one input
    latency_ms_32: float | None = None  # median ms of one call on 32 inputs
    speedup_1: float | None = None  # fp32's batch-1 latency / this one
    speedup_32: float | None = None
    size_mb: float | None = None  # serialized form on disk, MB (10^6 bytes)
    shap_difference: float | None = None  # mean relative L1 distance to fp32's SHAP values
    build_seconds: float | None = None  # pruning, fine-tuning, export, quantization
    error: str | None = None  # None, or why this variant has no numbers
    test_accuracy: float | None = None  # share of the test split right (report only; None: unread)
    test_drop: float | None = None  # (fp32 test accuracy - this) in percentage points


@dataclass
class Comparison:
    """The variants of one model side by side."""

    model: str
    rows: list[VariantRow]
    repeats: int  # timed calls per variant and batch size
    examples: int  # examples of the choice split behind each accuracy
    shap_inputs: int  # inputs of the choice split behind each shap_difference
    threads: int  # torch / ONNX Runtime intra-op threads during the run
    seconds: float = 0.0
    built: dict[str, Built] = field(default_factory=dict, repr=False)
    split: str = "validation"  # the split `accuracy` is on: SELECTION_SPLIT[model]
    test_examples: int = 0  # test examples behind each test_accuracy (0: test split unread)

    def frame(self) -> pd.DataFrame:
        """The table as a DataFrame, one row per variant, in the order compared."""
        return pd.DataFrame([asdict(r) for r in self.rows]).set_index("name")

    def row(self, name: str) -> VariantRow:
        """The row of variant `name`."""
        for r in self.rows:
            if r.name == name:
                return r
        raise MaaslabError(f"{name!r} was not compared: rows are {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        """Variant names in table order."""
        return [r.name for r in self.rows]

    @property
    def measured(self) -> list[str]:
        """Names of the variants that have numbers, in table order."""
        return [r.name for r in self.rows if r.error is None]

    @property
    def failed(self) -> list[str]:
        """Names of the variants that could not be measured (their `error` says why)."""
        return [r.name for r in self.rows if r.error]

    def best(self, max_drop_points: float = 1.0) -> VariantRow | None:
        """The fastest variant at batch 1 losing at most `max_drop_points` of accuracy on the
        choice split (`accuracy_drop`; the test figures are never read here)."""
        ok = [
            r
            for r in self.rows
            if r.error is None
            and r.speedup_1 is not None
            and r.accuracy_drop is not None
            and r.accuracy_drop <= max_drop_points + 1e-9
        ]
        return max(ok, key=lambda r: r.speedup_1) if ok else None


def interleaved_latency(
    calls: dict[str, Callable[[], object]], repeats: int, *, cancel: threading.Event | None = None
) -> dict[str, float]:
    """Median ms of each call over `repeats` round-robin rounds (after untimed warm-up calls)."""
    for call in calls.values():
        for _ in range(WARMUP_CALLS):
            call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        if cancel is not None and cancel.is_set():
            raise Cancelled("the comparison was cancelled")
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _reason(err: BaseException) -> str:
    if isinstance(err, MaaslabError):
        return str(err)
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def compare(
    model_name: str,
    variants: Sequence[str] | None = None,
    *,
    repeats: int | None = None,
    examples: int | None = None,
    shap_inputs: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    report_test: bool = True,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Comparison:
    """Build each variant of `model_name` and measure it; one VariantRow per variant.

    Parameters
    ----------
    model_name : "sentiment-minilm" or "digits-cnn".
    variants : names from `variants_for(model_name)`; None = all. fp32 is always measured
        (first), since every drop and speed-up is relative to it.
    repeats : timed calls per variant and batch size (None: 30, fast mode 5).
    examples : examples of the choice split (validation: SELECTION_SPLIT) and of the test split
        for accuracy (None: the whole split; fast mode the first 100).
    shap_inputs : inputs of the choice split explained for shap_difference (None: 3, fast mode
        1; 0 = skip).
    seed : seeds pruning's fine-tuning and every SHAP explanation.
    threads : CPU threads for torch and ONNX Runtime alike (None: torch's current setting). On
        a machine shared with other work, 1 thread gives steadier timings: a 2-thread op waits
        at its barrier whenever the other core is busy elsewhere.
    report_test : after every other number, measure each variant's test accuracy for the
        report (test_accuracy, test_drop). False leaves the test split unread.
    progress : called as progress(stage, fraction done).
    cancel : set it to stop; the call raises maaslab.explain.Cancelled at the next check.
    """
    if threads is not None and threads < 1:
        raise MaaslabError(f"threads must be at least 1, got {threads}")
    with torch_threads(threads):
        return _compare(
            model_name,
            variants,
            repeats,
            examples,
            shap_inputs,
            seed,
            report_test,
            progress,
            cancel,
        )


def _compare(
    model_name: str,
    variants: Sequence[str] | None,
    repeats: int | None,
    examples: int | None,
    shap_inputs: int | None,
    seed: int,
    report_test: bool,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> Comparison:
    check_model_name(model_name)
    usable = variants_for(model_name)
    names = list(usable if variants is None else dict.fromkeys(variants))
    wrong = [v for v in names if v not in usable]
    if wrong:
        raise MaaslabError(
            f"{', '.join(map(repr, wrong))} not a variant of {model_name}: choose from "
            f"{', '.join(usable)}"
        )
    names = [REFERENCE] + [v for v in names if v != REFERENCE]
    repeats = repeats or scaled(30, 5)
    if repeats < 1:
        raise MaaslabError(f"repeats must be at least 1, got {repeats}")
    if examples is not None and examples < 1:
        raise MaaslabError(
            f"examples must be at least 1 (or None for the whole split), got {examples}"
        )
    examples = examples if examples is not None else (100 if fast_mode() else None)
    shap_inputs = scaled(3, 1) if shap_inputs is None else shap_inputs
    data = held_out(model_name, examples, shap_inputs)
    started = time.perf_counter()
    steps, done = (4 if report_test else 3) * len(names) + 2, 0

    def step(stage: str) -> None:
        nonlocal done
        if cancel is not None and cancel.is_set():
            raise Cancelled("the comparison was cancelled")
        if progress is not None:
            progress(stage, min(done / steps, 0.99))
        done += 1

    def sub_progress(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, min((done - 1 + fraction) / steps, 0.99))

    built: dict[str, Built] = {}
    facts: dict[str, dict[str, Any]] = {n: {} for n in names}
    errors: dict[str, str] = {}

    def attempt(name: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Cancelled:
            raise
        except Exception as err:  # a variant that fails is reported in its row, not raised
            errors[name] = _reason(err)

    for name in names:
        step(f"building {name}")

        def build(name: str = name) -> None:
            def report(stage: str, fraction: float) -> None:
                sub_progress(f"building {name}: {stage}", fraction)

            built[name] = build_variant(model_name, name, seed=seed, progress=report, cancel=cancel)

        attempt(name, build)
    live = [n for n in names if n not in errors]
    for name in live:
        step(f"accuracy of {name}")
        attempt(
            name,
            lambda name=name: facts[name].update(
                accuracy=accuracy(built[name].module, data.inputs, data.labels)
            ),
        )
    live = [n for n in live if n not in errors]
    for size, batch in ((1, data.batch_1), (32, data.batch_32)):
        step(f"latency at batch {size}, {repeats} rounds")
        calls: dict[str, Callable[[], object]] = {}
        for name in live:
            attempt(name, partial(_add_call, calls, name, built[name].module, batch))
        ms = interleaved_latency(calls, repeats, cancel=cancel)
        for name, value in ms.items():
            facts[name][f"latency_ms_{size}"] = value
    if shap_inputs and REFERENCE in live:
        step(f"SHAP of {REFERENCE}")
        ref_module = built[REFERENCE].module
        targets = [
            int(
                np.argmax(
                    ref_module(model_inputs(ref_module, [x] if isinstance(x, str) else x[None]))
                    .detach()
                    .numpy()
                )
            )
            for x in data.explained
        ]
        reference = shap_values(model_name, ref_module, data, targets, seed, cancel)
        facts[REFERENCE]["shap_difference"] = 0.0
        for name in live[1:]:
            step(f"SHAP of {name}")

            def drift(name: str = name) -> None:
                values = shap_values(model_name, built[name].module, data, targets, seed, cancel)
                facts[name]["shap_difference"] = shap_difference(values, reference)

            attempt(name, drift)
    # The test split is read last, once per variant, for the report: nothing above looked at it.
    for name in live if report_test else ():
        step(f"test accuracy of {name}")
        attempt(
            name,
            lambda name=name: facts[name].update(
                test_accuracy=accuracy(built[name].module, data.test_inputs, data.test_labels)
            ),
        )
    ref = facts[REFERENCE] if REFERENCE not in errors else {}
    rows = []
    from maaslab.compress.variants import VARIANTS

    for name in names:
        if name in errors:
            rows.append(VariantRow(name, VARIANTS[name].description, error=errors[name]))
            continue
        f, b = facts[name], built[name]
        rows.append(
            VariantRow(
                name,
                VARIANTS[name].description,
                accuracy=f.get("accuracy"),
                accuracy_drop=_drop(ref.get("accuracy"), f.get("accuracy")),
                latency_ms_1=f.get("latency_ms_1"),
                latency_ms_32=f.get("latency_ms_32"),
                speedup_1=_ratio(ref.get("latency_ms_1"), f.get("latency_ms_1")),
                speedup_32=_ratio(ref.get("latency_ms_32"), f.get("latency_ms_32")),
                size_mb=b.size_mb,
                shap_difference=f.get("shap_difference"),
                build_seconds=b.seconds,
                test_accuracy=f.get("test_accuracy"),
                test_drop=_drop(ref.get("test_accuracy"), f.get("test_accuracy")),
            )
        )
    if progress is not None:
        progress("done", 1.0)
    return Comparison(
        model_name,
        rows,
        repeats,
        len(data.labels),
        len(data.explained),
        torch.get_num_threads(),
        time.perf_counter() - started,
        built,
        data.split,
        len(data.test_labels) if report_test else 0,
    )


def _add_call(calls: dict, name: str, module: nn.Module, batch: Any) -> None:
    # The inputs are made once, outside the timing: latency is the model call alone.
    x = model_inputs(module, batch)
    calls[name] = torch.no_grad()(lambda: module(x))


def _drop(reference: float | None, value: float | None) -> float | None:
    return None if reference is None or value is None else (reference - value) * 100


def _ratio(reference: float | None, value: float | None) -> float | None:
    return None if reference is None or not value else reference / value
