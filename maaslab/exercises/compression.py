"""Lesson 12's auto-checked exercises: int8 quantization by hand, one int8 Linear, magnitude
pruning, the distillation loss, and choosing a variant within an accuracy budget.

Each check runs the learner's function on a fixed, seeded probe and compares it with the
library that does the same job: torch's own quantizer and observer, torch.ao's dynamic int8
Linear, torch.nn.utils.prune, `maaslab.compress.distill.distillation_loss` and
`Comparison.best`. When the answer equals a known mistake, the message names it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from maaslab.exercises.grading import (
    CheckResult,
    answer_array,
    call_answer,
    check_array,
    exercise,
    failed,
    first_mistake,
    passed,
)

INT8_MIN, INT8_MAX = -128, 127
# fbgemm quantizes activations to 0..127 (7 bits, "reduce_range") so that the uint8 x int8
# products summed in pairs by AVX2's VPMADDUBSW cannot overflow int16
ACT_QMAX = 127


def _probe(seed: int, *shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + shift


# --- exercise 1: quantize a vector to int8 with a scale and a zero point ---------------------


def _affine_reference(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    # torch's own answer: the MinMax observer picks (scale, zero point), quantize_per_tensor rounds
    from torch.ao.quantization.observer import MinMaxObserver

    with warnings.catch_warnings():
        # torch 2.13 marks its quantized tensors deprecated; they are still the reference here
        warnings.filterwarnings("ignore", message=r".*deprecated.*")
        observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_affine)
        observer(x)
        scale, zero_point = (float(v) for v in observer.calculate_qparams())
        q = torch.quantize_per_tensor(x, scale, int(zero_point), torch.qint8).int_repr()
    return q.to(torch.float64), scale, int(zero_point)


@exercise
def check_quantize_int8(fn: Callable) -> CheckResult:
    """Check `fn(x) -> (q, scale, zero_point)`: asymmetric per-tensor int8 as torch does it."""
    name = "int8 quantization with a scale and a zero point"
    x = _probe(12, 50, scale=1.5, shift=0.8)  # mostly positive: the zero point matters
    got, bad = call_answer(name, fn, x)
    if bad is not None:  # a CheckResult is falsy when it fails
        return bad
    if not isinstance(got, tuple | list) or len(got) != 3:
        return failed(name, "return three things: (q, scale, zero_point)")
    q_ref, scale_ref, zp_ref = _affine_reference(x)
    q, scale, zero_point = got
    try:
        scale, zero_point = float(scale), float(zero_point)
    except (TypeError, ValueError):
        return failed(name, "scale and zero_point must be numbers")
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if not np.isclose(scale, scale_ref, rtol=1e-5):
        hint = "scale = (max(x, 0) - min(x, 0)) / (127 - (-128)), the range over 255 steps"
        if np.isclose(scale, (hi - lo) / 256, rtol=1e-5):
            hint = "there are 255 steps between -128 and 127, not 256"
        elif np.isclose(scale, max(abs(lo), hi) / 127, rtol=1e-5):
            hint = "that is the symmetric scale; here the range [min, max] maps onto [-128, 127]"
        return failed(name, f"scale {scale:.6g}, expected {scale_ref:.6g}: {hint}")
    if zero_point != zp_ref:
        return failed(
            name,
            f"zero point {zero_point:g}, expected {zp_ref}: the zero point is the integer that "
            "stands for 0.0, zero_point = -128 - round(min(x, 0) / scale)",
        )
    q, bad = answer_array(name, q)
    if bad is not None:
        return bad
    why = first_mistake(
        q,
        [
            (
                torch.clamp(torch.trunc(x / scale_ref) + zp_ref, INT8_MIN, INT8_MAX),
                "you truncated x / scale; round it to the nearest integer",
            ),
            (torch.round(x / scale_ref), "you forgot to add the zero point"),
            (torch.round(x / scale_ref) + zp_ref, "clamp the result to [-128, 127]"),
        ],
        atol=0,
    )
    if why is not None and not np.array_equal(q, q_ref.numpy()):
        return failed(name, why)
    hint = "q = clamp(round(x * (1 / scale) + zero_point), -128, 127)"
    result = check_array(name, q, q_ref, rtol=0, atol=0, hint=hint)
    if not result:
        return result
    error = float(((torch.as_tensor(q) - zp_ref) * scale_ref - x).abs().max())
    return passed(
        name,
        f"q, scale {scale_ref:.4g} and zero point {zp_ref} equal torch.quantize_per_tensor's; "
        f"dequantized, no value moves by more than {error:.4f} "
        f"(half a step is {scale_ref / 2:.4f})",
    )


# --- exercise 2: one dynamic int8 Linear by hand ---------------------------------------------


def int8_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """torch.ao's dynamic int8 nn.Linear (fbgemm) on x: the oracle of exercise 2."""
    from maaslab.backends import torch_dynamic_int8

    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    quantized = torch_dynamic_int8(nn.Sequential(layer))[0]
    with torch.no_grad():
        return quantized(x)


