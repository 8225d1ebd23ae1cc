"""Tensors <-> chunked blobs: the one path both sides use to ship models and updates."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedstream.shared.errors import ConfigError, ProtocolError, Reason
from fedstream.shared.protocol.chunks import chunk_views, make_header
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.messages import BlobHeader, Spec


@dataclass(frozen=True, slots=True)
class EncodedBlob:
    """A blob ready to send: its header and zero-copy chunk slices."""

    header: BlobHeader
    chunks: list[memoryview]


def pack_blob(blob: bytes, spec: Spec, *, codec: str, chunk_size: int) -> EncodedBlob:
    """Give encoded bytes a fresh blob id and header and cut them into chunks."""
    header = make_header(blob, blob_id=uuid.uuid4().hex, chunk_size=chunk_size, codec=codec,
                         spec=spec)
    return EncodedBlob(header=header, chunks=chunk_views(blob, header))


def encode_blob(tensors: Sequence[torch.Tensor], spec: Spec, *, codec: str, chunk_size: int,
                codec_params: Mapping[str, Any] | None = None) -> EncodedBlob:
    """Encode `tensors` (in `spec` order) with the named codec and cut the bytes into chunks."""
    if [tuple(t.shape) for t in tensors] != [s.shape for s in spec]:
        raise ValueError("tensors do not match the spec")
    blob = CODECS.build(codec, **(codec_params or {})).encode(tensors)
    return pack_blob(blob, spec, codec=codec, chunk_size=chunk_size)


def decode_blob(header: BlobHeader, blob: bytes | bytearray | memoryview,
                expected_spec: Spec | None) -> list[torch.Tensor]:
    """Decode a verified blob.

    Raises:
        ProtocolError: unknown codec, a spec other than `expected_spec`, wrong size, NaN/Inf.
    """
    if expected_spec is not None and header.spec != expected_spec:
        raise ProtocolError(Reason.SPEC_MISMATCH, f"blob {header.blob_id}")
    return decode_with(header.codec, blob, header.spec)


def decode_with(codec: str, blob: bytes | bytearray | memoryview,
                spec: Spec) -> list[torch.Tensor]:
    """Decode bytes with the named codec.

    Raises:
        ProtocolError: unknown codec, wrong size, NaN/Inf.
    """
    try:
        unit = CODECS.build(codec)
    except ConfigError as err:
        raise ProtocolError(Reason.UNKNOWN_CODEC, codec) from err
    return unit.decode(blob, spec)  # type: ignore[arg-type]
