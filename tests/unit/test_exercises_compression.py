"""Lesson 12 checks: each passes the hand solution (the notebook's) and names common mistakes.

The hand solutions below are the ones the notebook is pre-filled with; passing a check means
they equal torch's quantizer, torch.ao's int8 Linear, torch's pruning and the library's loss.
"""

import numpy as np
import pandas as pd
import torch

from maaslab.exercises.compression import (
    best_variant_probe,
    check_best_variant,
    check_distillation_loss,
    check_int8_linear,
    check_magnitude_prune,
    check_quantize_int8,
    int8_linear_reference,
)


def quantize_int8(x):
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255
    zero_point = int(np.clip(-128 - round(lo / scale), -128, 127))
    q = torch.clamp(torch.round(x * (1 / scale) + zero_point), -128, 127)
    return q, scale, zero_point


def int8_linear(x, weight, bias):
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
    scale_x = (hi - lo) / 127
    zp_x = torch.round(-lo / scale_x)
    q_x = torch.clamp(torch.round(x * (1 / scale_x) + zp_x), 0, 127)
    scale_w = weight.abs().max() / 127.5
    q_w = torch.clamp(torch.round(weight * (1 / scale_w)), -128, 127)
    return scale_x * scale_w * (q_x - zp_x) @ q_w.T + bias


def magnitude_prune(weight, amount):
    k = round(amount * weight.numel())
    threshold = weight.abs().flatten().kthvalue(k).values
    return torch.where(weight.abs() <= threshold, torch.zeros_like(weight), weight)


def distill_loss(student, teacher, labels, T, alpha):
    hard = torch.nn.functional.cross_entropy(student, labels)
    p_teacher = torch.softmax(teacher / T, -1)
    log_student = torch.log_softmax(student / T, -1)
    kl = (p_teacher * (p_teacher.log() - log_student)).sum(-1).mean()
    return alpha * hard + (1 - alpha) * T**2 * kl


def best_variant(frame, max_drop_points):
    ok = frame[frame["error"].isna() & (frame["accuracy_drop"] <= max_drop_points)]
    return ok["speedup_1"].idxmax()


def test_hand_int8_linear_equals_torch_ao_on_other_inputs():
    # the oracle test of the hand version, on inputs the check never uses
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(7, 33, generator=g) * 4 + 0.3
        w, b = torch.randn(5, 33, generator=g), torch.randn(5, generator=g)
        got, want = int8_linear(x, w, b), int8_linear_reference(x, w, b)
        assert torch.allclose(got, want, atol=1e-4), seed
        assert not torch.allclose(want, x @ w.T + b, atol=1e-3)  # int8 changed the numbers


def test_right_answers_pass():
    for check, fn in [
        (check_quantize_int8, quantize_int8),
        (check_int8_linear, int8_linear),
        (check_magnitude_prune, magnitude_prune),
        (check_distillation_loss, distill_loss),
        (check_best_variant, best_variant),
    ]:
        result = check(fn)
        assert result.passed, result.message


def test_quantize_mistakes_are_named():
    def steps_256(x):
        q, scale, zp = quantize_int8(x)
        return q, scale * 255 / 256, zp

    def no_zero_point(x):
        _, scale, zp = quantize_int8(x)
        return (
            torch.clamp(torch.round(x / scale), -128, 127) * 0 + torch.round(x / scale),
            scale,
            zp,
        )

    def truncated(x):
        _, scale, zp = quantize_int8(x)
        return torch.clamp(torch.trunc(x / scale) + zp, -128, 127), scale, zp

    assert "255 steps" in check_quantize_int8(steps_256).message
    assert "zero point" in check_quantize_int8(no_zero_point).message
    assert "round" in check_quantize_int8(truncated).message
    assert "three things" in check_quantize_int8(lambda x: x).message
    assert "raised" in check_quantize_int8(lambda x: 1 / 0).message
    assert not check_quantize_int8(lambda x: (x, 1.0, 0)).passed


def test_int8_linear_mistakes_are_named():
    fp32 = check_int8_linear(lambda x, w, b: x @ w.T + b)
    assert not fp32.passed and "fp32 product" in fp32.message

    def full_range(x, w, b):  # 0..255 activations: close, but not fbgemm's numbers
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        sx = (hi - lo) / 255
        zx = round(-lo / sx)
        qx = torch.clamp(torch.round(x / sx) + zx, 0, 255)
        sw = float(w.abs().max()) / 127.5
        return sx * sw * (qx - zx) @ torch.round(w / sw).T + b

    result = check_int8_linear(full_range)
    assert not result.passed and "0..127" in result.message


def test_pruning_mistakes_are_named():
    def largest(w, amount):
        k = round(amount * w.numel())
        flat = w.flatten().clone()
        flat[flat.abs().argsort(descending=True)[:k]] = 0
        return flat.view_as(w)

    def signed(w, amount):
        k = round(amount * w.numel())
        flat = w.flatten().clone()
        flat[flat.argsort()[:k]] = 0
        return flat.view_as(w)

    assert "removed the largest" in check_magnitude_prune(largest).message
    assert "magnitude" in check_magnitude_prune(signed).message
    assert not check_magnitude_prune(lambda w, a: w).passed


def test_distillation_mistakes_are_named():
    def no_t2(s, t, y, T, a):
        return distill_loss(s, t, y, T, a) - (1 - a) * (T**2 - 1) * (
            (distill_loss(s, t, y, T, a) - a * torch.nn.functional.cross_entropy(s, y))
            / ((1 - a) * T**2)
        )

    def swapped(s, t, y, T, a):
        return distill_loss(s, t, y, T, 1 - a)

    def no_temperature(s, t, y, T, a):
        return distill_loss(s, t, y, 1.0, a)

    def reverse_kl(s, t, y, T, a):
        return distill_loss(t, s, y, T, 0.0) * (1 - a) + a * torch.nn.functional.cross_entropy(s, y)

    assert "T² factor" in check_distillation_loss(no_t2).message
    assert "swapped" in check_distillation_loss(swapped).message
    assert "temperature is not applied" in check_distillation_loss(no_temperature).message
    assert "wrong way" in check_distillation_loss(reverse_kl).message
    assert "one number" in check_distillation_loss(lambda s, t, y, T, a: s).message


def test_best_variant_mistakes_are_named():
    fastest = check_best_variant(lambda f, d: f["speedup_1"].idxmax())
    assert not fastest.passed and "distilled-onnx-int8" in fastest.message
    ignores_budget = check_best_variant(
        lambda f, d: f[f["error"].isna()]["speedup_1"].drop("distilled-onnx-int8").idxmax()
    )
    assert "loses 3 points" in ignores_budget.message
    strict = check_best_variant(
        lambda f, d: f[f["error"].isna() & (f["accuracy_drop"] < d)]["speedup_1"].idxmax()
    )
    assert "<=, not <" in strict.message
    assert isinstance(best_variant_probe(), pd.DataFrame)
