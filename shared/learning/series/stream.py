"""Laying archive cases end to end as one continuous fixed-rate stream, and sharing cases out.

Pure numpy. Step k of the stream is at `start + k / rate_hz`, computed as `align.grid`
computes its grid times, so a grid from the same start at the same rate lands exactly on the
readings. Case i fills steps `[i * steps, (i + 1) * steps)` and its label span is
`[time of its first step, time of the next case's first step)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedstream.shared.learning.series.windows import LabelSpan

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Stream:
    """Cases as one stream of readings. `eq=False`: compare the arrays, not the objects.

    Args:
        times: `[steps_total]` float64 reading times, seconds.
        values: `[channels, steps_total]` float64 readings.
        spans: One `LabelSpan` per case, in stream order, each `[case_start, case_end)`.
        rate_hz: Readings per second.
    """

    times: F64
    values: F64
    spans: tuple[LabelSpan, ...]
    rate_hz: float

    @property
    def start(self) -> float:
        """Time of the first reading."""
        return self.spans[0].start

    @property
    def end(self) -> float:
        """End of the last case: one step after its last reading."""
        return self.spans[-1].end

    def series(self, names: Sequence[str]) -> dict[str, tuple[F64, F64]]:
        """Channel name -> `(times, values)`, row i of `values` named `names[i]` (for `align`).

        Raises:
            ValueError: When there are not as many names as channels.
        """
        if len(names) != self.values.shape[0]:
            raise ValueError(f"{len(names)} names for {self.values.shape[0]} channels")
        return {name: (self.times, self.values[row]) for row, name in enumerate(names)}


def case_stream(x: npt.ArrayLike, y: npt.ArrayLike, rate_hz: float, start: float) -> Stream:
    """Lay `[cases, channels, steps]` cases end to end from `start` at `rate_hz`.

    Args:
        x: `[cases, channels, steps]` finite values.
        y: `[cases]` integer labels >= 0, one per case.
        rate_hz: Readings per second, finite and > 0.
        start: Time of the first reading, finite.

    Returns:
        The stream, with one label span per case.

    Raises:
        ValueError: For empty or mismatched arrays, non-finite values, negative labels, or a
            rate or start out of range.
    """
    cases = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y)
    if cases.ndim != 3 or 0 in cases.shape:
        raise ValueError(f"x must be a non-empty [cases, channels, steps] array; "
                         f"got shape {cases.shape}")
    if labels.shape != cases.shape[:1] or labels.dtype.kind not in "iu":
        raise ValueError(f"y must hold {cases.shape[0]} integer labels; "
                         f"got {labels.dtype} {labels.shape}")
    if not np.isfinite(cases).all():
        raise ValueError("x holds NaN or Inf")
    if isinstance(rate_hz, bool) or not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a finite number > 0; got {rate_hz!r}")
    if not math.isfinite(start):
        raise ValueError(f"start must be finite; got {start!r}")
    n, channels, steps = cases.shape
    times = start + np.arange(n * steps, dtype=np.float64) / rate_hz
    # Each bound the same expression as the times, so a span starts exactly on its first reading.
    bounds = start + np.arange(n + 1, dtype=np.float64) * steps / rate_hz
    spans = tuple(LabelSpan(label=int(label), start=float(lo), end=float(hi))
                  for label, lo, hi in zip(labels.tolist(), bounds[:-1], bounds[1:], strict=True))
    values = np.ascontiguousarray(cases.transpose(1, 0, 2).reshape(channels, n * steps))
    return Stream(times=times, values=values, spans=spans, rate_hz=float(rate_hz))


def part_cases(n_cases: int, part: int, parts: int, seed: int) -> I64:
    """The cases part `part` of `parts` gets: a seeded shuffle dealt out round-robin.

    The parts are disjoint, every case is in exactly one, and sizes differ by at most one.
    Indices come in play order (the shuffle's), so a part does not replay an archive's cases
    class by class when the file lists them sorted by class.

    Args:
        n_cases: Number of cases, >= 1.
        part: Which part, in [0, parts).
        parts: Number of parts, in [1, n_cases].
        seed: Seed of the shuffle, >= 0; every part must use the same one.

    Raises:
        ValueError: For an argument that is not an int or out of range.
    """
    for name, value in (("n_cases", n_cases), ("part", part), ("parts", parts), ("seed", seed)):
        if type(value) is not int:
            raise ValueError(f"{name} must be an int; got {value!r}")
    if not 1 <= parts <= n_cases:
        raise ValueError(f"parts must be in [1, {n_cases}] (the number of cases); got {parts}")
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}); got {part}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    order = np.random.default_rng(seed).permutation(n_cases)
    return np.asarray(order[part::parts], dtype=np.int64)
