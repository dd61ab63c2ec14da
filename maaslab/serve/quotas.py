"""Limits at request time and usage metering, per tenant (the tenants are maaslab.serve.tenants).

`Admission.admit` applies a tenant's limits in order — daily quota (requests per UTC day), then
the request rate (a token bucket: `requests_per_s` refill, `burst` size), then tokens per minute
— and a refusal charges nothing and says when to retry (the HTTP 429's Retry-After). `Usage`
counts requests, model tokens, compute seconds and refusals per tenant.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from maaslab.errors import MaaslabError
from maaslab.serve.tenants import KeyTable, Tenant

DAY_S = 86_400


class TokenBucket:
    """A bucket of `capacity` that refills continuously at `rate` per second; starts full."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if not rate > 0 or not capacity > 0:
            raise MaaslabError(
                f"a token bucket needs rate > 0 and capacity > 0, got {rate}, {capacity}"
            )
        self.rate, self.capacity = float(rate), float(capacity)
        self.level, self.updated = float(capacity), now

    def _refill(self, now: float) -> None:
        # max(): a clock read out of order never drains the bucket.
        self.level = min(self.capacity, self.level + max(0.0, now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait(self, n: float, now: float) -> float:
        """Seconds until `n` would be available (0.0 now, inf if n exceeds the capacity)."""
        self._refill(now)
        if n > self.capacity:
            return math.inf
        return 0.0 if self.level >= n else (n - self.level) / self.rate

    def take(self, n: float, now: float) -> float:
        """Take `n` and return 0.0 if available; else take nothing and return the wait in s."""
        seconds = self.wait(n, now)
        if seconds == 0.0:
            self.level -= n
        return seconds

    def charge(self, n: float, now: float) -> None:
        """Take `n` unconditionally; the level may go negative (a debt paid by waiting)."""
        self._refill(now)
        self.level -= n


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused and when to retry (the HTTP 429 body and Retry-After)."""

    reason: str  # "daily", "rate" or "tokens": the limit that refused
    retry_after_s: int  # whole seconds, at least 1, for the Retry-After header
    message: str  # which limit, its value and when to retry, for the response body


def _retry(seconds: float) -> int:
    return max(1, math.ceil(seconds))


@dataclass
class _Spend:
    requests: TokenBucket | None
    tokens: TokenBucket | None
    day: int = -1  # UTC day number (days since 1970-01-01) that `today` counts
    today: int = 0


class Admission:
    """Applies every tenant's limits at request time (daily quota, request rate, tokens)."""

    def __init__(
        self,
        table: KeyTable,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        # Buckets run on the monotonic clock (immune to clock changes); the daily quota on
        # wall time, because "a day" is a calendar day in UTC.
        self.clock, self.wallclock = clock, wallclock
        self._lock = threading.Lock()
        self._spend: dict[str, _Spend] = {}
        for t in table.tenants:
            self._state(t)

    def _state(self, tenant: Tenant) -> _Spend:
        spend = self._spend.get(tenant.name)
        if spend is None:
            lim, now = tenant.limits, self.clock()
            rate = lim.requests_per_s
            per_min = lim.tokens_per_min
            spend = self._spend[tenant.name] = _Spend(
                TokenBucket(rate, lim.bucket_size, now) if rate else None,
                TokenBucket(per_min / 60, per_min, now) if per_min else None,
            )
        return spend

    def admit(self, tenant: Tenant, tokens: int = 0) -> Refusal | None:
        """None to let the request in (and charge it), or a Refusal that charged nothing."""
        lim, who = tenant.limits, f"tenant {tenant.name!r}"
        with self._lock:
            spend, now, wall = self._state(tenant), self.clock(), self.wallclock()
            day = int(wall // DAY_S)
            if spend.day != day:
                spend.day, spend.today = day, 0
            if lim.daily_requests is not None and spend.today >= lim.daily_requests:
                wait = _retry((day + 1) * DAY_S - wall)
                return Refusal(
                    "daily",
                    wait,
                    f"{who} used its daily quota of {lim.daily_requests} requests; it resets at "
                    f"00:00 UTC, in {wait} s",
                )
            if spend.requests is not None:
                seconds = spend.requests.wait(1, now)
                if seconds > 0:
                    wait = _retry(seconds)
                    return Refusal(
                        "rate",
                        wait,
                        f"{who} is limited to {lim.requests_per_s:g} requests/s (burst "
                        f"{lim.bucket_size}); retry in {wait} s",
                    )
            if spend.tokens is not None:
                seconds = spend.tokens.wait(tokens, now)
                if seconds > 0:
                    limit = f"{who} is limited to {lim.tokens_per_min:g} tokens per minute"
                    if math.isinf(seconds):
                        # Waiting never helps; retry in a minute with a smaller request.
                        return Refusal(
                            "tokens", 60, f"{limit} and this request needs {tokens}: ask for fewer"
                        )
                    wait = _retry(seconds)
                    return Refusal("tokens", wait, f"{limit}; retry in {wait} s")
            spend.today += 1
            if spend.requests is not None:
                spend.requests.take(1, now)
            if spend.tokens is not None:
                spend.tokens.take(tokens, now)
            return None

    def charge_tokens(self, tenant: Tenant, tokens: int) -> None:
        """Charge tokens known only after the answer (its output tokens)."""
        with self._lock:
            spend = self._state(tenant)
            if spend.tokens is not None:
                # This may drive the bucket below zero: the answer is already sent, so the debt
                # is paid by the tenant's next request waiting until the bucket refills.
                spend.tokens.charge(tokens, self.clock())


REFUSAL_REASONS = ("daily", "rate", "tokens")


class Usage:
    """Per-tenant metering (requests, tokens, compute, refusals); safe across threads."""

    def __init__(self, table: KeyTable) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict] = {}
        for name in table.names:  # every tenant shows, with zeros, before its first request
            self._row(name)

    def _row(self, name: str) -> dict:
        row = self._rows.get(name)
        if row is None:
            row = self._rows[name] = {
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "compute_seconds": 0.0,
                "refused": dict.fromkeys(REFUSAL_REASONS, 0),
            }
        return row

    def record(
        self,
        tenant_name: str,
        *,
        requests: int = 1,
        input_tokens: int = 0,
        output_tokens: int = 0,
        compute_s: float = 0.0,
    ) -> None:
        """Add one answered request's (or several requests') usage to a tenant."""
        with self._lock:
            row = self._row(tenant_name)
            row["requests"] += requests
            row["input_tokens"] += input_tokens
            row["output_tokens"] += output_tokens
            row["compute_seconds"] += compute_s

    def refused(self, tenant_name: str, reason: str) -> None:
        """Count one refused request of a tenant by reason."""
        with self._lock:
            refused = self._row(tenant_name)["refused"]
            refused[reason] = refused.get(reason, 0) + 1

    def snapshot(self, name: str) -> dict:
        """A copy of one tenant's counters."""
        with self._lock:
            if name not in self._rows:
                raise MaaslabError(f"no tenant named {name!r}; tenants: {sorted(self._rows)}")
            row = self._rows[name]
            return {**row, "refused": dict(row["refused"])}

    def snapshot_all(self) -> dict[str, dict]:
        """A copy of every tenant's counters, by name."""
        return {name: self.snapshot(name) for name in list(self._rows)}
