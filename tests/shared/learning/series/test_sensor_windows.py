"""Sensor windows: alignment, window cutting, gap discard, summary features, labels, forecasting."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedstream.shared.learning.series.align import Aligned, AlignParams, Fill, align
from fedstream.shared.learning.series.windows import (
    Features,
    LabelSpan,
    WindowParams,
    forecast_pairs,
    label_channel,
    label_spans,
    windows,
)

NAN = math.nan


def _params(fill: Fill = Fill.HOLD, rate_hz: float = 2.0, max_gap_s: float = 10.0) -> AlignParams:
    """Alignment parameters with test defaults."""
    return AlignParams(rate_hz=rate_hz, fill=fill, max_gap_s=max_gap_s)


def _ramp(steps: int, channels: int = 1, rate_hz: float = 1.0) -> Aligned:
    """Channel c holds `100 * c + step` on a fully valid grid of `steps` at `rate_hz`."""
    times = np.arange(steps) / rate_hz
    values = 100.0 * np.arange(channels)[:, None] + np.arange(steps, dtype=np.float64)
    return Aligned(channels=tuple(f"c{i}" for i in range(channels)), times=times, values=values,
                   valid=np.ones(steps, dtype=bool), gap=np.zeros(steps),
                   params=AlignParams(rate_hz=rate_hz, max_gap_s=1.0))


# Alignment -------------------------------------------------------------------------------------

READINGS = {"a": (np.array([0.0, 1.0, 3.0]), np.array([10.0, 20.0, 40.0]))}


@pytest.mark.parametrize(("fill", "values", "gap"), [
    (Fill.HOLD, [10, 10, 20, 20, 20, 20], [0, 0.5, 0, 0.5, 1.0, 1.5]),
    (Fill.LINEAR, [10, 15, 20, 25, 30, 35], [0, 1, 0, 2, 2, 2]),
])
def test_hold_and_linear_on_a_hand_computed_grid(fill: Fill, values: list[float],
                                                 gap: list[float]) -> None:
    """Readings 10@0, 20@1, 40@3 on a 2 Hz grid over [0, 3): hold steps, linear ramps."""
    # Execute
    aligned = align(READINGS, ["a"], 0.0, 3.0, _params(fill))

    # Assert
    assert aligned.times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert aligned.values[0].tolist() == values
    assert aligned.gap.tolist() == gap
    assert aligned.valid.all()


def test_grid_excludes_end_and_divides_instead_of_summing() -> None:
    """[0, 1) at 10 Hz has 10 points, each exactly k / 10."""
    # Execute
    aligned = align(READINGS, ["a"], 0.0, 1.0, _params(rate_hz=10.0))

    # Assert
    assert aligned.times.tolist() == [k / 10 for k in range(10)]


@pytest.mark.parametrize("fill", list(Fill))
def test_no_value_before_a_channels_first_reading(fill: Fill) -> None:
    """Channel b starts at t=1, so the steps at 0 and 0.5 are invalid for both fills."""
    # Prepare
    series = {**READINGS, "b": (np.array([1.0, 3.0]), np.array([5.0, 5.0]))}

    # Execute
    aligned = align(series, ["a", "b"], 0.0, 2.0, _params(fill))

    # Assert
    assert aligned.valid.tolist() == [False, False, True, True]
    assert np.isnan(aligned.values[1, :2]).all()
    assert aligned.gap[:2].tolist() == [math.inf, math.inf]


def test_hold_holds_past_the_last_reading_and_linear_does_not() -> None:
    """After the last reading at t=3, hold keeps 40 with a growing gap; linear has no value."""
    # Execute
    hold = align(READINGS, ["a"], 3.0, 4.5, _params(Fill.HOLD))
    linear = align(READINGS, ["a"], 3.0, 4.5, _params(Fill.LINEAR))

    # Assert
    assert hold.values[0].tolist() == [40.0, 40.0, 40.0]
    assert hold.gap.tolist() == [0.0, 0.5, 1.0]
    assert linear.valid.tolist() == [True, False, False]


@pytest.mark.parametrize("fill", list(Fill))
def test_out_of_order_readings_align_as_if_sorted(fill: Fill) -> None:
    """Readings given 3, 0, 1 align exactly like 0, 1, 3."""
    # Prepare
    shuffled = {"a": (np.array([3.0, 0.0, 1.0]), np.array([40.0, 10.0, 20.0]))}

    # Execute
    got = align(shuffled, ["a"], 0.0, 3.0, _params(fill))
    want = align(READINGS, ["a"], 0.0, 3.0, _params(fill))

    # Assert
    assert got.values.tolist() == want.values.tolist()
    assert got.gap.tolist() == want.gap.tolist()


@pytest.mark.parametrize("fill", list(Fill))
def test_duplicate_timestamps_keep_the_last_given(fill: Fill) -> None:
    """Two readings at t=1 (5 given before 7, out of order with t=0): 7 wins."""
    # Prepare
    series = {"a": (np.array([1.0, 0.0, 1.0, 2.0]), np.array([5.0, 0.0, 7.0, 9.0]))}

    # Execute
    aligned = align(series, ["a"], 0.0, 2.5, _params(fill, rate_hz=1.0))

    # Assert
    assert aligned.values[0].tolist() == [0.0, 7.0, 9.0]


def test_a_gap_beyond_the_limit_makes_steps_unusable() -> None:
    """Readings at 0 and 4 with max_gap 1.5: hold is usable at 0, 0.5, 1, 1.5 and again at 4."""
    # Prepare
    series = {"a": (np.array([0.0, 4.0]), np.array([1.0, 2.0]))}

    # Execute
    hold = align(series, ["a"], 0.0, 4.5, _params(Fill.HOLD, max_gap_s=1.5))
    linear = align(series, ["a"], 0.0, 4.5, _params(Fill.LINEAR, max_gap_s=1.5))

    # Assert
    assert hold.usable.nonzero()[0].tolist() == [0, 1, 2, 3, 8]
    assert linear.usable.nonzero()[0].tolist() == [0, 8]  # linear counts the whole hole


def test_a_channel_without_readings_is_never_valid() -> None:
    """An empty series aligns to NaN with no valid step."""
    # Execute
    aligned = align({"a": (np.zeros(0), np.zeros(0))}, ["a"], 0.0, 1.0, _params())

    # Assert
    assert not aligned.valid.any()
    assert np.isnan(aligned.values).all()


@pytest.mark.parametrize(("series", "channels", "start", "end"), [
    (READINGS, ["b"], 0.0, 1.0),
    (READINGS, ["a", "a"], 0.0, 1.0),
    (READINGS, [], 0.0, 1.0),
    (READINGS, ["a"], 1.0, 0.0),
    (READINGS, ["a"], 0.0, math.inf),
    ({"a": (np.array([0.0, 1.0]), np.array([1.0]))}, ["a"], 0.0, 1.0),
    ({"a": (np.array([0.0, NAN]), np.array([1.0, 2.0]))}, ["a"], 0.0, 1.0),
    ({"a": (np.array([0.0, 1.0]), np.array([1.0, math.inf]))}, ["a"], 0.0, 1.0),
])
def test_align_rejects_bad_input(series: Any, channels: list[str], start: float,
                                 end: float) -> None:
    """Unknown, repeated or no channels, bad bounds, unequal or non-finite readings."""
    # Execute / Assert
    with pytest.raises(ValueError):
        align(series, channels, start, end, _params())


@pytest.mark.parametrize("kwargs", [
    {"rate_hz": 0.0}, {"rate_hz": -1.0}, {"rate_hz": NAN}, {"rate_hz": math.inf},
    {"rate_hz": True}, {"max_gap_s": 0.0}, {"max_gap_s": NAN}, {"max_gap_s": "1"},
    {"fill": "cubic"},
])
def test_align_params_reject_bad_values(kwargs: dict[str, Any]) -> None:
    """Rates and gaps must be numbers > 0 (finite for the rate); fill must be known."""
    # Execute / Assert
    with pytest.raises(ValueError):
        AlignParams(**{"rate_hz": 1.0, "max_gap_s": 1.0, **kwargs})


def test_params_accept_strings_and_infinite_gap() -> None:
    """Config strings become enums and max_gap_s=inf disables the gap rule."""
    # Execute
    align_params = AlignParams(rate_hz=1, fill="linear", max_gap_s=math.inf)  # type: ignore[arg-type]
    window_params = WindowParams(length=2, stride=1, features="summary")  # type: ignore[arg-type]

    # Assert
    assert align_params.fill is Fill.LINEAR
    assert window_params.features is Features.SUMMARY


# Windows ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("steps", "length", "stride", "n"), [
    (10, 4, 3, 3), (10, 4, 2, 4), (10, 10, 1, 1), (10, 1, 1, 10), (10, 3, 20, 1), (3, 4, 1, 0),
])
def test_window_count_is_floor_steps_minus_length_over_stride_plus_one(
        steps: int, length: int, stride: int, n: int) -> None:
    """With every step usable, n = floor((steps - length) / stride) + 1, or 0 if too short."""
    # Execute
    win = windows(_ramp(steps), WindowParams(length=length, stride=stride))

    # Assert
    assert win.x.shape == (n, 1, length)
    assert win.last.tolist() == [i * stride + length - 1 for i in range(n)]


def test_raw_windows_are_float32_channel_by_step_slices() -> None:
    """Length 3, stride 2 over 7 steps of 2 channels gives steps 0-2, 2-4, 4-6 per channel."""
    # Execute
    win = windows(_ramp(7, channels=2, rate_hz=2.0), WindowParams(length=3, stride=2))

    # Assert
    assert win.x.dtype == np.float32
    assert win.x.flags.c_contiguous
    assert win.x[1].tolist() == [[2, 3, 4], [102, 103, 104]]
    assert win.start_times.tolist() == [0.0, 1.0, 2.0]
    assert win.end_times.tolist() == [1.0, 2.0, 3.0]


def test_a_window_with_an_invalid_or_gapped_step_is_dropped() -> None:
    """Step 3 invalid and step 7's gap over the limit drop windows 2-3 and 6-7 of five."""
    # Prepare
    aligned = _ramp(10)
    aligned.valid[3] = False
    aligned.gap[7] = 1.5  # max_gap_s is 1.0

    # Execute
    win = windows(aligned, WindowParams(length=2, stride=2))

    # Assert
    assert win.start_times.tolist() == [0.0, 4.0, 8.0]