@exercise
def check_int8_linear(fn: Callable) -> CheckResult:
    """Check `fn(x, weight, bias) -> y`: a dynamic int8 Linear equal to torch.ao's."""
    name = "a dynamic int8 Linear by hand"
    x = _probe(3, 4, 24, scale=2.0, shift=0.5)
    weight, bias = _probe(4, 10, 24, scale=0.2), _probe(5, 10, scale=0.1)
    got, bad = call_answer(name, fn, x, weight, bias)
    if bad is not None:
        return bad
    got, bad = answer_array(name, got)
    if bad is not None:
        return bad
    expected = int8_linear_reference(x, weight, bias).double()
    fp32 = (x @ weight.T + bias).double()
    sw = weight.abs().max() / 127.5
    qw = torch.clamp(torch.round(weight * (1 / sw)), INT8_MIN, INT8_MAX)
    why = first_mistake(
        got,
        [
            (
                fp32,
                "this is the fp32 product: quantize x and the weight first, multiply the integers, "
                "then scale back by scale_x * scale_w",
            ),
            (
                (x @ (qw * sw).T + bias),
                "you quantized the weight but not the activations: x is "
                "quantized on the fly too, to 0..127 from its own min and max",
            ),
        ],
        rtol=1e-6,
        atol=1e-6,
    )
    if why is not None:
        return failed(name, why)
    hint = (
        "weights: symmetric, scale_w = max|W| / 127.5, zero point 0, q_w = round(W * (1 / "
        "scale_w)); activations: scale_x = (max(x,0) - min(x,0)) / 127, zp_x = round(-min(x,0) "
        "/ scale_x), q_x = clamp(round(x * (1 / scale_x) + zp_x), 0, 127) (0..127: 7 bits, not "
        "0..255); y = scale_x * scale_w * (q_x - zp_x) @ q_w.T + bias"
    )
    result = check_array(name, got, expected, rtol=0, atol=1e-4, hint=hint)
    if not result:
        return result
    drift = float((expected - fp32).abs().max())
    return passed(
        name,
        f"equal to torch.ao's quantized Linear (max difference "
        f"{np.abs(got - expected.numpy()).max():.1e}); both are {drift:.4f} away from "
        "the fp32 product at most",
    )


# --- exercise 3: unstructured magnitude pruning ----------------------------------------------


