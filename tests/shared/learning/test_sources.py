"""Tests for fedstream.shared.learning.sources: the registry, Dataset, digits and csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.sources import SOURCES, Dataset, Source
from fedstream.shared.learning.sources.digits import (
    DigitsParams,
    dirichlet_partition,
    stratified_split,
)

DIGITS_ROWS = 1797


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _histogram(labels: np.ndarray, part: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(labels[part], minlength=classes) / len(part)


# --- registry -----------------------------------------------------------------------------------


def test_every_source_builds_with_default_params_and_has_summary(tmp_path: Path) -> None:
    """Every registered name builds with only its required params, loads, and has a summary."""
    # Prepare: csv has no usable default path, so it gets a tiny file.
    required = {"csv": {"path": _write(tmp_path, "x,label\n1,0\n2,1\n"), "label_column": "label"}}

    # Execute
    sources = {name: SOURCES.build(name, **required.get(name, {})) for name in SOURCES.names()}

    # Assert
    assert {"csv", "digits"} <= set(sources)
    for name, source in sources.items():
        assert isinstance(source, Source)
        assert SOURCES.summary(name)
        assert source.describe()
        assert len(source.load()) > 0


def test_unknown_source_name_lists_known_names() -> None:
    """An unknown source name raises UNKNOWN_NAME and names the registered sources."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        SOURCES.build("parquet")

    # Assert
    assert caught.value.reason is Reason.UNKNOWN_NAME
    assert "digits" in str(caught.value)


def test_unknown_or_missing_param_is_a_config_error() -> None:
    """A misspelt or missing param raises BAD_CONFIG naming it, not a TypeError."""
    # Execute
    with pytest.raises(ConfigError) as unknown:
        SOURCES.build("digits", seeed=1)
    with pytest.raises(ConfigError) as missing:
        SOURCES.build("csv", path="x.csv")

    # Assert
    assert unknown.value.reason is Reason.BAD_CONFIG
    assert "seeed" in str(unknown.value)
    assert missing.value.reason is Reason.BAD_CONFIG
    assert "label_column" in str(missing.value)


# --- Dataset ------------------------------------------------------------------------------------


def test_dataset_counts_classes_and_is_read_only() -> None:
    """class_counts includes empty classes and the stored arrays cannot be written."""
    # Prepare
    features = np.zeros((3, 2), dtype=np.float32)
    labels = np.array([2, 0, 2], dtype=np.int64)

    # Execute
    data = Dataset(features=features, labels=labels, num_classes=4)

    # Assert
    assert len(data) == 3
    assert data.class_counts() == [1, 0, 2, 0]
    assert not data.features.flags.writeable
    assert features.flags.writeable  # the caller's array is left as it was


@pytest.mark.parametrize(
    ("features", "labels", "num_classes"),
    [
        (np.zeros((2, 1), np.float32), np.array([0, 3], np.int64), 3),  # label out of range
        (np.zeros((2, 1), np.float32), np.array([0, -1], np.int64), 3),  # negative label
        (np.zeros((2, 1), np.float32), np.array([0], np.int64), 3),  # shapes disagree
        (np.array([[0.0], [np.nan]], np.float32), np.array([0, 1], np.int64), 3),  # NaN
        (np.zeros((2, 1), np.float64), np.array([0, 1], np.int64), 3),  # wrong dtype
    ],
)
def test_dataset_rejects_bad_arrays(
    features: np.ndarray, labels: np.ndarray, num_classes: int
) -> None:
    """Mismatched shapes, out-of-range labels, NaN and wrong dtypes raise BAD_DATA."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        Dataset(features=features, labels=labels, num_classes=num_classes)

    # Assert
    assert caught.value.reason is Reason.BAD_DATA


# --- digits -------------------------------------------------------------------------------------


def test_digits_train_and_test_add_up_and_repeat_exactly() -> None:
    """Train and test together hold all 1797 rows, and a second call gives identical arrays."""
    # Execute
    train = SOURCES.build("digits", seed=7).load()
    test = SOURCES.build("digits", split="test", seed=7).load()
    test_again = SOURCES.build("digits", split="test", seed=7).load()

    # Assert
    assert len(train) + len(test) == DIGITS_ROWS
    assert len(test) == 359  # each class rounds 0.2 * ~180 to 35..37
    assert np.array_equal(test.features, test_again.features)
    assert np.array_equal(test.labels, test_again.labels)
    assert train.features.dtype == np.float32
    assert train.features.min() >= 0.0 and train.features.max() == 1.0


def test_stratified_split_is_disjoint_covering_and_seeded() -> None:
    """On the digits labels the split is disjoint, covers every row and repeats for a seed."""
    # Prepare
    from sklearn.datasets import load_digits  # noqa: PLC0415

    labels = load_digits().target

    # Execute
    train, test = stratified_split(labels, 0.2, seed=0)
    train_again, test_again = stratified_split(labels, 0.2, seed=0)

    # Assert
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.union1d(train, test), np.arange(DIGITS_ROWS))
    assert np.array_equal(train, train_again) and np.array_equal(test, test_again)


def test_stratified_split_keeps_each_class_share() -> None:
    """Ten 0s and five 1s at 0.2 put two 0s and one 1 into test."""
    # Prepare
    labels = np.array([0] * 10 + [1] * 5)

    # Execute
    train, test = stratified_split(labels, 0.2, seed=0)

    # Assert
    assert np.bincount(labels[test]).tolist() == [2, 1]
    assert np.bincount(labels[train]).tolist() == [8, 4]


def test_digits_partitions_cover_the_train_split() -> None:
    """Three Dirichlet parts of the train split together are exactly the train split's size."""
    # Prepare
    train = SOURCES.build("digits").load()

    # Execute
    parts = [SOURCES.build("digits", partitions=3, partition=i).load() for i in range(3)]

    # Assert
    assert sum(len(part) for part in parts) == len(train)
    assert all(len(part) >= 10 for part in parts)


