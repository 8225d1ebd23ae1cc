"""Cutting an aligned grid into fixed-length windows, their features, labels and forecast targets.

A window of `length` steps starts every `stride` steps; it is kept only if every step in it is
usable (`Aligned.usable`: all channels have a value and no gap exceeds `max_gap_s`).

Labels, decided here and tested:

- Spans: a window gets a span's label when the whole window lies inside the span, i.e. every
  step's grid time is in `[span.start, span.end)`. A window straddling two spans gets neither
  and is dropped, so no window mixes two activities. Where overlapping spans both contain a
  window, the span given last wins (a later annotation corrects an earlier one).
- Channel: the label is the label grid's value at the window's last step, kept when it is a
  finite integer >= 0 (so -1 can mean "unlabelled"). Align the label channel on its own, with
  `Fill.HOLD` and the same start, end and rate, so it is not among the window's features and
  interpolation cannot invent a class between two others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from fedstream.shared.learning.series.align import Aligned, choice

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
SUMMARY = ("mean", "std", "min", "max", "last", "slope")


class Features(StrEnum):
    """What a model gets from each window."""

    RAW = "raw"
    SUMMARY = "summary"


def _count(name: str, value: object) -> None:
    """Raise ValueError unless `value` is an int >= 1."""
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowParams:
    """How windows are cut and featurised.

    Args:
        length: Steps per window, >= 1.
        stride: Steps from one window's start to the next, >= 1.
        features: `Features.RAW` gives `[channels, length]` float32 per window;
            `Features.SUMMARY` gives, per channel in row order, the population mean, std
            (ddof=0), min, max, last value and least-squares slope in units per second (0 for
            a one-step window): a flat float32 vector `[c0_mean, c0_std, ..., c0_slope,
            c1_mean, ...]` of `6 * channels`. "raw" and "summary" are accepted as strings.

    Raises:
        ValueError: For a length or stride that is not an int >= 1, or unknown features.
    """

    length: int
    stride: int
    features: Features = Features.RAW

    def __post_init__(self) -> None:
        _count("length", self.length)
        _count("stride", self.stride)
        object.__setattr__(self, "features", choice(Features, "features", self.features))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Windows:
    """The kept windows, in time order.

    Args:
        x: `[n, channels, length]` (raw) or `[n, 6 * channels]` (summary) float32.
        start_times: `[n]` grid time of each window's first step.
        end_times: `[n]` grid time of each window's last step.
        last: `[n]` int64 grid index of each window's last step.
    """

    x: F32
    start_times: F64
    end_times: F64
    last: I64


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Labels:
    """Which windows have a label, and those labels.

    Args:
        keep: `[n]` bool over the windows; select with `windows.x[labels.keep]`.
        y: `[keep.sum()]` int64 labels of the kept windows, in order.
    """

    keep: Mask
    y: I64


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSpan:
    """A labelled time span `[start, end)`.

    Raises:
        ValueError: For a label that is not an int >= 0, or bounds not finite with start < end.
    """

    label: int
    start: float
    end: float

    def __post_init__(self) -> None:
        if type(self.label) is not int or self.label < 0:
            raise ValueError(f"label must be an int >= 0; got {self.label!r}")
        if not (np.isfinite(self.start) and np.isfinite(self.end) and self.start < self.end):
            raise ValueError(f"need finite start < end; got [{self.start!r}, {self.end!r})")


def _summary(w: F64, rate_hz: float) -> F32:
    """Summary features of `[n, channels, length]` windows as `[n, 6 * channels]` float32."""
    n, c, length = w.shape
    k = np.arange(length) - (length - 1) / 2  # centred step index, so sum(k) = 0
    denom = float(k @ k)
    slope = w @ k * (rate_hz / denom) if denom else np.zeros((n, c))
    feats = np.stack([w.mean(-1), w.std(-1), w.min(-1), w.max(-1), w[..., -1], slope], axis=-1)
    return feats.reshape(n, 6 * c).astype(np.float32)


def _gather(values: npt.NDArray[Any], starts: I64, length: int) -> npt.NDArray[Any]:
    """`[n, rows, length]` C-contiguous copies of `values[:, s:s + length]` for each start s."""
    rows, steps = values.shape
    if steps < length:  # sliding_window_view refuses a window longer than the data
        return np.empty((0, rows, length), dtype=values.dtype)
    # Index the window axis of a [steps, rows, length] view: one gather into fresh C-order
    # memory (indexing the middle axis and transposing would leave x strided).
    return sliding_window_view(values, length, axis=1).transpose(1, 0, 2)[starts]


def _cut(aligned: Aligned, params: WindowParams, extra: int) -> tuple[Windows, I64]:
    """Windows whose own steps and the `extra` steps after them are all usable, and their starts."""
    steps, span = aligned.times.size, params.length + extra
    starts = np.arange(0, max(steps - span + 1, 0), params.stride, dtype=np.int64)
    bad = np.concatenate(([0], np.cumsum(~aligned.usable)))
    starts = starts[bad[starts + span] == bad[starts]]
    if params.features is Features.RAW:
        # Convert each grid value once, not once per overlapping window.
        x = _gather(aligned.values.astype(np.float32), starts, params.length)
    else:
        x = _summary(_gather(aligned.values, starts, params.length), aligned.params.rate_hz)
    last = starts + params.length - 1
    return Windows(x=x, start_times=aligned.times[starts], end_times=aligned.times[last],
                   last=last), starts


def windows(aligned: Aligned, params: WindowParams) -> Windows:
    """Cut the grid into windows, dropping any with an unusable step.

    With every step usable there are `floor((steps - length) / stride) + 1` windows (none if
    `steps < length`), the i-th starting at step `i * stride`.
    """
    return _cut(aligned, params, 0)[0]


def forecast_pairs(aligned: Aligned, params: WindowParams, horizon: int,
                   targets: Sequence[str]) -> tuple[Windows, F32]:
    """Windows and the next `horizon` steps of the `targets` channels after each.

    Only windows whose own steps and whose next `horizon` steps are all usable are kept.

    Returns:
        The windows, and `y` of shape `[n, len(targets), horizon]` float32: row j of window i
        holds `targets[j]` at steps `last[i] + 1 ... last[i] + horizon`.

    Raises:
        ValueError: For a horizon that is not an int >= 1, or no, repeated or unknown targets.
    """
    _count("horizon", horizon)
    names = tuple(targets)
    if not names or len(set(names)) != len(names) or not set(names) <= set(aligned.channels):
        raise ValueError(f"targets must be unique channels of {list(aligned.channels)}; "
                         f"got {list(names)}")
    win, starts = _cut(aligned, params, horizon)
    rows = [aligned.channels.index(t) for t in names]
    future = aligned.values[rows, params.length:]  # future[:, s] is the step after window s
    return win, _gather(future.astype(np.float32), starts, horizon)


def label_spans(win: Windows, spans: Sequence[LabelSpan]) -> Labels:
    """Label each window wholly inside a span; see the module docstring for overlaps."""
    if not spans:
        return Labels(keep=np.zeros(win.last.size, dtype=bool), y=np.zeros(0, dtype=np.int64))
    lo = np.array([s.start for s in spans], dtype=np.float64)[:, None]
    hi = np.array([s.end for s in spans], dtype=np.float64)[:, None]
    inside = (win.start_times >= lo) & (win.end_times < hi)  # [spans, n]
    keep = np.asarray(inside.any(axis=0), dtype=np.bool_)
    final = len(spans) - 1 - np.argmax(inside[::-1], axis=0)  # last span containing it
    labels = np.array([s.label for s in spans], dtype=np.int64)
    return Labels(keep=keep, y=labels[final[keep]])


def label_channel(win: Windows, labels: Aligned) -> Labels:
    """Label each window with the one-channel label grid's value at its last step.

    Raises:
        ValueError: When `labels` has more than one channel or another grid than the windows.
    """
    if len(labels.channels) != 1:
        raise ValueError(f"a label grid has one channel; got {list(labels.channels)}")
    if win.last.size and (win.last[-1] >= labels.times.size
                          or not np.array_equal(labels.times[win.last], win.end_times)):
        raise ValueError("the label grid's times differ from the windows' grid")
    value = np.where(labels.usable[win.last], labels.values[0, win.last], np.nan)
    keep = np.isfinite(value) & (value == np.round(value)) & (value >= 0)
    return Labels(keep=keep, y=value[keep].astype(np.int64))
