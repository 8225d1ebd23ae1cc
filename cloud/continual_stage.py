"""What happens to an aggregate before it may be served: cloud fine-tuning on the newest
training window mixed with replay, then scoring on every evaluation window, the forgetting
metrics and the promotion gate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import torch

from fedstream.cloud.config import ContinualConfig
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.forgetting import Evals, ForgettingMetrics, metrics_of
from fedstream.cloud.gate import Verdict, judge
from fedstream.cloud.replay import Arrays, empty_arrays
from fedstream.shared.learning.model import load_tensors
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.tasks import evaluate, task_for
from fedstream.shared.protocol.arch import Architecture

if TYPE_CHECKING:  # the tuner is built by the service; this module only calls it
    from fedstream.cloud.finetune import FineTuner

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """A candidate scored against the serving model on the same windows."""

    evals: dict[str, float]
    serving_evals: dict[str, float]
    metrics: ForgettingMetrics
    verdict: Verdict


class ContinualStage:
    """Fine-tunes and judges candidates with the cloud's own data.

    Args:
        data: The replay buffer and evaluation windows.
        arch: The model's architecture; its task's primary metric is what windows are scored
            and judged in.
        cfg: The `continual` config (fine-tuning and gate tolerances).
        tuner: Runs the fine-tuning; None when `finetune.steps` is 0.
    """

    def __init__(self, *, data: DataIntake, arch: Architecture, cfg: ContinualConfig,
                 tuner: FineTuner | None) -> None:
        self.data, self.cfg, self.tuner = data, cfg, tuner
        self._model = build_model(arch)
        self._task = task_for(arch.task)
        self.metric = self._task.primary
        self._cols = arch.features

    def refine(self, tensors: list[torch.Tensor], *,
               seed: int) -> tuple[list[torch.Tensor], dict[str, str | int | float]]:
        """Fine-tune `tensors` on the training rows of the newest training window plus replay
        (which holds training rows only); the newest window is held out of both. Returns the
        tensors and what the fine-tuning did (for the registry)."""
        if self.tuner is None:
            return tensors, {}
        windows = self.data.windows
        training, newest = windows.training_windows(), windows.newest()
        fresh: Arrays = (windows.parts(training[-1], self.cfg.eval_fraction)[1] if training
                         else empty_arrays(self._cols, self.data.width))
        replay = self.data.replay.arrays(exclude=newest)
        result = self.tuner.run(tensors, fresh, replay, seed)
        info = {**result.info(), "fresh_window": training[-1] if training else ""}
        if not all(bool(torch.isfinite(t).all()) for t in result.tensors):
            # A diverging fine-tune (lr too high) must not even become a candidate.
            log.warning("finetune_diverged", **info)
            return tensors, {**info, "diverged": True}
        return result.tensors, info

    def score(self, tensors: Sequence[torch.Tensor]) -> dict[str, float]:
        """The primary metric on the evaluation rows of every window that has at least
        `min_window_rows` of them, oldest first (a handful of rows would make the gate a coin
        flip)."""
        load_tensors(self._model, list(tensors))
        scores: dict[str, float] = {}
        for name in self.data.windows.names():
            (x, y), _ = self.data.windows.parts(name, self.cfg.eval_fraction)
            if len(y) >= self.cfg.min_window_rows:
                scored = evaluate(self._model, self._task, torch.from_numpy(x.copy()),
                                  torch.from_numpy(y.copy()))
                scores[name] = round(scored[self.metric.name], 4)
        return scores

    def measure(self, tensors: Sequence[torch.Tensor],
                history: Sequence[Evals]) -> tuple[dict[str, float], ForgettingMetrics]:
        """A model's scores per window and its forgetting metrics against the served
        versions' rows."""
        evals = self.score(tensors)
        return evals, metrics_of(history, evals, list(evals), metric=self.metric)

    def assess(self, candidate: Sequence[torch.Tensor], serving: Sequence[torch.Tensor],
               history: Sequence[Evals]) -> Assessment:
        """`measure` the candidate, score the serving model on the same windows, and the
        gate's verdict (always promote when it is off)."""
        evals, metrics = self.measure(candidate, history)
        serving_evals, order = self.score(serving), list(evals)
        gate = self.cfg.gate
        verdict = judge(evals, serving_evals, order, tolerance_newest=gate.tolerance_newest,
                        tolerance_past=gate.tolerance_past,
                        metric=self.metric) if gate.enabled else Verdict(
            promote=True, reason=None, detail="gate disabled")
        return Assessment(evals=evals, serving_evals=serving_evals, metrics=metrics,
                          verdict=verdict)
