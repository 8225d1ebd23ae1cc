"""Continual-learning metrics against accuracy matrices computed by hand."""

from __future__ import annotations

import pytest

from fedstream.cloud.forgetting import metrics_of


def test_three_windows_by_hand() -> None:
    """Average accuracy, forgetting and BWT of the last row of a 3x3 lower-triangular matrix."""
    # Prepare: v1 saw window a; v2 a, b; the judged version a, b, c.
    history = [{"a": 0.9}, {"a": 0.8, "b": 0.7}]
    last = {"a": 0.6, "b": 0.75, "c": 0.5}

    # Execute
    got = metrics_of(history, last, ["a", "b", "c"])

    # Assert: avg (0.6+0.75+0.5)/3; a: best 0.9 -> 0.6 (drop 0.3, bwt -0.3 vs learned 0.9);
    # b: learned 0.7 -> 0.75 (drop -0.05, bwt +0.05); the newest window c does not count.
    assert got.avg_accuracy == pytest.approx(1.85 / 3)
    assert got.forgetting == pytest.approx((0.3 - 0.05) / 2)
    assert got.bwt == pytest.approx((-0.3 + 0.05) / 2)
    assert got.windows == 3


def test_learned_entry_is_the_first_row_not_the_best() -> None:
    """BWT compares with the row right after a window arrived; forgetting with the best row."""
    # Prepare
    history = [{"a": 0.5}, {"a": 0.9}]

    # Execute
    got = metrics_of(history, {"a": 0.7, "b": 0.8}, ["a", "b"])

    # Assert
    assert got.forgetting == pytest.approx(0.2)
    assert got.bwt == pytest.approx(0.2)
    assert got.avg_accuracy == pytest.approx(0.75)


def test_no_history_means_nothing_forgotten() -> None:
    """The first version has an average accuracy but no forgetting or transfer yet."""
    # Prepare / Execute
    got = metrics_of([], {"a": 0.4, "b": 0.6}, ["a", "b"])

    # Assert
    assert (got.avg_accuracy, got.forgetting, got.bwt) == (pytest.approx(0.5), 0.0, 0.0)


def test_no_windows() -> None:
    """Without evaluation windows every metric is zero."""
    # Prepare / Execute
    got = metrics_of([{"a": 1.0}], {}, [])

    # Assert
    assert got.to_dict() == {"avg_accuracy": 0.0, "forgetting": 0.0, "bwt": 0.0, "windows": 0}


def test_last_row_must_cover_every_window() -> None:
    """A judged row without a window's score is a caller bug, not a zero."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="lacks windows"):
        metrics_of([], {"a": 0.5}, ["a", "b"])
