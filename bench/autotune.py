"""The autotuner's backend choice against the best of the candidates timed by hand, one run.

    .venv/bin/python bench/autotune.py [--rounds 5] [--only digits_mlp,gru]

For each model (the digits MLP, a wide MLP and the sensor demo's families over [6 channels x
20 steps]) the autotuner chooses among {stock, IPEX} x {fp32, bf16} (what can run here), as
a service does: in child processes, uncached. Then a plain timing loop measures every
candidate: the same SGD step (`train_steps`), ROUNDS interleaved rounds of a fixed number of
steps, the best round counts. The loop runs in a fresh process per backend (this script with
`--hand`), twice, alternating, the best of both counting: IPEX loaded in a process moves stock
torch's own step time by a few percent (here -4% to +4% by model), and a service on stock
torch runs without it. Prints one JSON line per model with
`autotune_vs_best` = hand time of the autotuner's choice / the best hand time (1.0: it chose
the fastest; the aim is at most 1.05), the hand times and the tuning's wall time. Nothing here
asserts an absolute time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time

import torch

from fedstream.shared.learning.backends import BACKENDS, ipex_status
from fedstream.shared.learning.backends.autotune import AutoTuner, TuneParams
from fedstream.shared.learning.backends.candidates import Candidate, candidates_here
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.training import prepare_sgd, probe_batch, train_steps
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol.arch import Architecture, TaskKind

# The sensor demo's windows (fedstream/demo_sensors.py): 6 channels x 20 steps, 4 motions or
# a 3-channel x 3-step forecast, batches of 32.
WINDOW = (6, 20)
MODELS: dict[str, tuple[Architecture, int]] = {
    "digits_mlp": (Architecture.mlp((64, 100, 100, 10)), 32),
    "wide_mlp": (Architecture.mlp((784, 4096, 4096, 10)), 128),
    "cnn1d": (Architecture(family="cnn1d", input_shape=WINDOW, task=TaskKind.CLASSIFICATION,
                           outputs=4, params={"channels": (16, 16), "kernel": 5}), 32),
    "gru": (Architecture(family="gru", input_shape=WINDOW, task=TaskKind.REGRESSION,
                         outputs=9, params={"hidden": 32}), 32),
    "transformer": (Architecture(family="transformer", input_shape=WINDOW,
                                 task=TaskKind.CLASSIFICATION, outputs=4), 32),
}
TARGET_S = 0.25  # seconds per timed round of one candidate


def by_hand(name: str, candidates: tuple[Candidate, ...], rounds: int,
            passes: int = 2) -> dict[str, float]:
    """Best seconds per step of each candidate, each backend's timed in its own process,
    the backends alternating for `passes` passes."""
    best: dict[str, float] = {}
    groups = [[c.label for c in g] for _, g in itertools.groupby(candidates,
                                                                  key=lambda c: c.backend)]
    for _ in range(passes):
        for labels in groups:
            done = subprocess.run(
                [sys.executable, __file__, "--hand", name, "--rounds", str(rounds),
                 "--only", ",".join(labels)], capture_output=True, text=True, check=True,
                timeout=900)
            for label, took in json.loads(done.stdout.strip().splitlines()[-1]).items():
                best[label] = min(best.get(label, float("inf")), took)
    return best


def hand_loop(arch: Architecture, batch: int, candidates: list[Candidate],
              rounds: int) -> dict[str, float]:
    """Best seconds per step of each candidate, timed in this process in interleaved rounds."""
    model, x, y = probe_batch(arch, batch, seed=0)
    start = tensors_of(model)
    prepared = []
    for c in candidates:
        backend = BACKENDS.build(c.backend, precision=c.precision)
        trained, optimizer = prepare_sgd(arch, start, backend, lr=0.01, momentum=0.9)
        train_steps(trained, optimizer, backend, [(x, y)] * 5, arch=arch)  # warm up
        began = time.perf_counter()
        train_steps(trained, optimizer, backend, [(x, y)] * 3, arch=arch)
        steps = max(3, round(TARGET_S / ((time.perf_counter() - began) / 3)))
        prepared.append((c.label, backend, trained, optimizer, steps))
    best = {label: float("inf") for label, *_ in prepared}
    for _ in range(rounds):
        for label, backend, trained, optimizer, steps in prepared:
            began = time.perf_counter()
            train_steps(trained, optimizer, backend, itertools.repeat((x, y), steps),
                        arch=arch)
            best[label] = min(best[label], (time.perf_counter() - began) / steps)
    return best


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated model names (with "
                        "--hand: candidate labels)")
    parser.add_argument("--hand", default="", help=argparse.SUPPRESS)  # the loop's process
    args = parser.parse_args()
    configure_logging(json=True, level="warning", stream=sys.stderr)
    if args.hand:
        arch, batch = MODELS[args.hand]
        labels = [Candidate.parse(c) for c in args.only.split(",")]
        print(json.dumps(hand_loop(arch, batch, labels, args.rounds)))
        return
    cpu = detect_cpu()
    candidates, notes = candidates_here(preference="auto", precision="auto", cpu=cpu)
    print(json.dumps({"cpu": cpu.model_name, "avx512_bf16": cpu.avx512_bf16,
                      "amx_bf16": cpu.amx_bf16, "torch": torch.__version__,
                      "ipex": ipex_status()[1], "threads": torch.get_num_threads(),
                      "candidates": [c.label for c in candidates], "left_out": notes}),
          flush=True)
    tuner = AutoTuner(cache=None, params=TuneParams())
    names = [n for n in args.only.split(",") if n] or list(MODELS)
    for name in names:
        arch, batch = MODELS[name]
        began = time.perf_counter()
        choice = tuner.start(arch, batch).result()
        tune_s = time.perf_counter() - began
        chosen = f"{choice.backend.name}/{choice.backend.precision}"
        hand = by_hand(name, candidates, args.rounds)
        fastest = min(hand, key=lambda label: hand[label])
        print(json.dumps({
            "model": name, "batch": batch, "chosen": chosen, "best_by_hand": fastest,
            "autotune_vs_best": round(hand[chosen] / hand[fastest], 3),
            "hand_ms_per_step": {k: round(1000 * v, 3) for k, v in hand.items()},
            "tuned_ms_per_step": dict(choice.step_ms), "tune_s": round(tune_s, 1)}),
            flush=True)


if __name__ == "__main__":
    main()