def test_dirichlet_partition_is_deterministic_disjoint_and_covering() -> None:
    """The same seed gives the same parts; parts are disjoint, cover all rows and meet min_size."""
    # Prepare
    labels = np.repeat(np.arange(4), 50)

    # Execute
    parts = dirichlet_partition(labels, 4, alpha=0.5, seed=3, min_size=10)
    again = dirichlet_partition(labels, 4, alpha=0.5, seed=3, min_size=10)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)) == 200
    assert np.array_equal(np.sort(joined), np.arange(200))
    assert min(len(part) for part in parts) >= 10


def test_dirichlet_partition_small_alpha_skews_labels() -> None:
    """At alpha=0.1 every pair of parts has clearly different label mixes; at 1000 they match."""
    # Prepare
    labels = np.repeat(np.arange(5), 60)

    def distances(alpha: float) -> list[float]:
        hists = [_histogram(labels, p, 5) for p in dirichlet_partition(labels, 3, alpha, seed=0)]
        return [0.5 * np.abs(hists[i] - hists[j]).sum() for i, j in ((0, 1), (0, 2), (1, 2))]

    # Execute
    skewed, even = distances(0.1), distances(1000.0)

    # Assert: total-variation distance between label histograms
    assert min(skewed) > 0.3
    assert max(even) < 0.1


def test_drawn_parts_outnumber_the_data_repeat_and_differ() -> None:
    """With `draw`, 2,000 parts of 64 rows come from 1,437 train rows: each part repeats
    exactly, parts differ, rows come from the train split only, labels are skewed."""
    # Prepare
    train = SOURCES.build("digits").load()
    test = SOURCES.build("digits", split="test").load()

    def part(i: int) -> Dataset:
        return SOURCES.build("digits", partitions=2000, partition=i, draw=64,
                             alpha=0.1).load()

    # Execute
    first, again, other, last = part(0), part(0), part(1), part(1999)

    # Assert
    assert len(first) == len(last) == 64
    assert np.array_equal(first.features, again.features)
    assert np.array_equal(first.y, again.y)
    assert not np.array_equal(first.features, other.features)
    train_rows = {row.tobytes() for row in train.features}
    assert all(row.tobytes() in train_rows for row in last.features)
    assert not {row.tobytes() for row in test.features} & train_rows
    assert max(np.bincount(first.y, minlength=10)) > 64 / 10 * 2  # alpha 0.1: skewed


def test_dirichlet_partition_rejects_impossible_min_size() -> None:
    """Twenty rows cannot fill three parts of ten, so it raises ValueError at once."""
    # Execute / Assert
    with pytest.raises(ValueError, match="cannot fill"):
        dirichlet_partition(np.zeros(20, dtype=np.int64), 3, alpha=0.5, seed=0, min_size=10)


