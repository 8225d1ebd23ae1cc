"""The cloud's own data (labelled samples, or regression targets for a regression model):
batches from the data topic and files from a directory land in the replay buffer and in
evaluation windows."""

from __future__ import annotations

import json
import time

import numpy as np
import structlog

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.data_dir import load_data_dir
from fedstream.cloud.replay import ReplayBuffer
from fedstream.cloud.store import CloudStore
from fedstream.cloud.windows import EvalWindows, eval_rows
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import TaskKind
from fedstream.shared.protocol.data import DataBatch

log = structlog.get_logger(__name__)


class DataIntake:
    """Validates samples against the model and stores them durably.

    Args:
        replay: Bounded reservoir of training samples.
        windows: Time-stamped evaluation windows.
        features: Input width of the model.
        classes: Number of classes of a classifier; 0 for a regression model.
        width: Regression targets per sample; 0 for a classifier (class labels).
        eval_fraction: Share of each window kept for evaluation only, never for training.
    """

    def __init__(self, *, replay: ReplayBuffer, windows: EvalWindows, features: int,
                 classes: int, width: int = 0, eval_fraction: float = 0.3) -> None:
        self.replay, self.windows = replay, windows
        self.features, self.classes, self.width = features, classes, width
        self.eval_fraction = eval_fraction

    @classmethod
    def open(cls, cfg: CloudConfig, store: CloudStore) -> DataIntake:
        """The replay buffer and evaluation windows under the cloud's `data_dir`, with the
        configured data directory's files loaded once (the journal remembers which)."""
        cont, arch = cfg.continual, cfg.architecture.build()
        regression = arch.task is TaskKind.REGRESSION
        width = arch.outputs if regression else 0
        intake = cls(
            replay=ReplayBuffer(cfg.data_dir / "replay.db", capacity=cont.replay_capacity,
                                cols=arch.features, width=width, seed=cfg.seed),
            windows=EvalWindows(cfg.data_dir / "windows.db", window_s=cont.window_s,
                                max_rows_per_window=cont.max_rows_per_window, width=width),
            features=arch.features, classes=0 if regression else arch.outputs, width=width,
            eval_fraction=cont.eval_fraction)
        if cont.data_dir is not None:
            loaded = set(json.loads(store.journal.meta("data_files_loaded") or "[]"))
            for name, x, y in load_data_dir(cont.data_dir, cols=arch.features):
                if name not in loaded:
                    intake.add(x, y, time.time(), window=name)
                    loaded.add(name)
                    store.journal.set_meta("data_files_loaded", json.dumps(sorted(loaded)))
        return intake

    def take(self, payload: bytes, now: float) -> int:
        """Store one `DataBatch` frame; returns how many rows its window kept.

        Raises:
            ProtocolError: malformed frame, wrong width, NaN/Inf, labels out of range, or
                labels for a regression model (targets for a classifier).
        """
        batch = wire.expect(payload, DataBatch)
        x, y = batch.arrays()
        return self.add(x, y, now, window=batch.window)

    def add(self, x: np.ndarray, y: np.ndarray, now: float, *, window: str = "") -> int:
        """Store samples (from a frame or a file) after checking they fit the model; returns
        how many rows the evaluation window kept (the rest are past its cap)."""
        if x.shape[1] != self.features:
            raise ProtocolError(Reason.SPEC_MISMATCH,
                                f"{x.shape[1]} features; the model takes {self.features}")
        if self.width and (y.ndim != 2 or y.shape[1] != self.width):
            raise ProtocolError(Reason.SPEC_MISMATCH,
                                f"{'labels' if y.ndim == 1 else f'{y.shape[1]} targets'} per "
                                f"sample; the regression model predicts {self.width} values")
        if not self.width and y.ndim != 1:
            raise ProtocolError(Reason.SPEC_MISMATCH, "regression targets; the model is a "
                                                      f"classifier of {self.classes} classes")
        if not self.width and len(y) and int(y.max()) >= self.classes:
            raise ProtocolError(Reason.BAD_FRAME,
                                f"label {int(y.max())} >= the model's {self.classes} classes")
        name = window or self.windows.window_of(now)
        train = ~eval_rows(self.windows.offered(name), len(y), self.eval_fraction)
        # Windows first: evaluation data is what a restart must never lose; the reservoir
        # only samples from the stream anyway, and only from the training rows.
        kept = self.windows.add(x, y, now, name=name)
        stored = self.replay.add(x[train], y[train], name)
        log.info("data_received", rows=len(y), window=name, kept=kept,
                 replay=len(self.replay), stored=stored)
        return kept
