"""msgpack framing of messages: `pack(msg) -> bytes` and `unpack(buf) -> Message`.

The only module that imports msgpack. Every frame is a map with `"v"` (format version) and
`"k"` (kind); tensor bytes stay msgpack `bin`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgpack

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol.commands import ANSWERS, COMMANDS, Answer, Command, upgrade_cmd_v1
from fedstream.shared.protocol.control import (
    EdgeStatus,
    Receipt,
    RoundProgress,
    RoundState,
)
from fedstream.shared.protocol.data import DataBatch
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.messages import Manifest, ModelChunk, UpdateChunk
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe

Message = (UpdateChunk | ModelChunk | Manifest | RoundState | RoundProgress | EdgeStatus | Command
           | Answer | Receipt | DataBatch | InferRequest | InferReply | UpdateProbe
           | MissingChunks)

KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (UpdateChunk, ModelChunk, Manifest, RoundState, RoundProgress, EdgeStatus, *COMMANDS,
                *ANSWERS, Receipt, DataBatch, InferRequest, InferReply, UpdateProbe,
                MissingChunks)
}

# Kinds no longer sent, each read by the one function that upgrades it (P2): kind -> (the
# newest version it had, the upgrade).
RETIRED: dict[str, tuple[int, Callable[[Mapping[str, Any]], Message]]] = {
    "cmd": (1, upgrade_cmd_v1),  # {verb, args}, before one message per verb (P13)
}

M = TypeVar("M", bound=Message)

# A frame is at most one chunk plus headers; anything larger is refused before parsing.
MAX_FRAME = 16 << 20


def pack(msg: Message) -> bytes:
    """Serialise a message with its kind and version."""
    packed: bytes = msgpack.packb({"v": msg.VERSION, "k": msg.KIND, **msg.to_wire()},
                                  use_bin_type=True)
    return packed


def unpack(buf: bytes) -> Message:
    """Parse one frame.

    Raises:
        ProtocolError: not msgpack, not a map, unknown kind, newer version, or bad fields.
    """
    if len(buf) > MAX_FRAME:
        raise ProtocolError(Reason.OVERSIZED, f"frame of {len(buf)} bytes")
    try:
        d: Any = msgpack.unpackb(buf, raw=False, strict_map_key=True)
    except Exception as err:  # msgpack raises a zoo of types for garbage input
        raise ProtocolError(Reason.NOT_MSGPACK, type(err).__name__) from err
    if not isinstance(d, dict):
        raise ProtocolError(Reason.BAD_FRAME, "frame is not a map")
    kind, version = d.get("k"), d.get("v")
    if isinstance(kind, str) and kind in RETIRED:
        newest, upgrade = RETIRED[kind]
        _check_version(kind, version, newest)
        return upgrade(d)
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(Reason.UNKNOWN_KIND, f"kind {kind!r}")
    _check_version(kind, version, cls.VERSION)
    return cls.from_wire(d)


def _check_version(kind: object, version: object, newest: int) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProtocolError(Reason.BAD_FRAME, f"bad version {version!r}")
    if version > newest:
        raise ProtocolError(Reason.UNSUPPORTED_VERSION,
                            f"{kind} v{version}; this build reads up to v{newest}")


def expect(buf: bytes, cls: type[M]) -> M:
    """`unpack` and check the message is a `cls`.

    Raises:
        ProtocolError: as `unpack`, or unknown_kind for a message of another kind.
    """
    msg = unpack(buf)
    if not isinstance(msg, cls):
        raise ProtocolError(Reason.UNKNOWN_KIND, f"expected {cls.KIND}, got {msg.KIND}")
    return msg


def pack_frames(frames: list[bytes]) -> bytes:
    """Bundle frames into one buffer (an edge's outbox file)."""
    packed: bytes = msgpack.packb(frames, use_bin_type=True)
    return packed


def unpack_frames(buf: bytes) -> list[bytes]:
    """Undo `pack_frames`.

    Raises:
        ProtocolError: the buffer is not a bundle of frames.
    """
    try:
        frames: Any = msgpack.unpackb(buf, raw=False)
    except Exception as err:  # msgpack raises a zoo of types for garbage input
        raise ProtocolError(Reason.NOT_MSGPACK, type(err).__name__) from err
    if not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames):
        raise ProtocolError(Reason.BAD_FRAME, "not a list of frames")
    return frames


def canonical(value: Any) -> bytes:
    """One byte string per value, whatever order its maps were built in: what a signature
    covers (`shared/protocol/statements.py`). Maps are written with sorted keys, at every
    depth; tuples as arrays.

    Raises:
        TypeError: for a value msgpack cannot encode.
    """
    packed: bytes = msgpack.packb(_sorted(value), use_bin_type=True)
    return packed


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value
