"""Lesson 16's auto-checked exercises: a token bucket's wait, the Retry-After of a daily quota,
the binomial band of a canary split, the order fair queuing serves tenants in, and the bytes of
a float32 tensor as JSON and as binary.

Each check compares the learner's function with the server's own code on fixed probes: the
`TokenBucket` and `Admission` of `maaslab.serve.tenants`, the batcher's `FairQueue`, and the
request body `tritonclient` builds. When an answer matches a known mistake (Retry-After's
rounding for the exact wait, a percentage used as a fraction, a variance for a standard
deviation, one shared queue for fair turns, 8 bytes per float32 ...) the message names it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence

import numpy as np

from maaslab.exercises.grading import (
    CheckResult,
    call_answer,
    exercise,
    failed,
    first_mistake,
    passed,
)
from maaslab.serve.batching import FairQueue, _Item
from maaslab.serve.quotas import DAY_S, Admission, TokenBucket
from maaslab.serve.tenants import KeyTable, Limits, Tenant, hash_key

# --- exercise 1: the wait a token bucket gives after a burst --------------------------------------

# (requests_per_s, burst, taken at time 0 from a full bucket, seconds elapsed since)
BUCKET_PROBES = (
    (2.0, 5, 5, 0.0),
    (2.0, 5, 5, 0.2),
    (20.0, 40, 40, 0.01),
    (0.5, 2, 2, 0.5),
    (1.0, 3, 1, 0.0),
    (10.0, 4, 4, 1.0),
)


def bucket_wait(rate: float, burst: int, taken: int, elapsed_s: float) -> float:
    """Seconds until one more request is admitted: the server's TokenBucket, started full at 0,
    `taken` requests taken at 0, asked `elapsed_s` later."""
    bucket = TokenBucket(rate, burst, now=0.0)
    for _ in range(taken):
        bucket.take(1, now=0.0)
    return bucket.wait(1, now=elapsed_s)


@exercise
def check_bucket_wait(fn: Callable) -> CheckResult:
    """Check `fn(rate, burst, taken, elapsed_s) -> seconds until one more request gets in`."""
    name = "the wait a token bucket gives after a burst"
    for rate, burst, taken, elapsed in BUCKET_PROBES:
        got, bad = call_answer(name, fn, rate, burst, taken, elapsed)
        if bad is not None:
            return bad
        try:
            got = float(got)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return failed(name, f"expected a number of seconds, got {type(got).__name__}")
        want = bucket_wait(rate, burst, taken, elapsed)
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        where = (
            f"at {rate:g} requests/s, burst {burst}, {taken} taken at once and {elapsed:g} s "
            f"later you gave {got:g} s, expected {want:g} s"
        )
        left = burst - taken  # tokens left right after the burst
        mistakes = [
            (
                max(0.0, (1 - left) / rate),
                "the bucket refills while time passes: elapsed_s x rate tokens came back",
            ),
            (
                max(0.0, (1 - left - elapsed * rate) * rate),
                "rate is in requests per second: the missing token takes (1 - level) / rate s",
            ),
            (
                1 / rate,
                "1 / rate is the wait from an empty bucket; count what is left and refilled",
            ),
        ]
        if want > 0:
            mistakes.insert(
                0,
                (
                    max(1, math.ceil(want)),
                    "that is the Retry-After header's rounding (whole seconds, at least 1); the "
                    "bucket itself admits the request as soon as one token has refilled",
                ),
            )
        why = first_mistake(got, mistakes, rtol=1e-6, atol=1e-9)
        if why:
            return failed(name, f"{where}: {why}")
        return failed(
            name,
            f"{where}. Hint: level = min(burst, burst - taken + elapsed_s x rate); the wait is "
            "max(0, (1 - level) / rate)",
        )
    return passed(
        name,
        "after a burst that empties the bucket the next request waits 1 / rate minus what has "
        "refilled; Retry-After rounds that up to whole seconds",
    )


# --- exercise 2: Retry-After of a daily quota -----------------------------------------------------

DAY0 = 1_796_601_600.0  # 2026-12-07 00:00:00 UTC
DAILY_PROBES = (
    DAY0,  # midnight itself: a whole day to wait
    DAY0 + 12 * 3600 + 0.25,  # just after noon
    DAY0 + 18 * 3600 + 30 * 60,  # 18:30:00
    DAY0 + DAY_S - 0.5,  # half a second before midnight
    DAY0 + 3 * DAY_S + 7 * 3600 + 0.75,  # another day, 07:00:00.75
)


def daily_retry_after(unix_time: float) -> int:
    """The Retry-After (s) the server gives a tenant past its daily quota at `unix_time`."""
    tenant = Tenant("probe", "user", hash_key("probe"), Limits(daily_requests=1))
    admission = Admission(KeyTable([tenant]), clock=lambda: 0.0, wallclock=lambda: unix_time)
    admission.admit(tenant)  # the day's one request
    refusal = admission.admit(tenant)
    assert refusal is not None and refusal.reason == "daily"
    return refusal.retry_after_s


@exercise
def check_daily_retry_after(fn: Callable) -> CheckResult:
    """Check `fn(unix_time) -> whole seconds until the daily quota resets at 00:00 UTC`."""
    name = "Retry-After of a daily quota"
    for t in DAILY_PROBES:
        got, bad = call_answer(name, fn, t)
        if bad is not None:
            return bad
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if isinstance(got, bool) or not isinstance(got, int | np.integer):
            return failed(name, f"Retry-After is a whole number of seconds; you returned {got!r}")
        want = daily_retry_after(t)
        if got == want:
            continue
        since = t % DAY_S
        where = (
            f"at {since // 3600:02.0f}:{since % 3600 // 60:02.0f}:{since % 60:05.2f} UTC you gave "
            f"{got}, expected {want}"
        )
        mistakes = [
            (int(since), "that is the time since midnight; the quota resets at the next one"),
            (math.floor(DAY_S - since), "round up, not down: a client retrying early is refused"),
            (math.ceil((DAY_S - since) / 3600), "Retry-After counts seconds, not hours"),
            (math.ceil((DAY_S - since) / 60), "Retry-After counts seconds, not minutes"),
            (0, "Retry-After is at least 1: 0 would invite an immediate retry"),
        ]
        if since == 0:
            mistakes.insert(
                0,
                (0, "at midnight exactly the new day has just begun: its quota lasts a whole day"),
            )
        why = first_mistake(got, mistakes, rtol=0, atol=0)
        if why:
            return failed(name, f"{where}: {why}")
        return failed(
            name,
            f"{where}. Hint: the next midnight is (t // 86400 + 1) x 86400; wait max(1, "
            "ceil(that - t)) seconds",
        )
    return passed(
        name,
        "a daily quota resets at 00:00 UTC; Retry-After is the seconds until then, rounded up",
    )


# --- exercise 3: a canary split, expected count and binomial spread -------------------------------

CANARY_PROBES = ((1000, 10.0), (1353, 10.0), (200, 50.0), (5000, 1.0), (64, 25.0))


def canary_band(requests: int, canary_percent: float) -> tuple[float, float]:
    """(expected, standard deviation) of the requests a canary sends to the challenger: each of
    `requests` goes there with probability p = canary_percent / 100, so the count is
    Binomial(n, p): mean n p, standard deviation sqrt(n p (1 - p))."""
    p = canary_percent / 100
    return requests * p, math.sqrt(requests * p * (1 - p))


@exercise
def check_canary_band(fn: Callable) -> CheckResult:
    """Check `fn(requests, canary_percent) -> (expected, sd)` of the challenger's requests."""
    name = "a canary split: expected requests and their spread"
    for n, percent in CANARY_PROBES:
        got, bad = call_answer(name, fn, n, percent)
        if bad is not None:
            return bad
        try:
            mean, sd = (float(v) for v in got)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return failed(name, f"return two numbers (expected, sd), got {got!r}")
        want_mean, want_sd = canary_band(n, percent)
        if math.isclose(mean, want_mean, rel_tol=1e-6) and math.isclose(sd, want_sd, rel_tol=1e-6):
            continue
        where = (
            f"for {n} requests at {percent:g} % you gave ({mean:g}, {sd:g}), expected "
            f"({want_mean:g}, {want_sd:.4g})"
        )
        p = percent / 100
        if math.isclose(mean, n * percent, rel_tol=1e-6):
            return failed(name, f"{where}: canary_percent is a percentage: divide it by 100")
        if math.isclose(mean, n * (1 - p), rel_tol=1e-6):
            return failed(
                name, f"{where}: that is the champion's share; the canary gets canary_percent"
            )
        if not math.isclose(mean, want_mean, rel_tol=1e-6):
            return failed(name, f"{where}: the expected count is n x canary_percent / 100")
        why = first_mistake(
            sd,
            [
                (n * p * (1 - p), "that is the variance; the standard deviation is its root"),
                (math.sqrt(n * p), "sqrt(n p) is Poisson's spread; a binomial has (1 - p) too"),
                (
                    math.sqrt(p * (1 - p) / n),
                    "that is the spread of the share (a fraction); the count's is n times it",
                ),
                (math.sqrt(n) * p, "the binomial variance is n p (1 - p)"),
            ],
            rtol=1e-6,
            atol=1e-12,
        )
        return failed(name, f"{where}: {why}" if why else f"{where}. Hint: sd = sqrt(n p (1 - p))")
    return passed(
        name,
        "the challenger's count is Binomial(n, p): a measured count more than 3 standard "
        "deviations from n p would point at a broken split",
    )


