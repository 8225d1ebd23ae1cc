"""Training data from the sample store: aligned windows with their labels or forecast targets.

The grid is anchored to the clock, not to the query: step k is at `k / rate_hz` seconds, and
windows are placed backwards from the newest reading, the newest ending (with its forecast
horizon) at the last step at or before it, the others `stride` steps apart. So the windows a
store gives do not depend on how much of it is read, and reading it in blocks changes nothing.

The store is read in blocks going back from the newest reading, each block with the one
reading before and after it per channel (`SampleStore.window(neighbours=True)`), so holding
and interpolating give the same values as over the whole store. A block is at most
`block_steps` grid steps, fewer when readings are denser than the grid or windows large, which
bounds what is in memory beside the windows kept. Reading stops once the limits are met: the
newest `max_windows` labelled windows, or windows ending before `max_age_s` seconds before the
newest reading (not the wall clock: a replay may run faster than real time).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from fedstream.edge_node.sensors.config import LabelMode, SensorsConfig
from fedstream.edge_node.sensors.store import SampleStore
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.align import align
from fedstream.shared.learning.series.windows import (
    Labels,
    LabelSpan,
    Windows,
    forecast_pairs,
    label_channel,
    label_spans,
    windows,
)
from fedstream.shared.learning.sources.base import Dataset

log = structlog.get_logger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
BLOCK_STEPS = 1 << 16
BLOCK_VALUES = 1 << 22  # window values gathered per block (float64 for summaries: 32 MiB)
BLOCK_READINGS = 1 << 21  # readings read per block, estimated from the store's density
SPAN_CELLS = 1 << 22  # spans x windows compared at once when labelling by spans
_EPS = 1e-9  # a reading at k / rate_hz computed as k - 1e-12 is still at step k


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Collected:
    """The labelled (or targeted) windows the limits keep, oldest first, and what was dropped.

    Args:
        x: `[n, features]` float32, raw windows flattened row-major (`[c * length]`).
        y: `[n]` int64 labels, or `[n, len(targets) * horizon]` float32 targets.
        end_times: `[n]` grid time of each window's last step.
        newest: The newest reading of the channels read, or None for an empty store.
        dropped: Usable windows of the part read left out, by reason: `unlabelled` (no span
            or label value), `label_out_of_range` (a label >= classes). With `max_windows`
            the part read may reach past the windows kept.
    """

    x: F32
    y: npt.NDArray[np.int64] | F32
    end_times: F64
    newest: float | None
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def build_dataset(store: SampleStore, cfg: SensorsConfig, *, max_windows: int = 0,
                  max_age_s: float = 0.0, min_windows: int = 1) -> Dataset:
    """The training set the store holds now, under the round's limits.

    Args:
        store: The edge's sample store.
        cfg: The `[sensors]` table (channels, grid, windows, label mode).
        max_windows: Keep only the newest this many labelled windows; 0 keeps all.
        max_age_s: Keep only windows ending within this many seconds of the newest reading;
            0 keeps all.
        min_windows: Fewest windows the round can use (at least one is always needed).

    Returns:
        Classification (`labels`, `num_classes = cfg.classes`) for topic or channel labels;
        regression (`targets`, `[n, len(targets) * horizon]`) for forecasting.

    Raises:
        ConfigError: TOO_LITTLE_DATA when fewer than `min_windows` (or no) windows remain.
        StoreError: STORE_FAILED when the store cannot be read.
    """
    got = collect(store, cfg, max_windows=max_windows, max_age_s=max_age_s)
    need = max(1, min_windows)
    if len(got) < need:
        why = "".join(f"; {n} {reason}" for reason, n in sorted(got.dropped.items()))
        raise ConfigError(Reason.TOO_LITTLE_DATA,
                          f"{len(got)} usable windows, the round needs {need}{why}")
    log.info("dataset_built", windows=len(got), newest=got.newest, max_windows=max_windows,
             max_age_s=max_age_s, **got.dropped)
    if cfg.labels is LabelMode.FORECAST:
        return Dataset(features=got.x, targets=got.y.astype(np.float32))
    assert cfg.classes is not None  # the config requires it with labels
    return Dataset(features=got.x, labels=got.y.astype(np.int64), num_classes=cfg.classes)


def collect(store: SampleStore, cfg: SensorsConfig, *, max_windows: int = 0,
            max_age_s: float = 0.0, block_steps: int = BLOCK_STEPS) -> Collected:
    """The windows `build_dataset` would use, without the minimum (see there).

    Raises:
        ValueError: a negative limit or a block under one step.
        StoreError: STORE_FAILED when the store cannot be read.
    """
    if max_windows < 0 or not max_age_s >= 0 or block_steps < 1:
        raise ValueError(f"need max_windows >= 0, max_age_s >= 0, block_steps >= 1; got "
                         f"{max_windows}, {max_age_s}, {block_steps}")
    plan = _Plan.make(store, cfg, max_age_s, block_steps)
    if plan is None:
        return _empty(cfg, None, Counter())
    parts: list[tuple[F32, npt.NDArray[Any], F64]] = []
    dropped: Counter[str] = Counter()
    kept, hi = 0, plan.last
    # For the newest N, start with N windows' worth and double: most windows are usable.
    block = min(plan.block, max_windows) if max_windows else plan.block
    while hi - plan.span + 1 >= plan.min_start:  # the block's newest window can be usable
        lo = hi - (block - 1) * cfg.windows.stride - plan.span + 1
        final = lo <= plan.min_start
        if final:  # move up to the first window start that can be usable, on the stride
            stride = cfg.windows.stride
            lo += -(-(plan.min_start - lo) // stride) * stride
        parts.append(_block(store, cfg, lo, hi, cutoff=plan.cutoff, dropped=dropped))
        kept += len(parts[-1][0])
        if final or (max_windows and kept >= max_windows):
            break
        hi -= block * cfg.windows.stride
        block = min(plan.block, 2 * block)
    if not parts:
        return _empty(cfg, plan.newest, dropped)
    parts.reverse()
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    ends = np.concatenate([p[2] for p in parts])
    if max_windows:
        x, y, ends = x[-max_windows:], y[-max_windows:], ends[-max_windows:]
    return Collected(x=x, y=y, end_times=ends, newest=plan.newest,
                     dropped={k: v for k, v in dropped.items() if v})


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """Grid indices of the walk back through the store."""

    newest: float
    last: int  # the newest window (with its horizon) ends at this step
    span: int  # steps of a window and its horizon
    min_start: int  # no window starting before this step can be usable or young enough
    cutoff: float  # windows ending before this time are too old
    block: int  # windows per block

    @classmethod
    def make(cls, store: SampleStore, cfg: SensorsConfig, max_age_s: float,
             block_steps: int) -> _Plan | None:
        bounds = store.span(_channels(cfg))
        if bounds is None:
            return None
        oldest, newest = bounds
        rate, length, stride = cfg.align.rate_hz, cfg.windows.length, cfg.windows.stride
        horizon = cfg.horizon if cfg.labels is LabelMode.FORECAST and cfg.horizon else 0
        span = length + horizon
        min_start = math.ceil(oldest * rate - _EPS)
        cutoff = newest - max_age_s if max_age_s > 0 else -math.inf
        if max_age_s > 0:
            min_start = max(min_start, math.ceil(cutoff * rate - _EPS) - length + 1)
        # Per second, the store holds about this many readings (all channels, a rough guess).
        density = store.count() / max(newest - oldest, 1.0 / rate)
        steps = min(block_steps, max(span, int(BLOCK_READINGS / density * rate)))
        rows = len(cfg.feature_channels())
        block = max(1, min((steps - span) // stride + 1, BLOCK_VALUES // (rows * length)))
        return cls(newest=newest, last=math.floor(newest * rate + _EPS), span=span,
                   min_start=min_start, cutoff=cutoff, block=block)


def _channels(cfg: SensorsConfig) -> list[str]:
    """The channels read: the windows' rows, then the label channel if there is one."""
    rows = cfg.feature_channels()
    return rows if cfg.label_channel is None else [*rows, cfg.label_channel]


