"""Edge training step time of every model family per backend x precision, vs stock fp32.

    .venv/bin/python bench/model_families.py [--steps 20] [--rounds 5]

Each family (default params) trains on a sensor-sized batch: 64 windows of 6 channels x 50
steps, 4 classes, through `prepare_sgd`/`train_steps` as the edge does. The rounds alternate
over every (backend, precision) and each keeps its best round, so a neighbour's burst of load
on the shared cores hits all of them rather than deciding the contest. Prints one JSON line
per (family, backend, precision) with `vs_stock_fp32` = stock fp32 time / this time (above 1 is
faster), then the same ratios as a table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from fedstream.shared.learning.backends import BACKENDS, ipex_status
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.training import Batch, prepare_sgd, train_steps
from fedstream.shared.protocol.arch import Architecture, TaskKind

FAMILIES = ("mlp", "cnn1d", "gru", "transformer")
SHAPE, BATCH, CLASSES = (6, 50), 64, 4
BASELINE = ("torch", "fp32")


def _batch() -> Batch:
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(BATCH, SHAPE[0] * SHAPE[1], generator=gen),
            torch.randint(0, CLASSES, (BATCH,), generator=gen))


def time_family(family: str, cases: list[tuple[str, str]], steps: int,
                rounds: int) -> dict[tuple[str, str], float]:
    """Best-of-`rounds` seconds per step of one family for each (backend, precision)."""
    arch = Architecture(family=family, input_shape=SHAPE, task=TaskKind.CLASSIFICATION,
                        outputs=CLASSES)
    start = tensors_of(build_model(arch, seed=0))
    batch = _batch()
    runs = {}
    for name, precision in cases:
        backend = BACKENDS.build(name, precision=precision)
        model, optimizer = prepare_sgd(arch, start, backend, lr=0.01, momentum=0.9)
        train_steps(model, optimizer, backend, [batch] * 3, arch=arch)  # warm-up
        runs[name, precision] = (model, optimizer, backend)
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for case, (model, optimizer, backend) in runs.items():
            begin = time.perf_counter()
            train_steps(model, optimizer, backend, [batch] * steps, arch=arch)
            best[case] = min(best[case], (time.perf_counter() - begin) / steps)
    return best


def main() -> None:
    """Measure, print JSON lines, then the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # IPEX's deprecation and layer_norm notes, not results
    cpu = detect_cpu()
    usable, why = ipex_status()
    cases = [(n, p) for n in ("torch", *(("ipex",) if usable else ())) for p in ("fp32", "bf16")]
    print(json.dumps({"cpu": cpu.model_name, "avx512_bf16": cpu.avx512_bf16,
                      "amx_bf16": cpu.amx_bf16, "torch": torch.__version__, "ipex": why,
                      "threads": torch.get_num_threads(), "shape": list(SHAPE),
                      "batch": BATCH, "classes": CLASSES}))
    table = []
    for family in FAMILIES:
        best = time_family(family, cases, args.steps, args.rounds)
        ratios = {case: best[BASELINE] / t for case, t in best.items()}
        for (name, precision), t in best.items():
            print(json.dumps({"family": family, "backend": name, "precision": precision,
                              "ms_per_step": round(1000 * t, 3),
                              "vs_stock_fp32": round(ratios[name, precision], 2)}), flush=True)
        table.append((family, 1000 * best[BASELINE], ratios))
    print(f"\n{'family':<12} {'torch fp32 ms':>13}" + "".join(f" {n + ' ' + p:>10}"
                                                       for n, p in cases))
    for family, ms, ratios in table:
        print(f"{family:<12} {ms:>13.2f}" + "".join(f" {ratios[c]:>9.2f}x" for c in cases))


if __name__ == "__main__":
    main()