# --- exercise 4: the order round-robin fair queuing serves tenants in -----------------------------

_SIX_A_TWO_B = (*(("a", f"a{i}") for i in range(1, 7)), ("b", "b1"), ("b", "b2"))
FAIR_PROBES: tuple[tuple[tuple[tuple[str, str], ...], int], ...] = (
    # First a probe where one shared queue, whole queues and turns by name all differ.
    ((("c", "c1"), ("a", "a1"), ("a", "a2"), ("c", "c2"), ("b", "b1"), ("a", "a3")), 8),
    (_SIX_A_TWO_B, 8),
    (_SIX_A_TWO_B, 4),
    ((("b", "b1"), ("a", "a1"), ("b", "b2"), ("b", "b3"), ("a", "a2"), ("b", "b4")), 3),
)


def fair_order(arrivals: Sequence[tuple[str, str]], per_tenant: int) -> list[str]:
    """The order the server's FairQueue hands out requests that all arrived before the first is
    taken; a request finding its tenant's queue full (per_tenant waiting) is refused, not served."""
    queue = FairQueue(per_tenant)
    for tenant, request in arrivals:
        try:
            queue.put(_Item(payload=request, rows=1, future=None, tenant=tenant))  # type: ignore[arg-type]
        except asyncio.QueueFull:  # the server answers this request 503
            continue
    served = []
    while queue.qsize():
        served.append(queue.get_nowait().payload)  # type: ignore[union-attr]
    return served