def _block(store: SampleStore, cfg: SensorsConfig, lo: int, hi: int, *, cutoff: float,
           dropped: Counter[str]) -> tuple[F32, npt.NDArray[Any], F64]:
    """The windows between grid steps `lo` and `hi` (inclusive) that keep a label or target."""
    rate = cfg.align.rate_hz
    since, until = lo / rate, (hi + 0.5) / rate  # the half step keeps rounding off the end
    series = store.window(_channels(cfg), since, until, neighbours=True)
    grid = align(series, cfg.feature_channels(), since, until, cfg.align_params())
    if cfg.labels is LabelMode.FORECAST:
        assert cfg.horizon is not None
        win, targets = forecast_pairs(grid, cfg.window_params(), cfg.horizon, cfg.targets)
        young = win.end_times >= cutoff
        width = len(cfg.targets) * cfg.horizon
        return (_flat(win, young), targets[young].reshape(int(young.sum()), width),
                win.end_times[young])
    win = windows(grid, cfg.window_params())
    if cfg.labels is LabelMode.TOPIC:
        labels = _by_spans(win, store.spans(since, until))
    else:
        assert cfg.label_channel is not None
        label_grid = align(series, [cfg.label_channel], since, until, cfg.label_align_params())
        labels = label_channel(win, label_grid)
    young = win.end_times >= cutoff
    y = np.full(win.last.size, -1, dtype=np.int64)
    y[labels.keep] = labels.y
    assert cfg.classes is not None
    fits = y < cfg.classes
    dropped["unlabelled"] += int((young & ~labels.keep).sum())
    dropped["label_out_of_range"] += int((young & labels.keep & ~fits).sum())
    keep = young & labels.keep & fits
    return _flat(win, keep), y[keep], win.end_times[keep]


