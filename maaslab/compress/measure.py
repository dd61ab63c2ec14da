"""One table comparing a model's variants: accuracy, latency, size, and explanation drift.

`compare(model_name)` builds every variant and measures, for each:
- accuracy on the held-out split (the 214 test reviews, or the digits test split) and its drop
  against fp32 in percentage points;
- latency of one model call at batch 1 and batch 32: the median of `repeats` calls, taken
  round-robin across the variants (fp32, int8, onnx, fp32, int8, onnx, ...) so a burst of load on
  the machine slows every variant alike instead of one; the speed-up is fp32's median / this one;
- size on disk: the bytes of the variant's serialized form (safetensors, or the .onnx file);
- shap_difference: how far its SHAP values move from fp32's on a few fixed held-out inputs,
  mean over inputs of ||phi_variant - phi_fp32||_1 / ||phi_fp32||_1 (0 = the same explanation,
  1 = as far from fp32's as fp32's is from all zeros). Both explain the class fp32 predicts, with
  the same model-agnostic method, budget and seed (Partition SHAP for text, Permutation SHAP for
  digits), so the number moves only when the model's answers move.

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

from maaslab.compress.variants import Built, build_variant, check_model_name, variants_for
from maaslab.errors import MaaslabError
from maaslab.explain.core import Cancelled, Explainable
from maaslab.runtime import fast_mode, scaled, torch_threads

Progress = Callable[[str, float], None]
REFERENCE = "fp32"
LATENCY_TEXT = "The trailer looked awful, but the film itself is a gem, honestly."  # 17 tokens
SHAP_METHOD = {"sentiment-minilm": "partition_shap", "digits-cnn": "permutation_shap"}
SHAP_BUDGET = {"sentiment-minilm": 64, "digits-cnn": 129}  # shap's minimum for 64 pixels: 2F+1
SHAP_MAX_WORDS = 20  # explained reviews are the first short ones (cost grows with words)
WARMUP_CALLS = 2  # untimed calls per variant and batch (first calls allocate and pack weights)


@dataclass(frozen=True)
class VariantRow:
    """One variant measured; numbers are None when `error` says why it could not be."""

    name: str
    description: str
    accuracy: float | None = None  # share of the held-out split classified right
    accuracy_drop: float | None = None  # (fp32 accuracy - this) in percentage points
    latency_ms_1: float | None = None  # median ms of one call on one input
    latency_ms_32: float | None = None  # median ms of one call on 32 inputs
    speedup_1: float | None = None  # fp32's batch-1 latency / this one
    speedup_32: float | None = None
    size_mb: float | None = None  # serialized form on disk, MB (10^6 bytes)
    shap_difference: float | None = None  # mean relative L1 distance to fp32's SHAP values
    build_seconds: float | None = None  # pruning, fine-tuning, export, quantization
    error: str | None = None  # None, or why this variant has no numbers


@dataclass
class Comparison:
    """The variants of one model side by side."""

    model: str
    rows: list[VariantRow]
    repeats: int  # timed calls per variant and batch size
    examples: int  # held-out examples behind each accuracy
    shap_inputs: int  # held-out inputs behind each shap_difference
    threads: int  # torch / ONNX Runtime intra-op threads during the run
    seconds: float = 0.0
    built: dict[str, Built] = field(default_factory=dict, repr=False)

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
        """The fastest variant at batch 1 losing at most `max_drop_points` of accuracy."""
        ok = [
            r
            for r in self.rows
            if r.error is None
            and r.speedup_1 is not None
            and r.accuracy_drop is not None
            and r.accuracy_drop <= max_drop_points + 1e-9
        ]
        return max(ok, key=lambda r: r.speedup_1) if ok else None


# --- the held-out data each model is measured on ---------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """Inputs and labels of the held-out split, the latency batches and the explained inputs."""

    inputs: Any  # texts (list[str]) or pixels (N, 64) in 0..1
    labels: np.ndarray
    batch_1: Any
    batch_32: Any
    explained: list[Any]
    background: np.ndarray | None = None  # digits: the rows SHAP uses for "absent"


def held_out(model_name: str, examples: int | None = None, shap_inputs: int = 3) -> HeldOut:
    """The held-out split of `model_name` (first `examples` of it, None = all)."""
    if model_name == "sentiment-minilm":
        from maaslab.reviews import load_reviews

        reviews = load_reviews("test")
        texts, labels = list(reviews.texts)[:examples], np.asarray(reviews.labels)[:examples]
        short = [t for t in reviews.texts if len(t.split()) <= SHAP_MAX_WORDS][:shap_inputs]
        return HeldOut(texts, labels, [LATENCY_TEXT], list(reviews.texts[:32]), short)
    from maaslab.data import load_dataset
    from maaslab.explain.adapters import background_rows

    data = load_dataset("digits", seed=0, val_fraction=0.0)  # background: all training rows
    X = data.X_test.astype(np.float32)[:examples]
    return HeldOut(
        X,
        data.y_test[:examples],
        data.X_test[:1].astype(np.float32),
        data.X_test[:32].astype(np.float32),
        list(data.X_test[:shap_inputs]),
        background_rows(data.X_train),
    )


def model_inputs(module: nn.Module, batch: Any) -> torch.Tensor:
    """What the module's forward takes: token ids for texts, float pixels otherwise."""
    if isinstance(batch, list) and batch and isinstance(batch[0], str):
        ids, _ = module.encode(batch)
        return torch.as_tensor(ids)
    return torch.as_tensor(np.asarray(batch, dtype=np.float32))


