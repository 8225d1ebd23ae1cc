"""Flower 1.42 against fedstream on one task, side by side, with real processes on this machine.

    .venv/bin/python bench/vs_flower.py [--rounds 10] [--big-hidden 3150,3150]
        [--cache-dir build/flower-cache] [--skip-big] [--work-dir DIR]

The task is exported with fedstream's own code into a data directory per configuration: the
three Dirichlet(0.5) parts of the digits train split (`SOURCES.build("digits", partitions=3,
partition=I, alpha=0.5)`, the parts fedstream's edges load, checked against their configs
before the runs and their logs after), the digits test split, and the start model
`build_model(Architecture.mlp((64, *hidden, 10)), seed=0)`, the weights fedstream's cloud
builds itself (its score at ready is checked against the exported model's). Both sides then
run FedAvg weighted by samples over three clients, one epoch of SGD per round (lr 0.05,
momentum 0.9, batch 32, a fresh optimizer), fp32 on stock torch with one thread per process,
and score the global model on the test split after each round:
- Flower (`bench/flower/run_flower.py`): the Deployment Engine, a SuperLink, three SuperNodes
  and `flwr run`, from its own venv under `--cache-dir`.
- fedstream (`bench/fedstream_rounds.py`): Mosquitto, `fedstream cloud run` and three
  `fedstream edge run`, defences off (Flower's FedAvg has none), rounds started by this
  process as an operator.
Two configurations: `--rounds` rounds of the digits MLP 64-100-100-10, then one round of a big
MLP (64-H-H-10, 3150: ~10.1M parameters, its own data directory and start model) unless
`--skip-big`. The minibatch orders come from different RNGs (Flower's ClientApp seeds 1000 *
round + partition, fedstream's edge its own generator), so the accuracy curves should be close,
not equal.

Each side's figures are described in its module's doc; the comparison line per configuration
gives Flower / fedstream ratios of:
- `overhead_ratio`: the median per-round overhead, wall time minus the slowest client's
  training time. Flower's wall runs from the ServerApp sending the train messages to their
  aggregate; fedstream's from the operator sending round_start to seeing the round published,
  which also covers evaluating the new model on the test split and swapping it in.
  `overhead_eval_ratio` takes Flower's wall up to its evaluation instead. fedstream's training
  time includes building the model and optimizer; Flower's is the epoch alone, but in a
  ClientApp process started for the round, so it includes torch's lazy imports on the first
  optimizer step, which fedstream's long-lived edges paid once before round 1.
- `startup_ratio`: Flower from launching the SuperLink to round 1's train messages being sent
  (its first model travels in round 1); fedstream from starting Mosquitto to every edge being
  ready, which includes the start model's delivery.
- `peak_rss_total_ratio`: the sum of every process's peak RSS (VmHWM) over the run, and
  `concurrent_rss_ratio`: the largest sum of RSS in one sample (`bench/proctree.py`).
- `bytes_ratio`: TCP payload bytes both ways on the hub port over the whole run, the
  SuperLink's for Flower and Mosquitto's for fedstream (fedstream's includes delivering the
  last round's model to the edges, which Flower's run never sends).
Prints JSON lines: per configuration Flower's full result, fedstream's, then the comparison
(with both accuracy curves and the checks). Nothing here asserts an absolute time or size; the
exit code is 1 only when a check that the two tasks are the same fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedstream_rounds import planned_edge_samples, run_fedstream
from flower.run_flower import run_flower

from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES, Dataset
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol.arch import Architecture

FEATURES = 64
CLASSES = 10
PARTS = 3
ALPHA = 0.5
SMALL_HIDDEN = (100, 100)
ACCURACY_TOLERANCE = 1e-4  # the cloud reports its scores to four decimals


@dataclass(frozen=True)
class Exported:
    """What `export_task` wrote: each part's size, the start model's size and test score."""

    part_sizes: list[int]
    num_parameters: int
    initial_accuracy: float


def _save(path: Path, data: Dataset) -> None:
    np.savez(path, x=np.asarray(data.features, dtype=np.float32),
             y=np.asarray(data.labels, dtype=np.int64))


def _accuracy(model: torch.nn.Module, data: Dataset) -> float:
    model.eval()
    with torch.no_grad():
        guesses = model(torch.from_numpy(np.array(data.features))).argmax(dim=1).numpy()
    return float(np.mean(guesses == data.labels))


def export_task(out: Path, hidden: tuple[int, ...]) -> Exported:
    """Write `part-{0,1,2}.npz`, `test.npz` and `init.npz` into `out` (see the module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = []
    for part in range(PARTS):
        data = SOURCES.build("digits", partitions=PARTS, partition=part, alpha=ALPHA).load()
        _save(out / f"part-{part}.npz", data)
        sizes.append(len(data))
    test = SOURCES.build("digits", split="test").load()
    _save(out / "test.npz", test)
    model = build_model(Architecture.mlp((FEATURES, *hidden, CLASSES)), seed=0)
    arrays = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    np.savez(out / "init.npz", allow_pickle=False, **arrays)
    return Exported(part_sizes=sizes, num_parameters=sum(p.numel() for p in model.parameters()),
                    initial_accuracy=_accuracy(model, test))


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _ratio(flower: float | None, fedstream: float | None) -> float | None:
    if flower is None or fedstream is None or fedstream <= 0:
        return None
    return round(flower / fedstream, 3)


def checks(exported: Exported, fed: dict[str, Any]) -> dict[str, bool]:
    """Whether fedstream's edges held the exported parts and its cloud the exported model."""
    same_start = abs(fed["initial_accuracy"] - exported.initial_accuracy) <= ACCURACY_TOLERANCE
    return {"edge_samples": fed["edge_samples"] == exported.part_sizes,
            "initial_accuracy": same_start}


def compare(name: str, exported: Exported, flower: dict[str, Any],
            fed: dict[str, Any]) -> dict[str, Any]:
    """The comparison line: Flower / fedstream ratios, both curves, the checks."""
    fl_rounds, fs_rounds = flower["rounds"], fed["rounds"]
    overhead = {"flower": _median([r["overhead_s"] for r in fl_rounds]),
                "flower_to_eval": _median([r["overhead_eval_s"] for r in fl_rounds]),
                "fedstream": _median([r["overhead_s"] for r in fs_rounds])}
    fl_bytes, fs_bytes = flower["bytes"]["superlink_tcp"], fed["bytes"]["broker_tcp"]
    return {
        "comparison": name, "rounds": len(fl_rounds), "num_parameters": exported.num_parameters,
        "overhead_ratio": _ratio(overhead["flower"], overhead["fedstream"]),
        "overhead_eval_ratio": _ratio(overhead["flower_to_eval"], overhead["fedstream"]),
        "median_overhead_s": {k: round(v, 4) for k, v in overhead.items()},
        "startup_ratio": _ratio(flower["startup_s"], fed["startup_s"]),
        "startup_s": {"flower": flower["startup_s"], "fedstream": fed["startup_s"]},
        "peak_rss_total_ratio": _ratio(flower["peak_rss_mib"]["total"],
                                       fed["peak_rss_mib"]["total"]),
        "concurrent_rss_ratio": _ratio(flower["concurrent_rss_peak_mib"],
                                       fed["concurrent_rss_peak_mib"]),
        "peak_rss_total_mib": {"flower": flower["peak_rss_mib"]["total"],
                               "fedstream": fed["peak_rss_mib"]["total"]},
        "bytes_ratio": _ratio(fl_bytes, fs_bytes),
        "hub_tcp_bytes": {"flower": fl_bytes, "fedstream": fs_bytes},
        "accuracy": {"flower": [r["accuracy"] for r in fl_rounds],
                     "fedstream": [round(r["accuracy"], 4) for r in fs_rounds]},
        "initial_accuracy": round(exported.initial_accuracy, 4),
        "checks": checks(exported, fed),
    }


def run_config(name: str, hidden: tuple[int, ...], rounds: int, *, root: Path,
               cache_dir: Path) -> bool:
    """Export, run both sides, print their results and the comparison; whether checks held."""
    where = root / name
    shutil.rmtree(where, ignore_errors=True)
    exported = export_task(where / "data", hidden)
    planned = planned_edge_samples(where / "planned", edges=PARTS, alpha=ALPHA)
    if planned != exported.part_sizes:
        raise SystemExit(f"{name}: exported parts {exported.part_sizes} are not what the "
                         f"edges will load, {planned}")
    flower = run_flower(data_dir=where / "data", work_dir=where / "flower", rounds=rounds,
                        cache_dir=cache_dir)
    print(json.dumps({"config": name, **flower}), flush=True)
    fed = run_fedstream(work_dir=where / "fedstream", rounds=rounds, hidden=hidden,
                        edges=PARTS, alpha=ALPHA)
    print(json.dumps({"config": name, **fed}), flush=True)
    line = compare(name, exported, flower, fed)
    print(json.dumps(line), flush=True)
    return all(line["checks"].values())


def _hidden(text: str) -> tuple[int, ...]:
    return tuple(int(h) for h in text.split(","))


def _name(hidden: tuple[int, ...]) -> str:
    return "mlp-" + "-".join(str(n) for n in (FEATURES, *hidden, CLASSES))


def main() -> None:
    """CLI: run the configurations one after the other (see the module doc)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--big-hidden", type=_hidden, default=(3150, 3150))
    parser.add_argument("--cache-dir", type=Path, default=Path("build/flower-cache"))
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep configs, data and logs here (default: a temporary "
                             "directory, removed at the end)")
    args = parser.parse_args()
    configure_logging(json=False, level="warning", stream=sys.stderr)  # stdout: JSON lines
    configs = [(SMALL_HIDDEN, args.rounds)] + ([] if args.skip_big else [(args.big_hidden, 1)])
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="vs-flower-"))
    try:
        held = [run_config(_name(hidden), hidden, rounds, root=root.resolve(),
                           cache_dir=args.cache_dir) for hidden, rounds in configs]
    finally:
        if args.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if all(held) else 1)


if __name__ == "__main__":
    main()