def _by_spans(win: Windows, spans: list[LabelSpan]) -> Labels:
    """`label_spans` over runs of windows, each against the spans overlapping it, so that its
    spans-by-windows matrix stays under SPAN_CELLS however many spans a labeller stored."""
    n = win.last.size
    if n == 0 or not spans:
        return label_spans(win, spans)
    lo = np.array([s.start for s in spans])
    hi = np.array([s.end for s in spans])
    run = max(1, SPAN_CELLS // len(spans))
    keep, y = np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.int64)
    for a in range(0, n, run):
        b = min(a + run, n)
        near = np.flatnonzero((hi > win.start_times[a]) & (lo <= win.end_times[b - 1]))
        part = Windows(x=win.x[a:b], start_times=win.start_times[a:b],
                       end_times=win.end_times[a:b], last=win.last[a:b])
        got = label_spans(part, [spans[i] for i in near])  # `near` keeps the stored order
        keep[a:b] = got.keep
        y[a:b][got.keep] = got.y
    return Labels(keep=keep, y=y[keep])


def _flat(win: Windows, keep: npt.NDArray[np.bool_]) -> F32:
    """The kept windows' features as `[n, features]` rows (raw windows flattened row-major)."""
    x = win.x[keep]
    return np.ascontiguousarray(x.reshape(x.shape[0], math.prod(x.shape[1:])))


def _empty(cfg: SensorsConfig, newest: float | None, dropped: Counter[str]) -> Collected:
    io = cfg.model_io()
    y: npt.NDArray[np.int64] | F32 = (np.zeros((0, io.outputs), dtype=np.float32)
                                      if cfg.labels is LabelMode.FORECAST
                                      else np.zeros(0, dtype=np.int64))
    return Collected(x=np.zeros((0, math.prod(io.input_shape)), dtype=np.float32), y=y,
                     end_times=np.zeros(0), newest=newest,
                     dropped={k: v for k, v in dropped.items() if v})
