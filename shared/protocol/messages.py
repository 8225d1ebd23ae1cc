"""Wire messages as frozen, versioned dataclasses with explicit field-by-field (de)serialisation.

Every message has a class-level KIND (the `"k"` key) and VERSION (the `"v"` key). `from_wire`
validates types and ranges and raises `ProtocolError`, never `KeyError` or `TypeError`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol._fields import (
    Scalar,
    Wire,
    opt_int,
    req,
    req_float,
    req_map,
    req_range,
    req_scalars,
)
from fedstream.shared.protocol.arch import Architecture

MAX_TENSORS = 4096
MAX_CHUNKS = 1 << 20
# Blob ids name files on the receiver (the cloud's spool), so they are plain words (P5).
BLOB_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def blob_id_of(d: Mapping[str, Any], key: str) -> str:
    """A blob or update id field: 1-64 letters, digits, `-` or `_`."""
    value: str = req(d, key, str)
    if BLOB_ID.fullmatch(value) is None:
        raise ProtocolError(Reason.BAD_FRAME, f"{key!r} must be 1-64 letters, digits, - or _")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """Name and shape of one float32 tensor of a blob."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    def to_wire(self) -> list[Any]:
        """Compact `[name, shape]` form."""
        return [self.name, list(self.shape)]

    @classmethod
    def from_wire(cls, item: Any) -> Self:
        """Parse `[name, shape]`."""
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ProtocolError(Reason.BAD_FRAME, "tensor spec must be [name, shape]")
        shape = item[1]
        if not (isinstance(shape, list) and len(shape) <= 8):
            raise ProtocolError(Reason.BAD_FRAME, f"tensor {item[0]!r} has a bad shape")
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 1 << 31
                   for n in shape):
            raise ProtocolError(Reason.BAD_FRAME, f"tensor {item[0]!r} has a bad shape")
        return cls(name=item[0], shape=tuple(shape))


Spec = tuple[TensorSpec, ...]


def spec_to_wire(spec: Spec) -> list[Any]:
    """Serialise a tensor spec list."""
    return [t.to_wire() for t in spec]


