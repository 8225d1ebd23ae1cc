"""Aligning irregular sensor readings of several channels onto one fixed-rate time grid.

Pure numpy: callers pass each channel's readings as `(times, values)` arrays and get an
`Aligned` grid back; nothing here reads a store or a broker.

Decisions, each tested in `tests/edge_node/sensors/test_sensor_windows.py`:

- Readings may arrive unsorted and with repeated timestamps. They are stable-sorted by time and,
  among readings with an equal timestamp, the one given last wins (a re-sent or corrected
  reading replaces the earlier one).
- The grid is `start + k / rate_hz` for k = 0, 1, ... while that time is `< end` (computed by
  division, not by summing steps, so rounding does not drift over an hour).
- Before a channel's first reading it has no value, with either fill.
- "hold" takes the last reading at or before the grid time and holds it past the last reading;
  its gap is the time since that reading (the staleness of the value used).
- "linear" takes a reading exactly at the grid time, else interpolates between the readings
  just before and just after it; it holds nothing past the last reading. Its gap is the length
  of the interval interpolated across (0 on an exact reading), so a long hole counts as a gap
  at every grid point inside it, not only at those far from its first edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


class Fill(StrEnum):
    """How a grid point between readings gets its value."""

    HOLD = "hold"
    LINEAR = "linear"


E = TypeVar("E", bound=StrEnum)


def choice(kind: type[E], name: str, value: object) -> E:
    """`value` as a member of `kind` (config files give plain strings).

    Raises:
        ValueError: `value` names no member, listing the ones there are.
    """
    try:
        return kind(str(value))
    except ValueError:
        raise ValueError(f"{name} must be one of {[m.value for m in kind]}; "
                         f"got {value!r}") from None


def _positive(name: str, value: object, *, allow_inf: bool) -> None:
    """Raise ValueError unless `value` is a real number > 0 (and finite unless `allow_inf`)."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            or not (allow_inf or math.isfinite(value))):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number > 0; "
                         f"got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlignParams:
    """How readings become a fixed-rate grid.

    Args:
        rate_hz: Grid points per second, finite and > 0.
        fill: `Fill.HOLD` (hold-last) or `Fill.LINEAR`; the strings "hold" and "linear" are
            accepted and stored as `Fill`.
        max_gap_s: A grid point whose gap (see the module docstring) exceeds this in any
            channel is unusable, and so is every window containing it. `math.inf` disables it.

    Raises:
        ValueError: For a rate or gap that is not a number > 0, or an unknown fill.
    """

    rate_hz: float
    fill: Fill = Fill.HOLD
    max_gap_s: float

    def __post_init__(self) -> None:
        _positive("rate_hz", self.rate_hz, allow_inf=False)
        _positive("max_gap_s", self.max_gap_s, allow_inf=True)
        object.__setattr__(self, "fill", choice(Fill, "fill", self.fill))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Aligned:
    """Channels on one grid. `eq=False`: compare the arrays, not the objects.

    Args:
        channels: Channel names, in row order.
        times: Grid times `[steps]`, float64 seconds.
        values: `[channels, steps]` float64; NaN where a channel has no value.
        valid: `[steps]` bool, True where every channel has a value.
        gap: `[steps]` float64, the largest gap over channels (inf where not valid).
        params: The parameters the grid was built with (its rate and maximum gap).

    Raises:
        ValueError: When the shapes do not agree.
    """

    channels: tuple[str, ...]
    times: F64
    values: F64
    valid: npt.NDArray[np.bool_]
    gap: F64
    params: AlignParams

    def __post_init__(self) -> None:
        steps = self.times.shape
        if (len(steps) != 1 or self.values.shape != (len(self.channels), *steps)
                or self.valid.shape != steps or self.gap.shape != steps):
            raise ValueError(f"aligned shapes disagree: {len(self.channels)} channels, times "
                             f"{self.times.shape}, values {self.values.shape}, valid "
                             f"{self.valid.shape}, gap {self.gap.shape}")

    @property
    def usable(self) -> npt.NDArray[np.bool_]:
        """`[steps]` bool: valid and with no gap over `params.max_gap_s`."""
        return self.valid & (self.gap <= self.params.max_gap_s)


