"""Inference messages on `{p}/infer/{model}`: a request of feature rows and its reply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import FedstreamError, ProtocolError, Reason
from fedstream.shared.protocol._fields import Wire, req, req_range
from fedstream.shared.protocol.data import MAX_COLS, MAX_ROWS

MAX_CLASS = (1 << 31) - 1
MAX_DETAIL = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class InferRequest:
    """Rows to classify: `features` is float32 little-endian, row-major [rows, cols]."""

    KIND: ClassVar[str] = "infer"
    VERSION: ClassVar[int] = 1
    features: bytes
    rows: int
    cols: int

    @classmethod
    def of(cls, features: npt.ArrayLike) -> Self:
        """Build a request from an array of shape [N, D] (cast to float32).

        Raises:
            ValueError: the array is not 2-D or has no rows or columns.
        """
        x = np.ascontiguousarray(features, dtype="<f4")
        if x.ndim != 2 or 0 in x.shape:
            raise ValueError(f"features of shape {x.shape} are not a non-empty [N, D]")
        return cls(features=x.tobytes(), rows=x.shape[0], cols=x.shape[1])

    def array(self) -> npt.NDArray[np.float32]:
        """A read-only float32 view [rows, cols] of the features.

        Raises:
            ProtocolError: NON_FINITE for NaN or Inf features.
        """
        x = np.frombuffer(self.features, dtype="<f4").reshape(self.rows, self.cols)
        if not np.isfinite(x).all():
            raise ProtocolError(Reason.NON_FINITE, "inference features hold NaN or Inf")
        return x.astype(np.float32, copy=False)

    def to_wire(self) -> Wire:
        """Short stable keys; the features stay msgpack bin."""
        return {"x": self.features, "r": self.rows, "c": self.cols}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; the byte length must match rows and cols exactly."""
        rows, cols = req_range(d, "r", 1, MAX_ROWS), req_range(d, "c", 1, MAX_COLS)
        features: bytes = req(d, "x", bytes)
        if len(features) != rows * cols * 4:
            raise ProtocolError(Reason.SIZE_MISMATCH,
                                f"{len(features)} feature bytes for {rows}x{cols} rows")
        return cls(features=features, rows=rows, cols=cols)


@dataclass(frozen=True, slots=True, kw_only=True)
class InferReply:
    """The answer to one `InferRequest`: the class of each row and the model version that
    chose it, or a reason code.

    `scores` is each row's top-class probability as float32 little-endian (4 bytes a row),
    or empty when the server sends none; `version` is -1 on a refusal.
    """

    KIND: ClassVar[str] = "infer_reply"
    VERSION: ClassVar[int] = 1
    ok: bool
    reason: str = ""
    detail: str = ""
    version: int = -1
    predictions: tuple[int, ...] = ()
    scores: bytes = b""

    @classmethod
    def answer(cls, version: int, predictions: npt.ArrayLike, scores: npt.ArrayLike) -> Self:
        """A successful reply from the predicted classes and their probabilities."""
        return cls(ok=True, version=version,
                   predictions=tuple(np.asarray(predictions, dtype=np.int64).tolist()),
                   scores=np.ascontiguousarray(scores, dtype="<f4").tobytes())

    @classmethod
    def refusal(cls, err: FedstreamError) -> Self:
        """A failed reply carrying the error's reason code and detail."""
        return cls(ok=False, reason=str(err.reason), detail=err.detail[:MAX_DETAIL])

    def score_values(self) -> tuple[float, ...]:
        """The per-row probabilities as floats (empty when none were sent)."""
        return tuple(np.frombuffer(self.scores, dtype="<f4").tolist())

    def checked(self) -> Self:
        """This reply when it is ok.

        Raises:
            FedstreamError: with the reply's reason (BAD_FRAME for a reason this build does
                not know) when the server refused the request.
        """
        if self.ok:
            return self
        try:
            reason = Reason(self.reason)
        except ValueError:
            raise ProtocolError(Reason.BAD_FRAME,
                                f"refused with unknown reason {self.reason!r}: {self.detail}"
                                ) from None
        raise FedstreamError(reason, self.detail)

    def to_wire(self) -> Wire:
        """Short stable keys; the scores stay msgpack bin."""
        return {"ok": self.ok, "why": self.reason, "detail": self.detail, "ver": self.version,
                "p": list(self.predictions), "s": self.scores}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; an ok reply names a version, and scores are absent or one per prediction."""
        ok: bool = req(d, "ok", bool)
        version = req_range(d, "ver", -1, 1 << 53)
        predictions: list[Any] = req(d, "p", list)
        scores: bytes = req(d, "s", bytes)
        if ok and version < 0:
            raise ProtocolError(Reason.BAD_FRAME, "an ok inference reply must name a version")
        if len(predictions) > MAX_ROWS or not all(
                type(p) is int and 0 <= p <= MAX_CLASS for p in predictions):
            raise ProtocolError(Reason.BAD_FRAME, "predictions must be class indices")
        if len(scores) not in (0, 4 * len(predictions)):
            raise ProtocolError(Reason.SIZE_MISMATCH,
                                f"{len(scores)} score bytes for {len(predictions)} rows")
        return cls(ok=ok, reason=req(d, "why", str), detail=req(d, "detail", str),
                   version=version, predictions=tuple(predictions), scores=scores)