@exercise
def check_magnitude_prune(fn: Callable) -> CheckResult:
    """Check `fn(weight, amount) -> pruned weight`: the `amount` smallest |w| set to 0."""
    name = "unstructured magnitude pruning"
    weight, amount = _probe(7, 12, 20), 0.3
    got, bad = call_answer(name, fn, weight, amount)
    if bad is not None:
        return bad
    got, bad = answer_array(name, got)
    if bad is not None:
        return bad
    import torch.nn.utils.prune as tprune

    layer = nn.Linear(20, 12, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    tprune.l1_unstructured(layer, "weight", amount=amount)
    expected = layer.weight.detach()
    k = round(amount * weight.numel())
    flat = weight.flatten()
    by_value = flat.clone()
    by_value[flat.argsort()[:k]] = 0
    largest = flat.clone()
    largest[flat.abs().argsort(descending=True)[:k]] = 0
    why = first_mistake(
        got,
        [
            (
                by_value.view_as(weight),
                "you removed the most negative weights: rank by |w|, the "
                "magnitude, not by signed value",
            ),
            (
                largest.view_as(weight),
                "you removed the largest weights: pruning keeps them and zeroes the smallest |w|",
            ),
            (weight * 0, "everything is zero: remove only round(amount * numel) weights"),
        ],
        atol=0,
    )
    if why is not None:
        return failed(name, why)
    result = check_array(
        name,
        got,
        expected,
        rtol=0,
        atol=0,
        hint=f"zero exactly round({amount} * {weight.numel()}) = {k} weights, "
        "those with the smallest |w|; leave the rest unchanged",
    )
    if not result:
        return result
    sparsity = float((got == 0).mean())
    return passed(
        name,
        f"equal to torch.nn.utils.prune.l1_unstructured: sparsity {sparsity:.0%}; "
        "the matrix keeps its shape, so a dense kernel does the same work",
    )


# --- exercise 4: the distillation loss -------------------------------------------------------


@exercise
def check_distillation_loss(fn: Callable) -> CheckResult:
    """Check `fn(student_logits, teacher_logits, labels, T, alpha) -> scalar loss`."""
    from maaslab.compress.distill import distillation_loss

    name = "the knowledge-distillation loss"
    student, teacher = _probe(21, 6, 3), _probe(22, 6, 3, scale=2.0)
    labels, T, alpha = torch.tensor([0, 2, 1, 1, 0, 2]), 3.0, 0.3
    got, bad = call_answer(name, fn, student, teacher, labels, T, alpha)
    if bad is not None:
        return bad
    got, bad = answer_array(name, got)
    if bad is not None:
        return bad
    if got.size != 1:
        return failed(name, f"return one number (the batch mean), got shape {got.shape}")
    got = got.reshape(())

    def loss(**kw):
        args = {
            "student_logits": student,
            "teacher_logits": teacher,
            "labels": labels,
            "temperature": T,
            "alpha": alpha,
        } | kw
        return distillation_loss(**args)

    expected = loss()
    hard = torch.nn.functional.cross_entropy(student, labels)
    soft = (expected - alpha * hard) / (1 - alpha)  # T^2 * KL
    kl_reverse = torch.nn.functional.kl_div(
        torch.log_softmax(teacher / T, -1), torch.softmax(student / T, -1), reduction="batchmean"
    )
    why = first_mistake(
        got,
        [
            (
                alpha * hard + (1 - alpha) * soft / T**2,
                "the soft term is missing its T² factor: "
                "without it its gradients shrink like 1/T² as T grows",
            ),
            (
                (1 - alpha) * hard + alpha * soft,
                "alpha and 1 - alpha are swapped: alpha weighs the "
                "cross-entropy with the true labels",
            ),
            (
                loss(temperature=1.0),
                "the temperature is not applied: divide both logit sets by T before the softmax",
            ),
            (
                alpha * hard + (1 - alpha) * T**2 * kl_reverse,
                "the KL divergence is the wrong way "
                "round: KL(teacher || student) = sum p_teacher * (log p_teacher - log p_student)",
            ),
        ],
        rtol=1e-5,
    )
    if why is not None:
        return failed(name, why)
    hint = (
        "alpha * CE(student, labels) + (1 - alpha) * T² * KL(softmax(teacher/T) || "
        "softmax(student/T)), averaged over the batch"
    )
    result = check_array(name, got, expected.detach(), rtol=1e-5, hint=hint)
    if not result:
        return result
    return passed(name, f"equal to maaslab.compress.distill.distillation_loss ({float(got):.4f})")


# --- exercise 5: the best variant within an accuracy budget ----------------------------------


def best_variant_probe() -> pd.DataFrame:
    """A comparison table (as Comparison.frame() gives) with traps for a careless pick.

    Its figures are invented to set the traps (a fast variant over budget, one exactly at it, a
    failed row); they are no model's measurements: lesson 12's compare gives those."""
    from maaslab.compress import VariantRow

    rows = [
        VariantRow("fp32", "reference", 0.935, 0.0, 20.0, 300.0, 1.0, 1.0, 90.9, 0.0, 1.0),
        VariantRow("int8-dynamic", "", 0.905, 3.0, 8.0, 120.0, 2.5, 2.5, 58.6, 0.2, 2.0),
        VariantRow("onnx-fp32", "", 0.935, 0.0, 12.0, 160.0, 1.67, 1.88, 90.9, 0.0, 9.0),
        VariantRow("onnx-int8", "", 0.93, 0.5, 9.0, 70.0, 2.22, 4.29, 23.0, 0.05, 12.0),
        VariantRow("distilled-onnx-int8", "", 0.925, 1.0, 4.0, 60.0, 5.0, 5.0, 12.0, 0.1, 8.0),
        VariantRow("pruned-structured", "", None, error="fine-tuning was cancelled"),
    ]
    return pd.DataFrame([r.__dict__ for r in rows]).set_index("name")


@exercise
def check_best_variant(fn: Callable) -> CheckResult:
    """Check `fn(frame, max_drop_points) -> name`: fastest at batch 1 within the accuracy budget."""
    from maaslab.compress import Comparison, VariantRow

    name = "the best variant within an accuracy budget"
    frame = best_variant_probe()
    rows = [
        VariantRow(n, **{k: (None if pd.isna(v) else v) for k, v in r.items()})
        for n, r in frame.iterrows()
    ]
    # the probe's rows stand for a comparison chosen on the 159 validation reviews; best() reads
    # only the rows, not the counts
    comparison = Comparison(
        "sentiment-minilm", rows, repeats=30, examples=159, shap_inputs=3, threads=1
    )
    answers = {}
    for budget in (1.0, 0.5):
        got, bad = call_answer(name, fn, frame.copy(), budget)
        if bad is not None:
            return bad
        answers[budget] = got
        expected = comparison.best(budget).name
        if got == expected:
            continue
        why = {
            "int8-dynamic": "it is fast but loses 3 points: keep only rows with accuracy_drop <= "
            "the budget",
            "onnx-int8": f"with a budget of {budget:g} point(s), a variant losing exactly "
            f"{budget:g} is still allowed (<=, not <)"
            if budget == 1.0
            else "",
            "fp32": "fp32 is the reference; among the rows within the budget take the largest "
            "speedup_1",
        }.get(str(got), "")
        if budget == 0.5 and got == "distilled-onnx-int8":
            why = "distilled-onnx-int8 loses 1 point, more than the 0.5 budget"
        why = why or "rank by speedup_1 among rows without an error"
        return failed(
            name, f"with max_drop_points={budget:g} you chose {got!r}, expected {expected!r}. {why}"
        )
    return passed(
        name,
        f"{answers[1.0]} within 1 point, {answers[0.5]} within 0.5: the same "
        "choices as Comparison.best",
    )
