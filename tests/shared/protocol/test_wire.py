"""Tests for shared/protocol/wire.py with the messages it frames (messages.py, control.py,
commands.py, _fields.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture, TaskKind
from fedstream.shared.protocol.commands import (
    ModelList,
    ModelListReply,
    ModelPromote,
    ModelRollback,
    ModelVersionReply,
    Reply,
    RoundReply,
    RoundStart,
    RoundStop,
    StatusQuery,
    StatusReply,
)
from fedstream.shared.protocol.control import (
    EdgeStatus,
    ModelInfo,
    Receipt,
    RoundMode,
    RoundProgress,
    RoundState,
    RoundStatus,
    TrainParams,
    VersionStatus,
)
from fedstream.shared.protocol.data import DataBatch
from fedstream.shared.protocol.enrolment import EdgeEnrol, EdgeRevoke
from fedstream.shared.protocol.history import RoundList, RoundListReply
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.messages import (
    BlobHeader,
    Manifest,
    ModelChunk,
    TensorSpec,
    UpdateChunk,
    UpdateMeta,
)
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe

# 16 bytes = four float32 weights of a 2x2 tensor, cut into two chunks of 8 bytes.
_BLOB = bytes(range(16))
_SPEC = (TensorSpec(name="w", shape=(2, 2)),)
_HEADER = BlobHeader(blob_id="b1", size=16, sha256=hashlib.sha256(_BLOB).digest(), count=2,
                     chunk_size=8, codec="f32", spec=_SPEC)
_TRAIN = TrainParams(epochs=2, lr=0.05, momentum=0.9, batch_size=32, max_windows=500,
                     max_age_s=3600.0, min_samples=16)
_ROUND = RoundState(round_id="r1", model="mlp", status=RoundStatus.COLLECTING, base_version=3,
                    deadline=1000.5, train=_TRAIN, codec="f32", selection=("e1", "e2"),
                    quorum=1, received=1, declined={"e2": "too_little_data"})
_STATUS = EdgeStatus(edge_id="e1", online=True, version=3, samples=360,
                     backend={"name": "torch", "bf16": False}, last_round="r1",
                     declined="r2", decline_reason="too_little_data",
                     data={"readings": 12000, "windows": 118, "dropped.malformed": 3})
_INFO = ModelInfo(version=4, parent=3, round_id="r4", lineage={"metrics.accuracy": 0.5},
                  status=VersionStatus.REJECTED, reason="regressed_past", evals={"w1": 0.5})

EXAMPLES: dict[str, wire.Message] = {
    "update": UpdateChunk(
        header=_HEADER,
        meta=UpdateMeta(edge_id="e1", round_id="r1", base_version=3, samples=120, loss=0.25,
                        seq=7, sig=bytes(range(64))),
        index=1, data=_BLOB[8:]),
    "model": ModelChunk(header=_HEADER, model="mlp", version=3, index=0, data=_BLOB[:8]),
    "manifest": Manifest(model="mlp", version=3, parent=2, header=_HEADER,
                         arch=Architecture(family="cnn1d", input_shape=(2, 2),
                                           task=TaskKind.CLASSIFICATION, outputs=10,
                                           params={"channels": (8, 8), "kernel": 3}),
                         metrics={"accuracy": 0.9}, sig=bytes(64)),
    "round": _ROUND,
    "status": _STATUS,
    "round_start": RoundStart(epochs=2, lr=0.1, momentum=0.5, batch_size=16, deadline_s=30.0,
                              codec="topk", codec_params={"density": 0.05},
                              mode=RoundMode.SYNC, fraction=0.5, edges=("e1", "e2"), buffer=3,
                              max_staleness=1),
    "round_stop": RoundStop(),
    "status_query": StatusQuery(),
    "model_list": ModelList(),
    "model_rollback": ModelRollback(version=2),
    "model_promote": ModelPromote(version=4),
    "edge_enrol": EdgeEnrol(edge="e1", key=bytes(range(32))),
    "edge_revoke": EdgeRevoke(edge="e1"),
    "round_list": RoundList(limit=5),
    "round_progress": RoundProgress(round_id="r1", received=812, expected=1000),
    "receipt": Receipt(update_id="u1", round_id="r1", status="rejected", reason="stale_round",
                       detail="round r0 is closed"),
    "reply": Reply(ok=False, reason="no_edges", detail="no edge is online"),
    "round_reply": RoundReply(round=_ROUND, model_version=3),
    "status_reply": StatusReply(round=_ROUND, edges=(_STATUS,), model_version=3,
                                model_metrics={"accuracy": 0.9}, rejections={"bad_hash": 2},
                                intake_bytes=1024, serving={"served": 5}),
    "model_list_reply": ModelListReply(model_version=3, versions=(_INFO,)),
    "model_version_reply": ModelVersionReply(model_version=5),
    "round_list_reply": RoundListReply(rounds=(
        _ROUND, dataclasses.replace(_ROUND, round_id="r0", status=RoundStatus.FAILED,
                                    reason="no_quorum", result={"detail": "0 of 1 updates"}))),
    "data": DataBatch.of([[0.5, 1.0], [2.0, -3.0]], [1, 0], window="day1"),
    "infer": InferRequest.of([[0.5, 1.0], [2.0, -3.0]]),
    "infer_reply": InferReply.answer(3, [1, 0], [0.75, 0.5]),
    "probe": UpdateProbe(edge_id="e1", update_id="u1", round_id="r1", count=152),
    "missing": MissingChunks(update_id="u1", count=152, runs=((0, 3), (76, 152))),
}


def _raw(msg: wire.Message) -> dict[str, Any]:
    """The frame of `msg` as a plain map, to be tampered with."""
    raw: dict[str, Any] = msgpack.unpackb(wire.pack(msg), raw=False)
    return raw


def _repack(msg: wire.Message, edit: Callable[[dict[str, Any]], object]) -> bytes:
    """The frame of `msg` after `edit` changed its map in place."""
    raw = _raw(msg)
    edit(raw)
    return msgpack.packb(raw, use_bin_type=True)


def _rejects(buf: bytes) -> Reason:
    """The reason `wire.unpack` gives for refusing `buf`."""
    with pytest.raises(ProtocolError) as info:
        wire.unpack(buf)
    return info.value.reason


def test_examples_cover_every_kind() -> None:
    """The round-trip table has one example per registered kind, so a new kind is not missed."""
    # Prepare / Execute
    kinds = set(EXAMPLES)

    # Assert
    assert kinds == set(wire.KINDS)
    assert all(type(msg) is wire.KINDS[kind] for kind, msg in EXAMPLES.items())


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_round_trip(kind: str) -> None:
    """`unpack(pack(msg))` gives back an equal message of the same class."""
    # Prepare
    msg = EXAMPLES[kind]

    # Execute
    back = wire.unpack(wire.pack(msg))

    # Assert
    assert type(back) is type(msg)
    assert back == msg


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_frame_carries_kind_and_version(kind: str) -> None:
    """Every frame is a map with `"k"` the class KIND and `"v"` its VERSION."""
    # Prepare
    msg = EXAMPLES[kind]

    # Execute
    raw = _raw(msg)

    # Assert
    assert raw["k"] == kind == msg.KIND
    assert raw["v"] == msg.VERSION


def test_round_reply_without_round_round_trips() -> None:
    """A round reply with no round (`round stop` before any round ran) survives the trip."""
    # Prepare
    msg = RoundReply(round=None, model_version=0)

    # Execute
    back = wire.unpack(wire.pack(msg))

    # Assert
    assert back == msg
    assert isinstance(back, RoundReply) and back.round is None


def test_golden_bytes_of_a_v1_command_request_read_as_the_typed_command() -> None:
    """The bytes a v1 CLI sent for `status` (kind `cmd`, retired) still read, as a StatusQuery
    (P2: an older frame is upgraded in one named function)."""
    # Prepare
    golden = bytes.fromhex(
        "84"            # map of 4
        "a176" "01"     # "v": 1
        "a16b" "a3636d64"  # "k": "cmd"
        "a476657262" "a6737461747573"  # "verb": "status"
        "a461726773" "81" "a16e" "01"  # "args": {"n": 1}
    )

    # Execute
    msg = wire.unpack(golden)

    # Assert
    assert msg == StatusQuery()


def test_golden_bytes_of_a_command() -> None:
    """A ModelRollback packs to exactly these bytes, so format drift fails loudly."""
    # Prepare
    msg = ModelRollback(version=3)
    golden = bytes.fromhex(
        "83"            # map of 3
        "a176" "01"     # "v": 1
        "a16b" "ae6d6f64656c5f726f6c6c6261636b"  # "k": "model_rollback"
        "a3766572" "03"  # "ver": 3
    )

    # Execute
    buf = wire.pack(msg)

    # Assert
    assert buf == golden
    assert wire.unpack(golden) == msg


def test_round_status_and_mode_travel_as_plain_strings() -> None:
    """The StrEnum fields of a round state are the same strings on the wire as before."""
    # Prepare
    msg = dataclasses.replace(_ROUND, status=RoundStatus.FAILED, mode=RoundMode.ASYNC)

    # Execute
    raw = _raw(msg)
    back = wire.unpack(wire.pack(msg))

    # Assert
    assert (type(raw["st"]), raw["st"], type(raw["mode"]), raw["mode"]) == (
        str, "failed", str, "async")
    assert isinstance(back, RoundState)
    assert back.status is RoundStatus.FAILED and back.mode is RoundMode.ASYNC


@pytest.mark.parametrize("kind", ["update", "model"])
def test_tensor_bytes_travel_as_bin(kind: str) -> None:
    """Chunk data and the sha256 are msgpack bin, so they decode as bytes even with raw=False."""
    # Prepare
    msg = EXAMPLES[kind]

    # Execute
    buf = wire.pack(msg)
    raw = msgpack.unpackb(buf, raw=False)

    # Assert
    assert type(raw["data"]) is bytes
    assert raw["data"] == msg.data
    assert type(raw["sha"]) is bytes
    assert b"\xc4\x08" + msg.data in buf  # bin 8 marker, length 8, then the bytes


@pytest.mark.parametrize(
    "buf",
    [b"", b"\xc1", b"\x92\x01", b"\x81\xa1v", msgpack.packb({"v": 1}) + b"\x00"],
    ids=["empty", "reserved-byte", "truncated-array", "truncated-map", "trailing-bytes"],
)
def test_rejects_garbage(buf: bytes) -> None:
    """Bytes that are not one msgpack object are refused as not_msgpack."""
    # Prepare / Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.NOT_MSGPACK


@pytest.mark.parametrize("obj", [[1, 2], "cmd", 7, None, b"\x00"])
def test_rejects_non_map(obj: object) -> None:
    """A msgpack value that is not a map is a bad frame."""
    # Prepare
    buf = msgpack.packb(obj, use_bin_type=True)

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize(
    "frame",
    [{"v": 1, "k": "nope"}, {"v": 1}, {"v": 1, "k": 7}, {"v": 1, "k": None}],
    ids=["unknown", "missing", "int", "nil"],
)
def test_rejects_unknown_kind(frame: dict[str, Any]) -> None:
    """A frame whose kind is missing or not registered is unknown_kind."""
    # Prepare
    buf = msgpack.packb(frame)

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.UNKNOWN_KIND


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_rejects_newer_version(kind: str) -> None:
    """A frame one version newer than this build reads is unsupported_version."""
    # Prepare
    msg = EXAMPLES[kind]
    buf = _repack(msg, lambda d: d.update(v=msg.VERSION + 1))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.UNSUPPORTED_VERSION


@pytest.mark.parametrize("version", [0, -1, True, "1", None, 1.0])
def test_rejects_bad_version(version: object) -> None:
    """A version that is not a positive int (bool included) is a bad frame."""
    # Prepare
    buf = _repack(EXAMPLES["model_rollback"], lambda d: d.update(v=version))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize(
    ("kind", "key"),
    [("update", "data"), ("update", "sha"), ("update", "edge"), ("update", "i"),
     ("model", "ver"), ("manifest", "hdr"), ("round", "train"), ("status", "on"),
     ("model_rollback", "ver"), ("model_promote", "ver"), ("reply", "ok"),
     ("round_reply", "ver"), ("status_reply", "edges"), ("model_list_reply", "vers"),
     ("model_version_reply", "ver"), ("round_list_reply", "rounds"),
     ("round_progress", "rx"), ("round_progress", "round")],
)
def test_rejects_missing_field(kind: str, key: str) -> None:
    """A required field left out is a bad frame, never a KeyError."""
    # Prepare
    buf = _repack(EXAMPLES[kind], lambda d: d.pop(key))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("update", "i", "1"),
        ("update", "i", True),
        ("update", "size", True),
        ("update", "ns", False),
        ("update", "data", "text"),
        ("update", "loss", "0.25"),
        ("update", "loss", float("nan")),
        ("model", "ver", True),
        ("manifest", "parent", True),
        ("manifest", "metrics", {"accuracy": [1]}),
        ("round", "st", "closing"),
        ("round", "sel", ["e1", 2]),
        ("round", "q", True),
        ("round", "mode", "eventually"),
        ("round", "buf", -1),
        ("round", "ms", True),
        ("round_progress", "rx", -1),
        ("round_progress", "exp", True),
        ("status", "on", 1),
        ("status", "ver", True),
        ("status", "ver", -1),
        ("round_start", "ep", True),
        ("round_start", "lr", "0.1"),
        ("round_start", "mode", "eventually"),
        ("round_start", "edges", ["e1", 2]),
        ("round_start", "edges", "e1,e2"),
        ("round_start", "cp", {"density": [1]}),
        ("round_start", "codec", 1),
        ("model_rollback", "ver", True),
        ("model_promote", "ver", -1),
        ("reply", "ok", 1),
        ("status_reply", "edges", [1]),
        ("status_reply", "rej", {"bad_hash": None}),
        ("round_reply", "ver", True),
        ("model_list_reply", "vers", [{"ver": 1}]),
        ("round_list", "n", 0),
        ("round_list", "n", True),
        ("round_list_reply", "rounds", [{"round": "r1"}]),
    ],
)
def test_rejects_wrong_type(kind: str, key: str, value: object) -> None:
    """A field of the wrong type or range (a bool where an int is expected too) is a bad frame."""
    # Prepare
    buf = _repack(EXAMPLES[kind], lambda d: d.update({key: value}))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize(
    ("key", "value"),
    [("ep", True), ("bs", 0), ("lr", 0), ("mom", 1.0)],
)
def test_rejects_bad_train_params(key: str, value: object) -> None:
    """Training parameters nested in a round are type- and range-checked as a bad frame."""
    # Prepare
    buf = _repack(EXAMPLES["round"], lambda d: d["train"].update({key: value}))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize("length", [0, 31, 33])
def test_rejects_sha_of_wrong_length(length: int) -> None:
    """A sha256 that is not 32 bytes is a bad frame."""
    # Prepare
    buf = _repack(EXAMPLES["update"], lambda d: d.update(sha=b"\x01" * length))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize(
    ("size", "count", "chunk_size"),
    [(17, 2, 8), (16, 1, 8), (16, 3, 8), (8, 2, 8)],
    ids=["too-big-by-one", "too-few-chunks", "one-chunk-too-many", "last-chunk-empty"],
)
def test_rejects_header_whose_chunks_cannot_hold_size(size: int, count: int,
                                                     chunk_size: int) -> None:
    """A header whose `count * chunk_size` does not exactly cover `size` is size_mismatch."""
    # Prepare
    buf = _repack(EXAMPLES["update"],
                  lambda d: d.update(size=size, n=count, cs=chunk_size, i=0))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.SIZE_MISMATCH


def test_rejects_inconsistent_nested_header() -> None:
    """A manifest's nested header is checked the same way as a chunk's."""
    # Prepare
    buf = _repack(EXAMPLES["manifest"], lambda d: d["hdr"].update(size=17))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.SIZE_MISMATCH


@pytest.mark.parametrize(
    ("kind", "index"),
    [("update", 2), ("update", -1), ("model", 2), ("model", 1 << 40)],
)
def test_rejects_chunk_index_out_of_range(kind: str, index: int) -> None:
    """A chunk index outside `[0, count)` is chunk_out_of_range."""
    # Prepare
    buf = _repack(EXAMPLES[kind], lambda d: d.update(i=index))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.CHUNK_OUT_OF_RANGE


def test_rejects_oversized_frame() -> None:
    """A frame over MAX_FRAME is refused as oversized before it is parsed."""
    # Prepare
    buf = b"\xc1" * (wire.MAX_FRAME + 1)  # garbage: proves the size check comes first

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.OVERSIZED


@pytest.mark.parametrize(
    "spec",
    [[], [["w"]], [["w", [0]]], [["w", [True]]], [["w", [1] * 9]], [[1, [2]]]],
    ids=["empty", "no-shape", "zero-dim", "bool-dim", "nine-dims", "int-name"],
)
def test_rejects_bad_spec(spec: list[Any]) -> None:
    """A tensor spec that is empty or has a malformed entry is a bad frame."""
    # Prepare
    buf = _repack(EXAMPLES["update"], lambda d: d.update(spec=spec))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_dropping_any_field_never_escapes_as_another_error(kind: str) -> None:
    """Removing any one top-level field either still parses or raises ProtocolError."""
    # Prepare
    keys = sorted(k for k in _raw(EXAMPLES[kind]) if k not in ("k", "v"))

    # Execute
    outcomes = []
    for key in keys:
        buf = _repack(EXAMPLES[kind], lambda d, key=key: d.pop(key))
        try:
            wire.unpack(buf)
            outcomes.append("ok")
        except ProtocolError as err:
            outcomes.append(str(err.reason))

    # Assert
    assert len(outcomes) == len(keys)
    assert set(outcomes) <= {"ok", "bad_frame"}


def _v1_manifest(layers: list[Any]) -> bytes:
    def downgrade(d: dict[str, Any]) -> None:
        del d["arch"]
        d.update(v=1, layers=layers)
    return _repack(EXAMPLES["manifest"], downgrade)


def test_reads_a_v1_manifest_as_the_mlp_its_layers_describe() -> None:
    """A version 1 manifest (layer sizes, before architectures) still parses, as an MLP."""
    # Prepare
    buf = _v1_manifest([64, 100, 100, 10])

    # Execute
    msg = wire.expect(buf, Manifest)

    # Assert
    assert msg.arch == Architecture(family="mlp", input_shape=(64,), outputs=10,
                                    task=TaskKind.CLASSIFICATION, params={"hidden": (100, 100)})


@pytest.mark.parametrize("layers", [[True, 10], [10], [0, 10], ["a", 3]])
def test_rejects_bad_v1_layer_sizes(layers: list[Any]) -> None:
    """A v1 manifest layer width given as a bool, a zero, a string or alone is a bad frame."""
    # Prepare
    buf = _v1_manifest(layers)

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize("arch", [
    {"fam": "Bad Name", "in": [4], "task": "classification", "out": 2, "p": {}},
    {"fam": "mlp", "in": [], "task": "classification", "out": 2, "p": {}},
    {"fam": "mlp", "in": [4, 4, 4, 4], "task": "classification", "out": 2, "p": {}},
    {"fam": "mlp", "in": [True], "task": "classification", "out": 2, "p": {}},
    {"fam": "mlp", "in": [1 << 21], "task": "classification", "out": 2, "p": {}},
    {"fam": "mlp", "in": [4], "task": "clustering", "out": 2, "p": {}},
    {"fam": "mlp", "in": [4], "task": "regression", "out": 0, "p": {}},
    {"fam": "mlp", "in": [4], "task": "regression", "out": 1, "p": {"hidden": [float("nan")]}},
    {"fam": "mlp", "in": [4], "task": "regression", "out": 1, "p": {"hidden": [True]}},
    {"fam": "mlp", "in": [4], "task": "regression", "out": 1, "p": {"Hidden": 3}},
    {"fam": "mlp", "in": [4], "task": "regression", "out": 1, "p": {"x": {"nested": 1}}},
    {"fam": "mlp", "in": [4], "task": "regression", "out": 1, "p": {"x": list(range(65))}},
    {"fam": "mlp", "in": [4], "task": "regression", "out": 1,
     "p": {f"k{i}": i for i in range(33)}},
    {"fam": "mlp", "in": [4], "task": "regression"},
], ids=lambda a: "-".join(str(v)[:12] for v in a.values()))
def test_rejects_an_architecture_out_of_bounds(arch: dict[str, Any]) -> None:
    """Every malformed architecture in a manifest is a bad frame, never a crash."""
    # Prepare
    buf = _repack(EXAMPLES["manifest"], lambda d: d.update(arch=arch))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


@pytest.mark.parametrize("value", [0, False, "", []])
def test_rejects_falsy_non_map_round(value: object) -> None:
    """A reply whose round is neither nil nor a map is a bad frame."""
    # Prepare
    buf = _repack(EXAMPLES["round_reply"], lambda d: d.update(round=value))

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME


def test_expect_returns_the_right_kind() -> None:
    """`expect` hands back the message when its kind is the one asked for."""
    # Prepare
    buf = wire.pack(EXAMPLES["status"])

    # Execute
    msg = wire.expect(buf, EdgeStatus)

    # Assert
    assert msg == EXAMPLES["status"]


def test_expect_rejects_another_kind() -> None:
    """`expect` refuses a valid frame of another kind with unknown_kind."""
    # Prepare
    buf = wire.pack(EXAMPLES["model_rollback"])

    # Execute
    with pytest.raises(ProtocolError) as info:
        wire.expect(buf, UpdateChunk)

    # Assert
    assert info.value.reason is Reason.UNKNOWN_KIND
    assert "update" in info.value.detail and "model_rollback" in info.value.detail


def test_async_session_state_round_trips() -> None:
    """An async session's mode, buffer and staleness bound survive the trip (keys `mode`,
    `buf`, `ms`), and the frame's kind stays `round`."""
    # Prepare
    msg = dataclasses.replace(_ROUND, mode=RoundMode.ASYNC, buffer=3, max_staleness=2)

    # Execute
    raw = _raw(msg)
    back = wire.unpack(wire.pack(msg))

    # Assert
    assert back == msg
    assert (raw["k"], raw["mode"], raw["buf"], raw["ms"]) == ("round", "async", 3, 2)


