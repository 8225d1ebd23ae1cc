"""The operator's identity commands: enrol an edge's signing key with the cloud, revoke it.

The cloud answers each with a `Reply` (ok, and what changed) and records it in its journal's
audit table. Only an operator identity may publish on `cmd/#` (the broker's ACL), so an edge
can neither enrol a key nor revoke another edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from fedstream.shared.errors import ConfigError, ProtocolError, Reason
from fedstream.shared.protocol._fields import Wire, req
from fedstream.shared.protocol.topics import check_name

PUBLIC_KEY_BYTES = 32  # Ed25519


def _edge(d: Mapping[str, Any]) -> str:
    edge: str = req(d, "edge", str)
    try:
        return check_name("edge id", edge)
    except ConfigError as err:  # a wire field: a protocol error here
        raise ProtocolError(Reason.BAD_FRAME, err.detail) from err


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeEnrol:
    """Register `edge`'s Ed25519 public key: from now on its updates must be signed by it.
    Enrolling the same key again is a no-op; a different key for a live identity is
    refused (revoke it and enrol a new identity)."""

    KIND: ClassVar[str] = "edge_enrol"
    VERB: ClassVar[str] = "edge_enrol"
    VERSION: ClassVar[int] = 1
    edge: str
    key: bytes

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"edge": self.edge, "key": self.key}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; the key is 32 raw bytes."""
        key: bytes = req(d, "key", bytes)
        if len(key) != PUBLIC_KEY_BYTES:
            raise ProtocolError(Reason.BAD_FRAME, f"key of {len(key)} bytes, expected "
                                                  f"{PUBLIC_KEY_BYTES}")
        return cls(edge=_edge(d), key=key)


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeRevoke:
    """Revoke `edge`: the cloud refuses every update of it not yet accepted, and any it
    signs later (`revoked`). Revoking again is a no-op."""

    KIND: ClassVar[str] = "edge_revoke"
    VERB: ClassVar[str] = "edge_revoke"
    VERSION: ClassVar[int] = 1
    edge: str

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"edge": self.edge}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(edge=_edge(d))