def accuracy(module: nn.Module, data: HeldOut) -> float:
    """Share of the held-out examples the module classifies right."""
    from maaslab.evaluation import predict_proba

    X = model_inputs(module, data.inputs).numpy()
    return float((predict_proba(module, X).argmax(1) == data.labels).mean())


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


def explainable_variant(
    model_name: str,
    module: nn.Module,
    data: HeldOut,
    name: str,
    cancel: threading.Event | None = None,
) -> Explainable:
    """Any variant (torch or ONNX) as an Explainable for the model-agnostic SHAP methods."""

    @torch.no_grad()
    def predict(batch: Any) -> np.ndarray:
        if model_name == "sentiment-minilm":
            batch = [t if t.strip() else "." for t in batch]  # a mask may remove every word
        return torch.softmax(module(model_inputs(module, batch)).double(), -1).numpy()

    if model_name == "sentiment-minilm":
        labels = tuple(module.config.labels)
        return Explainable("text", predict, labels, name, cancel=cancel)
    return Explainable(
        "image",
        predict,
        tuple(str(i) for i in range(10)),
        name,
        background=data.background,
        cancel=cancel,
    )


def shap_values(
    model_name: str,
    module: nn.Module,
    data: HeldOut,
    targets: Sequence[int],
    seed: int,
    cancel: threading.Event | None = None,
) -> list[np.ndarray]:
    """SHAP values of each explained held-out input for the given classes, same method and seed."""
    from maaslab.explain import explain

    model = explainable_variant(model_name, module, data, model_name, cancel)
    return [
        explain(
            model,
            x,
            SHAP_METHOD[model_name],
            target=int(t),
            seed=seed,
            budget=SHAP_BUDGET[model_name],
        ).values
        for x, t in zip(data.explained, targets, strict=True)
    ]


def shap_difference(values: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Mean over inputs of ||values - reference||_1 / ||reference||_1."""
    return float(
        np.mean(
            [
                np.abs(v - r).sum() / max(np.abs(r).sum(), 1e-12)
                for v, r in zip(values, reference, strict=True)
            ]
        )
    )


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
    examples : held-out examples for accuracy (None: the whole split; fast mode the first 100).
    shap_inputs : held-out inputs explained for shap_difference (None: 3, fast mode 1; 0 = skip).
    seed : seeds pruning's fine-tuning and every SHAP explanation.
    threads : CPU threads for torch and ONNX Runtime alike (None: torch's current setting). On
        a machine shared with other work, 1 thread gives steadier timings: a 2-thread op waits
        at its barrier whenever the other core is busy elsewhere.
    progress : called as progress(stage, fraction done).
    cancel : set it to stop; the call raises maaslab.explain.Cancelled at the next check.
    """
    if threads is not None and threads < 1:
        raise MaaslabError(f"threads must be at least 1, got {threads}")
    with torch_threads(threads):
        return _compare(
            model_name, variants, repeats, examples, shap_inputs, seed, progress, cancel
        )


def _compare(
    model_name: str,
    variants: Sequence[str] | None,
    repeats: int | None,
    examples: int | None,
    shap_inputs: int | None,
    seed: int,
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
    steps, done = 3 * len(names) + 2, 0

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
            name, lambda name=name: facts[name].update(accuracy=accuracy(built[name].module, data))
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
    ref = facts[REFERENCE] if REFERENCE not in errors else {}
    rows = []
    from maaslab.compress.variants import VARIANTS

    for name in names:
        if name in errors:
            rows.append(VariantRow(name, VARIANTS[name].description, error=errors[name]))
            continue
        f, b = facts[name], built[name]
        acc = f.get("accuracy")
        rows.append(
            VariantRow(
                name,
                VARIANTS[name].description,
                acc,
                None if acc is None or "accuracy" not in ref else (ref["accuracy"] - acc) * 100,
                f.get("latency_ms_1"),
                f.get("latency_ms_32"),
                _ratio(ref.get("latency_ms_1"), f.get("latency_ms_1")),
                _ratio(ref.get("latency_ms_32"), f.get("latency_ms_32")),
                b.size_mb,
                f.get("shap_difference"),
                b.seconds,
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
    )


def _add_call(calls: dict, name: str, module: nn.Module, batch: Any) -> None:
    # The inputs are made once, outside the timing: latency is the model call alone.
    x = model_inputs(module, batch)
    calls[name] = torch.no_grad()(lambda: module(x))


def _ratio(reference: float | None, value: float | None) -> float | None:
    return None if reference is None or not value else reference / value
