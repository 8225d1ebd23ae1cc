"""Training sets from the sample store: spans, a label channel and forecasting on small
hand-worked grids, the newest-N and last-T limits, too little data, and bounded reads."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstream.edge_node.sensors.config import SensorsConfig
from fedstream.edge_node.sensors.dataset import build_dataset, collect
from fedstream.edge_node.sensors.reading import Reading
from fedstream.edge_node.sensors.store import SampleStore, Series, StoreParams
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.windows import LabelSpan
from fedstream.shared.protocol.arch import TaskKind


class _SpyStore(SampleStore):
    """A real store that records the time ranges read."""

    reads: list[tuple[float, float]]

    def window(self, channels: Iterable[str], since: float, until: float, *,
               neighbours: bool = False) -> dict[str, Series]:
        self.reads.append((since, until))
        return super().window(channels, since, until, neighbours=neighbours)


def _cfg(**changes: Any) -> SensorsConfig:
    table: dict[str, Any] = {
        "channels": [{"name": "a", "topic": "s/a", "format": "bare"},
                     {"name": "b", "topic": "s/b", "format": "bare"}],
        "labels": "topic", "label_topic": "s/labels", "classes": 3,
        "align": {"rate_hz": 1.0, "max_gap_s": 1.5}, "windows": {"length": 3, "stride": 1}}
    table.update(changes)
    return SensorsConfig(**{k: v for k, v in table.items() if v is not None})


def _store(tmp_path: Path, times: Iterable[float] = range(10),
           extra: Iterable[Reading] = ()) -> _SpyStore:
    """a = t and b = 100 + t at each time (1 Hz, 0..9 by default)."""
    store = _SpyStore.open(tmp_path / "samples.db", StoreParams())
    store.reads = []
    store.add([Reading(channel=c, t=float(t), value=float(t) + (100.0 if c == "b" else 0.0),
                       unit=None) for t in times for c in "ab"] + list(extra))
    return store


def _rows(*ends: int) -> list[list[float]]:
    """Raw [a, a, a, b, b, b] rows of the 3-step windows ending at `ends`."""
    return [[*(float(e - k) for k in (2, 1, 0)), *(100.0 + e - k for k in (2, 1, 0))]
            for e in ends]


def test_spans_label_the_windows_wholly_inside_them(tmp_path: Path) -> None:
    """Spans [0, 5) -> 1 and [5, 10) -> 2 over 0..9 label the windows ending at 2, 3, 4 and
    7, 8, 9; the two straddling 5 (ending at 5, 6) are left out as unlabelled."""
    # Prepare
    store = _store(tmp_path)
    store.add_spans([LabelSpan(label=1, start=0, end=5), LabelSpan(label=2, start=5, end=10)])

    # Execute
    data = build_dataset(store, _cfg())
    got = collect(store, _cfg())

    # Assert
    assert data.task is TaskKind.CLASSIFICATION and data.num_classes == 3
    assert data.features.dtype == np.float32 and data.features.shape == (6, 6)
    assert data.features.tolist() == _rows(2, 3, 4, 7, 8, 9)
    assert data.labels is not None and data.labels.tolist() == [1, 1, 1, 2, 2, 2]
    assert got.end_times.tolist() == [2, 3, 4, 7, 8, 9] and got.dropped == {"unlabelled": 2}
    store.close()


def test_the_newest_n_and_the_last_t_seconds_of_the_newest_reading(tmp_path: Path) -> None:
    """Over 0..9 with one span: max_windows=2 keeps the windows ending at 8, 9; max_age_s=2
    those ending at 7, 8, 9 (relative to the newest reading, 9, from 1970); both, 8 and 9."""
    # Prepare
    store = _store(tmp_path)
    store.add_spans([LabelSpan(label=0, start=0, end=10)])

    # Execute
    newest = build_dataset(store, _cfg(), max_windows=2)
    recent = build_dataset(store, _cfg(), max_age_s=2.0)
    both = build_dataset(store, _cfg(), max_windows=2, max_age_s=2.0)

    # Assert
    assert newest.features.tolist() == _rows(8, 9)
    assert recent.features.tolist() == _rows(7, 8, 9)
    assert both.features.tolist() == _rows(8, 9)
    store.close()


def test_a_gap_longer_than_max_gap_drops_the_windows_across_it(tmp_path: Path) -> None:
    """Readings at 0..9 but not 5: with hold-last and max_gap 1.5, step 5 holds 4 (gap 1)
    and is usable; with max_gap 0.5 the windows holding step 5 (ending 5, 6, 7) go."""
    # Prepare
    store = _store(tmp_path, times=[t for t in range(10) if t != 5])
    store.add_spans([LabelSpan(label=0, start=0, end=10)])
    strict = _cfg(align={"rate_hz": 1.0, "max_gap_s": 0.5})

    # Execute
    loose, tight = collect(store, _cfg()), collect(store, strict)

    # Assert
    assert loose.end_times.tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    assert loose.x[3].tolist() == [3.0, 4.0, 4.0, 103.0, 104.0, 104.0]
    assert tight.end_times.tolist() == [2, 3, 4, 8, 9]
    store.close()


def test_forecast_targets_are_the_next_h_steps_of_the_targets(tmp_path: Path) -> None:
    """Horizon 2 on a, stride 2 over 0..9: the newest window [5, 6, 7] has targets a@8, a@9,
    the others start 2 steps earlier each; a regression set of [n, 1 * 2] targets."""
    # Prepare
    store = _store(tmp_path)
    cfg = _cfg(labels="forecast", label_topic=None, classes=None, horizon=2, targets=["a"],
               windows={"length": 3, "stride": 2})

    # Execute
    data = build_dataset(store, cfg)

    # Assert
    assert data.task is TaskKind.REGRESSION and data.outputs == 2
    assert data.features.tolist() == _rows(3, 5, 7)
    assert data.targets is not None and data.targets.tolist() == [[4, 5], [6, 7], [8, 9]]
    store.close()


def test_a_label_channel_labels_each_window_by_its_last_step(tmp_path: Path) -> None:
    """Label channel c set to 1 at t=0 and 2 at t=6 (held between, not an input): windows
    ending at 2..5 get 1 and those ending at 6..9 get 2; rows hold a only."""
    # Prepare
    labels = [Reading(channel="c", t=0.0, value=1.0, unit=None),
              Reading(channel="c", t=6.0, value=2.0, unit=None)]
    store = _store(tmp_path, extra=labels)
    cfg = _cfg(labels="channel", label_topic=None, label_channel="c",
               channels=[{"name": "a", "topic": "s/a", "format": "bare"},
                         {"name": "c", "topic": "s/c", "format": "bare"}])

    # Execute
    data = build_dataset(store, cfg)

    # Assert
    assert data.features.tolist() == [[e - 2.0, e - 1.0, float(e)] for e in range(2, 10)]
    assert data.labels is not None and data.labels.tolist() == [1] * 4 + [2] * 4
    store.close()


def test_labels_beyond_the_classes_are_counted_not_raised(tmp_path: Path) -> None:
    """With 3 classes, a span labelled 7 over [5, 10) keeps only the windows labelled 1."""
    # Prepare
    store = _store(tmp_path)
    store.add_spans([LabelSpan(label=1, start=0, end=5), LabelSpan(label=7, start=5, end=10)])

    # Execute
    got = collect(store, _cfg())
    data = build_dataset(store, _cfg())

    # Assert
    assert got.dropped == {"unlabelled": 2, "label_out_of_range": 3}
    assert data.labels is not None and data.labels.tolist() == [1, 1, 1]
    store.close()


@pytest.mark.parametrize(("spans", "kwargs", "message"), [
    ([], {}, "0 usable windows, the round needs 1; 8 unlabelled"),
    ([(0, 0, 10)], {"min_windows": 9}, "8 usable windows, the round needs 9"),
    ([(0, 0, 10)], {"max_windows": 2, "min_windows": 3}, "2 usable windows, the round needs 3"),
    ([(0, 0, 10)], {"max_age_s": 0.5, "min_windows": 2}, "1 usable windows, the round needs 2"),
])
def test_too_little_data_is_a_config_error_with_the_counts(
        tmp_path: Path, spans: list[tuple[int, float, float]], kwargs: dict[str, Any],
        message: str) -> None:
    """No labels, or fewer windows than the round needs after its limits: too_little_data."""
    # Prepare
    store = _store(tmp_path)
    store.add_spans([LabelSpan(label=k, start=a, end=b) for k, a, b in spans])

    # Execute
    with pytest.raises(ConfigError) as caught:
        build_dataset(store, _cfg(), **kwargs)

    # Assert
    assert caught.value.reason is Reason.TOO_LITTLE_DATA
    assert message in str(caught.value)
    store.close()


def test_an_empty_store_is_too_little_data(tmp_path: Path) -> None:
    """No readings at all: too_little_data with 0 windows, not an error from numpy."""
    # Prepare
    store = _store(tmp_path, times=[])

    # Execute / Assert
    with pytest.raises(ConfigError, match="0 usable windows") as caught:
        build_dataset(store, _cfg())
    assert caught.value.reason is Reason.TOO_LITTLE_DATA
    store.close()


@pytest.mark.parametrize("fill", ["hold", "linear"])
def test_reading_in_small_blocks_gives_the_same_windows(tmp_path: Path, fill: str) -> None:
    """Jittered readings with holes, read in blocks of 5 steps or all at once, give the same
    windows, labels and times (each block gets the readings just outside it)."""
    # Prepare
    rng = np.random.default_rng(3)
    times = [t + rng.uniform(-0.3, 0.3) for t in range(200) if rng.uniform() > 0.1]
    store = _store(tmp_path, times=times)
    store.add_spans([LabelSpan(label=int(k % 3), start=k * 20.0, end=k * 20.0 + 25)
                     for k in range(10)])
    cfg = _cfg(align={"rate_hz": 2.0, "max_gap_s": 1.9, "fill": fill},
               windows={"length": 6, "stride": 4})

    # Execute
    whole, blocks = collect(store, cfg), collect(store, cfg, block_steps=5)

    # Assert
    assert len(whole) > 30
    assert np.array_equal(whole.x, blocks.x) and np.array_equal(whole.y, blocks.y)
    assert np.array_equal(whole.end_times, blocks.end_times)
    store.close()


def test_limits_read_only_the_newest_part_of_the_store(tmp_path: Path) -> None:
    """Of 10,000 s of readings, the last 100 s (+ one window) are read for max_age_s=100,
    and far less than all for the newest 10 windows."""
    # Prepare
    store = _store(tmp_path, times=range(10_000))
    store.add_spans([LabelSpan(label=0, start=0, end=10_000)])

    # Execute
    recent = build_dataset(store, _cfg(), max_age_s=100.0)
    recent_reads, store.reads = store.reads, []
    newest = build_dataset(store, _cfg(), max_windows=10)

    # Assert
    assert len(recent) == 101 and len(newest) == 10
    assert min(since for since, _ in recent_reads) >= 9999 - 100 - 3
    assert min(since for since, _ in store.reads) >= 9999 - 12
    store.close()


def test_summary_features_are_six_per_channel(tmp_path: Path) -> None:
    """Summaries of [0, 1, 2] / [100, 101, 102]: mean, std, min, max, last, slope per channel."""
    # Prepare
    store = _store(tmp_path, times=range(3))
    store.add_spans([LabelSpan(label=0, start=0, end=3)])
    cfg = _cfg(windows={"length": 3, "stride": 1, "features": "summary"})

    # Execute
    data = build_dataset(store, cfg)

    # Assert
    std = math.sqrt(2 / 3)
    assert data.features.shape == (1, 12)
    assert np.allclose(data.features[0], [1, std, 0, 2, 2, 1, 101, std, 100, 102, 102, 1])
    store.close()
