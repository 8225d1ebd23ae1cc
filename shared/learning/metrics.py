"""Scores and which way is better, without torch (the operator CLI prints them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    """A named score and its direction. Every comparison of scores goes through `gain`, so
    no caller assumes that higher is better.

    Attributes:
        name: The key in metrics maps (`accuracy`, `mae`, `rmse`).
        higher_is_better: True for accuracy, False for an error.
    """

    name: str
    higher_is_better: bool

    def gain(self, value: float) -> float:
        """`value` signed so that more is better (an error is negated)."""
        return value if self.higher_is_better else -value

    def loss_of(self, reference: float, value: float) -> float:
        """How much worse `value` is than `reference` (negative when it is better)."""
        return self.gain(reference) - self.gain(value)


ACCURACY = Metric("accuracy", higher_is_better=True)
MAE = Metric("mae", higher_is_better=False)
RMSE = Metric("rmse", higher_is_better=False)
METRICS: dict[str, Metric] = {m.name: m for m in (ACCURACY, MAE, RMSE)}
