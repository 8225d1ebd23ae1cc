"""Size, speed and error of every registered codec on one 1M-parameter update, f32 as baseline.

    .venv/bin/python bench/codec_sizes.py [--repeats 5]

Prints one JSON line per codec (f32 first, measured in the same run): `bytes`,
`ratio_vs_f32` (bytes / f32 bytes), `encode_mb_s` and `decode_mb_s` (MB of float32 input
per second, best of `--repeats`) and `max_abs_err` against the input. The repeats cycle
through all codecs, so a burst of load on a shared machine hits every codec alike rather
than whichever one was being timed. Nothing here asserts an absolute time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.messages import TensorSpec

# An MLP-shaped update of exactly 1,000,000 weights.
SHAPES = [(1000, 784), (1000,), (200, 1000), (200,), (74, 200)]


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    """Measure every codec and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(*shape, generator=gen) for shape in SHAPES]
    spec = tuple(TensorSpec(name=f"t{i}", shape=s) for i, s in enumerate(SHAPES))
    megabytes = 4 * sum(t.numel() for t in tensors) / 1e6
    names = ["f32", *[n for n in CODECS.names() if n != "f32"]]
    codecs = {name: CODECS.build(name) for name in names}
    blobs = {name: codec.encode(tensors) for name, codec in codecs.items()}  # also warms up
    best = {name: [float("inf"), float("inf")] for name in names}
    for _ in range(args.repeats):
        for name, codec in codecs.items():
            enc = seconds(lambda c=codec: c.encode(tensors))
            dec = seconds(lambda c=codec, b=blobs[name]: c.decode(b, spec))
            best[name] = [min(best[name][0], enc), min(best[name][1], dec)]
    for name, codec in codecs.items():
        back = codec.decode(blobs[name], spec)
        err = max(float((a - b).abs().max()) for a, b in zip(tensors, back, strict=True))
        print(json.dumps({
            "codec": name,
            "bytes": len(blobs[name]),
            "ratio_vs_f32": round(len(blobs[name]) / len(blobs["f32"]), 4),
            "encode_mb_s": round(megabytes / best[name][0], 1),
            "decode_mb_s": round(megabytes / best[name][1], 1),
            "max_abs_err": float(f"{err:.4g}"),
        }))


if __name__ == "__main__":
    main()
