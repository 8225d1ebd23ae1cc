"""Sensor windowing and featurisation speed against a plain numpy reshape, measured in one run.

    .venv/bin/python bench/windowing.py [--repeat 5]

One hour of 8 channels at 50 Hz (180,000 steps, seeded) is made as jittered readings (each
up to 10 ms before its grid point) and aligned once with `align` (hold-last, its time printed
for information), then cut into windows of 128 steps with stride 64:

- `raw`: `windows(...)` with `Features.RAW`, `[n, 8, 128]` float32 per window;
- `summary`: `windows(...)` with `Features.SUMMARY`, 48 float32 features per window.

The baseline, `reshape`, is what the same data costs with no alignment mask, gap check or
overlap: `values[:, :n * 128].reshape(8, n, 128).transpose(1, 0, 2).astype(float32)`, i.e.
non-overlapping windows copied into fresh float32 memory. Rates are windows per second, best
of `--repeat` runs; `vs_reshape` = our windows/s / the baseline's windows/s (1 = as fast per
window as the reshape; stride 64 makes twice as many windows as the reshape, each one
counted). Nothing asserts absolute times.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from fedstream.shared.learning.series.align import AlignParams, Fill, align
from fedstream.shared.learning.series.windows import Features, WindowParams, windows

CHANNELS, RATE_HZ, SECONDS, LENGTH, STRIDE = 8, 50.0, 3600.0, 128, 64


def best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Fastest of `repeat` calls of `fn` (which returns its window count), and that count."""
    times, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - started)
    return min(times), count


def main() -> None:
    """Align once, then time each featurisation and the reshape baseline."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    steps = int(SECONDS * RATE_HZ)
    names = [f"ch{i}" for i in range(CHANNELS)]
    base = np.arange(steps) / RATE_HZ
    series = {name: (base - rng.uniform(0, 0.5 / RATE_HZ, steps), rng.standard_normal(steps))
              for name in names}
    started = time.perf_counter()
    aligned = align(series, names, 0.0, SECONDS,
                    AlignParams(rate_hz=RATE_HZ, fill=Fill.HOLD, max_gap_s=1.0))
    align_s = time.perf_counter() - started
    print(json.dumps({"bench": "windowing", "stage": "align", "steps": steps,
                      "channels": CHANNELS, "seconds": round(align_s, 4), "info": True}))

    def reshape() -> int:
        n = aligned.values.shape[1] // LENGTH
        x = aligned.values[:, :n * LENGTH].reshape(CHANNELS, n, LENGTH).transpose(1, 0, 2)
        return len(x.astype(np.float32))

    base_s, base_n = best(reshape, args.repeat)
    base_rate = base_n / base_s
    for features in Features:
        params = WindowParams(length=LENGTH, stride=STRIDE, features=features)
        ours_s, ours_n = best(lambda p=params: len(windows(aligned, p).x), args.repeat)
        rate = ours_n / ours_s
        print(json.dumps({
            "bench": "windowing", "features": features.value, "length": LENGTH,
            "stride": STRIDE, "windows": ours_n, "windows_per_s": round(rate),
            "reshape_windows": base_n, "reshape_windows_per_s": round(base_rate),
            "vs_reshape": round(rate / base_rate, 3)}))


if __name__ == "__main__":
    main()
