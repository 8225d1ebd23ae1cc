"""Tests for shared/learning/series/archive.py: the strict `.ts` reader, its refusals with
file and line, and the packaged BasicMotions files found without importing aeon."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.archive import (
    INSTALL_HINT,
    archive_file,
    channels_of,
    load_archive,
    read_ts,
)

HEADER = """# a comment line, as the archive's files start
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true up down
@data
"""
GOOD = HEADER + "1,2,3:4,5,6:down\n-0.5,1e-3,+7:.25,8.,9E1:up\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiny.ts"
    path.write_text(text, encoding="utf-8")
    return path


def _refusal(tmp_path: Path, text: str) -> str:
    """The detail of the BAD_DATA error reading `text` gives."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        read_ts(path)
    assert caught.value.reason is Reason.BAD_DATA
    assert caught.value.detail.startswith(f"{path}:")
    return caught.value.detail.removeprefix(f"{path}:")


def test_good_file_reads_cases_channels_steps_and_labels(tmp_path: Path) -> None:
    """Two cases of 2 dimensions x 3 steps land in x[case, channel, step]; labels index classes."""
    # Prepare
    path = _write(tmp_path, GOOD)

    # Execute
    got = read_ts(path)

    # Assert
    assert got.name == "Tiny"
    assert got.classes == ("up", "down")
    assert got.x.dtype == np.float64 and got.y.dtype == np.int64
    np.testing.assert_array_equal(got.x, [[[1, 2, 3], [4, 5, 6]], [[-0.5, 1e-3, 7], [0.25, 8, 90]]])
    np.testing.assert_array_equal(got.y, [1, 0])
    assert [c.name for c in got.channels] == ["ch0", "ch1"]
    assert not got.x.flags.writeable


def test_univariate_file_with_crlf_and_blank_lines_reads(tmp_path: Path) -> None:
    """A univariate file needs no @dimensions; CRLF line ends and blank lines are fine."""
    # Prepare
    text = ("@problemName Uni\r\n@timestamps false\r\n@univariate true\r\n@equalLength true\r\n"
            "@seriesLength 2\r\n@classLabel true a\r\n@data\r\n\r\n1,2:a\r\n\r\n")

    # Execute
    got = read_ts(_write(tmp_path, text))

    # Assert
    assert got.x.shape == (1, 1, 2)
    np.testing.assert_array_equal(got.y, [0])


