"""The autotuner's rule: the fastest candidate whose loss stays near fp32's (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from fedstream.shared.learning.backends.candidates import Candidate

# Relative to fp32's loss after the same steps from the same seed. bf16 moved the loss of
# every built-in family by well under 1% here (digits MLP, cnn1d, gru, transformer), so 2%
# refuses only a real divergence, not rounding.
DEFAULT_TOLERANCE = 0.02
# A loss near 0 (a fitted regression) makes any difference relatively huge: below this
# magnitude the tolerance is absolute.
_LOSS_FLOOR = 1e-3
REFERENCE = Candidate(backend="torch", precision="fp32")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """How one candidate did.

    Attributes:
        candidate: What was measured.
        step_s: Best seconds per training step; `inf` when it failed.
        loss: Mean training loss over the check steps (same seed, same batches for every
            candidate); `nan` when it failed.
        error: Why it could not be measured (it is never chosen); "" when it was.
    """

    candidate: Candidate
    step_s: float
    loss: float
    error: str = ""

    @property
    def ok(self) -> bool:
        """Measured, with a finite time and loss."""
        return not self.error and math.isfinite(self.step_s) and math.isfinite(self.loss)

    def to_wire(self) -> dict[str, Any]:
        """JSON-safe fields (a failed run's inf and nan become None)."""
        return {"c": self.candidate.label,
                "s": self.step_s if math.isfinite(self.step_s) else None,
                "loss": self.loss if math.isfinite(self.loss) else None, "err": self.error}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse what `to_wire` wrote.

        Raises:
            ValueError: A missing or mistyped field.
        """
        step, loss, error = d.get("s"), d.get("loss"), d.get("err", "")
        if not (_number_or_none(step) and _number_or_none(loss) and isinstance(error, str)):
            raise ValueError(f"bad timing {dict(d)!r}")
        return cls(candidate=Candidate.parse(str(d.get("c"))),
                   step_s=math.inf if step is None else float(step),
                   loss=math.nan if loss is None else float(loss), error=error)

    def failed(self, error: str) -> Timing:
        """This candidate as failed with `error`."""
        return Timing(candidate=self.candidate, step_s=math.inf, loss=math.nan, error=error)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The chosen candidate, why, and every measurement it was chosen from."""

    chosen: Candidate
    reason: str
    timings: tuple[Timing, ...] = ()

    def step_ms(self) -> dict[str, float]:
        """Milliseconds per step of every measured candidate, by label."""
        return {t.candidate.label: round(1000 * t.step_s, 4) for t in self.timings if t.ok}

    def to_wire(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {"chosen": self.chosen.label, "why": self.reason,
                "timings": [t.to_wire() for t in self.timings]}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse what `to_wire` wrote.

        Raises:
            ValueError: A missing or mistyped field.
        """
        timings, reason = d.get("timings"), d.get("why")
        if not isinstance(timings, list) or not isinstance(reason, str):
            raise ValueError("a decision needs its reason and timings")
        return cls(chosen=Candidate.parse(str(d.get("chosen"))), reason=reason,
                   timings=tuple(Timing.from_wire(t) for t in timings if isinstance(t, dict)))


def decide(timings: Sequence[Timing], *, tolerance: float = DEFAULT_TOLERANCE) -> Decision:
    """The fastest measured candidate whose loss is within `tolerance` of fp32's.

    fp32's loss is stock torch fp32's when it was measured, else the first measured fp32
    candidate's; with no fp32 measured (bf16 forced), no loss is checked.

    Args:
        timings: One per candidate, from the same seed, batches and steps.
        tolerance: Allowed |loss - fp32 loss| as a share of |fp32 loss| (absolute below
            a loss of 0.001).

    Returns:
        The decision; its reason names the time per step, the runner-up and every refusal.

    Raises:
        ValueError: No candidate was measured (every one failed), or a negative tolerance.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    measured = [t for t in timings if t.ok]
    fp32 = [t for t in measured if t.candidate.precision == "fp32"]
    ref = next((t for t in fp32 if t.candidate == REFERENCE), fp32[0] if fp32 else None)
    allowed = tolerance * max(abs(ref.loss), _LOSS_FLOOR) if ref is not None else math.inf
    eligible = [t for t in measured if ref is None or abs(t.loss - ref.loss) <= allowed]
    if not eligible:
        failures = "; ".join(f"{t.candidate.label}: {t.error or 'not finite'}" for t in timings)
        raise ValueError(f"no candidate could be measured ({failures or 'none given'})")
    ranked = sorted(eligible, key=lambda t: t.step_s)
    best = ranked[0]
    parts = [f"{best.candidate.label}: fastest of {len(measured)} measured, "
             f"{1000 * best.step_s:.3g} ms/step"]
    if len(ranked) > 1:
        parts[0] += f" ({ranked[1].step_s / best.step_s:.2f}x faster than " \
                    f"{ranked[1].candidate.label})"
    if ref is not None:
        parts += [f"refused {t.candidate.label}: loss {t.loss:.4g} vs fp32 {ref.loss:.4g}, "
                  f"beyond {tolerance:.0%}" for t in measured if t not in eligible]
    parts += [f"{t.candidate.label} failed: {t.error or 'not finite'}"
              for t in timings if not t.ok]
    return Decision(chosen=best.candidate, reason="; ".join(parts), timings=tuple(timings))


def _number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
