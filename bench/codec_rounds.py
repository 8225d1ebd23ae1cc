"""Bytes on the wire and final accuracy after R rounds of the digits federation, per codec.

    .venv/bin/python bench/codec_rounds.py [--rounds 10] [--edges 3]

Runs the real system for each codec (Mosquitto, the cloud and the edges as processes, the
same code path as `fedstream demo`), each from the same initial model and data split, and
prints one JSON line per codec with `bytes_vs_f32` (f32 update bytes / these) and
`accuracy_delta_pts` (this final accuracy minus f32's, in percentage points). f32 runs first
in the same invocation as the baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

from fedstream.demo import DemoParams, run_federation
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol.commands import RoundStart

CODECS: list[tuple[str, dict[str, float | int]]] = [
    ("f32", {}), ("f16", {}), ("bf16", {}), ("int8", {"block_size": 256}),
    ("topk", {"density": 0.05}), ("topk", {"density": 0.02}), ("topk", {"density": 0.01}),
    ("topk16", {"density": 0.05}), ("topk16", {"density": 0.045}),
]


def main() -> None:
    """Run every codec and print its line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--edges", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated codecs (f32 always runs)")
    args = parser.parse_args()
    configure_logging(json=False, level="warning", stream=sys.stderr)
    baseline: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wanted = {"f32", *args.only.split(",")} if args.only else None
        for codec, codec_params in CODECS:
            if wanted is not None and codec not in wanted:
                continue
            request = RoundStart(codec=codec, codec_params=codec_params or None)
            results = run_federation(
                DemoParams(rounds=args.rounds, edges=args.edges, workdir=Path(tmp) / codec,
                           round_request=request), out=io.StringIO())
            update_bytes = sum(int(r["bytes_in"]) for r in results)
            accuracy = float(results[-1]["accuracy"])
            if not baseline:
                baseline = {"bytes": update_bytes, "accuracy": accuracy}
            print(json.dumps({
                "codec": codec, **codec_params, "rounds": args.rounds,
                "update_bytes": update_bytes, "final_accuracy": round(accuracy, 4),
                "bytes_vs_f32": round(baseline["bytes"] / update_bytes, 2),
                "accuracy_delta_pts": round(100 * (accuracy - baseline["accuracy"]), 2),
            }), flush=True)


if __name__ == "__main__":
    main()
