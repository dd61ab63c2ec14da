"""Exercise 1: the KV cache's size, per token and for a batch of contexts.

The checks compare with `maaslab.llm.blocks.kv_bytes_per_token` on published model shapes and
name the known slips: K without V, query heads for KV heads, bits for bytes, GB for GiB.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maaslab.exercises.grading import CheckResult, exercise, failed, passed, right_or_first_mistake
from maaslab.exercises.serving_language_models.answers import answer_numbers, first_wrong
from maaslab.llm.blocks import kv_bytes_per_token

GIB = 2**30

# (model, layers, query heads, KV heads, head_dim, bits of one cached number), published shapes.
KV_PROBES = (
    ("Llama-2-7B, fp16", 32, 32, 32, 128, 16),
    ("Llama-2-70B, fp16 (GQA, 8 KV heads)", 80, 64, 8, 128, 16),
    ("mini-llama, fp32", 6, 8, 2, 32, 32),
    ("Llama-3-8B, fp8 cache", 32, 32, 8, 128, 8),
    ("Llama-3-8B, 4-bit cache", 32, 32, 8, 128, 4),
)


@exercise
def check_kv_bytes_per_token(fn: Callable) -> CheckResult:
    """Check `fn(layers, heads, kv_heads, head_dim, bits) -> bytes of KV cache per token`."""
    name = "KV-cache bytes per token"
    cases = [p[1:] for p in KV_PROBES]
    got, bad = answer_numbers(name, fn, cases)
    if bad is not None:
        return bad
    L, H, KV, D, bits = (np.array(c, dtype=float) for c in zip(*cases, strict=True))
    want = np.array([kv_bytes_per_token(c[0], c[2], c[3], 1) * c[4] / 8 for c in cases])
    mistakes = [
        (L * KV * D * bits / 8, "a token stores a key AND a value vector: multiply by 2"),
        (
            2 * L * H * D * bits / 8,
            "you counted query heads: only the key/value heads are cached, and under "
            "grouped-query attention there are fewer of them (num_key_value_heads)",
        ),
        (2 * L * KV * D * bits, "bits is the width in bits: divide by 8 for bytes"),
        (
            2 * L * KV * D * (bits // 8),
            "bits // 8 rounds a 4-bit number down to 0 bytes: multiply everything first, "
            "divide by 8 last",
        ),
        (2 * KV * D * bits / 8, "every layer keeps its own keys and values: multiply by layers"),
        (L * H * D * bits / 8, "count K and V (x 2), and the KV heads, not the query heads"),
    ]
    labels = [p[0] for p in KV_PROBES]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=1e-6, atol=1e-9)
    if not result.passed:
        return failed(name, f"{first_wrong(got, want, labels)}: {result.message}")
    return passed(
        name,
        "2 x layers x kv_heads x head_dim x bits / 8: Llama-2-7B in fp16 keeps 0.5 MiB per "
        "token; Llama-2-70B, with 8 KV heads for 64 query heads, only 0.3125 MiB",
    )


# (bytes per token, tokens per sequence, sequences): 7B at 4k, 70B x 32 users, mini-llama x 16
CONTEXT_PROBES = ((524_288, 4096, 1), (327_680, 4096, 32), (3072, 512, 16), (65_536, 8192, 3))


@exercise
def check_kv_cache_gib(fn: Callable) -> CheckResult:
    """Check `fn(bytes_per_token, tokens, sequences) -> GiB` of KV cache for a batch of contexts."""
    name = "KV cache of a batch of contexts, in GiB"
    got, bad = answer_numbers(name, fn, CONTEXT_PROBES)
    if bad is not None:
        return bad
    b, t, s = (np.array(c, dtype=float) for c in zip(*CONTEXT_PROBES, strict=True))
    want = b * t * s / GIB
    mistakes = [
        (b * t / GIB, "every sequence keeps its own context: multiply by the sequences"),
        (
            b * t * s / 1e9,
            "that is GB (10^9 bytes); a GiB is 2^30 = 1,073,741,824 bytes, as memory is sold",
        ),
        (b * t * s / 2**20, "that is MiB (2^20 bytes): a GiB is 2^30 bytes"),
        (b * t * s, "that is bytes: divide by 2^30 for GiB"),
    ]
    labels = [f"{x:,} B/token x {n} tokens x {k} sequences" for x, n, k in CONTEXT_PROBES]
    result = right_or_first_mistake(name, got, want, mistakes, rtol=1e-6, atol=1e-12)
    if not result.passed:
        return failed(name, f"{first_wrong(got, want, labels)}: {result.message}")
    return passed(
        name,
        "bytes per token x tokens x sequences / 2^30: one 4,096-token Llama-2-7B context "
        "takes 2 GiB, so memory, not compute, caps how many sequences run at once",
    )
