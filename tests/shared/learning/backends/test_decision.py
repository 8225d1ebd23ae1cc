"""Tests for shared/learning/backends/decision.py: the fastest candidate within the loss
tolerance of fp32, and the decision's wire form."""

from __future__ import annotations

import math

import pytest

from fedstream.shared.learning.backends.candidates import Candidate
from fedstream.shared.learning.backends.decision import Decision, Timing, decide


def _t(label: str, ms: float, loss: float, error: str = "") -> Timing:
    return Timing(candidate=Candidate.parse(label), step_s=ms / 1000, loss=loss, error=error)


@pytest.mark.parametrize(
    ("timings", "chosen"),
    [
        # bf16 twice as fast and its loss 0.4% off fp32's: taken.
        ([_t("torch/fp32", 2.0, 2.30), _t("torch/bf16", 1.0, 2.31)], "torch/bf16"),
        # bf16 slower: fp32 stays.
        ([_t("torch/fp32", 1.0, 2.30), _t("torch/bf16", 2.0, 2.30)], "torch/fp32"),
        # IPEX fp32 fastest of four.
        ([_t("torch/fp32", 3.0, 2.30), _t("torch/bf16", 2.0, 2.30),
          _t("ipex/fp32", 1.0, 2.30), _t("ipex/bf16", 1.5, 2.30)], "ipex/fp32"),
        # A failed candidate is never chosen, however "fast".
        ([_t("torch/fp32", 3.0, 2.30), _t("ipex/bf16", 0.0, math.nan, "RuntimeError: x")],
         "torch/fp32"),
        # No fp32 measured (bf16 forced): nothing to hold the loss against.
        ([_t("ipex/bf16", 2.0, 9.0), _t("torch/bf16", 1.0, 5.0)], "torch/bf16"),
    ],
    ids=["bf16-faster", "bf16-slower", "ipex-fp32", "failed-skipped", "no-fp32"],
)
def test_the_fastest_within_tolerance_is_chosen(timings: list[Timing], chosen: str) -> None:
    """The candidate with the least time per step among those near fp32's loss wins."""
    # Execute
    decision = decide(timings, tolerance=0.02)

    # Assert
    assert decision.chosen.label == chosen
    assert decision.reason.startswith(f"{chosen}: fastest of")


@pytest.mark.parametrize("loss", [2.40, math.inf, math.nan], ids=["diverged", "inf", "nan"])
def test_bf16_is_refused_when_its_loss_diverges(loss: float) -> None:
    """bf16 three times faster but 4% (or infinitely) off fp32's loss loses to fp32."""
    # Prepare
    timings = [_t("torch/fp32", 3.0, 2.30), _t("torch/bf16", 1.0, loss)]

    # Execute
    decision = decide(timings, tolerance=0.02)

    # Assert
    assert decision.chosen.label == "torch/fp32"
    assert ("refused torch/bf16: loss 2.4 vs fp32 2.3" in decision.reason) is (loss == 2.40)


def test_the_reference_is_stock_fp32() -> None:
    """IPEX fp32 is held to stock torch fp32's loss like any other candidate."""
    # Prepare
    timings = [_t("torch/fp32", 3.0, 1.0), _t("ipex/fp32", 1.0, 1.5)]

    # Execute
    decision = decide(timings, tolerance=0.02)

    # Assert
    assert decision.chosen.label == "torch/fp32"
    assert "refused ipex/fp32" in decision.reason


def test_a_loss_near_zero_gets_an_absolute_tolerance() -> None:
    """Against a fitted loss of 0, a difference of 1e-5 is within 2% of the 0.001 floor."""
    # Prepare
    timings = [_t("torch/fp32", 2.0, 0.0), _t("torch/bf16", 1.0, 1e-5)]

    # Execute / Assert
    assert decide(timings, tolerance=0.02).chosen.label == "torch/bf16"


def test_nothing_measured_is_an_error() -> None:
    """When every candidate failed there is no decision, only why."""
    # Prepare
    timings = [_t("torch/fp32", 0.0, math.nan, "timed out")]

    # Execute / Assert
    with pytest.raises(ValueError, match="torch/fp32: timed out"):
        decide(timings)


def test_a_decision_survives_its_wire_form() -> None:
    """A decision with a failed timing (inf, nan) comes back from JSON-safe fields equal."""
    # Prepare
    decision = decide([_t("torch/fp32", 2.0, 2.3), _t("ipex/fp32", 0.0, math.nan, "boom")])

    # Execute
    back = Decision.from_wire(decision.to_wire())

    # Assert
    assert back.chosen == decision.chosen and back.reason == decision.reason
    assert back.timings[0] == decision.timings[0]
    assert back.timings[1].error == "boom" and not back.timings[1].ok
    assert back.step_ms() == {"torch/fp32": 2.0}


@pytest.mark.parametrize("wire", [{}, {"chosen": "torch", "why": "", "timings": []},
                                  {"chosen": "torch/fp16", "why": "", "timings": []},
                                  {"chosen": "torch/fp32", "why": "", "timings": [{"s": "x"}]}])
def test_a_bad_wire_decision_is_a_value_error(wire: dict[str, object]) -> None:
    """Missing or mistyped fields raise ValueError, which the cache turns into a re-measure."""
    # Execute / Assert
    with pytest.raises(ValueError):
        Decision.from_wire(wire)
