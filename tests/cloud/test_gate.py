"""The promotion gate: tolerances on the newest window and on the mean of past windows."""

from __future__ import annotations

import pytest

from fedstream.cloud.gate import Verdict, judge
from fedstream.shared.errors import Reason
from fedstream.shared.learning.tasks import ACCURACY, MAE

ORDER = ["w1", "w2", "w3"]
SERVING = {"w1": 0.90, "w2": 0.80, "w3": 0.70}


def _judge(candidate: dict[str, float]) -> Verdict:
    return judge(candidate, SERVING, ORDER, tolerance_newest=0.02, tolerance_past=0.05,
                 metric=ACCURACY)


def test_better_candidate_is_promoted() -> None:
    """A candidate at least as good everywhere passes."""
    # Prepare / Execute
    verdict = _judge({"w1": 0.91, "w2": 0.80, "w3": 0.75})

    # Assert
    assert verdict.promote and verdict.reason is None


def test_drop_within_tolerance_is_promoted() -> None:
    """Losing 1.5 points on the newest window and 4 on the past mean is within tolerance."""
    # Prepare / Execute
    verdict = _judge({"w1": 0.86, "w2": 0.76, "w3": 0.685})

    # Assert
    assert verdict.promote


def test_regression_on_newest_window_is_refused() -> None:
    """Losing 3 points on the newest window (tolerance 2) is refused, naming the window."""
    # Prepare / Execute
    verdict = _judge({"w1": 0.95, "w2": 0.95, "w3": 0.67})

    # Assert
    assert not verdict.promote
    assert verdict.reason is Reason.REGRESSED_NEWEST
    assert "w3" in verdict.detail


def test_regression_on_past_mean_is_refused() -> None:
    """Forgetting w1 (mean of past falls 0.85 -> 0.75) is refused even if w3 improves."""
    # Prepare / Execute
    verdict = _judge({"w1": 0.70, "w2": 0.80, "w3": 0.99})

    # Assert
    assert not verdict.promote
    assert verdict.reason is Reason.REGRESSED_PAST


def test_single_window_judges_only_the_newest() -> None:
    """With one window there is no past to protect."""
    # Prepare / Execute
    verdict = judge({"w": 0.5}, {"w": 0.5}, ["w"], tolerance_newest=0.0, tolerance_past=0.0,
                    metric=ACCURACY)

    # Assert
    assert verdict.promote


def test_no_windows_promotes() -> None:
    """Before any cloud data arrives there is nothing to judge by."""
    # Prepare / Execute
    verdict = judge({}, {}, [], tolerance_newest=0.0, tolerance_past=0.0,
                    metric=ACCURACY)

    # Assert
    assert verdict.promote and "no evaluation windows" in verdict.detail


def test_unscored_window_is_an_error() -> None:
    """Both models must be scored on every window."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="w3"):
        judge({"w1": 1, "w2": 1, "w3": 1}, {"w1": 1, "w2": 1}, ORDER, tolerance_newest=0,
              tolerance_past=0, metric=ACCURACY)


@pytest.mark.parametrize(("newest", "promote"), [(0.69, True), (0.715, True), (0.73, False)])
def test_an_error_metric_is_judged_by_its_rise(newest: float, promote: bool) -> None:
    """With MAE a lower candidate score is better: only a rise past the tolerance on the newest
    window refuses it (accuracy's rule would refuse the better 0.69 and pass the worse 0.73)."""
    # Prepare
    serving = {"w1": 0.30, "w2": 0.50, "w3": 0.70}

    # Execute
    verdict = judge({"w1": 0.30, "w2": 0.50, "w3": newest}, serving, ORDER,
                    tolerance_newest=0.02, tolerance_past=0.02, metric=MAE)

    # Assert
    assert verdict.promote is promote
    assert verdict.reason is (None if promote else Reason.REGRESSED_NEWEST)
    assert "mae" in verdict.detail


def test_an_error_metric_rising_on_past_windows_is_refused() -> None:
    """A candidate whose mean MAE over past windows rose past the tolerance is refused, even
    with a better newest window."""
    # Prepare
    serving = {"w1": 0.30, "w2": 0.50, "w3": 0.70}

    # Execute
    verdict = judge({"w1": 0.40, "w2": 0.50, "w3": 0.10}, serving, ORDER,
                    tolerance_newest=0.02, tolerance_past=0.02, metric=MAE)

    # Assert
    assert verdict.reason is Reason.REGRESSED_PAST
