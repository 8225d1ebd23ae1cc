"""FedAvg over spooled updates against numpy weighted sums, time and peak RSS, in one run.

    .venv/bin/python bench/aggregation.py [--updates 100]

A child process writes `--updates` f32 update blobs of a 10M-parameter model (40 MB each, seeded)
with the real `Spool.put` into a temp spool (under /tmp, else /var/tmp, with fewer updates if
neither has room; deleted at the end), the parent reads them once to warm the page cache, then
each mode runs in a fresh `--child MODE` process so its peak RSS is its own:

- `fedstream`: the coordinator's path (`cloud/coordinator.py::_aggregate`): in update-id order,
  `Spool.get`, `decode_with("f32", ...)`, `agg.add(delta, samples)`, then `agg.result()`, with
  `agg = STRATEGIES.build("fedavg").new_round()`.
- `numpy_inmemory` (baseline): `np.fromfile` every update into memory, then `acc += w * a` in
  float64 over the list. `load_s_per_update` and `sum_s_per_update` split its time.
- `numpy_streaming` (baseline): the same sum reading one file at a time: our path minus our
  codec, aggregator and torch.

Prints one JSON line per mode, then a summary. `s_per_update` is the mode's wall time (reads
included, from a warm page cache) / updates. `peak_rss_mb` is `ru_maxrss` in MiB (the parent
never imports torch and stays small, because exec carries the parent's high-water mark into a
child's `ru_maxrss`); `rss_over_model` = (peak RSS - the child's RSS after its imports) / the
model's 40 MB of float32. Ratios: numpy time / ours, above 1 = we are faster. The issue's goal:
streaming FedAvg's `rss_over_model` under 3, whatever the update count. `agree` compares every
mode's float32 result with `numpy_inmemory`'s: max |diff| / max |value| <= 1e-5.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPES = {"l0.w": (2500, 2000), "l1.w": (2500, 1999), "l1.b": (2500,)}  # 10,000,000 float32
PARAMS = sum(math.prod(s) for s in SHAPES.values())
MODEL_BYTES = 4 * PARAMS
ROUND = "r-bench"
# Below torch's 32K-element grain size, so each slice op runs on this thread: 64K slices ran
# 5-40x slower when other jobs held the cores (every op waited for a descheduled OpenMP
# thread), and 1M slices cost 1.5x the model in RSS (glibc kept the 8 MiB temporaries).
MODES = ("fedstream", "numpy_inmemory", "numpy_streaming")


def samples(i: int) -> int:
    """Update i's weight (its sample count): varied, deterministic."""
    return 100 + (i * 37) % 400


