"""Choosing the training backend by measuring it on the real model, off the caller's thread.

`AutoTuner.start` lists the candidates that can run here ({stock, IPEX} x {fp32, bf16}, see
`candidates.py`), looks the choice up in the on-disk cache (`choice_cache.py`) and otherwise
measures them in child processes (`children.py` running `measure.py`, one per backend), picks
the fastest whose loss stays within the tolerance of fp32's (`decision.py`) and caches it. The
caller gets a `Tuning` at once: ready when the cache answered (or there was nothing to
choose) and the choice is stock torch, else finished by a background thread, which is also
where IPEX is imported when it is chosen. So IPEX enters the service's process only when it
is the choice, and never while the caller waits.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog
import torch

from fedstream.shared.errors import ConfigError
from fedstream.shared.learning.backends.base import BACKENDS, Backend
from fedstream.shared.learning.backends.candidates import Candidate, candidates_here
from fedstream.shared.learning.backends.children import measure_in_children
from fedstream.shared.learning.backends.choice_cache import ChoiceCache, ChoiceKey
from fedstream.shared.learning.backends.decision import (
    DEFAULT_TOLERANCE,
    Decision,
    Timing,
    decide,
)
from fedstream.shared.learning.backends.measure import CANDIDATE_ERRORS, Plan
from fedstream.shared.learning.backends.selection import BackendChoice
from fedstream.shared.learning.cpu import CpuCaps, detect_cpu
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.training import prepare_sgd, probe_batch, train_steps
from fedstream.shared.protocol.arch import Architecture

log = structlog.get_logger(__name__)

Measure = Callable[[Plan, Sequence[Candidate], float], list[Timing]]
# `preload` looks for the newest choice of any model: the key's model part is ignored.
_ANY_ARCH = Architecture.mlp((1, 1))
_IPEX = "intel_extension_for_pytorch"


class TuneState(StrEnum):
    """Whether a service has its training backend yet."""

    TUNING = "tuning"
    READY = "ready"


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneParams:
    """How the autotuner chooses.

    Attributes:
        preference: "auto" (every usable backend) or a backend name.
        precision: "auto", "fp32" or "bf16".
        tolerance: Allowed loss difference from fp32, as a share (see `decide`).
        timeout_s: Measuring longer than this gives up and falls back to stock torch.
        seed: Seeds the measured model and batches.
    """

    preference: str = "auto"
    precision: str = "auto"
    tolerance: float = DEFAULT_TOLERANCE
    timeout_s: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.tolerance <= 1 and self.timeout_s > 0):
            raise ValueError(f"tolerance must be in [0, 1] and timeout_s > 0, got {self!r}")


class Tuning:
    """One choice under way; `result` gives it once made.

    Args:
        plan: The model and batch size it is for.
        candidates: What is (or was) measured.
    """

    def __init__(self, *, plan: Plan, candidates: tuple[Candidate, ...]) -> None:
        self.plan, self.candidates = plan, candidates
        self.started = time.monotonic()
        self._done = threading.Event()
        self._choice: BackendChoice | None = None

    @property
    def state(self) -> TuneState:
        """READY once the choice is made."""
        return TuneState.READY if self._done.is_set() else TuneState.TUNING

    def result(self, timeout: float | None = None) -> BackendChoice:
        """The choice, waiting up to `timeout` seconds (None: as long as it takes).

        Raises:
            TimeoutError: Still tuning after `timeout`.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"still tuning after {timeout} s")
        assert self._choice is not None
        return self._choice

    def describe(self) -> dict[str, str | float]:
        """Status fields while tuning: what is measured, for how long so far."""
        return {"state": str(self.state),
                "tuning": f"{self.plan.arch.describe()}, batch {self.plan.batch_size}: "
                          f"{', '.join(c.label for c in self.candidates)}",
                "tuning_s": round(time.monotonic() - self.started, 1)}

    def finish(self, choice: BackendChoice) -> None:
        """Record the choice (once) and wake whoever waits for it."""
        if not self._done.is_set():
            self._choice = choice
            self._done.set()


