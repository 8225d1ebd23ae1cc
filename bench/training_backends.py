"""Training step speed of every backend x precision against stock fp32, measured in one run.

    .venv/bin/python bench/training_backends.py [--steps 60]

Prints one JSON line per (model, backend, precision) with `vs_stock_fp32` = stock fp32 time /
this time (above 1 is faster). Why it exists: on one AMX machine stock bf16 beat fp32 1.8x on
a wide MLP and lost 2x on the small seed MLP, so the edge measures before choosing.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fedstream.shared.learning.backends import BACKENDS, ipex_status
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.training import probe_batch
from fedstream.shared.protocol.arch import Architecture

MODELS = {"seed_mlp": (Architecture.mlp((64, 100, 100, 10)), 32),
          "wide_mlp": (Architecture.mlp((784, 2048, 2048, 10)), 256)}


def time_steps(name: str, precision: str, arch: Architecture, batch: int, steps: int) -> float:
    """Best-of-3 seconds for `steps` SGD steps through one backend."""
    backend = BACKENDS.build(name, precision=precision)
    model, x, y = probe_batch(arch, batch, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model, opt = backend.prepare_training(model, opt)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with backend.autocast():
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

    run(5)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run(steps)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    cpu = detect_cpu()
    names = ["torch"] + (["ipex"] if ipex_status()[0] else [])
    print(json.dumps({"cpu": cpu.model_name, "avx512_bf16": cpu.avx512_bf16,
                      "amx_bf16": cpu.amx_bf16, "torch": torch.__version__,
                      "ipex": ipex_status()[1], "threads": torch.get_num_threads()}))
    for model_name, (arch, batch) in MODELS.items():
        steps = args.steps if model_name == "seed_mlp" else max(5, args.steps // 6)
        baseline = time_steps("torch", "fp32", arch, batch, steps)
        for name in names:
            for precision in ("fp32", "bf16"):
                t = baseline if (name, precision) == ("torch", "fp32") else time_steps(
                    name, precision, arch, batch, steps)
                print(json.dumps({"model": model_name, "backend": name, "precision": precision,
                                  "ms_per_step": round(1000 * t / steps, 3),
                                  "vs_stock_fp32": round(baseline / t, 2)}), flush=True)


if __name__ == "__main__":
    main()
