"""When the cloud must recover its round after a step failed half-way, with backoff (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

RECOVER_FIRST_S = 1.0
RECOVER_MAX_S = 300.0


@dataclass(slots=True)
class Recovery:
    """When the coordinator must recover its round, and the wait after a failed try
    (doubling up to `RECOVER_MAX_S`, so a failure that persists costs one try per wait, not
    a full model republish per message)."""

    due: float | None = None
    delay: float = RECOVER_FIRST_S
    # When the last recovery succeeded: a new request waits `RECOVER_FIRST_S` from there,
    # so messages that keep failing (a full disk) recover at most once a second.
    done: float = -math.inf

    def request(self, now: float) -> None:
        if self.due is None:
            self.due = max(now, self.done + RECOVER_FIRST_S)

    def due_at(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def failed(self, now: float) -> None:
        self.due = now + self.delay
        self.delay = min(RECOVER_MAX_S, 2 * self.delay)

    def succeeded(self, now: float) -> None:
        self.due, self.delay, self.done = None, RECOVER_FIRST_S, now
