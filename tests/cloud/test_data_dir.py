"""The cloud's data directory: CSV and NPZ files, one window each, in name order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedstream.cloud.data_dir import load_data_dir
from fedstream.shared.errors import ConfigError, Reason


def test_loads_csv_and_npz_in_name_order(tmp_path: Path) -> None:
    """Both formats load as (stem, features, labels); other files are skipped."""
    # Prepare
    (tmp_path / "a_day1.csv").write_text("f1,f2,label\n0.5,1.5,1\n2,3,0\n")
    np.savez(tmp_path / "b_day2.npz", x=np.array([[4.0, 5.0]]), y=np.array([2]))
    (tmp_path / "README.txt").write_text("not data")

    # Execute
    loaded = load_data_dir(tmp_path, cols=2)

    # Assert
    assert [name for name, _, _ in loaded] == ["a_day1", "b_day2"]
    assert loaded[0][1].tolist() == [[0.5, 1.5], [2.0, 3.0]]
    assert loaded[0][2].tolist() == [1, 0]
    assert loaded[1][1].dtype == np.float32 and loaded[1][2].dtype == np.int64
    assert loaded[1][1].tolist() == [[4.0, 5.0]] and loaded[1][2].tolist() == [2]


def test_empty_dir_loads_nothing(tmp_path: Path) -> None:
    """A directory without data files gives an empty list."""
    # Prepare / Execute / Assert
    assert load_data_dir(tmp_path, cols=2) == []


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("bad.csv", lambda p: p.write_text("f1,f2,label\n1,x,0\n")),
        ("bad.npz", lambda p: p.write_bytes(b"not a zip")),
        ("bad.npz", lambda p: np.savez(p, x=np.zeros((2, 2)))),
        ("bad.npz", lambda p: np.savez(p, x=np.zeros((2, 2)), y=np.array([0, -1]))),
        ("bad.npz", lambda p: np.savez(p, x=np.full((1, 2), np.nan), y=np.array([0]))),
        ("bad.npz", lambda p: np.savez(p, x=np.zeros((2, 2)), y=np.array([0.5, 1.0]))),
        ("bad.npz", lambda p: np.savez(p, x=np.zeros((2, 3)), y=np.array([0, 1]))),
        ("bad.csv", lambda p: p.write_text("f1,label\n1,0\n")),
    ],
)
def test_bad_file_names_the_file(tmp_path: Path, name: str, write: object) -> None:
    """A malformed or wrongly shaped file is BAD_DATA and the message names it."""
    # Prepare
    write(tmp_path / name)  # type: ignore[operator]

    # Execute
    with pytest.raises(ConfigError) as info:
        load_data_dir(tmp_path, cols=2)

    # Assert
    assert info.value.reason is Reason.BAD_DATA
    assert name in str(info.value)


def test_missing_dir_is_bad_data(tmp_path: Path) -> None:
    """A data directory that does not exist is BAD_DATA."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        load_data_dir(tmp_path / "nope", cols=2)

    # Assert
    assert info.value.reason is Reason.BAD_DATA
