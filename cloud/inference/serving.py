"""The served model: one version prepared for inference on this machine's backend and precision."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.backends import BACKENDS, Backend, select_backend
from fedstream.shared.learning.backends.base import PRECISIONS, Precision, check_precision
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.model import load_tensors
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.tasks import ACCURACY, evaluate, task_for
from fedstream.shared.protocol.arch import Architecture, TaskKind

EvalSet = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
Predictions = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]

# bf16 may cost at most half an accuracy point against fp32 on the evaluation set.
BF16_TOLERANCE = 0.005
_WARMUP_PASSES = 3
_TIMED_PASSES = 20
_ROUNDS = 3
# ipex.optimize traces an eval model with torch.fx, which patches torch.nn.Module.__call__
# for the whole process while it runs: a forward pass on another thread meanwhile fails with
# NameError("module is not installed as a submodule"). Preparing and forward passes take turns.
_FX_GUARD = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedModel:
    """One model version ready to answer requests.

    Attributes:
        version: The model version every answer of this model names.
        module: The eval-mode, backend-optimized copy; never trained.
        backend: The backend that prepared it; forward passes run in its autocast.
        reason: Why this precision, for logs and status.
    """

    version: int
    module: torch.nn.Module
    backend: Backend
    reason: str

    @property
    def precision(self) -> str:
        """"fp32" or "bf16"."""
        return self.backend.precision

    def predict(self, features: npt.NDArray[np.float32]) -> Predictions:
        """Classes and top-class probabilities of rows [N, cols], in one forward pass."""
        # torch must not share a read-only array (a view of received bytes): copy those.
        x = torch.from_numpy(np.require(features, np.float32, ["C", "W"]))
        with _FX_GUARD, torch.inference_mode(), self.backend.autocast():
            logits = self.module(x)
        scores, classes = torch.softmax(logits.float(), dim=1).max(dim=1)
        return classes.numpy(), scores.numpy()


@dataclass(frozen=True, slots=True)
class Trial:
    """How one precision did on the evaluation set: accuracy in [0, 1] and seconds per pass."""

    accuracy: float
    seconds: float


def choose_precision(fp32: Trial, bf16: Trial) -> tuple[Precision, str]:
    """bf16 when it stays within `BF16_TOLERANCE` of fp32 accuracy and is faster.

    Returns:
        The precision and why, for the `model_swapped` log line.
    """
    drop = fp32.accuracy - bf16.accuracy
    speedup = fp32.seconds / bf16.seconds
    # Accuracies are counts over the set; float error must not tip a drop of exactly the
    # tolerance over it.
    if drop > BF16_TOLERANCE + 1e-9:
        return "fp32", f"fp32: bf16 lost {drop * 100:.2f} accuracy points"
    if speedup <= 1.0:
        return "fp32", f"fp32: bf16 ran at {speedup:.2f}x of fp32 speed"
    return "bf16", f"bf16: {speedup:.2f}x faster, {drop * 100:.2f} accuracy points lost"


class ModelPreparer:
    """Turns model tensors into a `ServedModel` for one architecture; one caller at a time
    (`InferenceServer.swap` takes a lock).

    Args:
        arch: The served model's architecture (a classifier: answers are classes).
        backend: "auto" or "torch" (stock torch), or "ipex". Auto does not load IPEX: an
            fp32 forward pass of 64 rows took 778 us with IPEX vs 70 us stock for the digits
            MLP and 10.5 ms both for a 784-4096-4096-10 MLP (AMX Xeon, IPEX 2.8), and its
            import adds ~130 MiB to the process. Where the fine-tuner's measuring chose
            IPEX, it is loaded for fine-tuning alone.
        precision: "fp32", "bf16", or "auto": bf16 only on a CPU with native bf16, when it is
            within half a point of fp32 accuracy on `evaluation` and measured faster.
        evaluation: Labelled rows for the "auto" check; None means fp32.
        timing_rows: Rows per timed forward pass (the serving batch size).

    Raises:
        ConfigError: BAD_CONFIG for a regression model (not served yet), an unknown precision
            or evaluation rows of the wrong width; BACKEND_UNAVAILABLE or UNKNOWN_NAME for the
            backend.
    """

    def __init__(self, *, arch: Architecture, backend: str = "auto",
                 precision: str = "auto", evaluation: EvalSet | None = None,
                 timing_rows: int = 64) -> None:
        if arch.task is not TaskKind.CLASSIFICATION:
            raise ConfigError(Reason.BAD_CONFIG, f"inference serves classifiers; {arch.describe()}"
                              " is a regression model (turn [inference] off)")
        self.arch = arch
        self._forced = None if precision == "auto" else check_precision(precision)
        choice = select_backend(preference="torch" if backend == "auto" else backend,
                                precision="fp32")
        self.backend_name = choice.backend.name
        self._backends: dict[Precision, Backend] = {"fp32": choice.backend}
        self._eval: tuple[torch.Tensor, torch.Tensor] | None = None
        if evaluation is not None:
            features, labels = evaluation
            if features.ndim != 2 or features.shape[1] != arch.features:
                raise ConfigError(Reason.BAD_CONFIG,
                                  f"evaluation rows of shape {features.shape} do not fit "
                                  f"{arch.describe()}")
            self._eval = (torch.tensor(features, dtype=torch.float32),
                          torch.tensor(labels, dtype=torch.int64))
        self._timing_rows = timing_rows
        # Speed depends on the architecture and machine, not the weights: measured once.
        self._seconds: dict[Precision, float] = {}

    def prepare(self, version: int, tensors: Sequence[torch.Tensor]) -> ServedModel:
        """Build, load and optimize `tensors` as model `version`.

        Raises:
            ConfigError: SPEC_MISMATCH when the tensors do not fit the architecture.
        """
        model = build_model(self.arch)
        try:
            load_tensors(model, tensors)
        except ConfigError as err:
            raise ConfigError(Reason.SPEC_MISMATCH,
                              f"version {version} does not fit {self.arch.describe()}: "
                              f"{err.detail}") from err
        if self._forced is not None:
            return self._served(version, model, self._forced,
                                f"precision {self._forced} requested")
        if not detect_cpu().has_bf16:
            return self._served(version, model, "fp32",
                                "fp32: cpu has neither avx512_bf16 nor amx_bf16")
        if self._eval is None:
            return self._served(version, model, "fp32",
                                "fp32: no evaluation set to check bf16 accuracy on")
        return self._measured(version, model)

    def _backend(self, precision: Precision) -> Backend:
        if precision not in self._backends:
            self._backends[precision] = BACKENDS.build(self.backend_name, precision=precision)
        return self._backends[precision]

    def _served(self, version: int, model: torch.nn.Module, precision: Precision,
                reason: str) -> ServedModel:
        backend = self._backend(precision)
        with _FX_GUARD:
            module = backend.prepare_inference(model)  # a copy: `model` stays as it was
        return ServedModel(version=version, module=module, backend=backend, reason=reason)

    def _measured(self, version: int, model: torch.nn.Module) -> ServedModel:
        assert self._eval is not None
        candidates = {p: self._served(version, model, p, "") for p in PRECISIONS}
        if not self._seconds:
            self._seconds = self._time(candidates)
        features, labels = self._eval
        trials = {p: Trial(accuracy=_accuracy(c, features, labels), seconds=self._seconds[p])
                  for p, c in candidates.items()}
        chosen, reason = choose_precision(trials["fp32"], trials["bf16"])
        return dataclasses.replace(candidates[chosen], reason=reason)

    def _time(self, candidates: dict[Precision, ServedModel]) -> dict[Precision, float]:
        assert self._eval is not None
        rows = self._eval[0][: self._timing_rows].numpy()
        best: dict[Precision, float] = {"fp32": float("inf"), "bf16": float("inf")}
        # Rounds alternate and the best of each is kept, so a neighbour's burst of load on
        # shared cores hits both precisions rather than deciding the contest.
        for _ in range(_ROUNDS):
            for precision, served in candidates.items():
                for _ in range(_WARMUP_PASSES):
                    served.predict(rows)
                start = time.perf_counter()
                for _ in range(_TIMED_PASSES):
                    served.predict(rows)
                best[precision] = min(best[precision],
                                      (time.perf_counter() - start) / _TIMED_PASSES)
        return best


def _accuracy(served: ServedModel, features: torch.Tensor, labels: torch.Tensor) -> float:
    with _FX_GUARD, served.backend.autocast():
        scores = evaluate(served.module, task_for(TaskKind.CLASSIFICATION), features, labels)
    return scores[ACCURACY.name]
