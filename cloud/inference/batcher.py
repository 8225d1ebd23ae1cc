"""Micro-batching: requests queued together share one forward pass of the served model."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import structlog

from fedstream.cloud.inference.serving import ServedModel
from fedstream.shared.errors import ConfigError, FedstreamError, ProtocolError, Reason

log = structlog.get_logger(__name__)

# What a requester learns when the forward pass failed: the reason, not torch's internals
# (the `batch_failed` log line has those).
FAILED = FedstreamError(Reason.INTERNAL, "the model failed on this request; see the service log")


class Answer(NamedTuple):
    """What one request gets back: the version that answered, a class and a score per row."""

    version: int
    predictions: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatcherParams:
    """Bounds of one micro-batcher.

    Args:
        cols: Features per row (the model's input width).
        max_batch: Rows one forward pass takes from the queue (a larger request runs alone).
        max_wait_ms: How long the oldest queued request waits for others to join its batch.
        max_rows: Rows one request may carry.
        max_queue: Rows queued before new requests are refused as overloaded.

    Raises:
        ConfigError: BAD_CONFIG for a value out of range.
    """

    cols: int
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_rows: int = 1024
    max_queue: int = 10_000

    def __post_init__(self) -> None:
        if not (self.cols >= 1 and self.max_batch >= 1 and self.max_wait_ms >= 0
                and self.max_rows >= 1 and self.max_queue >= self.max_rows):
            raise ConfigError(Reason.BAD_CONFIG, f"micro-batcher bounds out of range: {self}")


@dataclass(frozen=True, slots=True)
class _Pending:
    rows: npt.NDArray[np.float32]
    future: Future[Answer]
    since: float


class MicroBatcher:
    """Queues requests from any thread and answers them from one worker thread.

    The worker takes the oldest request, waits up to `max_wait_ms` for more to make up to
    `max_batch` rows, runs them as one forward pass and splits the result back. The served
    model is one reference, swapped by assignment and read once per batch, so all rows of a
    batch are answered by the same version.

    Args:
        params: Shape and bounds.
    """

    def __init__(self, params: BatcherParams) -> None:
        self.params = params
        self._model: ServedModel | None = None
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wait_s = params.max_wait_ms / 1000
        self.passes = 0

    @property
    def model(self) -> ServedModel | None:
        """The model the next batch will run, or None before the first swap."""
        return self._model

    def swap(self, model: ServedModel) -> None:
        """Answer every batch from now on with `model` (a batch already running keeps its own)."""
        self._model = model

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="infer-batcher", daemon=True)
        self._thread.start()

    def submit(self, features: npt.ArrayLike) -> Future[Answer]:
        """Queue rows [N, cols] for prediction; safe from any thread, never blocks on the model.

        Returns:
            A future resolved with the `Answer`, or failed if the forward pass fails.

        Raises:
            ProtocolError: BAD_FRAME for a shape that is not [N, cols] with 1 <= N <= max_rows,
                SPEC_MISMATCH for another width, NON_FINITE for NaN or Inf.
            FedstreamError: NO_MODEL before the first swap, OVERLOADED when max_queue rows are
                already waiting or the batcher is stopping.
        """
        rows = self._checked(features)
        if self._model is None:
            raise FedstreamError(Reason.NO_MODEL, "no model version is being served yet")
        pending = _Pending(rows, Future(), time.monotonic())
        with self._cond:
            if self._stopping:
                raise FedstreamError(Reason.OVERLOADED, "the inference service is stopping")
            if self._queued_rows + len(rows) > self.params.max_queue:
                raise FedstreamError(Reason.OVERLOADED,
                                     f"{self._queued_rows} rows already queued, "
                                     f"bound {self.params.max_queue}")
            self._queue.append(pending)
            self._queued_rows += len(rows)
            self._cond.notify()
        return pending.future

    def stop(self) -> None:
        """Refuse new requests, answer everything queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            # Only a batcher that was never started leaves requests behind.
            leftovers = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        for pending in leftovers:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(
                    FedstreamError(Reason.OVERLOADED, "the inference service stopped"))

    def stats(self) -> dict[str, int]:
        """Forward passes run so far and rows waiting now."""
        return {"passes": self.passes, "queued_rows": self._queued_rows}

    def _checked(self, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
        x = np.asarray(features, dtype=np.float32)
        p = self.params
        if x.ndim != 2 or not 1 <= x.shape[0] <= p.max_rows:
            raise ProtocolError(Reason.BAD_FRAME,
                                f"rows of shape {x.shape}; expected [N, {p.cols}] with "
                                f"1 <= N <= {p.max_rows}")
        if x.shape[1] != p.cols:
            raise ProtocolError(Reason.SPEC_MISMATCH,
                                f"{x.shape[1]} features per row; the model takes {p.cols}")
        if not np.isfinite(x).all():
            raise ProtocolError(Reason.NON_FINITE, "features hold NaN or Inf")
        return x

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._forward(batch)

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._queue[0].since + self._wait_s
            while self._queued_rows < self.params.max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [self._queue.popleft()]
            taken = len(batch[0].rows)
            while self._queue and taken + len(self._queue[0].rows) <= self.params.max_batch:
                batch.append(self._queue.popleft())
                taken += len(batch[-1].rows)
            self._queued_rows -= taken
            return batch

    def _forward(self, batch: list[_Pending]) -> None:
        model = self._model  # read once: one version answers the whole batch
        assert model is not None, "submit refuses requests before the first swap"
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            classes, scores = model.predict(np.concatenate([p.rows for p in live]))
        except Exception as err:  # the per-batch guard: a failed pass fails its requests only
            log.exception("batch_failed", version=model.version, requests=len(live))
            for pending in live:
                pending.future.set_exception(err)
            return
        self.passes += 1
        start = 0
        for pending in live:
            end = start + len(pending.rows)
            pending.future.set_result(Answer(model.version, classes[start:end],
                                             scores[start:end]))
            start = end
