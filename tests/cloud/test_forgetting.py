"""Continual-learning metrics against accuracy matrices computed by hand."""

from __future__ import annotations

import pytest

from fedstream.cloud.forgetting import metrics_of
from fedstream.shared.learning.tasks import ACCURACY, MAE


def test_three_windows_by_hand() -> None:
    """Average accuracy, forgetting and BWT of the last row of a 3x3 lower-triangular matrix."""
    # Prepare: v1 saw window a; v2 a, b; the judged version a, b, c.
    history = [{"a": 0.9}, {"a": 0.8, "b": 0.7}]
    last = {"a": 0.6, "b": 0.75, "c": 0.5}

    # Execute
    got = metrics_of(history, last, ["a", "b", "c"], metric=ACCURACY)

    # Assert: avg (0.6+0.75+0.5)/3; a: best 0.9 -> 0.6 (drop 0.3, bwt -0.3 vs learned 0.9);
    # b: learned 0.7 -> 0.75 (drop -0.05, bwt +0.05); the newest window c does not count.
    assert got.average == pytest.approx(1.85 / 3)
    assert got.forgetting == pytest.approx((0.3 - 0.05) / 2)
    assert got.bwt == pytest.approx((-0.3 + 0.05) / 2)
    assert got.windows == 3


def test_learned_entry_is_the_first_row_not_the_best() -> None:
    """BWT compares with the row right after a window arrived; forgetting with the best row."""
    # Prepare
    history = [{"a": 0.5}, {"a": 0.9}]

    # Execute
    got = metrics_of(history, {"a": 0.7, "b": 0.8}, ["a", "b"], metric=ACCURACY)

    # Assert
    assert got.forgetting == pytest.approx(0.2)
    assert got.bwt == pytest.approx(0.2)
    assert got.average == pytest.approx(0.75)


def test_no_history_means_nothing_forgotten() -> None:
    """The first version has an average accuracy but no forgetting or transfer yet."""
    # Prepare / Execute
    got = metrics_of([], {"a": 0.4, "b": 0.6}, ["a", "b"], metric=ACCURACY)

    # Assert
    assert (got.average, got.forgetting, got.bwt) == (pytest.approx(0.5), 0.0, 0.0)


def test_no_windows() -> None:
    """Without evaluation windows every metric is zero."""
    # Prepare / Execute
    got = metrics_of([{"a": 1.0}], {}, [], metric=ACCURACY)

    # Assert
    assert got.to_dict() == {"avg_accuracy": 0.0, "forgetting": 0.0, "bwt": 0.0, "windows": 0}


def test_last_row_must_cover_every_window() -> None:
    """A judged row without a window's score is a caller bug, not a zero."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="lacks windows"):
        metrics_of([], {"a": 0.5}, ["a", "b"], metric=ACCURACY)


def test_an_error_metric_forgets_when_it_rises() -> None:
    """With MAE (lower is better) the same formulas run on negated scores: a window whose error
    rose since its best is forgotten, and the average stays in MAE's own units."""
    # Prepare: window a's error was 0.2 right after it was learned, best 0.1, now 0.4.
    history = [{"a": 0.2}, {"a": 0.1, "b": 0.5}]
    last = {"a": 0.4, "b": 0.3, "c": 0.9}

    # Execute
    got = metrics_of(history, last, ["a", "b", "c"], metric=MAE)

    # Assert: a: best 0.1 -> 0.4 (forgot 0.3, bwt -0.2 vs learned 0.2); b: 0.5 -> 0.3 (improved
    # 0.2: forgetting -0.2, bwt +0.2).
    assert got.average == pytest.approx(1.6 / 3)
    assert got.forgetting == pytest.approx((0.3 - 0.2) / 2)
    assert got.bwt == pytest.approx((-0.2 + 0.2) / 2)
    assert got.to_dict()["avg_mae"] == pytest.approx(0.5333)
    assert "avg_accuracy" not in got.to_dict()
