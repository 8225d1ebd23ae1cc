"""InferRequest and InferReply (shared/protocol/infer.py): checked sizes, values and types on the
wire."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np
import pytest

from fedstream.shared.errors import FedstreamError, ProtocolError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.infer import InferReply, InferRequest

_REQUEST = InferRequest.of([[0.5, 1.0, -2.0], [0.0, 4.0, 8.0]])
_REPLY = InferReply.answer(7, [3, 1], [0.75, 0.5])


def _frame(msg: InferRequest | InferReply, **changes: Any) -> bytes:
    """The frame of `msg` with some fields replaced."""
    raw: dict[str, Any] = msgpack.unpackb(wire.pack(msg), raw=False)
    raw.update(changes)
    packed: bytes = msgpack.packb(raw, use_bin_type=True)
    return packed


def _rejects(buf: bytes) -> Reason:
    """The reason `wire.unpack` gives for refusing `buf`."""
    with pytest.raises(ProtocolError) as info:
        wire.unpack(buf)
    return info.value.reason


def test_request_round_trip_gives_the_rows_back() -> None:
    """Packed and unpacked, a request yields the same float32 rows."""
    # Prepare
    buf = wire.pack(_REQUEST)

    # Execute
    back = wire.expect(buf, InferRequest)

    # Assert
    assert back == _REQUEST
    assert back.array().dtype == np.float32
    assert back.array().tolist() == [[0.5, 1.0, -2.0], [0.0, 4.0, 8.0]]


def test_request_bytes_are_little_endian_row_major() -> None:
    """The feature bytes are float32 LE, row by row, and travel as msgpack bin."""
    # Prepare / Execute
    req = InferRequest.of([[1.0, 2.0], [3.0, 4.0]])
    raw = msgpack.unpackb(wire.pack(req), raw=False)

    # Assert
    assert req.features == struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    assert (req.rows, req.cols) == (2, 2)
    assert type(raw["x"]) is bytes


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_request_with_non_finite_features_is_refused(value: float) -> None:
    """NaN or Inf anywhere in the rows is non_finite when the array is read."""
    # Prepare
    req = wire.expect(wire.pack(InferRequest.of([[1.0, value]])), InferRequest)

    # Execute
    with pytest.raises(ProtocolError) as info:
        req.array()

    # Assert
    assert info.value.reason is Reason.NON_FINITE


@pytest.mark.parametrize("shape", [(3,), (0, 2), (2, 0), (1, 2, 2)])
def test_request_builder_needs_a_non_empty_matrix(shape: tuple[int, ...]) -> None:
    """The builder refuses anything but a non-empty [N, D] array."""
    # Prepare
    features = np.zeros(shape)

    # Execute / Assert
    with pytest.raises(ValueError, match="not a non-empty"):
        InferRequest.of(features)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"r": 0}, Reason.BAD_FRAME),
        ({"r": 65537}, Reason.BAD_FRAME),
        ({"c": 0}, Reason.BAD_FRAME),
        ({"c": 4097}, Reason.BAD_FRAME),
        ({"r": True}, Reason.BAD_FRAME),
        ({"c": 3.0}, Reason.BAD_FRAME),
        ({"x": "text"}, Reason.BAD_FRAME),
        ({"x": [0.5, 1.0]}, Reason.BAD_FRAME),
        ({"r": 3}, Reason.SIZE_MISMATCH),
        ({"c": 2}, Reason.SIZE_MISMATCH),
        ({"x": _REQUEST.features[:-1]}, Reason.SIZE_MISMATCH),
        ({"x": _REQUEST.features + b"\x00" * 4}, Reason.SIZE_MISMATCH),
    ],
    ids=["no-rows", "too-many-rows", "no-cols", "too-many-cols", "bool-rows", "float-cols",
         "text-features", "list-features", "rows-vs-bytes", "cols-vs-bytes", "short-bytes",
         "long-bytes"],
)
def test_request_with_bad_fields_is_refused(changes: dict[str, Any], reason: Reason) -> None:
    """Out-of-range or mistyped fields are bad frames; lengths that disagree are size mismatches."""
    # Prepare
    buf = _frame(_REQUEST, **changes)

    # Execute / Assert
    assert _rejects(buf) is reason


@pytest.mark.parametrize("key", ["x", "r", "c"])
def test_request_missing_a_field_is_a_bad_frame(key: str) -> None:
    """A request without one of its fields is a bad frame, never a KeyError."""
    # Prepare
    raw: dict[str, Any] = msgpack.unpackb(wire.pack(_REQUEST), raw=False)
    del raw[key]

    # Execute / Assert
    assert _rejects(msgpack.packb(raw, use_bin_type=True)) is Reason.BAD_FRAME


def test_reply_round_trip_keeps_version_predictions_and_scores() -> None:
    """An answer comes back equal, with float32 scores one per prediction."""
    # Prepare
    buf = wire.pack(_REPLY)

    # Execute
    back = wire.expect(buf, InferReply)

    # Assert
    assert back == _REPLY
    assert (back.ok, back.version, back.predictions) == (True, 7, (3, 1))
    assert back.score_values() == (0.75, 0.5)
    assert back.checked() is back


def test_refusal_round_trips_and_raises_its_reason() -> None:
    """A refusal carries the error's reason and detail, and `checked` raises it again."""
    # Prepare
    refusal = InferReply.refusal(ProtocolError(Reason.SPEC_MISMATCH, "3 columns, model has 64"))

    # Execute
    back = wire.expect(wire.pack(refusal), InferReply)
    with pytest.raises(FedstreamError) as info:
        back.checked()

    # Assert
    assert (back.ok, back.version, back.predictions, back.scores) == (False, -1, (), b"")
    assert info.value.reason is Reason.SPEC_MISMATCH
    assert info.value.detail == "3 columns, model has 64"