def test_round_frame_from_before_async_sessions_is_a_sync_round() -> None:
    """A round frame without `mode`, `buf` and `ms` (an older cloud's) parses as a sync round
    with buffer and staleness 0 (P2: a missing optional key reads as its default)."""
    # Prepare
    buf = _repack(_ROUND, lambda d: [d.pop(k) for k in ("mode", "buf", "ms")])

    # Execute
    back = wire.unpack(buf)

    # Assert
    assert back == _ROUND
    assert isinstance(back, RoundState) and (back.mode, back.buffer, back.max_staleness) == (
        "sync", 0, 0)


def test_model_info_carries_status_reason_and_evals() -> None:
    """A rejected candidate's status, gate reason and per-window accuracies survive the trip
    inside a reply; an older cloud's entry without them reads as a promoted version."""
    # Prepare
    info = ModelInfo(version=4, parent=3, round_id="r4", lineage={"metrics.accuracy": 0.5},
                     status=VersionStatus.REJECTED, reason="regressed_past",
                     evals={"w1": 0.5, "w2": 0.75})
    reply = ModelListReply(model_version=3, versions=(info,))
    old = {"ver": 4, "parent": 3, "round": "r4", "lin": {}}

    # Execute
    back = wire.unpack(wire.pack(reply))
    from_old = ModelInfo.from_wire(old)

    # Assert
    assert isinstance(back, ModelListReply) and back.versions == (info,)
    assert (from_old.status, from_old.reason, dict(from_old.evals)) == ("promoted", "", {})


