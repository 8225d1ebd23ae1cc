"""Thread-safe request counts and latencies shared by the inference front doors."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

# Upper bounds (seconds) of the latency buckets: a micro-batched forward pass takes a few ms.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Latency:
    """Answered requests of one front door by latency bucket (the last counts the rest)."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, requests at or below it) pairs ending with `+Inf`: a histogram."""
        out, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS_S), "+Inf"), self.buckets,
                                strict=True):
            running += count
            out.append((bound, running))
        return out


class Tally:
    """Served and rejected requests per front door ("http", "mqtt") and rejection reason,
    and how long the answered ones took.

    Both front doors count from their own threads; a `Counter` increment is a read and a
    write, so it takes a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latency: dict[str, Latency] = {}

    def served(self, via: str, seconds: float) -> None:
        """Count one answered request that took `seconds` from arrival to answer."""
        with self._lock:
            self._counts["served"] += 1
            self._counts[f"served.{via}"] += 1
            latency = self._latency.setdefault(via, Latency())
            latency.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            latency.total_s += seconds

    def rejected(self, via: str, reason: str) -> None:
        """Count one refused or dropped request under its reason code."""
        with self._lock:
            self._counts["rejected"] += 1
            self._counts[f"rejected.{via}"] += 1
            self._counts[f"reason.{reason}"] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of every count; "served" and "rejected" are always present."""
        with self._lock:
            return {"served": 0, "rejected": 0, **self._counts}

    def latencies(self) -> dict[str, Latency]:
        """A copy of the latency buckets per front door."""
        with self._lock:
            return {via: Latency(list(lat.buckets), lat.total_s)
                    for via, lat in self._latency.items()}
