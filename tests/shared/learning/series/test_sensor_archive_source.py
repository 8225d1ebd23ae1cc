"""Tests for shared/learning/sources/sensor_archive.py: BasicMotions cut into windows as an edge
would, one case per window, with labels or forecast targets, parts, and config errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.align import AlignParams, align
from fedstream.shared.learning.series.archive import load_archive
from fedstream.shared.learning.series.stream import case_stream, part_cases
from fedstream.shared.learning.series.windows import WindowParams, label_spans, windows
from fedstream.shared.learning.sources import SOURCES, Dataset

TRAIN = load_archive("BasicMotions", "train")


def _load(**params: object) -> Dataset:
    return SOURCES.build("sensor_archive", **params).load()


def _rows(data: Dataset) -> set[bytes]:
    return {row.tobytes() for row in data.features}


def test_defaults_give_nine_windows_per_case_with_the_case_label() -> None:
    """100 steps, length 20, stride 10: starts 0..80 inside a case, so 9 per case, 360 in all;
    window j of the i-th case played holds that case's steps 10 j ..10 j + 19, channel-major."""
    # Prepare
    order = part_cases(40, 0, 1, 0)

    # Execute
    got = _load()

    # Assert
    assert (got.features.shape, got.num_classes) == ((360, 6 * 20), 4)
    np.testing.assert_array_equal(got.labels, np.repeat(TRAIN.y[order], 9))
    for i, j in ((0, 0), (0, 8), (17, 4), (39, 8)):
        expect = TRAIN.x[order[i], :, 10 * j:10 * j + 20].astype(np.float32).reshape(-1)
        np.testing.assert_array_equal(got.features[9 * i + j], expect)


def test_label_spans_drops_the_window_across_two_cases() -> None:
    """On the stream, the window starting at step 90 of each case but the last straddles two
    spans: `windows` cuts 10 * 40 - 1 = 399, `label_spans` keeps the 360 inside one case."""
    # Prepare
    stream = case_stream(TRAIN.x, TRAIN.y, 10.0, 0.0)
    names = [c.name for c in TRAIN.channels]
    grid = align(stream.series(names), names, stream.start, stream.end,
                 AlignParams(rate_hz=10.0, max_gap_s=0.1))

    # Execute
    win = windows(grid, WindowParams(length=20, stride=10))
    labels = label_spans(win, stream.spans)

    # Assert
    assert win.x.shape[0] == 399
    assert labels.y.size == 360
    straddling = np.flatnonzero(~labels.keep)
    np.testing.assert_array_equal(win.start_times[straddling], 9.0 + 10.0 * np.arange(39))


@pytest.mark.parametrize(("length", "stride", "per_two_cases"), [
    (100, 100, 2),  # one window per case
    (50, 25, 6),  # starts 0, 25, 50 | 75 straddles | 100, 125, 150
    (20, 30, 6),  # starts 0, 30, 60 | 90 straddles | 120, 150, 180
])
def test_window_counts_by_hand_on_two_cases(length: int, stride: int, per_two_cases: int) -> None:
    """A part of two cases (200 steps) gives the hand-counted windows that fit in one case."""
    # Execute
    got = _load(parts=20, part=3, length=length, stride=stride)

    # Assert
    assert len(got) == per_two_cases


def test_forecast_targets_are_the_next_steps_of_the_named_channels() -> None:
    """Horizon 3 of accel_x and channel 5 (gyro_z): 8 windows per case (starts 0..70), each
    target row the 3 steps after the window, target-major."""
    # Prepare
    order = part_cases(40, 0, 1, 0)

    # Execute
    got = _load(task="forecast", horizon=3, targets=["accel_x", 5])

    # Assert
    assert got.targets is not None and got.labels is None
    assert (got.features.shape, got.targets.shape) == ((320, 120), (320, 6))
    for i, j in ((0, 0), (5, 7), (39, 3)):
        case, s = TRAIN.x[order[i]], 10 * j
        expect = np.concatenate([case[0, s + 20:s + 23], case[5, s + 20:s + 23]])
        np.testing.assert_array_equal(got.targets[8 * i + j], expect.astype(np.float32))
        np.testing.assert_array_equal(got.features[8 * i + j],
                                      case[:, s:s + 20].astype(np.float32).reshape(-1))


def test_summary_features_are_six_per_channel() -> None:
    """Summary windows give mean, std, min, max, last and slope for each of the 6 channels."""
    # Execute
    got = _load(split="test", features="summary")

    # Assert
    assert got.features.shape == (360, 36)


def test_parts_are_disjoint_cover_the_split_and_load_the_same_twice() -> None:
    """Three parts share out the 360 windows without overlap, and a reload is identical."""
    # Execute
    parts = [_load(parts=3, part=p, seed=4) for p in range(3)]
    again = _load(parts=3, part=1, seed=4)

    # Assert
    rows = [_rows(p) for p in parts]
    assert sum(len(p) for p in parts) == 360
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert set().union(*rows) == _rows(_load())
    np.testing.assert_array_equal(again.features, parts[1].features)
    np.testing.assert_array_equal(again.labels, parts[1].labels)


@pytest.mark.parametrize("params", [
    {"split": "valid"}, {"part": 3, "parts": 3}, {"parts": 0}, {"length": 0}, {"stride": 1.5},
    {"features": "fft"}, {"task": "anomaly"}, {"horizon": 0}, {"rate_hz": 0.0},
    {"targets": ["accel_x"]}, {"task": "forecast", "targets": []},
    {"task": "forecast", "targets": [True]}, {"colour": "red"},
])
def test_bad_params_are_bad_config(params: dict[str, object]) -> None:
    """Out-of-range or misspelt params, and targets without a forecast, are BAD_CONFIG."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        SOURCES.build("sensor_archive", **params)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG


@pytest.mark.parametrize(("params", "reason"), [
    ({"parts": 41}, Reason.BAD_CONFIG),
    ({"task": "forecast", "targets": ["compass"]}, Reason.BAD_CONFIG),
    ({"task": "forecast", "targets": [6]}, Reason.BAD_CONFIG),
    ({"task": "forecast", "targets": [0, "accel_x"]}, Reason.BAD_CONFIG),
    ({"dataset": "NoSuchSet"}, Reason.BAD_DATA),
    ({"length": 101}, Reason.BAD_DATA),
    ({"task": "forecast", "length": 100}, Reason.BAD_DATA),
])
def test_impossible_loads_say_why(params: dict[str, object], reason: Reason) -> None:
    """More parts than cases, unknown targets, a missing dataset or no window that fits fail
    at load with a reason."""
    # Prepare
    source = SOURCES.build("sensor_archive", **params)

    # Execute
    with pytest.raises(ConfigError) as caught:
        source.load()

    # Assert
    assert caught.value.reason is reason


def test_describe_names_dataset_part_and_task() -> None:
    """The summary line names the dataset, split, part and task."""
    # Execute
    line = SOURCES.build("sensor_archive", parts=3, part=2, task="forecast").describe()

    # Assert
    assert "BasicMotions train part 2/3" in line and "forecast" in line