@pytest.mark.parametrize(
    ("params", "rule"),
    [
        ({"partitions": 3, "partition": 3}, "partition must"),
        ({"partitions": 3, "partition": -1}, "partition must"),
        ({"test_fraction": 0.0}, "test_fraction must"),
        ({"test_fraction": 1.0}, "test_fraction must"),
        ({"test_fraction": 1.5}, "test_fraction must"),
        ({"split": "valid"}, "split must"),
        ({"alpha": 0.0}, "alpha must"),
        ({"seed": 1.5}, "must be ints"),
        ({"split": "test", "partitions": 2}, "only split 'train'"),
        ({"draw": -1}, "draw must"),
        ({"draw": True}, "draw must"),
    ],
)
def test_digits_params_reject_out_of_range_values(params: dict[str, object], rule: str) -> None:
    """Out-of-range DigitsParams raise BAD_CONFIG stating the broken rule."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        DigitsParams(**params)  # type: ignore[arg-type]

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert rule in str(caught.value)


# --- csv ----------------------------------------------------------------------------------------


def test_csv_loads_exact_arrays(tmp_path: Path) -> None:
    """A three-row file loads to the same numbers, float32 features and int64 labels."""
    # Prepare
    path = _write(tmp_path, "a,b,label\n0.5,1,2\n-1,2.25,0\n3,0,1\n")

    # Execute
    data = SOURCES.build("csv", path=path, label_column="label").load()

    # Assert
    np.testing.assert_array_equal(data.features, [[0.5, 1.0], [-1.0, 2.25], [3.0, 0.0]])
    np.testing.assert_array_equal(data.labels, [2, 0, 1])
    assert data.features.dtype == np.float32
    assert data.labels.dtype == np.int64
    assert data.num_classes == 3


def test_csv_picks_named_columns_delimiter_and_num_classes(tmp_path: Path) -> None:
    """feature_columns sets the order, the delimiter is honoured and num_classes overrides."""
    # Prepare
    path = _write(tmp_path, "y;a;b\n1;10;20\n0;30;40\n")

    # Execute
    data = SOURCES.build(
        "csv", path=path, label_column="y", feature_columns=("b",), delimiter=";", num_classes=5
    ).load()

    # Assert
    np.testing.assert_array_equal(data.features, [[20.0], [40.0]])
    assert data.class_counts() == [1, 1, 0, 0, 0]


@pytest.mark.parametrize(
    ("text", "label_column", "expected"),
    [
        pytest.param("", "label", ["empty file"], id="empty"),
        pytest.param("a,label\n", "label", ["empty file"], id="header-only"),
        pytest.param("a,label\n1,0\n", "y", ["line 1", "'y'"], id="missing-column"),
        pytest.param("a,label\n1,0\nx,1\n", "label", ["line 3", "column 'a'"], id="non-numeric"),
        pytest.param("a,label\n1,0.5\n", "label", ["line 2", "column 'label'"], id="non-int-label"),
        pytest.param("a,label\n1,-1\n", "label", ["line 2", "negative"], id="negative-label"),
        pytest.param("a,b,label\n1,2,0\n1,2\n", "label", ["line 3", "2 fields"], id="ragged"),
        pytest.param("a,label\n1e40,0\n", "label", ["line 2", "column 'a'"], id="float32-overflow"),
    ],
)
def test_csv_errors_name_file_line_and_column(
    tmp_path: Path, text: str, label_column: str, expected: list[str]
) -> None:
    """Each malformed file raises BAD_DATA naming the file and, where known, line and column."""
    # Prepare
    path = _write(tmp_path, text)

    # Execute
    with pytest.raises(ConfigError) as caught:
        SOURCES.build("csv", path=path, label_column=label_column).load()

    # Assert
    assert caught.value.reason is Reason.BAD_DATA
    for fragment in [path, *expected]:
        assert fragment in str(caught.value)


def test_csv_missing_file_names_the_path(tmp_path: Path) -> None:
    """A path that does not exist raises BAD_DATA naming the path."""
    # Prepare
    path = str(tmp_path / "absent.csv")

    # Execute
    with pytest.raises(ConfigError) as caught:
        SOURCES.build("csv", path=path, label_column="label").load()

    # Assert
    assert caught.value.reason is Reason.BAD_DATA
    assert path in str(caught.value) and "not found" in str(caught.value)