def update_id(i: int) -> str:
    """Ids sort in index order, so update-id order is index order."""
    return f"u{i:05d}"


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident set size (`ru_maxrss` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hwm_bytes() -> int:
    """The kernel's VmHWM for this address space: a cross-check of `ru_maxrss`."""
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# --- child side -------------------------------------------------------------------------------
# Children import torch and fedstream inside functions so the parent stays small (see docstring).


def write_updates(spool_root: Path, n: int) -> None:
    """Encode n seeded updates with the f32 codec and store them with `Spool.put`, one at a time."""
    import torch  # noqa: PLC0415  (child only: keeps the parent's RSS small)

    from fedstream.cloud.spool import Spool  # noqa: PLC0415
    from fedstream.shared.protocol.codecs import CODECS  # noqa: PLC0415

    spool, codec = Spool(spool_root), CODECS.build("f32")
    for i in range(n):
        gen = torch.Generator().manual_seed(i)
        delta = [torch.randn(*shape, generator=gen).mul_(0.01) for shape in SHAPES.values()]
        spool.put(ROUND, update_id(i), codec.encode(delta))
        del delta


def import_all() -> None:
    """Import what any mode uses, so each child's baseline RSS holds the same modules."""
    import torch  # noqa: F401, PLC0415  (child only: keeps the parent's RSS small)

    import fedstream.cloud.spool  # noqa: PLC0415
    import fedstream.cloud.strategies  # noqa: PLC0415
    import fedstream.shared.protocol.blobs  # noqa: F401, PLC0415


def agg_coordinator(spool_root: Path, rows: list[tuple[str, float]]) -> list[Any]:
    """Exactly `cloud/coordinator.py::_aggregate`'s loop, with the registered FedAvg."""
    from fedstream.cloud.spool import Spool  # noqa: PLC0415
    from fedstream.cloud.strategies import STRATEGIES  # noqa: PLC0415
    from fedstream.shared.protocol.blobs import decode_with  # noqa: PLC0415

    spool, spec = Spool(spool_root), make_spec()
    agg = STRATEGIES.build("fedavg").new_round()
    for rel, weight in rows:
        agg.add(decode_with("f32", spool.get(rel), spec), weight)
    result: list[Any] = agg.result()
    return result


def make_spec() -> Any:
    """The model's `Spec`."""
    from fedstream.shared.protocol.messages import TensorSpec  # noqa: PLC0415

    return tuple(TensorSpec(name=k, shape=s) for k, s in SHAPES.items())


def run_fedstream(spool_root: Path, n: int, mode: str, out: Path) -> dict[str, Any]:
    """Aggregate as the coordinator does (or with the proposed fixes), timed and RSS-measured."""
    aggregate = agg_coordinator
    rows = [(f"{ROUND}/{update_id(i)}.blob", float(samples(i))) for i in range(n)]
    base = rss_bytes()
    start = time.perf_counter()
    result = aggregate(spool_root, rows)
    seconds = time.perf_counter() - start
    peak, hwm = peak_rss_bytes(), hwm_bytes()
    with out.open("wb") as fh:
        for t in result:
            fh.write(t.numpy().tobytes())
    return {"seconds": seconds, "peak": peak, "hwm": hwm, "base": base}


def run_numpy(spool_root: Path, n: int, mode: str, out: Path) -> dict[str, Any]:
    """The baselines: weighted sum in float64 of all updates in memory, or one file at a time."""
    paths = [spool_root / ROUND / f"{update_id(i)}.blob" for i in range(n)]
    weights = [np.float64(samples(i)) for i in range(n)]  # np.float64: w * a is float64
    base = rss_bytes()
    extra: dict[str, float] = {}
    start = time.perf_counter()
    acc = np.zeros(PARAMS, dtype=np.float64)
    if mode == "numpy_inmemory":
        arrays = [np.fromfile(p, dtype="<f4") for p in paths]
        loaded = time.perf_counter()
        for w, a in zip(weights, arrays, strict=True):
            acc += w * a
        extra = {"load_s": loaded - start, "sum_s": time.perf_counter() - loaded}
    else:
        for w, p in zip(weights, paths, strict=True):
            acc += w * np.fromfile(p, dtype="<f4")
    result = (acc / sum(weights)).astype(np.float32)
    seconds = time.perf_counter() - start
    peak, hwm = peak_rss_bytes(), hwm_bytes()
    result.tofile(out)
    return {"seconds": seconds, "peak": peak, "hwm": hwm, "base": base, **extra}


def child(argv: list[str]) -> None:
    """`--child MODE SPOOL N OUT`: run one mode and print its raw numbers as JSON."""
    mode, root, n, out = argv[0], Path(argv[1]), int(argv[2]), Path(argv[3])
    if mode == "write":
        write_updates(root, n)
        return
    import_all()
    if mode.startswith("numpy"):
        stats = run_numpy(root, n, mode, out)
    else:
        stats = run_fedstream(root, n, mode, out)
    print(json.dumps(stats))


# --- parent side ------------------------------------------------------------------------------


def pick_dir(wanted: int) -> tuple[Path, int]:
    """A temp dir with room for the updates (plus results and 1 GiB to spare), and how many fit."""
    spare = len(MODES) * MODEL_BYTES + (1 << 30)
    best: tuple[Path, int] | None = None
    for cand in (Path(tempfile.gettempdir()), Path("/var/tmp")):
        fits = min(wanted, (shutil.disk_usage(cand).free - spare) // MODEL_BYTES)
        if fits >= wanted:
            return cand, wanted
        if best is None or fits > best[1]:
            best = (cand, fits)
    assert best is not None
    if best[1] < 2:
        sys.exit(f"not enough disk for even 2 updates of {MODEL_BYTES} bytes")
    return best


def spawn(mode: str, root: Path, n: int, out: Path) -> dict[str, Any]:
    """Run one mode in a fresh interpreter; its last stdout line is its JSON."""
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(root), str(n), str(out)],
                          check=True, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def warm_cache(root: Path) -> None:
    """Read every spool file once so every mode starts from the same warm page cache."""
    buf = bytearray(8 << 20)
    for path in sorted((root / ROUND).glob("*.blob")):
        with path.open("rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def main() -> None:
    """Write the spool, run each mode in its own process, print JSON lines, clean up."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100)
    args = parser.parse_args()
    if not 2 <= args.updates <= 150:  # numpy_inmemory holds them all: 150 x 40 MB = 6 GB
        parser.error("--updates must be 2..150")
    parent_dir, n = pick_dir(args.updates)
    if n < args.updates:
        print(json.dumps({"note": f"disk: {n} updates instead of {args.updates}",
                          "updates": n, "dir": str(parent_dir)}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="fedstream-bench-agg-", dir=parent_dir))
    try:
        start = time.perf_counter()
        spawn("write", tmp / "spool", n, tmp / "unused")
        warm_cache(tmp / "spool")
        print(json.dumps({"setup": "spool written", "updates": n, "params": PARAMS,
                          "model_mb": round(MODEL_BYTES / 1e6, 1), "dir": str(tmp),
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)
        order = ("numpy_inmemory", *(m for m in MODES if m != "numpy_inmemory"))
        raws = {mode: spawn(mode, tmp / "spool", n, tmp / f"{mode}.f32") for mode in order}
        # Results are compared only now: the parent's peak must stay below every child's.
        ref = np.fromfile(tmp / "numpy_inmemory.f32", dtype="<f4")
        scale = float(np.max(np.abs(ref)))
        rows: dict[str, dict[str, Any]] = {}
        for mode, raw in raws.items():
            diff = float(np.max(np.abs(np.fromfile(tmp / f"{mode}.f32", dtype="<f4") - ref)))
            row: dict[str, Any] = {
                "mode": mode, "updates": n, "params": PARAMS,
                "s_per_update": round(raw["seconds"] / n, 5),
                "peak_rss_mb": round(raw["peak"] / (1 << 20), 1),
                "rss_over_model": round((raw["peak"] - raw["base"]) / MODEL_BYTES, 3),
                "base_rss_mb": round(raw["base"] / (1 << 20), 1),
                "vm_hwm_mb": round(raw["hwm"] / (1 << 20), 1),
                "max_rel_diff": diff / scale, "agree": diff <= 1e-5 * scale}
            if "load_s" in raw:
                row["load_s_per_update"] = round(raw["load_s"] / n, 5)
                row["sum_s_per_update"] = round(raw["sum_s"] / n, 5)
            rows[mode] = row
            print(json.dumps(row), flush=True)
        ours = rows["fedstream"]
        print(json.dumps({
            "fedstream_vs_numpy_inmemory_time": round(
                rows["numpy_inmemory"]["s_per_update"] / ours["s_per_update"], 3),
            "fedstream_vs_numpy_inmemory_sum_only_time": round(
                rows["numpy_inmemory"]["sum_s_per_update"] / ours["s_per_update"], 3),
            "fedstream_vs_numpy_streaming_time": round(
                rows["numpy_streaming"]["s_per_update"] / ours["s_per_update"], 3),
            "fedstream_rss_over_model": ours["rss_over_model"],
            "goal_rss_under_3x": ours["rss_over_model"] < 3,
            "agree": all(r["agree"] for r in rows.values())}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
