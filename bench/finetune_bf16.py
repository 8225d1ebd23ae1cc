"""Cloud fine-tune step speed and accuracy, fp32 against bf16, stock torch and IPEX, in one run.

    .venv/bin/python bench/finetune_bf16.py [--windows 4]

Prints JSON lines: the ISA first (CPU flags and what oneDNN reports), then samples/s of the
fine-tune step for each model x batch x backend x precision with `vs_stock_fp32` = its
samples/s over stock fp32's at that model and batch (above 1 is faster), then accuracy on the
digits test split after the same fine-tune steps in fp32 and bf16 with `bf16_minus_fp32_points`.
A backend that cannot load here gets a `skipped` line. Timed windows alternate between the
configurations and the best window of each counts, so a neighbour's burst of load on shared
cores hits all of them rather than deciding the contest.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator

import numpy as np
import torch

from fedstream.cloud.config import FinetuneConfig
from fedstream.cloud.finetune import FineTuner, mixed_batches
from fedstream.cloud.replay import Arrays
from fedstream.shared.learning.backends import BACKENDS, Backend, ipex_status
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.isa import bf16_isa, onednn_isa
from fedstream.shared.learning.metrics import ACCURACY
from fedstream.shared.learning.model import load_tensors, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.learning.tasks import evaluate, task_for
from fedstream.shared.learning.training import Batch, prepare_sgd, train_steps
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol.arch import Architecture

# The seed digits MLP, and a matmul-heavy one of 17.1M parameters where bf16 kernels matter.
MODELS = {"digits_mlp": Architecture.mlp((64, 100, 100, 10)),
          "wide_mlp": Architecture.mlp((64, 4096, 4096, 10))}
BATCHES = (64, 256)
PRECISIONS = ("fp32", "bf16")
WINDOW_S = 0.5  # shortest timed window
# Fine-tune steps (batch 64) before the accuracy check, and the learning rate per model.
ACCURACY_STEPS = {"digits_mlp": (300, 0.05), "wide_mlp": (50, 0.1)}


def emit(record: dict[str, object]) -> None:
    """One JSON line, flushed so a slow run shows progress."""
    print(json.dumps(record), flush=True)


def digits() -> tuple[Arrays, Arrays, Arrays]:
    """Fresh rows, replay rows (the two halves of the train split) and the test split."""
    train, test = SOURCES.build("digits").load(), SOURCES.build("digits", split="test").load()
    assert train.labels is not None and test.labels is not None  # digits is labelled
    x, y, half = np.array(train.features), np.array(train.labels), len(train.labels) // 2
    return (x[:half], y[:half]), (x[half:], y[half:]), (test.features, test.labels)


def backends() -> list[str]:
    """Backends that load in this venv; the others get a `skipped` line."""
    usable, why = ipex_status()
    if not usable:
        emit({"skipped": "ipex", "reason": why})
    return ["torch", "ipex"] if usable else ["torch"]


class Config:
    """One prepared model + optimizer stepping through the fine-tune batch stream."""

    def __init__(self, backend: Backend, arch: Architecture, batch: int,
                 data: tuple[Arrays, Arrays]) -> None:
        self.backend, self.arch, self.batch = backend, arch, batch
        self.model, self.optimizer = prepare_sgd(
            arch, tensors_of(build_model(arch, seed=0)), backend, lr=0.01, momentum=0.9)
        fresh, replay = ((torch.tensor(x), torch.tensor(y)) for x, y in data)
        self._stream: Iterator[Batch] = mixed_batches(
            fresh, replay, batch_size=batch, replay_ratio=0.5, steps=1 << 30,
            generator=torch.Generator().manual_seed(0))

    def steps(self, n: int) -> None:
        """`n` fine-tune steps, batch sampling included."""
        train_steps(self.model, self.optimizer, self.backend,
                    (next(self._stream) for _ in range(n)), arch=self.arch)

    def rate(self, window_s: float) -> float:
        """Samples/s over one window of whole steps lasting at least `window_s`.

        Timed by the clock rather than a step count fixed up front (from a calibration a burst
        of load can spoil), so every window is long enough to measure whatever a step costs.
        """
        began = time.perf_counter()
        steps, elapsed = 0, 0.0
        while elapsed < window_s:
            self.steps(1)
            steps, elapsed = steps + 1, time.perf_counter() - began
        return self.batch * steps / elapsed


def bench_speed(names: list[str], data: tuple[Arrays, Arrays], windows: int) -> None:
    """Samples/s of every backend x precision, best of `windows` alternating windows."""
    for model_name, arch in MODELS.items():
        for batch in BATCHES:
            configs = {(n, p): Config(BACKENDS.build(n, precision=p), arch, batch, data)
                       for n in names for p in PRECISIONS}
            for config in configs.values():
                config.steps(2)  # warm-up: first-call allocation, kernel selection, packing
            best = dict.fromkeys(configs, 0.0)
            for _ in range(windows):
                for key, config in configs.items():
                    best[key] = max(best[key], config.rate(WINDOW_S))
            baseline = best["torch", "fp32"]
            for (name, precision), rate in best.items():
                emit({"model": model_name, "batch": batch, "backend": name,
                      "precision": precision, "samples_per_s": round(rate, 1),
                      "vs_stock_fp32": round(rate / baseline, 2)})


def bench_accuracy(names: list[str], data: tuple[Arrays, Arrays, Arrays]) -> None:
    """Test accuracy after the same fine-tune steps in fp32 and in bf16, for every backend."""
    fresh, replay, (test_x, test_y) = data
    xs, ys = torch.tensor(test_x), torch.tensor(test_y)
    for model_name, arch in MODELS.items():
        steps, lr = ACCURACY_STEPS[model_name]
        start = tensors_of(build_model(arch, seed=0))
        for name in names:
            acc: dict[str, float] = {}
            for precision in PRECISIONS:
                params = FinetuneConfig(steps=steps, batch_size=64, lr=lr, backend=name,
                                        precision=precision)
                result = FineTuner(arch, params, seed=0).run(start, fresh, replay, seed=0)
                model = build_model(arch)
                load_tensors(model, result.tensors)
                acc[precision] = evaluate(model, task_for(arch.task), xs, ys)[ACCURACY.name]
            emit({"model": model_name, "backend": name, "steps": steps, "batch": 64,
                  "acc_fp32": round(acc["fp32"], 4), "acc_bf16": round(acc["bf16"], 4),
                  "bf16_minus_fp32_points": round(100 * (acc["bf16"] - acc["fp32"]), 2)})


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=4, help="timed windows per config")
    args = parser.parse_args()
    configure_logging(json=True, level="warning")  # keep stdout to this bench's JSON lines
    began = time.perf_counter()
    cpu = detect_cpu()
    emit({"cpu": cpu.model_name, "bf16_isa": bf16_isa(cpu), "avx512_bf16": cpu.avx512_bf16,
          "amx_bf16": cpu.amx_bf16, "onednn": onednn_isa(), "torch": torch.__version__,
          "ipex": ipex_status()[1], "threads": torch.get_num_threads()})
    names = backends()
    fresh, replay, test = digits()
    bench_speed(names, (fresh, replay), args.windows)
    speed_s = time.perf_counter() - began
    bench_accuracy(names, (fresh, replay, test))
    # Wall times, so a run slowed by other load on shared cores shows it.
    emit({"speed_s": round(speed_s, 1), "total_s": round(time.perf_counter() - began, 1)})


if __name__ == "__main__":
    main()
