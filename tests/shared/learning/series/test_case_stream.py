"""Tests for shared/learning/series/stream.py: cases laid end to end, their spans, how they
meet the alignment grid, and the seeded deal of cases into parts."""

from __future__ import annotations

import numpy as np
import pytest

from fedstream.shared.learning.series.align import AlignParams, align
from fedstream.shared.learning.series.stream import case_stream, part_cases
from fedstream.shared.learning.series.windows import LabelSpan

# Two cases, 2 channels x 3 steps: case i, channel c, step s holds 100 i + 10 c + s.
X = 100.0 * np.arange(2)[:, None, None] + 10.0 * np.arange(2)[None, :, None] + np.arange(3)
Y = np.array([3, 1])


def test_cases_follow_each_other_at_the_rate() -> None:
    """Six steps at 2 Hz from t=10: each channel runs case 0 then case 1; spans are [start, end)."""
    # Execute
    got = case_stream(X, Y, 2.0, 10.0)

    # Assert
    np.testing.assert_array_equal(got.times, [10.0, 10.5, 11.0, 11.5, 12.0, 12.5])
    np.testing.assert_array_equal(got.values, [[0, 1, 2, 100, 101, 102],
                                               [10, 11, 12, 110, 111, 112]])
    assert got.spans == (LabelSpan(label=3, start=10.0, end=11.5),
                         LabelSpan(label=1, start=11.5, end=13.0))
    assert (got.start, got.end, got.rate_hz) == (10.0, 13.0, 2.0)


def test_series_names_the_rows_and_the_grid_lands_on_the_readings() -> None:
    """Aligned from the stream's start to its end, every grid point is a reading, gap 0."""
    # Prepare: an epoch-sized start and a rate that is not a power of two, where rounding bites
    stream = case_stream(np.ones((5, 2, 7)), np.zeros(5, dtype=np.int64), 3.7, 1.8e9 + 0.1)

    # Execute
    grid = align(stream.series(["a", "b"]), ["a", "b"], stream.start, stream.end,
                 AlignParams(rate_hz=3.7, max_gap_s=1e-9))

    # Assert
    np.testing.assert_array_equal(grid.times, stream.times)
    assert grid.usable.all() and (grid.gap == 0).all()
    assert all(span.start in stream.times for span in stream.spans)


@pytest.mark.parametrize(("x", "y", "rate", "start"), [
    (np.zeros((0, 2, 3)), np.zeros(0, dtype=np.int64), 1.0, 0.0),
    (np.zeros((2, 3)), np.zeros(2, dtype=np.int64), 1.0, 0.0),
    (X, np.array([1]), 1.0, 0.0),
    (X, np.array([0.5, 1.0]), 1.0, 0.0),
    (X, np.array([-1, 0]), 1.0, 0.0),
    (np.full((2, 2, 3), np.nan), Y, 1.0, 0.0),
    (X, Y, 0.0, 0.0),
    (X, Y, float("inf"), 0.0),
    (X, Y, 1.0, float("nan")),
])
def test_bad_inputs_are_value_errors(x: np.ndarray, y: np.ndarray, rate: float,
                                     start: float) -> None:
    """Empty, mismatched, non-finite or negative-labelled cases and a bad rate or start raise."""
    # Execute / Assert
    with pytest.raises(ValueError, match=r"."):
        case_stream(x, y, rate, start)


@pytest.mark.parametrize(("n", "parts"), [(40, 1), (40, 3), (7, 7), (10, 4)])
def test_parts_are_disjoint_cover_every_case_and_are_even(n: int, parts: int) -> None:
    """Every case is in exactly one part; part sizes differ by at most one."""
    # Execute
    got = [part_cases(n, p, parts, seed=5) for p in range(parts)]

    # Assert
    joined = np.concatenate(got)
    assert sorted(joined.tolist()) == list(range(n))
    assert max(map(len, got)) - min(map(len, got)) <= 1
    assert all(p.dtype == np.int64 for p in got)


def test_parts_are_seeded_and_shuffled() -> None:
    """The same seed deals the same cases in the same order; another seed deals others."""
    # Execute
    first, again, other = (part_cases(40, 0, 1, seed=s) for s in (0, 0, 1))

    # Assert
    np.testing.assert_array_equal(first, again)
    assert first.tolist() != list(range(40))  # play order is the shuffle, not the file order
    assert first.tolist() != other.tolist()


@pytest.mark.parametrize(("n", "part", "parts", "seed"), [
    (0, 0, 1, 0), (4, 0, 5, 0), (4, 2, 2, 0), (4, -1, 2, 0), (4, 0, 0, 0), (4, 0, 1, -1),
    (4, 0, 1, 0.5), (4, True, 2, 0),
])
def test_impossible_parts_are_value_errors(n: int, part: int, parts: int, seed: int) -> None:
    """No cases, more parts than cases, a part out of range or a non-int argument raises."""
    # Execute / Assert
    with pytest.raises(ValueError, match=r"."):
        part_cases(n, part, parts, seed)
