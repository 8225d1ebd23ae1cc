"""Evaluation windows: clock naming, the per-window cap, the held-out newest, persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstream.cloud.windows import EvalWindows, eval_rows


def _rows(n: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` two-feature samples numbered from `first`."""
    index = np.arange(first, first + n)
    return np.stack([index, -index], axis=1).astype(np.float32), index % 3


@pytest.fixture
def windows(tmp_path: Path) -> Iterator[EvalWindows]:
    """Windows of 60 s holding at most 5 rows each, closed afterwards."""
    opened = EvalWindows(tmp_path / "windows.db", window_s=60.0, max_rows_per_window=5)
    yield opened
    opened.close()


def test_clock_names_the_window(windows: EvalWindows) -> None:
    """Samples without a name land in `w{int(now // window_s)}`; 59.9 s and 60 s differ."""
    # Prepare / Execute
    windows.add(*_rows(1), now=0.0)
    windows.add(*_rows(1), now=59.9)
    windows.add(*_rows(1), now=60.0)
    windows.add(*_rows(1), now=185.0)

    # Assert
    assert windows.names() == ["w0", "w1", "w3"]
    assert len(windows.get("w0")[1]) == 2


def test_named_window_ignores_the_clock(windows: EvalWindows) -> None:
    """An explicit name wins over the clock."""
    # Prepare / Execute
    windows.add(*_rows(2), now=1000.0, name="day1")

    # Assert
    assert windows.names() == ["day1"]
    assert windows.get("day1")[0].tolist() == [[0.0, 0.0], [1.0, -1.0]]


def test_cap_keeps_the_first_rows_and_counts_the_rest(windows: EvalWindows) -> None:
    """With a cap of 5, offering 3 then 4 rows keeps 3 + 2 and counts 2 dropped."""
    # Prepare / Execute
    first = windows.add(*_rows(3), now=0.0)
    second = windows.add(*_rows(4, first=3), now=1.0)

    # Assert
    x, y = windows.get("w0")
    assert (first, second) == (3, 2)
    assert x[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert y.tolist() == [0, 1, 2, 0, 1]
    assert windows.dropped("w0") == 2


def test_newest_is_held_out(windows: EvalWindows) -> None:
    """The newest window is not among the training windows."""
    # Prepare
    for now in (0.0, 60.0, 120.0):
        windows.add(*_rows(1), now=now)

    # Execute
    newest, training = windows.newest(), windows.training_windows()

    # Assert
    assert newest == "w2"
    assert training == ["w0", "w1"]


def test_empty_has_no_windows(windows: EvalWindows) -> None:
    """Before any sample there is no newest window and nothing to train on."""
    # Prepare / Execute / Assert
    assert windows.newest() is None
    assert windows.training_windows() == []
    with pytest.raises(KeyError):
        windows.get("w0")


def test_windows_survive_reopen(tmp_path: Path) -> None:
    """A reopened store has the same windows, rows, order and drop counts."""
    # Prepare
    path = tmp_path / "windows.db"
    first = EvalWindows(path, window_s=10.0, max_rows_per_window=2)
    first.add(*_rows(3), now=5.0)
    first.add(*_rows(1, first=7), now=15.0)
    first.close()

    # Execute
    again = EvalWindows(path, window_s=10.0, max_rows_per_window=2)
    kept = again.add(*_rows(1), now=6.0)

    # Assert
    assert kept == 0
    assert again.names() == ["w0", "w1"]
    assert again.get("w1")[0].tolist() == [[7.0, -7.0]]
    assert again.dropped("w0") == 2
    again.close()


def test_rejects_other_feature_count(windows: EvalWindows) -> None:
    """A window keeps one feature count; a batch of another is a ValueError."""
    # Prepare
    windows.add(*_rows(1), now=0.0)

    # Execute / Assert
    with pytest.raises(ValueError, match="holds 2 features"):
        windows.add(np.zeros((1, 3), dtype=np.float32), np.zeros(1, dtype=np.int64), now=1.0)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.75])
def test_eval_rows_take_the_fraction_evenly_and_stay_put_as_a_window_grows(
        fraction: float) -> None:
    """Of 1000 rows, exactly 1000*fraction are evaluation rows, spread evenly (every run of
    10 rows holds about the share), and rows offered in pieces get the same parts as at once."""
    # Prepare / Execute
    whole = eval_rows(0, 1000, fraction)
    pieces = np.concatenate([eval_rows(0, 7, fraction), eval_rows(7, 500, fraction),
                             eval_rows(507, 493, fraction)])

    # Assert
    assert int(whole.sum()) == round(1000 * fraction)
    assert np.array_equal(whole, pieces)
    assert all(abs(int(whole[i:i + 10].sum()) - 10 * fraction) <= 1 for i in range(0, 1000, 10))


def test_parts_and_offered_follow_the_rows_positions(tmp_path: Path) -> None:
    """`parts` cuts a window by `eval_rows`; `offered` counts rows past the cap too."""
    # Prepare
    windows = EvalWindows(tmp_path / "w.db", window_s=60, max_rows_per_window=8)
    x = np.arange(10, dtype=np.float32).reshape(10, 1)

    # Execute
    windows.add(x[:4], np.arange(4), now=0.0, name="a")
    windows.add(x[4:], np.arange(4, 10), now=1.0, name="a")
    (ex, _), (tx, _) = windows.parts("a", 0.25)
    offered = windows.offered("a"), windows.offered("unknown")
    windows.close()

    # Assert
    assert ex[:, 0].tolist() == [3.0, 7.0] and tx[:, 0].tolist() == [0, 1, 2, 4, 5, 6]
    assert offered == (10, 0)


def test_a_regression_window_keeps_its_targets(tmp_path: Path) -> None:
    """Windows for a regression model give back float32 targets [N, width], split into
    evaluation and training rows like labels."""
    # Prepare
    windows = EvalWindows(tmp_path / "w.db", window_s=60.0, max_rows_per_window=100, width=3)
    x = np.arange(10, dtype=np.float32).reshape(-1, 1)
    y = np.repeat(x, 3, axis=1) * 0.5

    # Execute
    windows.add(x, y, 0.0, name="a")
    (ex, ey), (tx, ty) = windows.parts("a", 0.3)
    windows.close()

    # Assert
    assert ey.dtype == np.float32 and ey.shape == (3, 3) and ty.shape == (7, 3)
    assert sorted(ex[:, 0].tolist() + tx[:, 0].tolist()) == x[:, 0].tolist()
    assert (ey == np.repeat(ex, 3, axis=1) * 0.5).all()
