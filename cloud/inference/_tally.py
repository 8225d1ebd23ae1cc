"""Thread-safe request counts shared by the inference front doors."""

from __future__ import annotations

import threading
from collections import Counter


class Tally:
    """Served and rejected requests per front door ("http", "mqtt") and rejection reason.

    Both front doors count from their own threads; a `Counter` increment is a read and a
    write, so it takes a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def served(self, via: str) -> None:
        """Count one answered request."""
        with self._lock:
            self._counts["served"] += 1
            self._counts[f"served.{via}"] += 1

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
