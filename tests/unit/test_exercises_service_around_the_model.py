"""Lesson 16's checks pass right answers and name the mistake in wrong ones; the references
they use (the server's TokenBucket, Admission and FairQueue, tritonclient's request body) agree
with the arithmetic written out by hand."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np

from maaslab.exercises.service_around_the_model import (
    BUCKET_PROBES,
    DAILY_PROBES,
    bucket_wait,
    canary_band,
    check_bucket_wait,
    check_canary_band,
    check_daily_retry_after,
    check_fair_order,
    check_tensor_bytes,
    daily_retry_after,
    fair_order,
    tensor_body_bytes,
)

# --- the references against hand arithmetic ----------------------------------------------------


def test_bucket_wait_is_the_closed_form():
    for rate, burst, taken, elapsed in BUCKET_PROBES:
        level = min(burst, burst - taken + elapsed * rate)
        assert math.isclose(bucket_wait(rate, burst, taken, elapsed), max(0, (1 - level) / rate))
    assert bucket_wait(2, 5, 5, 0) == 0.5  # the notebook's measured case


def test_daily_retry_after_counts_to_the_next_utc_midnight():
    for t in DAILY_PROBES:
        now = datetime.fromtimestamp(t, UTC)
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        assert daily_retry_after(t) == max(1, math.ceil((midnight - now).total_seconds()))
    assert daily_retry_after(DAILY_PROBES[0]) == 86_400


def test_fair_order_is_the_servers_round_robin():
    arrivals = [("a", f"a{i}") for i in range(1, 5)] + [("b", "b1"), ("b", "b2")]
    assert fair_order(arrivals, 8) == ["a1", "b1", "a2", "b2", "a3", "a4"]
    assert fair_order(arrivals, 2) == ["a1", "b1", "a2", "b2"]  # a3, a4 refused


def test_tensor_body_bytes_are_tritonclients_bodies():
    x = np.arange(64, dtype=np.float32).reshape(1, 64)
    js, binary = tensor_body_bytes(x)
    assert binary - x.nbytes < 300  # the raw float32 bytes after a short JSON header
    assert 0 < js - len(json.dumps(x.ravel().tolist(), separators=(",", ":"))) < 300


# --- the checks ----------------------------------------------------------------------------------


def test_bucket_wait_check():
    def right(rate, burst, taken, elapsed):
        level = min(burst, burst - taken + elapsed * rate)
        return max(0.0, (1 - level) / rate)

    assert check_bucket_wait(right).passed
    rounded = check_bucket_wait(lambda *a: max(1, math.ceil(right(*a))))
    assert not rounded.passed and "Retry-After" in rounded.message
    no_refill = check_bucket_wait(lambda r, b, t, e: max(0.0, (1 - (b - t)) / r))
    assert not no_refill.passed and "refills" in no_refill.message
    times_rate = check_bucket_wait(lambda r, b, t, e: max(0.0, (1 - (b - t) - e * r) * r))
    assert not times_rate.passed and "requests per second" in times_rate.message
    assert "returned None" in check_bucket_wait(lambda *a: None).message


def test_daily_retry_after_check():
    def right(t):
        return max(1, math.ceil((t // 86400 + 1) * 86400 - t))

    assert check_daily_retry_after(right).passed
    floor = check_daily_retry_after(lambda t: int((t // 86400 + 1) * 86400 - t))
    assert not floor.passed and "round up" in floor.message
    since = check_daily_retry_after(lambda t: int(t % 86400) or 86400)
    assert not since.passed and "since midnight" in since.message
    modulo = check_daily_retry_after(lambda t: math.ceil(-t % 86400))  # 0 at midnight
    assert not modulo.passed and "whole day" in modulo.message
    hours = check_daily_retry_after(lambda t: math.ceil(right(t) / 3600))
    assert not hours.passed and "hours" in hours.message
    assert "whole number" in check_daily_retry_after(lambda t: right(t) + 0.5).message


def test_canary_band_check():
    assert check_canary_band(lambda n, pct: canary_band(n, pct)).passed
    assert check_canary_band(
        lambda n, pct: (n * pct / 100, math.sqrt(n * pct / 100 * (1 - pct / 100)))
    ).passed
    percent = check_canary_band(lambda n, pct: (n * pct, canary_band(n, pct)[1]))
    assert not percent.passed and "divide it by 100" in percent.message
    variance = check_canary_band(lambda n, pct: (n * pct / 100, n * pct / 100 * (1 - pct / 100)))
    assert not variance.passed and "variance" in variance.message
    poisson = check_canary_band(lambda n, pct: (n * pct / 100, math.sqrt(n * pct / 100)))
    assert not poisson.passed and "Poisson" in poisson.message
    share = check_canary_band(
        lambda n, pct: (n * pct / 100, math.sqrt(pct / 100 * (1 - pct / 100) / n))
    )
    assert not share.passed and "fraction" in share.message
    champion = check_canary_band(lambda n, pct: canary_band(n, 100 - pct))
    assert not champion.passed and "champion" in champion.message
    assert "two numbers" in check_canary_band(lambda n, pct: 3.0).message


def _round_robin(arrivals, per_tenant):
    fifos: dict[str, list[str]] = {}
    for tenant, request in arrivals:
        fifo = fifos.setdefault(tenant, [])
        if len(fifo) < per_tenant:
            fifo.append(request)
    order = []
    while any(fifos.values()):
        for fifo in fifos.values():
            if fifo:
                order.append(fifo.pop(0))
    return order


def test_fair_order_check():
    assert check_fair_order(_round_robin).passed
    fifo = check_fair_order(lambda arrivals, k: [r for _, r in arrivals])
    assert not fifo.passed and "first come first served" in fifo.message

    def by_tenant(arrivals, k):
        order = _round_robin(arrivals, k)
        tenants = list(dict.fromkeys(t for t, _ in arrivals))
        return [r for t in tenants for r in order if r.startswith(t)]

    whole = check_fair_order(by_tenant)
    assert not whole.passed and "whole queue" in whole.message

    def alphabetical(arrivals, k):
        return _round_robin(sorted(arrivals, key=lambda a: a[0]), k)

    by_name = check_fair_order(alphabetical)
    assert not by_name.passed and "not by name" in by_name.message
    unbounded = check_fair_order(lambda arrivals, k: _round_robin(arrivals, 10**6))
    assert not unbounded.passed and "503" in unbounded.message


def test_tensor_bytes_check():
    def right(x):
        return len(json.dumps(x.ravel().tolist(), separators=(",", ":"))), x.nbytes

    assert check_tensor_bytes(right).passed
    assert check_tensor_bytes(tensor_body_bytes).passed
    spaced = check_tensor_bytes(lambda x: (len(json.dumps(x.ravel().tolist())), x.nbytes))
    assert not spaced.passed and "compact" in spaced.message
    double = check_tensor_bytes(lambda x: (right(x)[0], x.size * 8))
    assert not double.passed and "float64" in double.message
    same = check_tensor_bytes(lambda x: (x.nbytes, x.nbytes))
    assert not same.passed and "as text" in same.message
    short = check_tensor_bytes(lambda x: (len(",".join(str(v) for v in x.ravel())) + 2, x.nbytes))
    assert not short.passed and "17" in short.message