def _admitted(arrivals: Sequence[tuple[str, str]], per_tenant: int) -> list[tuple[str, str]]:
    counts: dict[str, int] = {}
    kept = []
    for tenant, request in arrivals:
        counts[tenant] = counts.get(tenant, 0) + 1
        if counts[tenant] <= per_tenant:
            kept.append((tenant, request))
    return kept


def _round_robin(arrivals: Sequence[tuple[str, str]], turns: list[str]) -> list[str]:
    fifos = {t: [r for u, r in arrivals if u == t] for t in turns}
    out: list[str] = []
    while any(fifos.values()):
        for t in turns:
            if fifos[t]:
                out.append(fifos[t].pop(0))
    return out


@exercise
def check_fair_order(fn: Callable) -> CheckResult:
    """Check `fn(arrivals, per_tenant) -> request ids in the order they are served`."""
    name = "the order round-robin fair queuing serves tenants in"
    for arrivals, per_tenant in FAIR_PROBES:
        got, bad = call_answer(name, fn, [tuple(a) for a in arrivals], per_tenant)
        if bad is not None:
            return bad
        try:
            got = [str(r) for r in got]  # type: ignore[union-attr]
        except TypeError:
            return failed(name, f"return a list of request ids, got {type(got).__name__}")
        want = fair_order(arrivals, per_tenant)
        if got == want:
            continue
        where = f"for arrivals {[r for _, r in arrivals]} (per_tenant={per_tenant}) you gave {got}"
        kept = _admitted(arrivals, per_tenant)
        first_seen = list(dict.fromkeys(t for t, _ in arrivals))
        mistakes = [
            (
                [r for _, r in kept],
                "that is one shared queue, first come first served: a flood ahead of you is "
                "served before you. Fair queuing takes one request from each tenant in turn",
            ),
            (
                [r for t in first_seen for u, r in kept if u == t],
                "that serves one tenant's whole queue before the next tenant's; turns alternate "
                "one request at a time",
            ),
            (
                _round_robin(kept, sorted(first_seen)),
                "turns go in the order tenants started waiting, not by name",
            ),
            (
                _round_robin(arrivals, first_seen),
                f"each tenant's queue holds {per_tenant} requests; one more is refused at once "
                "(503) and never served",
            ),
        ]
        why = next((m for wrong, m in mistakes if got == wrong), None)
        if why:
            return failed(name, f"{where}: {why}")
        return failed(
            name,
            f"{where}, expected {want}. Hint: keep the first per_tenant requests of each tenant, "
            "then take one from each tenant in the order they first arrived, until all are served",
        )
    return passed(
        name,
        "round robin over tenants: a tenant with 100 requests waiting delays another's next "
        "request by one turn, not by 100",
    )