def grid(start: float, end: float, rate_hz: float) -> F64:
    """The grid times `start + k / rate_hz` that are `< end`."""
    n = max(math.ceil((end - start) * rate_hz), 0)
    times = start + np.arange(n + 1, dtype=np.float64) / rate_hz
    return times[times < end]


def _readings(name: str, series: tuple[npt.ArrayLike, npt.ArrayLike]) -> tuple[F64, F64]:
    """One channel's readings sorted by time, the last-given of equal timestamps kept."""
    t = np.asarray(series[0], dtype=np.float64)
    v = np.asarray(series[1], dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValueError(f"{name}: times {t.shape} and values {v.shape} must be equal 1-D")
    if not (np.isfinite(t).all() and np.isfinite(v).all()):
        raise ValueError(f"{name}: readings must be finite")
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    last = np.append(t[1:] != t[:-1], True) if t.size else np.zeros(0, dtype=bool)
    return t[last], v[last]


def _hold(t: F64, v: F64, at: F64) -> tuple[F64, F64]:
    """Hold-last values and their staleness at `at`; NaN / inf before the first reading."""
    i = np.searchsorted(t, at, side="right") - 1
    has, j = i >= 0, np.maximum(i, 0)
    return np.where(has, v[j], np.nan), np.where(has, at - t[j], np.inf)


def _linear(t: F64, v: F64, at: F64) -> tuple[F64, F64]:
    """Interpolated values and bracket widths at `at`; NaN / inf outside the readings."""
    n = t.size
    r = np.searchsorted(t, at, side="left")  # t[r - 1] < at <= t[r]
    rc, lc = np.minimum(r, n - 1), np.maximum(r - 1, 0)
    exact = (r < n) & (t[rc] == at)
    inner = (r > 0) & (r < n) & ~exact
    span = t[rc] - t[lc]  # > 0 wherever inner: timestamps are unique after `_readings`
    frac = np.divide(at - t[lc], span, out=np.zeros_like(at), where=inner)
    value = np.where(exact, v[rc], np.where(inner, v[lc] + (v[rc] - v[lc]) * frac, np.nan))
    return value, np.where(exact, 0.0, np.where(inner, span, np.inf))


def align(series: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]], channels: Sequence[str],
          start: float, end: float, params: AlignParams) -> Aligned:
    """Put the named channels' readings on the grid from `start` (inclusive) to `end`.

    Args:
        series: Channel name -> `(times, values)`, equal-length 1-D arrays of finite numbers,
            in any order; a channel may have no readings (then no step is valid).
        channels: The channels to align, in row order; others in `series` are ignored.
        start: First grid time, in the readings' clock (seconds).
        end: Grid times are `< end`.
        params: Rate, fill and maximum gap.

    Returns:
        The aligned grid; see the module docstring for the fill and gap rules.

    Raises:
        ValueError: For no channels, a repeated channel or one missing from `series`,
            malformed or non-finite readings, or bounds that are not finite with start <= end.
    """
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"need finite start <= end; got start={start!r}, end={end!r}")
    names = tuple(channels)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"channels must be one or more unique names; got {list(names)}")
    if missing := [c for c in names if c not in series]:
        raise ValueError(f"channels {missing} have no series")
    times = grid(start, end, params.rate_hz)
    values = np.full((len(names), times.size), np.nan)
    gaps = np.full((len(names), times.size), np.inf)
    fill = _hold if params.fill is Fill.HOLD else _linear
    for row, name in enumerate(names):
        t, v = _readings(name, series[name])
        if t.size:
            values[row], gaps[row] = fill(t, v, times)
    valid = np.isfinite(values).all(axis=0)
    gap = gaps.max(axis=0)
    return Aligned(channels=names, times=times, values=values, valid=valid,
                   gap=np.where(valid, gap, np.inf), params=params)
