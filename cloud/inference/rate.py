"""Per-key request rates: a token bucket for each key, the clock passed in, idle keys forgotten."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RateParams:
    """How fast one key may go.

    Args:
        rate_per_s: Requests per second a key may keep up.
        burst: Requests a key may send at once after being idle (the bucket's size).
        max_keys: Buckets kept at most; past it the least recently used one is dropped.
    """

    rate_per_s: float
    burst: int
    max_keys: int = 10_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a positive number, got {self.rate_per_s}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        if self.max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {self.max_keys}")


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `rate_per_s`.

    Memory stays bounded: a bucket that has refilled to `burst` is the same as no bucket, so
    it is dropped, and at most `max_keys` are kept. Buckets sit in least-recently-used order,
    so both checks look at the front only (amortised O(1) per call). Not thread-safe: one
    caller (the HTTP door's event loop) owns it.

    Args:
        params: The rate and burst every key gets.
    """

    def __init__(self, params: RateParams) -> None:
        self.params = params
        # key -> (tokens left, time they were counted), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Spend one request of `key`'s allowance at time `now` (seconds, any origin).

        Returns:
            0.0 when the request is allowed; else the seconds until it would be (nothing is
            spent then).
        """
        rate, burst = self.params.rate_per_s, float(self.params.burst)
        self._forget_idle(now)
        tokens, counted = self._buckets.pop(key, (burst, now))
        # A clock that steps back refills nothing rather than draining the bucket.
        tokens = min(burst, tokens + max(0.0, now - counted) * rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate
        self._buckets[key] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        if len(self._buckets) > self.params.max_keys:
            self._buckets.popitem(last=False)  # an evicted key starts over with a full burst
        return wait

    def __len__(self) -> int:
        """Keys holding a bucket (at most `max_keys`)."""
        return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        rate, burst = self.params.rate_per_s, self.params.burst
        while self._buckets:
            tokens, counted = next(iter(self._buckets.values()))
            if tokens + (now - counted) * rate < burst:
                return
            self._buckets.popitem(last=False)
