"""Samples sent to the cloud (`k = data`, P15): features with class labels or regression
targets, checked sizes and values; and the row and column bounds data frames share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol._fields import Wire, req, req_range

MAX_ROWS = 1 << 16
MAX_COLS = 1 << 12
MAX_WINDOW_NAME = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class DataBatch:
    """Samples sent to the cloud on `{p}/data/{model}`: its replay and eval data.

    `features` is float32 little-endian, row-major [rows, cols]. `y` holds what a model learns
    to predict: int64 class labels [rows] when `width` is 0, or float32 regression targets
    [rows, width]. `window` names the evaluation window, "" lets the receiver's clock decide.
    """

    KIND: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1
    features: bytes
    rows: int
    cols: int
    y: bytes
    window: str = ""
    width: int = 0

    @classmethod
    def of(cls, features: npt.ArrayLike, y: npt.ArrayLike, window: str = "") -> Self:
        """Build a batch from features [N, D] and integer labels [N] or float targets [N, H]."""
        x = np.ascontiguousarray(features, dtype="<f4")
        given = np.asarray(y)
        if given.ndim == 2 and x.ndim == 2 and given.shape[0] == x.shape[0]:
            targets = np.ascontiguousarray(given, dtype="<f4")
            return cls(features=x.tobytes(), rows=x.shape[0], cols=x.shape[1],
                       y=targets.tobytes(), window=window, width=targets.shape[1])
        labels = np.ascontiguousarray(given, dtype="<i8")
        if x.ndim != 2 or labels.shape != (x.shape[0],):
            raise ValueError(f"shapes {x.shape} and {labels.shape} are not [N, D] and [N] "
                             "or [N, H]")
        return cls(features=x.tobytes(), rows=x.shape[0], cols=x.shape[1], y=labels.tobytes(),
                   window=window)

    def arrays(self) -> tuple[npt.NDArray[np.float32],
                              npt.NDArray[np.int64] | npt.NDArray[np.float32]]:
        """Read-only views of the features [rows, cols] and the labels [rows] or targets
        [rows, width].

        Raises:
            ProtocolError: NON_FINITE for NaN or Inf features or targets, BAD_FRAME for a
                negative label.
        """
        x = np.frombuffer(self.features, dtype="<f4").reshape(self.rows, self.cols)
        if not np.isfinite(x).all():
            raise ProtocolError(Reason.NON_FINITE, "data batch features hold NaN or Inf")
        if self.width:
            targets = np.frombuffer(self.y, dtype="<f4").reshape(self.rows, self.width)
            if not np.isfinite(targets).all():
                raise ProtocolError(Reason.NON_FINITE, "data batch targets hold NaN or Inf")
            return x.astype(np.float32, copy=False), targets.astype(np.float32, copy=False)
        labels = np.frombuffer(self.y, dtype="<i8")
        if (labels < 0).any():
            raise ProtocolError(Reason.BAD_FRAME, "data batch holds a negative label")
        return x.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)

    def to_wire(self) -> Wire:
        """Short stable keys; the arrays stay msgpack bin; `h` (the target width) only for
        regression targets, so a labelled batch is the frame it always was."""
        d: Wire = {"x": self.features, "r": self.rows, "c": self.cols, "y": self.y,
                   "w": self.window}
        if self.width:
            d["h"] = self.width
        return d

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; the byte lengths must match rows and cols exactly."""
        rows, cols = req_range(d, "r", 1, MAX_ROWS), req_range(d, "c", 1, MAX_COLS)
        features: bytes = req(d, "x", bytes)
        y: bytes = req(d, "y", bytes)
        window: str = req(d, "w", str) if "w" in d else ""
        width = req_range(d, "h", 1, MAX_COLS) if "h" in d else 0
        if len(window) > MAX_WINDOW_NAME:
            raise ProtocolError(Reason.BAD_FRAME, f"window name longer than {MAX_WINDOW_NAME}")
        if len(features) != rows * cols * 4 or len(y) != rows * (width * 4 if width else 8):
            raise ProtocolError(Reason.SIZE_MISMATCH,
                                f"{len(features)} feature and {len(y)} label/target bytes "
                                f"for {rows}x{cols} samples")
        return cls(features=features, rows=rows, cols=cols, y=y, window=window, width=width)
