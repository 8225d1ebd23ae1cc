"""Cloud fine-tuning: a few SGD steps on the aggregate with fresh cloud data mixed with replay.

An optional anchor pulls the weights back toward the aggregate (L2-SP, or EWC weighted by the
aggregate's Fisher information; cloud/anchors.py), so the cloud's small data set adapts the
federated model without overwriting what the edges taught it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch

from fedstream.cloud.anchors import FISHER_SAMPLES, anchor_penalty, fisher_diagonal
from fedstream.cloud.config import FinetuneConfig
from fedstream.cloud.replay import Arrays, check_batch
from fedstream.shared.learning.backends import Backend, BackendChoice
from fedstream.shared.learning.backends.autotune import AutoTuner, TuneParams
from fedstream.shared.learning.backends.choice_cache import CACHE_FILE, ChoiceCache
from fedstream.shared.learning.isa import bf16_isa, onednn_isa
from fedstream.shared.learning.model import load_tensors, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.tasks import task_for
from fedstream.shared.learning.training import Batch, Penalty, prepare_sgd, train_steps
from fedstream.shared.protocol.arch import Architecture, TaskKind

log = structlog.get_logger(__name__)

# Enough samples for a stable per-weight ranking; the estimate is one batched backward pass.
# While the backend is still being measured, the wait wakes this often to ping the watchdog.
_WAIT_SLICE_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FinetuneResult:
    """Fine-tuned weights and how they were made.

    Attributes:
        tensors: fp32 weights in spec order; copies of `start` when nothing ran.
        steps: Optimizer steps taken; 0 when fine-tuning is off or there is no data.
        samples: Rows drawn over all steps (with replacement, so a row can recur).
        loss: Mean cross-entropy over the steps, anchor excluded; 0.0 when no step ran.
        seconds: Wall time of `run`, anchor setup included.
        backend: Backend that trained ("torch", "ipex").
        precision: "fp32" or "bf16".
        isa: The bf16 instruction set the fine-tune runs on: what the CPU flags offer
            (`shared.learning.isa.bf16_isa`) when training in bf16, "none" in fp32.
        onednn_isa: oneDNN's own ISA line, "not_probed" or "unknown".
        onednn_impl: oneDNN's bf16 matmul kernels, "not_probed" or "unknown".
        anchor: "none", "l2sp" or "ewc".
    """

    tensors: list[torch.Tensor]
    steps: int
    samples: int
    loss: float
    seconds: float
    backend: str
    precision: str
    isa: str
    onednn_isa: str
    onednn_impl: str
    anchor: str

    def info(self) -> dict[str, str | int | float]:
        """Flat scalar fields for the model registry and the `model_finetuned` log line."""
        return {"backend": self.backend, "precision": self.precision, "isa": self.isa,
                "onednn_isa": self.onednn_isa, "onednn_impl": self.onednn_impl,
                "steps": self.steps, "samples": self.samples, "loss": self.loss,
                "seconds": self.seconds, "anchor": self.anchor}


def batch_split(batch_size: int, replay_ratio: float, fresh_rows: int,
                replay_rows: int) -> tuple[int, int]:
    """Rows each batch takes from fresh data and from replay.

    Args:
        batch_size: Rows per batch.
        replay_ratio: Share of a batch drawn from replay, in [0, 1].
        fresh_rows: Rows of fresh data available.
        replay_rows: Rows in the replay buffer.

    Returns:
        (fresh, replay) counts: `round(batch_size * (1 - replay_ratio))` fresh and the rest
        replay; the whole batch from one source when the other is empty; (0, 0) when both are.
    """
    if fresh_rows == 0:
        return 0, batch_size if replay_rows else 0
    if replay_rows == 0:
        return batch_size, 0
    fresh = round(batch_size * (1 - replay_ratio))
    return fresh, batch_size - fresh


def mixed_batches(fresh: Batch, replay: Batch, *, batch_size: int, replay_ratio: float,
                  steps: int, generator: torch.Generator) -> Iterator[Batch]:
    """`steps` batches mixing the two sources as `batch_split` says, fresh rows first.

    Rows are drawn uniformly with replacement, so a small fresh set still fills its share.

    Raises:
        ValueError: Both sources are empty (on the first batch).
    """
    if len(fresh[1]) + len(replay[1]) == 0:
        raise ValueError("mixed_batches needs rows in fresh or replay")
    counts = batch_split(batch_size, replay_ratio, len(fresh[1]), len(replay[1]))
    sources = [(x, y, n) for (x, y), n in zip((fresh, replay), counts, strict=True) if n]
    for _ in range(steps):
        picks = [(x, y, torch.randint(len(y), (n,), generator=generator)) for x, y, n in sources]
        yield torch.cat([x[i] for x, _, i in picks]), torch.cat([y[i] for _, y, i in picks])


def trained_layout(arch: Architecture, tensors: Sequence[torch.Tensor],
                   backend: Backend) -> list[torch.Tensor]:
    """Spec-order `tensors` as fp32 copies laid out like the backend's trained parameters.

    IPEX bf16 packs each Linear weight into a blocked, zero-padded bf16 layout, so the trained
    parameters cannot be paired with spec-order tensors. Preparing a model that holds `tensors`
    the same way lines them up element by element, padding included (zero in both); θ₀ is
    then rounded to bf16 exactly as the trained copy of it is, so the anchor is zero at start.
    """
    model, _ = prepare_sgd(arch, tensors, backend, lr=1.0, momentum=0.0)
    return [p.detach().to(torch.float32) for p in model.parameters()]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chosen:
    """The fine-tuner's backend once its tuning is done, and what it runs on."""

    backend: Backend
    reason: str
    isa: str
    onednn: dict[str, str]


