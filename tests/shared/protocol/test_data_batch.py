"""DataBatch (shared/protocol/control.py): labelled samples on the wire, checked sizes and
values."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np
import pytest

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.data import DataBatch

_BATCH = DataBatch.of([[0.5, 1.0], [2.0, -3.0], [0.0, 4.0]], [1, 0, 2])


def _frame(**changes: Any) -> bytes:
    """The frame of `_BATCH` with some fields replaced."""
    raw: dict[str, Any] = msgpack.unpackb(wire.pack(_BATCH), raw=False)
    raw.update(changes)
    return msgpack.packb(raw, use_bin_type=True)


def test_round_trip_gives_the_arrays_back() -> None:
    """Packed and unpacked, a batch yields the same float32 features and int64 labels."""
    # Prepare
    buf = wire.pack(_BATCH)

    # Execute
    back = wire.expect(buf, DataBatch)
    x, y = back.arrays()

    # Assert
    assert back == _BATCH and back.window == ""
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.tolist() == [[0.5, 1.0], [2.0, -3.0], [0.0, 4.0]]
    assert y.tolist() == [1, 0, 2]


def test_bytes_are_little_endian_row_major() -> None:
    """The feature bytes are float32 LE row by row and the labels int64 LE."""
    # Prepare / Execute
    batch = DataBatch.of([[1.0, 2.0]], [7])

    # Assert
    assert batch.features == struct.pack("<2f", 1.0, 2.0)
    assert batch.y == struct.pack("<q", 7)


def test_window_is_optional_on_the_wire() -> None:
    """A frame without `w` parses with the empty window (the receiver's clock decides)."""
    # Prepare
    raw: dict[str, Any] = msgpack.unpackb(wire.pack(_BATCH), raw=False)
    del raw["w"]

    # Execute
    back = wire.unpack(msgpack.packb(raw, use_bin_type=True))

    # Assert
    assert isinstance(back, DataBatch) and back.window == ""


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"r": 0}, Reason.BAD_FRAME),
        ({"r": 65537}, Reason.BAD_FRAME),
        ({"c": 0}, Reason.BAD_FRAME),
        ({"c": 4097}, Reason.BAD_FRAME),
        ({"r": True}, Reason.BAD_FRAME),
        ({"x": "text"}, Reason.BAD_FRAME),
        ({"w": 3}, Reason.BAD_FRAME),
        ({"w": "w" * 129}, Reason.BAD_FRAME),
        ({"r": 2}, Reason.SIZE_MISMATCH),
        ({"c": 3}, Reason.SIZE_MISMATCH),
        ({"x": _BATCH.features[:-1]}, Reason.SIZE_MISMATCH),
        ({"y": _BATCH.y + b"\x00"}, Reason.SIZE_MISMATCH),
    ],
)
def test_rejects_bad_fields(changes: dict[str, Any], reason: Reason) -> None:
    """Out-of-range counts, wrong types and byte lengths that do not match are refused."""
    # Prepare
    buf = _frame(**changes)

    # Execute
    with pytest.raises(ProtocolError) as info:
        wire.unpack(buf)

    # Assert
    assert info.value.reason is reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_arrays_reject_non_finite_features(bad: float) -> None:
    """NaN or Inf in the features is NON_FINITE when the arrays are read."""
    # Prepare
    batch = DataBatch.of([[0.0, bad]], [0])

    # Execute
    with pytest.raises(ProtocolError) as info:
        batch.arrays()

    # Assert
    assert info.value.reason is Reason.NON_FINITE


def test_arrays_reject_negative_labels() -> None:
    """A negative label is a bad frame when the arrays are read."""
    # Prepare
    batch = DataBatch.of([[0.0], [1.0]], [0, -1])

    # Execute
    with pytest.raises(ProtocolError) as info:
        batch.arrays()

    # Assert
    assert info.value.reason is Reason.BAD_FRAME


def test_of_rejects_mismatched_shapes() -> None:
    """Building a batch from features and labels of different lengths is a ValueError."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="not \\[N, D\\] and \\[N\\]"):
        DataBatch.of([[0.0], [1.0]], [0])


def test_regression_targets_round_trip_with_their_width() -> None:
    """A batch of float targets [N, H] travels with its width and comes back as float32."""
    # Prepare
    batch = DataBatch.of([[0.5, 1.0], [2.0, -3.0]], [[0.25, 1.5, -2.0], [3.0, 0.0, 1.0]])

    # Execute
    back = wire.expect(wire.pack(batch), DataBatch)
    _, y = back.arrays()

    # Assert
    assert back == batch and back.width == 3
    assert y.dtype == np.float32 and y.tolist() == [[0.25, 1.5, -2.0], [3.0, 0.0, 1.0]]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"h": 3, "y": b"\x00" * 20}, Reason.SIZE_MISMATCH),   # 3 rows x 3 targets need 36 bytes
    ({"h": 0}, Reason.BAD_FRAME),
    ({"h": 2, "y": struct.pack("<6f", 0, 1, 2, float("nan"), 4, 5)}, Reason.NON_FINITE),
])
def test_bad_regression_targets_are_refused(changes: dict[str, Any], reason: Reason) -> None:
    """Targets of the wrong size, a zero width or NaN targets are refused with a reason."""
    # Prepare
    buf = _frame(**changes)

    # Execute
    with pytest.raises(ProtocolError) as info:
        wire.expect(buf, DataBatch).arrays()

    # Assert
    assert info.value.reason is reason