def spec_from_wire(items: Any) -> Spec:
    """Parse a tensor spec list."""
    if not isinstance(items, list) or not 0 < len(items) <= MAX_TENSORS:
        raise ProtocolError(Reason.BAD_FRAME, "spec must be a non-empty list")
    return tuple(TensorSpec.from_wire(i) for i in items)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobHeader:
    """What a receiver needs to start reassembling a blob; travels on every chunk."""

    blob_id: str
    size: int
    sha256: bytes
    count: int
    chunk_size: int
    codec: str
    spec: Spec
    # The header is framed on every chunk: its spec's wire form is built once, on first use.
    _spec_wire: list[Any] | None = field(default=None, init=False, repr=False, compare=False)

    def to_wire(self) -> Wire:
        """Short stable keys."""
        spec = self._spec_wire
        if spec is None:
            spec = spec_to_wire(self.spec)
            object.__setattr__(self, "_spec_wire", spec)
        return {"blob": self.blob_id, "size": self.size, "sha": self.sha256, "n": self.count,
                "cs": self.chunk_size, "codec": self.codec, "spec": spec}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse and check internal consistency (count * chunk size covers size).

        Every chunk of a blob repeats its header, so a header parsed recently is handed back
        when `d` holds exactly the same fields (same values and types): parsing is pure, so
        the result is the one a full parse would give, and anything else is parsed afresh.
        """
        blob_id = d.get("blob")
        if cls is BlobHeader and type(blob_id) is str:
            seen = _RECENT_HEADERS.get(blob_id)
            if seen is not None and _same_header_fields(d, *seen):
                return seen[0]  # type: ignore[return-value]
        header = cls._parse(d)
        if cls is BlobHeader:
            _remember_header(header, d["spec"])
        return header

    @classmethod
    def _parse(cls, d: Mapping[str, Any]) -> Self:
        blob_id = blob_id_of(d, "blob")
        sha: bytes = req(d, "sha", bytes)
        if len(sha) != 32:
            raise ProtocolError(Reason.BAD_FRAME, "sha256 must be 32 bytes")
        size = req_range(d, "size", 1, 1 << 40)
        count = req_range(d, "n", 1, MAX_CHUNKS)
        chunk_size = req_range(d, "cs", 1, 1 << 30)
        if not (count - 1) * chunk_size < size <= count * chunk_size:
            raise ProtocolError(Reason.SIZE_MISMATCH,
                                f"{count} chunks of {chunk_size} bytes cannot hold {size} bytes")
        return cls(blob_id=blob_id, size=size, sha256=sha, count=count, chunk_size=chunk_size,
                   codec=req(d, "codec", str), spec=spec_from_wire(req(d, "spec", list)))

    def chunk_span(self, index: int) -> tuple[int, int]:
        """Byte offset and length of chunk `index`."""
        start = index * self.chunk_size
        return start, min(self.chunk_size, self.size - start)


# Recently parsed headers by blob id, with the raw spec they came from. Enough entries for
# many senders' chunks interleaving; a miss only costs a full parse. Headers whose spec is
# large in its wire form are not kept, so the cache stays small whatever senders claim.
_RECENT_MAX = 256
_RECENT_SPEC_MAX_CHARS = 1 << 16
_RECENT_HEADERS: dict[str, tuple[BlobHeader, list[Any]]] = {}
_RECENT_LOCK = threading.Lock()


def _same_header_fields(d: Mapping[str, Any], header: BlobHeader, raw_spec: list[Any]) -> bool:
    """True if `d` carries exactly the fields `header` was parsed from (types included)."""
    size, sha, count, chunk_size, codec, spec = (d.get("size"), d.get("sha"), d.get("n"),
                                                 d.get("cs"), d.get("codec"), d.get("spec"))
    if not (type(size) is int and size == header.size and type(sha) is bytes
            and sha == header.sha256 and type(count) is int and count == header.count
            and type(chunk_size) is int and chunk_size == header.chunk_size
            and type(codec) is str and codec == header.codec):
        return False
    # `raw_spec` passed the full parse: [str, [int, ...]] items. An equal list has the same
    # structure and strings; only a bool or float dimension (True == 1, 2.0 == 2) could
    # still compare equal, and the full parse refuses those.
    return spec == raw_spec and all(type(n) is int for _, dims in spec for n in dims)


def _remember_header(header: BlobHeader, raw_spec: list[Any]) -> None:
    if sum(len(name) + 12 * len(dims) for name, dims in raw_spec) > _RECENT_SPEC_MAX_CHARS:
        return
    with _RECENT_LOCK:
        _RECENT_HEADERS.pop(header.blob_id, None)
        _RECENT_HEADERS[header.blob_id] = (header, raw_spec)
        while len(_RECENT_HEADERS) > _RECENT_MAX:
            del _RECENT_HEADERS[next(iter(_RECENT_HEADERS))]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateMeta:
    """Who trained an update, on what, and how much data it represents.

    A signed update carries the edge's sequence number and its Ed25519 signature over
    `statements.update_statement` (both absent from an unsigned one's frames).
    """

    edge_id: str
    round_id: str
    base_version: int
    samples: int
    loss: float
    seq: int = 0
    sig: bytes = b""

    def to_wire(self) -> Wire:
        """Short stable keys."""
        d: Wire = {"edge": self.edge_id, "round": self.round_id, "base": self.base_version,
                   "ns": self.samples, "loss": self.loss}
        if self.sig:
            d["seq"], d["sig"] = self.seq, self.sig
        return d

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse and range-check."""
        return cls(edge_id=req(d, "edge", str), round_id=req(d, "round", str),
                   base_version=req_range(d, "base", 0, 1 << 53),
                   samples=req_range(d, "ns", 1, 1 << 40), loss=req_float(d, "loss"),
                   seq=req_range(d, "seq", 1, 1 << 62) if "seq" in d else 0,
                   sig=signature_of(d))


SIGNATURE_BYTES = 64  # Ed25519


def signature_of(d: Mapping[str, Any]) -> bytes:
    """The optional `"sig"` field: an Ed25519 signature, or b"" when absent."""
    if "sig" not in d:
        return b""
    sig: bytes = req(d, "sig", bytes)
    if len(sig) != SIGNATURE_BYTES:
        raise ProtocolError(Reason.BAD_FRAME, f"signature of {len(sig)} bytes, expected "
                                              f"{SIGNATURE_BYTES}")
    return sig


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateChunk:
    """One chunk of an edge's weight update (a delta from the round's base version).

    `data` may be a memoryview of the blob when sending: it is framed as msgpack bin without
    an extra copy. A received chunk always holds bytes.
    """

    KIND: ClassVar[str] = "update"
    VERSION: ClassVar[int] = 1
    header: BlobHeader
    meta: UpdateMeta
    index: int
    data: bytes | memoryview

    def to_wire(self) -> Wire:
        """Header and meta fields are flattened next to the chunk fields."""
        return {**self.header.to_wire(), **self.meta.to_wire(), "i": self.index, "data": self.data}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; the index is checked against the header's count."""
        header = BlobHeader.from_wire(d)
        return cls(header=header, meta=UpdateMeta.from_wire(d),
                   index=chunk_index(d, header), data=req(d, "data", bytes))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelChunk:
    """One retained chunk of a global model version (`data` as in `UpdateChunk`)."""

    KIND: ClassVar[str] = "model"
    VERSION: ClassVar[int] = 1
    header: BlobHeader
    model: str
    version: int
    index: int
    data: bytes | memoryview

    def to_wire(self) -> Wire:
        """Header fields are flattened next to the chunk fields."""
        return {**self.header.to_wire(), "model": self.model, "ver": self.version,
                "i": self.index, "data": self.data}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; the index is checked against the header's count."""
        header = BlobHeader.from_wire(d)
        return cls(header=header, model=req(d, "model", str),
                   version=req_range(d, "ver", 0, 1 << 53), index=chunk_index(d, header),
                   data=req(d, "data", bytes))


def chunk_index(d: Mapping[str, Any], header: BlobHeader) -> int:
    """The `"i"` field, within the blob's chunk count."""
    index: int = req(d, "i", int)
    if not 0 <= index < header.count:
        raise ProtocolError(Reason.CHUNK_OUT_OF_RANGE, f"chunk {index} of {header.count}")
    return index


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The current global model version: its architecture, lineage and metrics (retained).

    Version 2 carries the architecture (`arch`); a version 1 manifest named MLP layer sizes
    (`layers`) and is read as the MLP they describe.
    """

    KIND: ClassVar[str] = "manifest"
    VERSION: ClassVar[int] = 2
    model: str
    version: int
    parent: int | None
    header: BlobHeader
    arch: Architecture
    metrics: Mapping[str, Scalar] = field(default_factory=dict)
    # The cloud's Ed25519 signature over `statements.manifest_statement` (b"": unsigned).
    sig: bytes = b""

    def to_wire(self) -> Wire:
        """Short stable keys."""
        d: Wire = {"model": self.model, "ver": self.version, "parent": self.parent,
                   "hdr": self.header.to_wire(), "arch": self.arch.to_wire(),
                   "metrics": dict(self.metrics)}
        if self.sig:
            d["sig"] = self.sig
        return d

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse (either version)."""
        if d.get("v") == 1:
            layers = req(d, "layers", list)
            if not (2 <= len(layers) <= 64 and all(type(n) is int and n > 0 for n in layers)):
                raise ProtocolError(Reason.BAD_FRAME,
                                    "field 'layers' must list 2-64 positive ints")
            arch = Architecture.mlp(layers)
        else:
            arch = Architecture.from_wire(req_map(d, "arch"))
        return cls(model=req(d, "model", str), version=req_range(d, "ver", 0, 1 << 53),
                   parent=opt_int(d, "parent"), header=BlobHeader.from_wire(req_map(d, "hdr")),
                   arch=arch, metrics=req_scalars(d, "metrics"), sig=signature_of(d))