def test_gap_discard_end_to_end_from_readings() -> None:
    """1 Hz readings with a 3 s hole after t=4 and max_gap 1.5: the window over t=6 goes."""
    # Prepare
    t = np.array([0, 1, 2, 3, 4, 7, 8, 9, 10, 11], dtype=np.float64)
    aligned = align({"a": (t, t)}, ["a"], 0.0, 12.0, _params(rate_hz=1.0, max_gap_s=1.5))

    # Execute
    win = windows(aligned, WindowParams(length=3, stride=3))

    # Assert
    assert aligned.usable.tolist() == [True] * 6 + [False] + [True] * 5
    assert win.start_times.tolist() == [0.0, 3.0, 9.0]  # 6-8 holds the stale step at 6


def test_summary_features_on_a_hand_worked_window() -> None:
    """At 2 Hz, [0, 0, 4, 4] gives mean 2, std 2, min 0, max 4, last 4, slope 3.2/s."""
    # Prepare
    values = np.array([[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    aligned = Aligned(channels=("a", "b"), times=np.arange(4) / 2, values=values,
                      valid=np.ones(4, dtype=bool), gap=np.zeros(4), params=_params())

    # Execute
    win = windows(aligned, WindowParams(length=4, stride=1, features=Features.SUMMARY))

    # Assert
    assert win.x.dtype == np.float32
    np.testing.assert_allclose(win.x, [[2, 2, 0, 4, 4, 3.2, 5, 0, 5, 5, 5, 0]], rtol=1e-6)


def test_summary_slope_of_a_one_step_window_is_zero() -> None:
    """A window of one step has std 0 and slope 0."""
    # Execute
    win = windows(_ramp(2), WindowParams(length=1, stride=1, features=Features.SUMMARY))

    # Assert
    assert win.x.tolist() == [[0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 1, 0]]


@pytest.mark.parametrize("kwargs", [
    {"length": 0}, {"stride": 0}, {"length": 1.5}, {"stride": True}, {"features": "fft"},
])
def test_window_params_reject_bad_values(kwargs: dict[str, Any]) -> None:
    """Length and stride must be ints >= 1; features must be known."""
    # Execute / Assert
    with pytest.raises(ValueError):
        WindowParams(**{"length": 2, "stride": 1, **kwargs})


# Labels ----------------------------------------------------------------------------------------

def test_label_spans_need_the_whole_window_inside() -> None:
    """Spans 1 on [0, 3) and 2 on [3, 8): window 2-3 straddles both and is dropped."""
    # Prepare
    win = windows(_ramp(8), WindowParams(length=2, stride=2))
    spans = [LabelSpan(label=1, start=0.0, end=3.0), LabelSpan(label=2, start=3.0, end=8.0)]

    # Execute
    labels = label_spans(win, spans)

    # Assert
    assert labels.keep.tolist() == [True, False, True, True]
    assert labels.y.tolist() == [1, 2, 2]


def test_label_span_end_is_exclusive_and_the_last_overlapping_span_wins() -> None:
    """A window ending at 3 is outside [0, 3); of two spans containing 4-5, the later wins."""
    # Prepare
    win = windows(_ramp(8), WindowParams(length=2, stride=2))
    spans = [LabelSpan(label=1, start=0.0, end=3.0), LabelSpan(label=5, start=0.0, end=8.0),
             LabelSpan(label=7, start=4.0, end=6.0)]

    # Execute
    labels = label_spans(win, spans)

    # Assert
    assert labels.y.tolist() == [5, 5, 7, 5]


def test_no_spans_drops_every_window() -> None:
    """Without spans nothing is labelled."""
    # Execute
    labels = label_spans(windows(_ramp(4), WindowParams(length=2, stride=2)), [])

    # Assert
    assert labels.keep.tolist() == [False, False]
    assert labels.y.tolist() == []


@pytest.mark.parametrize(("label", "start", "end"), [
    (-1, 0.0, 1.0), (True, 0.0, 1.0), (1.0, 0.0, 1.0), (1, 1.0, 1.0), (1, 0.0, NAN),
])
def test_label_span_rejects_bad_values(label: Any, start: float, end: float) -> None:
    """Labels are ints >= 0 and spans finite with start < end."""
    # Execute / Assert
    with pytest.raises(ValueError):
        LabelSpan(label=label, start=start, end=end)


def test_label_channel_takes_the_value_at_the_window_end() -> None:
    """Label readings 0@0, 1@2, 1.5@4, -1@6, 2@8 held at 1 Hz; windows end at 1, 3, 5, 7, 9."""
    # Prepare
    win = windows(_ramp(10), WindowParams(length=2, stride=2))
    readings = {"label": (np.array([0.0, 2.0, 4.0, 6.0, 8.0]),
                          np.array([0.0, 1.0, 1.5, -1.0, 2.0]))}
    grid = align(readings, ["label"], 0.0, 10.0, _params(rate_hz=1.0))

    # Execute
    labels = label_channel(win, grid)

    # Assert
    assert labels.keep.tolist() == [True, True, False, False, True]
    assert labels.y.tolist() == [0, 1, 2]


def test_label_channel_rejects_another_grid() -> None:
    """A label grid at another rate does not match the windows."""
    # Prepare
    win = windows(_ramp(10), WindowParams(length=2, stride=2))
    grid = align({"label": (np.zeros(1), np.zeros(1))}, ["label"], 0.0, 10.0, _params())

    # Execute / Assert
    with pytest.raises(ValueError):
        label_channel(win, grid)


# Forecasting -----------------------------------------------------------------------------------

def test_forecast_targets_are_the_next_horizon_steps() -> None:
    """On ramps of 10 steps, length 3, stride 2, horizon 2: y is exactly the following 2 steps."""
    # Execute
    win, y = forecast_pairs(_ramp(10, channels=2), WindowParams(length=3, stride=2), 2, ["c1"])

    # Assert
    assert win.x[:, 1].tolist() == [[100, 101, 102], [102, 103, 104], [104, 105, 106]]
    assert y.dtype == np.float32
    assert y.flags.c_contiguous
    assert y.shape == (3, 1, 2)
    assert y[:, 0].tolist() == [[103, 104], [105, 106], [107, 108]]


def test_forecast_drops_windows_whose_future_is_invalid() -> None:
    """Step 5 invalid: of starts 0, 2, 4, only window 0-2 (future 3-4) avoids it."""
    # Prepare
    aligned = _ramp(10)
    aligned.valid[5] = False

    # Execute
    win, y = forecast_pairs(aligned, WindowParams(length=3, stride=2), 2, ["c0"])

    # Assert
    assert win.start_times.tolist() == [0.0]
    assert y[:, 0].tolist() == [[3, 4]]


@pytest.mark.parametrize(("horizon", "targets"), [
    (0, ["c0"]), (1.0, ["c0"]), (1, []), (1, ["c0", "c0"]), (1, ["x"]),
])
def test_forecast_rejects_bad_horizon_or_targets(horizon: Any, targets: list[str]) -> None:
    """The horizon is an int >= 1; targets are unique known channels."""
    # Execute / Assert
    with pytest.raises(ValueError):
        forecast_pairs(_ramp(5), WindowParams(length=2, stride=1), horizon, targets)


def test_forecast_with_too_few_steps_is_empty() -> None:
    """Five steps cannot hold a window of 4 plus 2 future steps."""
    # Execute
    win, y = forecast_pairs(_ramp(5), WindowParams(length=4, stride=1), 2, ["c0"])

    # Assert
    assert win.x.shape == (0, 1, 4)
    assert y.shape == (0, 1, 2)