# --- exercise 5: bytes of a float32 tensor as JSON and as binary ----------------------------------

BODY_TOLERANCE = (0.02, 300)  # relative, and bytes of JSON header the estimate may leave out


def _tensor_probes() -> list[np.ndarray]:
    # Digits' pixels are small whole numbers ("16.0"); probabilities are full-precision floats.
    rng = np.random.default_rng(16)
    pixels = [rng.integers(0, 17, (n, 64)).astype(np.float32) for n in (32, 256)]
    floats = [rng.random((n, 64), dtype=np.float32) for n in (32, 256)]
    return pixels + floats


def tensor_body_bytes(x: np.ndarray) -> tuple[int, int]:
    """(JSON, binary) bytes of the OIP request body tritonclient.http builds for `x` as one FP32
    input named "pixels": with the numbers as JSON text, and with the binary tensor extension."""
    import tritonclient.http as thttp

    sizes = []
    for binary in (False, True):
        tensor = thttp.InferInput("pixels", list(x.shape), "FP32")
        tensor.set_data_from_numpy(np.asarray(x, dtype=np.float32), binary_data=binary)
        body, _ = thttp.InferenceServerClient.generate_request_body([tensor])
        sizes.append(len(body))
    return sizes[0], sizes[1]


@exercise
def check_tensor_bytes(fn: Callable) -> CheckResult:
    """Check `fn(x) -> (json_bytes, binary_bytes)` for a float32 [N, 64] tensor, within 2 % +
    300 bytes of the request body tritonclient builds (the JSON header may be left out)."""
    name = "bytes of an FP32 tensor as JSON and as binary"
    rel, slack = BODY_TOLERANCE
    for x in _tensor_probes():
        got, bad = call_answer(name, fn, x)
        if bad is not None:
            return bad
        try:
            js, binary = (float(v) for v in got)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return failed(name, f"return two numbers (json_bytes, binary_bytes), got {got!r}")
        want_js, want_bin = tensor_body_bytes(x)
        kind = "whole-number pixels" if np.all(x == np.round(x)) else "full-precision floats"
        where = f"for a {list(x.shape)} float32 tensor of {kind}"
        for label, value, want in (("binary", binary, want_bin), ("JSON", js, want_js)):
            if abs(value - want) <= rel * want + slack:
                continue
            msg = f"{where} your {label} size {value:,.0f} is off (the body is {want:,} bytes)"
            text32 = len(",".join(str(v) for v in x.ravel())) + 2
            spaced = len(json.dumps(x.ravel().tolist()))
            mistakes = [
                (x.size * 8, "8 bytes per value is float64; FP32 travels as 4 bytes each"),
                (x.size, "each float32 takes 4 bytes, not 1"),
                (x.size * 32, "that counts bits; a float32 is 4 bytes"),
                (x.size * 4, "JSON writes numbers as text: count the characters, not 4 bytes"),
                (
                    text32,
                    "tritonclient writes x.tolist(): Python floats, printed with the 17 "
                    "significant digits of a double, not float32's shorter repr",
                ),
                (
                    spaced,
                    "json.dumps puts a space after each comma; tritonclient writes compact JSON, "
                    "separators=(',', ':')",
                ),
            ]
            why = next(
                (m for wrong, m in mistakes if abs(value - wrong) <= rel * wrong + slack), None
            )
            if why:
                return failed(name, f"{msg}: {why}")
            return failed(
                name,
                f"{msg}. Hint: binary is x.nbytes; JSON about len(json.dumps(x.ravel().tolist()))",
            )
    return passed(
        name,
        "binary carries 4 bytes per float32; JSON carries its text: 5-6 bytes for a small whole "
        "number, about 20 for a full-precision float",
    )