def test_frames_from_before_round_limits_and_declines_parse_with_none() -> None:
    """A round or status frame without the data limits, declines or data keys (older
    builds) parses with their defaults."""
    # Prepare
    def strip(d: dict[str, Any]) -> None:
        for key in ("win", "age", "min"):
            d["train"].pop(key)
        d.pop("dec")
    old_round = _repack(_ROUND, strip)
    old_status = _repack(_STATUS, lambda d: [d.pop(k) for k in ("dec", "dwhy", "data")])

    # Execute
    state = wire.expect(old_round, RoundState)
    status = wire.expect(old_status, EdgeStatus)

    # Assert
    assert (state.train.max_windows, state.train.max_age_s, state.train.min_samples) == (
        0, 0.0, 1)
    assert state.declined == {} and state.expected == 2
    assert (status.declined, status.decline_reason, dict(status.data)) == ("", "", {})


@pytest.mark.parametrize("edit", [
    lambda d: d["train"].update(win=-1), lambda d: d["train"].update(min=0),
    lambda d: d["train"].update(age="soon"), lambda d: d.update(dec={"e2": 3}),
    lambda d: d.update(dec=["e2"]), lambda d: d.update(dec={"e9": "too_little_data"}),
])
def test_rejects_bad_round_limits_and_declines(edit: Callable[[dict[str, Any]], object]) -> None:
    """Out-of-range data limits and malformed declines (or one of an edge not selected) are
    bad frames."""
    # Prepare
    buf = _repack(_ROUND, edit)

    # Execute
    reason = _rejects(buf)

    # Assert
    assert reason is Reason.BAD_FRAME