@pytest.mark.parametrize(("text", "line", "says"), [
    (HEADER.replace("@timeStamps false", "@timeStamps true"), 3, "timestamps are not supported"),
    (HEADER.replace("@equalLength true", "@equalLength false"), 7, "unequal-length"),
    (HEADER.replace("@missing false", "@missing true"), 4, "missing values are not supported"),
    (HEADER.replace("@classLabel true up down", "@classLabel false"), 9, "unlabelled"),
    (HEADER.replace("@classLabel true up down", "@classLabel true up up"), 9, "repeats"),
    (HEADER.replace("@seriesLength 3", "@seriesLength zero"), 8, "integer >= 1"),
    (HEADER.replace("@dimensions 2", "@dimensions 0"), 6, "integer >= 1"),
    (HEADER.replace("@univariate false", "@univariate maybe"), 5, "true or false"),
    (HEADER.replace("@univariate false", "@univariate true"), 6, "univariate true with 2"),
    (HEADER.replace("@dimensions 2\n", ""), 5, "needs @dimensions"),
    (HEADER.replace("@seriesLength 3\n", ""), 9, "lacks @seriesLength"),
    (HEADER.replace("@missing false", "@targetLabel true"), 4, "unsupported tag '@targetLabel'"),
    (HEADER.replace("@missing false", "@problemName Again"), 4, "repeated (first on line 2)"),
    (HEADER.replace("@missing false", "stray text"), 4, "expected a @tag line"),
    (HEADER.replace("@data\n", ""), 9, "no @data line"),
    (HEADER, 10, "no cases after @data"),
    (HEADER + "1,2,3:down\n", 11, "1 dimensions, expected 2"),
    (HEADER + "1,2,3:4,5,6:7,8,9:down\n", 11, "3 dimensions, expected 2"),
    (HEADER + "1,2,3:4,5:down\n", 11, "dimension 2 has 2 values, expected 3"),
    (HEADER + "1,2,3:4,5,6:sideways\n", 11, "'sideways' is not one of"),
    (HEADER + "1,?,3:4,5,6:up\n", 11, "value 2: '?' is a missing value"),
    (HEADER + "1,2,nan:4,5,6:up\n", 11, "value 3: 'nan' is not a decimal number"),
    (HEADER + "1,2,3:4,5,1_000:up\n", 11, "'1_000' is not a decimal number"),
    (HEADER + "1,2,3:4,5,6:up\n1,2,1e999:4,5,6:up\n", 12, "too large for a float64"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 and "\n" not in v else None)
def test_each_malformed_kind_is_refused_at_its_line(tmp_path: Path, text: str, line: int,
                                                    says: str) -> None:
    """Every variant the reader does not take is BAD_DATA naming the file, line and problem."""
    # Execute
    detail = _refusal(tmp_path, text)

    # Assert
    assert detail.startswith(f"{line}: "), detail
    assert says in detail


def test_missing_and_non_utf8_files_are_bad_data(tmp_path: Path) -> None:
    """A file that is absent or not UTF-8 text is BAD_DATA naming the path."""
    # Prepare
    binary = tmp_path / "binary.ts"
    binary.write_bytes(b"@problemName \xff\xfe\n")

    # Execute / Assert
    for path, says in ((tmp_path / "absent.ts", "file not found"), (binary, "not UTF-8")):
        with pytest.raises(ConfigError) as caught:
            read_ts(path)
        assert caught.value.reason is Reason.BAD_DATA
        assert str(path) in caught.value.detail and says in caught.value.detail


def test_basic_motions_train_and_test_are_40_cases_of_6_by_100() -> None:
    """The packaged BasicMotions splits: 40 cases each, 6 channels x 100 steps, 4 classes x 10."""
    # Execute
    train = load_archive("BasicMotions", "train")
    test = load_archive("BasicMotions", "test")

    # Assert
    for split in (train, test):
        assert split.name == "BasicMotions"
        assert split.x.shape == (40, 6, 100)
        assert split.classes == ("Standing", "Running", "Walking", "Badminton")
        assert np.bincount(split.y).tolist() == [10, 10, 10, 10]
        assert np.isfinite(split.x).all()
    assert [(c.name, c.unit) for c in train.channels] == [
        ("accel_x", "m/s2"), ("accel_y", "m/s2"), ("accel_z", "m/s2"),
        ("gyro_x", "rad/s"), ("gyro_y", "rad/s"), ("gyro_z", "rad/s")]
    assert "aeon" not in sys.modules  # found through its metadata, never imported


@pytest.mark.parametrize("dataset", ["../BasicMotions", "Basic/Motions", "..", "", ".hidden",
                                     "a\\b"])
def test_dataset_names_cannot_leave_the_data_folder(dataset: str) -> None:
    """A dataset name with separators or dots is BAD_CONFIG before any path is built."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        archive_file(dataset, "train")

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG


def test_unknown_dataset_or_split_names_what_exists() -> None:
    """An unknown dataset is BAD_DATA listing the packaged ones; an unknown split, BAD_CONFIG."""
    # Execute
    with pytest.raises(ConfigError) as dataset:
        archive_file("NoSuchSet", "train")
    with pytest.raises(ConfigError) as split:
        archive_file("BasicMotions", "validation")

    # Assert
    assert dataset.value.reason is Reason.BAD_DATA
    assert "BasicMotions" in dataset.value.detail and INSTALL_HINT in dataset.value.detail
    assert split.value.reason is Reason.BAD_CONFIG


def test_absent_aeon_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the aeon distribution the error says how to install it (no deps)."""
    # Prepare
    def absent(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)

    # Execute
    with pytest.raises(ConfigError) as caught:
        archive_file("BasicMotions", "train")

    # Assert
    assert caught.value.reason is Reason.BAD_DATA
    assert INSTALL_HINT in caught.value.detail


def test_known_channels_need_their_dimension_count() -> None:
    """BasicMotions names six channels; other datasets get ch0..; a wrong count is BAD_DATA."""
    # Execute / Assert
    assert [c.name for c in channels_of("Other", 3)] == ["ch0", "ch1", "ch2"]
    with pytest.raises(ConfigError) as caught:
        channels_of("BasicMotions", 3)
    assert caught.value.reason is Reason.BAD_DATA
