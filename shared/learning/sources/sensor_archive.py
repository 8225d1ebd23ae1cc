"""The "sensor_archive" source: a packaged sensor archive split, windowed as an edge would.

The cases of one split (or one part of it, `part_cases`) are laid end to end as a stream
(`case_stream`), aligned with hold fill at the dataset's rate and cut into windows: the same
path an edge takes on the same readings replayed over MQTT (`fedstream sensors replay`).

Only windows inside one case are kept: for classification `label_spans` already drops a
window straddling two cases' spans; for forecasting a window and its next `horizon` steps
must lie in one case, since the seam between two cases is an artefact of laying them end to
end, not something a model could learn to predict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.align import AlignParams, Fill, align, choice
from fedstream.shared.learning.series.archive import SPLITS, ArchiveChannel, load_archive
from fedstream.shared.learning.series.stream import Stream, case_stream, part_cases
from fedstream.shared.learning.series.windows import (
    Features,
    WindowParams,
    Windows,
    forecast_pairs,
    label_spans,
    windows,
)
from fedstream.shared.learning.sources.base import SOURCES, Dataset, build_params


class Task(StrEnum):
    """What the windows are for."""

    CLASSIFICATION = "classification"
    FORECAST = "forecast"


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorArchiveParams:
    """Which cases to load and how to window them.

    Args:
        dataset: A dataset in aeon's bundled data with `.ts` files ("BasicMotions").
        split: "train" or "test".
        rate_hz: The dataset's sampling rate (BasicMotions: 10 Hz); the stream and the grid.
        length: Steps per window.
        stride: Steps between window starts.
        features: "raw" (`[channels * length]`, channel-major) or "summary" (6 per channel).
        part: Which part of the split's cases, in [0, parts).
        parts: Number of parts the split's cases are dealt into (see `part_cases`).
        seed: Seed of the case shuffle; every part must use the same one.
        task: "classification" (labels from the cases' classes) or "forecast" (targets).
        horizon: Steps ahead to forecast.
        targets: Forecast channels by name or index; None forecasts every channel.

    Raises:
        ConfigError: BAD_CONFIG for any value out of range.
    """

    dataset: str = "BasicMotions"
    split: str = "train"
    rate_hz: float = 10.0
    length: int = 20
    stride: int = 10
    features: Features = Features.RAW
    part: int = 0
    parts: int = 1
    seed: int = 0
    task: Task = Task.CLASSIFICATION
    horizon: int = 1
    targets: tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.targets, list):
            # TOML arrays arrive as lists; a tuple keeps the frozen params hashable.
            object.__setattr__(self, "targets", tuple(self.targets))
        try:
            object.__setattr__(self, "features", choice(Features, "features", self.features))
            object.__setattr__(self, "task", choice(Task, "task", self.task))
            WindowParams(length=self.length, stride=self.stride, features=self.features)
            AlignParams(rate_hz=self.rate_hz, max_gap_s=math.inf)
        except ValueError as err:
            raise ConfigError(Reason.BAD_CONFIG, f"sensor_archive: {err}") from None
        ints = all(type(v) is int for v in (self.part, self.parts, self.seed, self.horizon))
        targets = self.targets
        rules = (
            (isinstance(self.dataset, str) and self.dataset != "", "dataset must be a name"),
            (self.split in SPLITS, f"split must be one of {list(SPLITS)}"),
            (ints, "part, parts, seed and horizon must be ints"),
            (ints and self.parts >= 1 and 0 <= self.part < self.parts,
             "part must be in [0, parts) with parts >= 1"),
            (ints and self.seed >= 0 and self.horizon >= 1, "need seed >= 0 and horizon >= 1"),
            (targets is None or (isinstance(targets, tuple) and len(targets) > 0 and all(
                isinstance(t, str | int) and not isinstance(t, bool) for t in targets)),
             "targets must be None or a non-empty list of channel names or indices"),
            (targets is None or self.task is Task.FORECAST, "targets apply to task 'forecast'"),
        )
        for ok, rule in rules:
            if not ok:
                raise ConfigError(Reason.BAD_CONFIG, f"sensor_archive: {rule}; got {self!r}")


class SensorArchiveSource:
    """Loads one split (or part) of a packaged sensor archive as windows."""

    def __init__(self, params: SensorArchiveParams) -> None:
        self.params = params

    def load(self) -> Dataset:
        """Read, stream, align and window the selected cases.

        Returns:
            Classification: features `[N, D]` and labels indexing the archive's classes.
            Forecast: features and targets `[N, len(targets) * horizon]`, target-major
            (column `j * horizon + h` is target j at step h + 1 after the window).

        Raises:
            ConfigError: BAD_DATA when the archive is missing or malformed or gives no
                window; BAD_CONFIG for more parts than cases or an unknown target.
        """
        p = self.params
        archive = load_archive(p.dataset, p.split)
        try:
            cases = part_cases(len(archive.y), p.part, p.parts, p.seed)
        except ValueError as err:
            raise ConfigError(Reason.BAD_CONFIG, f"sensor_archive: {err}") from None
        stream = case_stream(archive.x[cases], archive.y[cases], p.rate_hz, 0.0)
        names = tuple(c.name for c in archive.channels)
        # The readings sit exactly on the grid (see `stream`), so any gap would be a bug.
        grid = align(stream.series(names), names, stream.start, stream.end,
                     AlignParams(rate_hz=p.rate_hz, fill=Fill.HOLD, max_gap_s=1.0 / p.rate_hz))
        cut = WindowParams(length=p.length, stride=p.stride, features=p.features)
        if p.task is Task.CLASSIFICATION:
            win = windows(grid, cut)
            labels = label_spans(win, stream.spans)
            _enough(labels.y.size, p)
            return Dataset(features=_flat(win.x[labels.keep]), labels=labels.y,
                           num_classes=len(archive.classes))
        targets = _targets(p.targets, archive.channels)
        win, future = forecast_pairs(grid, cut, p.horizon, targets)
        keep = _within_one_case(win, grid.times[win.last + p.horizon], stream)
        _enough(int(keep.sum()), p)
        return Dataset(features=_flat(win.x[keep]), targets=_flat(future[keep]))

    def describe(self) -> str:
        """One line naming the data, the part and the windowing."""
        p = self.params
        part = f" part {p.part}/{p.parts} (seed {p.seed})" if p.parts > 1 else ""
        task = (f"forecast {p.horizon} step(s) of {list(p.targets or ['all'])}"
                if p.task is Task.FORECAST else "classification")
        return (f"sensor_archive {p.dataset} {p.split}{part}: {p.length}-step windows every "
                f"{p.stride} at {p.rate_hz} Hz, {p.features} features, {task}")


@SOURCES.add("sensor_archive",
             "packaged sensor archive (aeon's BasicMotions...) windowed as an edge would")
def build_sensor_archive(**params: object) -> SensorArchiveSource:
    """Build the sensor-archive source from config keywords (see `SensorArchiveParams`)."""
    return SensorArchiveSource(build_params(SensorArchiveParams, params))


def _targets(wanted: tuple[str | int, ...] | None,
             channels: tuple[ArchiveChannel, ...]) -> tuple[str, ...]:
    """Target channel names from names or indices (None: every channel)."""
    names = tuple(c.name for c in channels)
    if wanted is None:
        return names
    out: list[str] = []
    for target in wanted:
        if isinstance(target, int) and not 0 <= target < len(names):
            raise ConfigError(Reason.BAD_CONFIG, f"sensor_archive: target index {target} is "
                                                 f"not in [0, {len(names)})")
        name = names[target] if isinstance(target, int) else target
        if name not in names or name in out:
            raise ConfigError(Reason.BAD_CONFIG, f"sensor_archive: targets must be distinct "
                                                 f"channels of {list(names)}; got {wanted}")
        out.append(name)
    return tuple(out)


def _within_one_case(win: Windows, last_target: npt.NDArray[np.float64],
                     stream: Stream) -> npt.NDArray[np.bool_]:
    """True for each window whose first step and last target step are in one case's span."""
    starts = np.array([s.start for s in stream.spans], dtype=np.float64)
    first = np.searchsorted(starts, win.start_times, side="right")
    final = np.searchsorted(starts, last_target, side="right")
    return np.asarray(first == final, dtype=np.bool_)


def _flat(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`[n, ...]` as `[n, prod(...)]`, row-major (raw windows become channel-major rows)."""
    return np.ascontiguousarray(x.reshape(x.shape[0], -1))


def _enough(windows_kept: int, p: SensorArchiveParams) -> None:
    if windows_kept == 0:
        raise ConfigError(Reason.BAD_DATA, f"sensor_archive: no window of {p.length} steps "
                                           f"(+{p.horizon} ahead for a forecast) fits in one "
                                           f"case of {p.dataset} {p.split}")
