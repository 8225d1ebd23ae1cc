"""Update intake: frames from the update topics -> complete blobs -> verified, decoded updates.

Intake only checks; it decides nothing. Each `ProtocolError` it raises carries its scope: a
FRAME rejection refuses one frame (its update may still complete from good frames), an UPDATE
rejection refuses the update as a whole. Recording the verdict is the receiver's job
(`cloud/receiver.py`): the journal is the one record of what was decided.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import torch

from fedstream.cloud import rounds
from fedstream.cloud.config import IntakeConfig
from fedstream.cloud.signatures import UpdateSignatures
from fedstream.shared.errors import ProtocolError, Reason, Scope
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.blobs import decode_blob
from fedstream.shared.protocol.chunks import Completed, Reassembler
from fedstream.shared.protocol.control import RoundState
from fedstream.shared.protocol.messages import BlobHeader, Spec, UpdateChunk, UpdateMeta
from fedstream.shared.protocol.transfer import UpdateProbe

UpdateFrame = UpdateChunk | UpdateProbe


@dataclass(frozen=True, slots=True)
class Update:
    """A complete, verified update."""

    meta: UpdateMeta
    header: BlobHeader
    blob: bytes | bytearray | memoryview
    delta: list[torch.Tensor]


class Intake:
    """Reassembles update chunks within memory bounds and checks them against the round.

    Args:
        spec: The model's tensor spec; an update with another spec is rejected.
        params: Memory bounds and the partial-update timeouts.
        signatures: Checks signed updates (None: updates are not signed in this federation).
    """

    def __init__(self, *, spec: Spec, params: IntakeConfig,
                 signatures: UpdateSignatures | None = None) -> None:
        self.spec = spec
        self.params = params
        self.signatures = signatures
        # One reassembler per edge bounds what a single sender can pin; the total bound is
        # checked across all of them before a new blob is started.
        self._senders: dict[str, Reassembler] = {}

    @property
    def held_bytes(self) -> int:
        """Bytes held by partial updates of every sender."""
        return sum(r.held_bytes for r in self._senders.values())

    def _reassembler(self, edge_id: str) -> Reassembler:
        parts = self._senders.get(edge_id)
        if parts is None:
            parts = Reassembler(max_blob_bytes=self.params.max_update_bytes,
                                max_total_bytes=self.params.max_sender_bytes,
                                timeout_s=self.params.partial_timeout_s)
            self._senders[edge_id] = parts
        return parts

    @staticmethod
    def parse(payload: bytes, *, topic_edge: str) -> UpdateFrame:
        """Parse one frame from an edge's update topic: a chunk or a probe.

        Raises:
            ProtocolError: the frame is malformed or names another edge than its topic.
        """
        frame = wire.unpack(payload)
        if not isinstance(frame, UpdateChunk | UpdateProbe):
            raise ProtocolError(Reason.UNKNOWN_KIND, f"{frame.KIND} on an update topic")
        sender = frame.meta.edge_id if isinstance(frame, UpdateChunk) else frame.edge_id
        if sender != topic_edge:
            raise ProtocolError(Reason.BAD_FRAME, f"frame names {sender}, topic {topic_edge}")
        return frame

    def collect(self, chunk: UpdateChunk, *, state: RoundState | None,
                counted: AbstractSet[tuple[str, int]], now: float) -> Completed | None:
        """Take one chunk; return its blob once every chunk is in and the sha256 matches.

        `counted` holds the (edge id, base version) of updates the round already accepted.
        The round and the signature are checked on a blob's first chunk, before any memory is
        spent on it.

        Raises:
            ProtocolError: with the reason and scope of the rejection.
        """
        parts = self._reassembler(chunk.meta.edge_id)
        if not parts.holds(chunk.header.blob_id):
            # Who signed it first: a copy of an update is a replay before it is a duplicate.
            if self.signatures is not None:
                self.signatures.check(chunk.meta, chunk.header)
            rounds.check_update(state, chunk.meta, counted)
            size, bounds = chunk.header.size, self.params
            if size > min(bounds.max_update_bytes, bounds.max_sender_bytes,
                          bounds.max_total_bytes):
                raise ProtocolError(Reason.OVERSIZED, f"an update of {size} bytes can never "
                                    "fit the reassembly bounds", scope=Scope.UPDATE)
            if self.held_bytes + size > bounds.max_total_bytes:
                # Room frees up as other updates complete: a later pass may fit.
                raise ProtocolError(Reason.OVERSIZED, "total reassembly memory bound reached")
        return parts.add(chunk.header, chunk.index, chunk.data, now)

    def verify(self, meta: UpdateMeta, done: Completed, *, state: RoundState | None,
               counted: AbstractSet[tuple[str, int]]) -> Update:
        """Check a complete blob against the round again (it may have closed since its first
        chunk) and its signature (over the meta of the chunk that completed it, which is the
        one that counts; its sequence number is recorded as used), and decode it.

        Raises:
            ProtocolError: scope UPDATE, with the reason the update is refused.
        """
        if self.signatures is not None:
            self.signatures.claim(meta, done.header)
        rounds.check_update(state, meta, counted)
        try:
            delta = decode_blob(done.header, done.blob, self.spec)
        except ProtocolError as err:
            # The blob is whole and hashed: what fails to decode now fails on every re-send.
            raise ProtocolError(err.reason, err.detail, scope=Scope.UPDATE) from err
        return Update(meta=meta, header=done.header, blob=done.blob, delta=delta)

    def holds(self, edge_id: str, blob_id: str) -> bool:
        """True while a partial update of `edge_id` is in memory."""
        parts = self._senders.get(edge_id)
        return parts is not None and parts.holds(blob_id)

    def drop(self, edge_id: str, blob_id: str) -> None:
        """Forget a partial update refused as a whole."""
        parts = self._senders.get(edge_id)
        if parts is not None:
            parts.drop(blob_id)

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop partial updates that stopped arriving; return their (edge id, blob id)."""
        return [(edge, b) for edge, parts in self._senders.items() for b in parts.expire(now)]

    def idle(self, now: float) -> list[tuple[str, BlobHeader]]:
        """(edge id, header) of partial updates that got no chunk for `params.idle_s`, each
        once per idle spell."""
        return [(edge, h) for edge, parts in self._senders.items()
                for h in parts.idle(now, self.params.idle_s)]
