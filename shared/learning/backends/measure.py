"""Timing training candidates in this process, and the child-process entry that does it.

    python -m fedstream.shared.learning.backends.measure   (driven by `children.py`)

The autotuner runs this module as child processes, one per backend, so that measuring never
blocks a service's message loop and IPEX is only imported by a process that exists to time it
(its import costs seconds and hundreds of MiB that a service on stock torch should not carry).
Logs go to stderr; stdout carries only the protocol's JSON lines.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import torch

from fedstream.shared.errors import ConfigError
from fedstream.shared.learning.backends.base import BACKENDS, Backend
from fedstream.shared.learning.backends.candidates import Candidate
from fedstream.shared.learning.backends.decision import Timing
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.training import Batch, prepare_sgd, probe_batch, train_steps
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol.arch import Architecture

# What a candidate may fail with while it is built or trained (IPEX refusing a layer, a
# kernel missing for a dtype): that candidate is reported failed, the others still run.
CANDIDATE_ERRORS = (ConfigError, RuntimeError, ValueError, TypeError, NotImplementedError,
                     AssertionError, ImportError, OSError)
_MAX_STEPS = 2000
SPREAD = 0.05
# Repeats go on past `Plan.repeats` until the times settle, up to this many times as many.
MAX_ROUNDS_FACTOR = 3
# This module's own name, for `python -m` (`__name__` is "__main__" in the child).
MODULE = "fedstream.shared.learning.backends.measure"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How candidates are measured: the model, batch size and the measuring protocol.

    Attributes:
        arch: The model to train.
        batch_size: Rows per step, as the service trains.
        seed: Seeds the model's initial weights and the random batches.
        threads: torch threads (the service's own count); 0 keeps torch's default.
        check_steps: Steps from the seed whose mean loss is compared between candidates;
            they also warm each candidate up before it is timed.
        lr: SGD learning rate of those steps.
        momentum: SGD momentum of those steps.
        target_s: Seconds each timed repeat should last (the step count is fitted to it).
        repeats: Timed repeats per candidate at least, interleaved across candidates; more
            follow until the two best agree (`settled`). The best counts, so a neighbour's
            burst of load on shared cores does not decide the contest.
    """

    arch: Architecture
    batch_size: int
    seed: int = 0
    threads: int = 0
    check_steps: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    target_s: float = 0.1
    repeats: int = 5

    def __post_init__(self) -> None:
        if not (self.batch_size >= 1 and self.threads >= 0 and self.check_steps >= 1
                and self.repeats >= 1 and self.lr > 0 and 0 <= self.momentum < 1
                and self.target_s > 0):
            raise ValueError(f"bad measuring plan {self.to_wire()!r}")

    def to_wire(self) -> dict[str, Any]:
        """JSON-safe fields; the architecture in its manifest form."""
        return {"arch": self.arch.to_wire(), "batch": self.batch_size, "seed": self.seed,
                "threads": self.threads, "steps": self.check_steps, "lr": self.lr,
                "momentum": self.momentum, "target_s": self.target_s, "repeats": self.repeats}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse what `to_wire` wrote.

        Raises:
            ProtocolError: A bad architecture.
            ValueError, TypeError, KeyError: Other missing or bad fields.
        """
        return cls(arch=Architecture.from_wire(d["arch"]), batch_size=int(d["batch"]),
                   seed=int(d["seed"]), threads=int(d["threads"]),
                   check_steps=int(d["steps"]), lr=float(d["lr"]),
                   momentum=float(d["momentum"]), target_s=float(d["target_s"]),
                   repeats=int(d["repeats"]))


@dataclass(slots=True)
class _Run:
    """A candidate prepared for timing, with the seconds per step of each repeat so far."""

    candidate: Candidate
    loss: float
    backend: Backend
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    steps: int = 2
    times: list[float] = field(default_factory=list)


class Session:
    """Candidates prepared in this process, timed one repeat at a time.

    Every candidate starts from the same seeded weights and takes the same `check_steps`
    batches (its loss, for the tolerance check), then each `repeat` times it on repeated
    steps of one batch; the best repeat counts.

    Args:
        plan: What to train and how long each repeat lasts.
        candidates: What to measure, in order; IPEX ones import IPEX into this process.
    """

    def __init__(self, plan: Plan, candidates: Sequence[Candidate]) -> None:
        if plan.threads:
            torch.set_num_threads(plan.threads)
        self.plan = plan
        model, x, y = probe_batch(plan.arch, plan.batch_size * plan.check_steps, plan.seed)
        start = tensors_of(model)
        size = plan.batch_size
        self._batches: list[Batch] = [(x[i:i + size], y[i:i + size])
                                      for i in range(0, len(y), size)]
        self._entries: list[_Run | Timing] = []
        for candidate in candidates:
            try:
                self._entries.append(_prepare(plan, candidate, start, self._batches))
            except CANDIDATE_ERRORS as err:
                self._entries.append(Timing(candidate=candidate, step_s=math.inf,
                                            loss=math.nan, error=f"{type(err).__name__}: {err}"))

    def repeat(self) -> list[float]:
        """Time every prepared candidate once more, each after a few untimed steps (the
        first steps after a pause, another process having had the cores, run slow).

        Returns:
            Seconds per step of each prepared candidate in this repeat, in order.
        """
        times = []
        for run in self._entries:
            if isinstance(run, _Run):
                _per_step(self.plan, run, self._batches[0], max(2, run.steps // 10))
                took = _per_step(self.plan, run, self._batches[0], run.steps)
                run.times.append(took)
                times.append(took)
        return times

    def settled(self) -> bool:
        """Whether every prepared candidate has its `plan.repeats` repeats and agrees with
        itself (see `settled`)."""
        return all(settled(r.times, self.plan.repeats) for r in self._entries
                   if isinstance(r, _Run))

    def timings(self) -> list[Timing]:
        """One per candidate, in order; a candidate that failed carries its error."""
        return [Timing(candidate=e.candidate, step_s=min(e.times, default=math.inf),
                       loss=e.loss) if isinstance(e, _Run) else e for e in self._entries]


def settled(times: Sequence[float], repeats: int) -> bool:
    """At least `repeats` times, and the two best within `SPREAD` of each other: two quiet
    repeats agree, so the best is not one lucky or one disturbed run (on shared cores a
    neighbour's burst slows a repeat several-fold)."""
    best = sorted(times)[:2]
    return len(times) >= repeats and len(best) == 2 and best[1] <= best[0] * (1 + SPREAD)


def measure(plan: Plan, candidates: Sequence[Candidate]) -> list[Timing]:
    """Train and time each candidate in this process: interleaved repeats until each has
    settled, at most `MAX_ROUNDS_FACTOR * plan.repeats` of them.

    Returns:
        One timing per candidate, in order; a candidate that failed carries its error.
    """
    session = Session(plan, candidates)
    for _ in range(MAX_ROUNDS_FACTOR * plan.repeats):
        session.repeat()
        if session.settled():
            break
    return session.timings()


def _prepare(plan: Plan, candidate: Candidate, start: list[torch.Tensor],
             batches: list[Batch]) -> _Run:
    """Build, check the loss of, warm up and fit the step count of one candidate."""
    backend = BACKENDS.build(candidate.backend, precision=candidate.precision)
    model, optimizer = prepare_sgd(plan.arch, start, backend, lr=plan.lr,
                                   momentum=plan.momentum)
    loss = train_steps(model, optimizer, backend, batches, arch=plan.arch).loss
    run = _Run(candidate=candidate, loss=loss, backend=backend, model=model,
               optimizer=optimizer)
    first = _per_step(plan, run, batches[0], 2)
    run.steps = max(2, min(_MAX_STEPS, math.ceil(plan.target_s / max(first, 1e-9))))
    return run


def _per_step(plan: Plan, run: _Run, batch: Batch, steps: int) -> float:
    began = time.perf_counter()
    train_steps(run.model, run.optimizer, run.backend, itertools.repeat(batch, steps),
                arch=plan.arch)
    return (time.perf_counter() - began) / steps


def _exit_with_parent(parent: int) -> None:
    """End this process once `parent` is gone (reparented), so a stopped service leaves no
    measuring child behind."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> int:
    """Serve one parent over stdin/stdout, a JSON line each way (see `children.py`).

    The first line is the request; "ready" follows once every candidate is prepared; each
    "go" is answered by "repeated" with that repeat's times; "end" by the timings.
    """
    configure_logging(json=True, level="warning", stream=sys.stderr)
    request = json.loads(sys.stdin.readline())
    _exit_with_parent(int(request["parent"]))
    session = Session(Plan.from_wire(request["plan"]),
                      [Candidate.parse(c) for c in request["candidates"]])
    _answer({"ready": True})
    for line in sys.stdin:
        if line.strip() != "go":
            break
        _answer({"repeated": session.repeat()})
    _answer({"timings": [t.to_wire() for t in session.timings()]})
    return 0


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"measure": message}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