def test_refusal_with_an_unknown_reason_is_a_bad_frame() -> None:
    """A reason code this build does not know still raises, as a bad frame naming it."""
    # Prepare
    reply = InferReply(ok=False, reason="from_the_future", detail="newer server")

    # Execute
    with pytest.raises(ProtocolError) as info:
        reply.checked()

    # Assert
    assert info.value.reason is Reason.BAD_FRAME
    assert "from_the_future" in info.value.detail


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ok": 1}, Reason.BAD_FRAME),
        ({"ver": -2}, Reason.BAD_FRAME),
        ({"ver": True}, Reason.BAD_FRAME),
        ({"ver": -1}, Reason.BAD_FRAME),
        ({"p": [1, "2"]}, Reason.BAD_FRAME),
        ({"p": [1, True]}, Reason.BAD_FRAME),
        ({"p": [1, -1]}, Reason.BAD_FRAME),
        ({"s": [0.75, 0.5]}, Reason.BAD_FRAME),
        ({"why": 3}, Reason.BAD_FRAME),
        ({"s": b"\x00" * 4}, Reason.SIZE_MISMATCH),
        ({"p": [1, 2, 3]}, Reason.SIZE_MISMATCH),
    ],
    ids=["int-ok", "version-below-none", "bool-version", "ok-without-version", "text-class",
         "bool-class", "negative-class", "list-scores", "int-reason",
         "too-few-scores", "too-many-classes"],
)
def test_reply_with_bad_fields_is_refused(changes: dict[str, Any], reason: Reason) -> None:
    """Mistyped fields are bad frames; scores that do not match the predictions are mismatches."""
    # Prepare
    buf = _frame(_REPLY, **changes)

    # Execute / Assert
    assert _rejects(buf) is reason


def test_reply_without_scores_is_valid() -> None:
    """Scores are optional: an empty score field parses and yields no values."""
    # Prepare
    reply = InferReply(ok=True, version=0, predictions=(4,))

    # Execute
    back = wire.expect(wire.pack(reply), InferReply)

    # Assert
    assert back == reply and back.score_values() == ()