class FineTuner:
    """Fine-tunes aggregates on the cloud's own data; built once per cloud service.

    Construction starts choosing the backend and precision (`AutoTuner`): every usable
    backend x precision is measured on the cloud model at the configured batch size, in child
    processes and off the caller's thread, unless the choice is cached in `data_dir`. The
    first `run` (or `backend`) waits for it; with the cache that is at once. oneDNN is asked
    which bf16 kernel it runs only when training in bf16, where that kernel (AMX tiles,
    AVX-512 bf16 or a fallback) decides the speed; the answer costs a child process of 2-3 s.
    The child runs stock torch's oneDNN (IPEX bundles its own build, which picks from the
    same CPU flags).

    Args:
        arch: The model's architecture (a classification model: the cloud's data is labelled).
        params: The `continual.finetune` config section.
        seed: Seeds the model and inputs that backends are measured on.
        probe_onednn: Ask oneDNN for its ISA in fp32 too.
        data_dir: The service's data directory, where the choice is cached
            (`backend-choice.json`); None measures every time.
        on_step: Called after each training step and while waiting for the measuring: the
            service's watchdog ping (fine-tuning runs on its loop).

    Raises:
        ConfigError: BACKEND_UNAVAILABLE, UNKNOWN_NAME or BAD_CONFIG for the backend and
            precision the params name.
    """

    def __init__(self, arch: Architecture, params: FinetuneConfig, seed: int, *,
                 probe_onednn: bool = False, data_dir: Path | None = None,
                 on_step: Callable[[], None] | None = None) -> None:
        self.arch, self.params = arch, params
        self._probe_onednn = probe_onednn
        self._on_step = on_step
        tuner = AutoTuner(cache=None if data_dir is None else ChoiceCache(data_dir / CACHE_FILE),
                          params=TuneParams(preference=params.backend,
                                            precision=params.precision, seed=seed))
        self._tuning = tuner.start(arch, params.batch_size)
        self._chosen: _Chosen | None = None

    @property
    def backend(self) -> Backend:
        """The backend fine-tuning trains with (waits for the tuning)."""
        return self._choose().backend

    @property
    def reason(self) -> str:
        """Why that backend and precision."""
        return self._choose().reason

    @property
    def isa(self) -> str:
        """The bf16 instruction set the CPU flags offer when training in bf16, else "none"."""
        return self._choose().isa

    @property
    def onednn(self) -> dict[str, str]:
        """oneDNN's own ISA line and bf16 kernels, or "not_probed"."""
        return self._choose().onednn

    def _choose(self) -> _Chosen:
        if self._chosen is None:
            choice = self._wait_for_tuning()
            backend = choice.backend
            cpu_bf16 = bf16_isa(choice.cpu)
            onednn = (onednn_isa() if self._probe_onednn or backend.precision == "bf16"
                      else {"isa": "not_probed", "bf16_impl": "not_probed"})
            self._chosen = _Chosen(backend=backend, reason=choice.reason,
                                   isa=cpu_bf16 if backend.precision == "bf16" else "none",
                                   onednn=onednn)
            log.info("finetune_backend_selected", backend=backend.name,
                     precision=backend.precision, isa=self._chosen.isa, cpu_bf16=cpu_bf16,
                     onednn_isa=onednn["isa"], onednn_impl=onednn.get("bf16_impl", "unknown"),
                     reason=choice.reason)
        return self._chosen

    def _wait_for_tuning(self) -> BackendChoice:
        while True:
            try:
                return self._tuning.result(timeout=_WAIT_SLICE_S)
            except TimeoutError:
                if self._on_step is not None:
                    self._on_step()

    def run(self, start: Sequence[torch.Tensor], fresh: Arrays, replay: Arrays,
            seed: int) -> FinetuneResult:
        """Fine-tune `start` for `params.steps` steps on batches of fresh and replay rows.

        Args:
            start: The aggregate's tensors in spec order; also the anchor's centre. Not modified.
            fresh: Recent cloud data (features [N, D], labels [N]); may be empty.
            replay: Replay-buffer rows in the same form; may be empty.
            seed: Seeds batch sampling and the Fisher sample; same inputs and seed give
                identical tensors on the same backend and precision.

        Returns:
            The result; `start` unchanged (copied) when steps is 0 or both sources are empty.

        Raises:
            ValueError: Data that does not fit the model's inputs or classes.
        """
        began = time.perf_counter()
        p = self.params
        fresh_t, replay_t = self._tensors(fresh), self._tensors(replay)
        if p.steps == 0 or len(fresh_t[1]) + len(replay_t[1]) == 0:
            log.info("finetune_skipped", steps=p.steps, fresh=len(fresh_t[1]),
                     replay=len(replay_t[1]))
            return self._result([t.detach().to(torch.float32).clone() for t in start],
                                steps=0, loss=0.0, began=began)
        gen = torch.Generator().manual_seed(seed)
        penalty = self._anchor(start, fresh_t, replay_t, gen)
        model, optimizer = prepare_sgd(self.arch, start, self.backend, lr=p.lr,
                                       momentum=p.momentum)
        batches = mixed_batches(fresh_t, replay_t, batch_size=p.batch_size,
                                replay_ratio=p.replay_ratio, steps=p.steps, generator=gen)
        stats = train_steps(model, optimizer, self.backend, batches, arch=self.arch,
                            penalty=penalty, on_step=self._on_step)
        # state_dict() gives fp32 master weights even when IPEX trains in bf16.
        result = self._result(tensors_of(model), steps=stats.steps, loss=stats.loss,
                              began=began)
        log.info("model_finetuned", **result.info())
        return result

    def _tensors(self, arrays: Arrays) -> Batch:
        regression = self.arch.task is TaskKind.REGRESSION
        x, y = check_batch(*arrays, cols=self.arch.features,
                           width=self.arch.outputs if regression else 0)
        if not regression and len(y) and (y.min() < 0 or y.max() >= self.arch.outputs):
            raise ValueError(f"labels must lie in [0, {self.arch.outputs}), "
                             f"got [{y.min()}, {y.max()}]")
        # Copies: the arrays may be read-only views, which torch cannot share.
        return torch.tensor(x), torch.tensor(y)

    def _anchor(self, start: Sequence[torch.Tensor], fresh: Batch, replay: Batch,
                gen: torch.Generator) -> Penalty | None:
        kind, weight = self.params.anchor, self.params.anchor_weight
        if kind == "none" or weight == 0:
            return None
        importance = None
        if kind == "ewc":
            # The Fisher of the start model itself, so it is estimated in fp32 on the plain
            # model whatever the training backend: a property of the aggregate, not of kernels.
            x, y = torch.cat((fresh[0], replay[0])), torch.cat((fresh[1], replay[1]))
            pick = torch.randperm(len(y), generator=gen)[:FISHER_SAMPLES]
            plain = build_model(self.arch)
            load_tensors(plain, start)
            fisher = fisher_diagonal(plain, x[pick], y[pick], task=task_for(self.arch.task))
            importance = trained_layout(self.arch, fisher, self.backend)
        return anchor_penalty(weight, trained_layout(self.arch, start, self.backend),
                              importance)

    def _onednn_impl(self) -> str:
        return self.onednn.get("bf16_impl", "unknown")

    def _result(self, tensors: list[torch.Tensor], *, steps: int, loss: float,
                began: float) -> FinetuneResult:
        return FinetuneResult(
            tensors=tensors, steps=steps, samples=steps * self.params.batch_size, loss=loss,
            seconds=time.perf_counter() - began, backend=self.backend.name,
            precision=self.backend.precision, isa=self.isa, onednn_isa=self.onednn["isa"],
            onednn_impl=self._onednn_impl(), anchor=self.params.anchor)