class AutoTuner:
    """Chooses training backends for one service.

    Args:
        cache: Where choices are kept; None measures every time (benchmarks, tests).
        params: What may be chosen and how.
        measure: Measures candidates (`measure_in_children`; tests pass a fake).
    """

    def __init__(self, *, cache: ChoiceCache | None, params: TuneParams,
                 measure: Measure = measure_in_children) -> None:
        self.cache, self.params, self._measure = cache, params, measure

    def plan(self, arch: Architecture, batch_size: int) -> Plan:
        """The measuring plan for `arch` at `batch_size`, with this process's threads."""
        return Plan(arch=arch, batch_size=batch_size, seed=self.params.seed,
                    threads=torch.get_num_threads())

    def batch_hint(self, arch: Architecture, default: int) -> int:
        """The batch size last tuned for `arch` (what a restart most likely trains with)."""
        hint = None if self.cache is None else self.cache.last_batch(self.plan(arch, 1))
        return default if hint is None else hint

    def preload(self) -> None:
        """Load now what the first training would load late: torch.optim's lazy imports
        (about 0.6 s on first use) and, when the likely choice is IPEX (the only candidate,
        or this machine's newest cached choice), IPEX itself (seconds). Called before a
        service goes online, so the first round after a restart costs what the others do.
        A later choice for another model may differ; IPEX, once loaded, stays."""
        _warm_optim()
        cpu = detect_cpu()
        try:
            candidates, _ = candidates_here(preference=self.params.preference,
                                            precision=self.params.precision, cpu=cpu)
        except ConfigError:
            return  # `start` reports it
        likely = candidates[0] if len(candidates) == 1 else None
        if likely is None and self.cache is not None:
            last = self.cache.newest_like(ChoiceKey.here(
                self.plan(_ANY_ARCH, 1), candidates, tolerance=self.params.tolerance, cpu=cpu))
            likely = None if last is None else last.chosen
        if likely is None or likely.backend == "torch":
            return
        try:
            BACKENDS.build(likely.backend, precision=likely.precision)
        except ConfigError as err:
            log.warning("backend_preload_failed", backend=likely.label,
                        reason=str(err.reason), detail=err.detail)
        else:
            log.info("backend_preloaded", backend=likely.label)

    def start(self, arch: Architecture, batch_size: int, *,
              on_done: Callable[[], None] | None = None) -> Tuning:
        """Start choosing for `arch` at `batch_size`.

        Args:
            arch: The model that will train.
            batch_size: Rows per step it trains with.
            on_done: Called on the background thread when a tuning that was not ready at
                once is (e.g. to wake a message loop).

        Returns:
            The tuning; ready at once on a cached or forced stock-torch choice.

        Raises:
            ConfigError: BACKEND_UNAVAILABLE, UNKNOWN_NAME or BAD_CONFIG for what the params
                ask (see `candidates_here`).
        """
        cpu = detect_cpu()
        candidates, notes = candidates_here(preference=self.params.preference,
                                            precision=self.params.precision, cpu=cpu)
        plan = self.plan(arch, batch_size)
        tuning = Tuning(plan=plan, candidates=candidates)
        key = ChoiceKey.here(plan, candidates, tolerance=self.params.tolerance, cpu=cpu)
        known, how = self._known(key, candidates, notes)
        job = _Job(tuning=tuning, key=key, cpu=cpu, known=known, how=how)
        # Building is instant unless it imports IPEX: that takes seconds, so off this thread.
        if known is not None and (known.chosen.backend != "ipex" or _IPEX in sys.modules):
            tuning.finish(self._build(job, known, how))
            return tuning
        worker = threading.Thread(target=self._finish, args=(job, on_done),
                                  name="backend-tuning", daemon=True)
        worker.start()
        return tuning

    def _known(self, key: ChoiceKey, candidates: tuple[Candidate, ...],
               notes: str) -> tuple[Decision | None, str]:
        """A decision needing no measuring: the only candidate, or a cached one."""
        if len(candidates) == 1:
            asked: list[str] = []
            if self.params.preference != "auto":
                asked.append(f"{self.params.preference} requested")
            if self.params.precision != "auto":
                asked.append(f"precision {self.params.precision} requested")
            why = "; ".join(asked + ([notes] if notes else []))
            return Decision(chosen=candidates[0],
                            reason=f"{candidates[0].label}: the only candidate ({why})"), \
                "only_candidate"
        cached = None if self.cache is None else self.cache.get(key)
        return cached, "cached"

    def _finish(self, job: _Job, on_done: Callable[[], None] | None) -> None:
        """The background part: measure when nothing is known, build, report."""
        try:
            job.tuning.finish(self._decide_and_build(job))
        except Exception as err:
            # The worker's one broad guard: a service left waiting on a tuning that died
            # would never train again. Fall back to the backend that works everywhere.
            log.exception("backend_tuning_failed", detail=repr(err))
            fallback = Decision(chosen=Candidate(backend="torch", precision="fp32"),
                                reason=f"torch/fp32: tuning failed ({err!r})")
            job.tuning.finish(self._build(job, fallback, "fallback"))
        finally:
            if on_done is not None:
                on_done()

    def _decide_and_build(self, job: _Job) -> BackendChoice:
        if job.known is not None:
            return self._build(job, job.known, job.how)
        plan, candidates = job.tuning.plan, job.tuning.candidates
        log.info("backend_tuning_started", model=plan.arch.describe(), batch=plan.batch_size,
                 candidates=",".join(c.label for c in candidates))
        timings = self._measure(plan, candidates, self.params.timeout_s)
        try:
            decision = decide(timings, tolerance=self.params.tolerance)
        except ValueError as err:
            # Not cached: the next start measures again.
            return self._build(job, Decision(chosen=Candidate(backend="torch", precision="fp32"),
                                             reason=f"torch/fp32: {err}",
                                             timings=tuple(timings)), "fallback")
        if self.cache is not None:
            self.cache.put(job.key, decision)
        return self._build(job, decision, "measured")

    def _build(self, job: _Job, decision: Decision, how: str) -> BackendChoice:
        chosen, reason, plan = decision.chosen, decision.reason, job.tuning.plan
        try:
            backend = BACKENDS.build(chosen.backend, precision=chosen.precision)
        except ConfigError as err:
            # Measured in a child, yet it fails to load here (a broken install since).
            backend = BACKENDS.build("torch", precision=chosen.precision)
            reason += f"; {chosen.label} failed to load here ({err.detail}): torch instead"
            how = "fallback"
        choice = BackendChoice(backend=backend, reason=reason, cpu=job.cpu,
                               bf16_speedup=_bf16_speedup(decision), tuned=how,
                               step_ms=decision.step_ms())
        _warm_up(plan, backend)
        log.info("backend_selected", model=plan.arch.describe(), batch=plan.batch_size,
                 **choice.describe())
        return choice


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    """One `start`: its tuning and key, and a decision already known (cached, or the only
    candidate) with how it is known."""

    tuning: Tuning
    key: ChoiceKey
    cpu: CpuCaps
    known: Decision | None
    how: str


def _warm_optim() -> None:
    """Build one optimizer: torch.optim imports torch._dynamo on first use."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _warm_up(plan: Plan, backend: Backend) -> None:
    """Two steps of the real model at the real batch size: lazy initialisation (kernels,
    allocator, the optimizer's imports) is paid here, not by the first round."""
    model, x, y = probe_batch(plan.arch, plan.batch_size, plan.seed)
    try:
        trained, optimizer = prepare_sgd(plan.arch, tensors_of(model), backend, lr=plan.lr,
                                         momentum=plan.momentum)
        train_steps(trained, optimizer, backend, [(x, y)] * 2, arch=plan.arch)
    except CANDIDATE_ERRORS as err:
        # The rounds will meet the same failure and decline with it; nothing to add here.
        log.warning("backend_warm_up_failed", backend=backend.name, detail=str(err))


def _bf16_speedup(decision: Decision) -> float | None:
    """fp32 time / bf16 time of the chosen backend, when both were measured."""
    ms = decision.step_ms()
    fp32, bf16 = (ms.get(f"{decision.chosen.backend}/{p}") for p in ("fp32", "bf16"))
    return fp32 / bf16 if fp32 and bf16 else None
