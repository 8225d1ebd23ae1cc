"""Update intake: frames from the update topics -> verified, decoded updates of the open round."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import torch

from fedstream.cloud import rounds
from fedstream.cloud.config import IntakeConfig
from fedstream.shared import wire
from fedstream.shared.blobs import decode_blob
from fedstream.shared.chunks import Reassembler
from fedstream.shared.control import RoundState
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.messages import BlobHeader, Spec, UpdateChunk, UpdateMeta

# Rejections that condemn the whole update (the edge gets a receipt and drops it); any other
# rejection concerns one frame, and the update may still complete from good frames.
FINAL = frozenset({Reason.STALE_ROUND, Reason.UNKNOWN_EDGE, Reason.DUPLICATE_UPDATE,
                   Reason.BAD_HASH, Reason.OVERSIZED, Reason.NON_FINITE, Reason.SPEC_MISMATCH,
                   Reason.UNKNOWN_CODEC})


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
        params: Memory bounds and the partial-update timeout.
    """

    def __init__(self, *, spec: Spec, params: IntakeConfig) -> None:
        self.spec = spec
        self.params = params
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
    def parse(payload: bytes, *, topic_edge: str) -> UpdateChunk:
        """Parse one frame from an edge's update topic.

        Raises:
            ProtocolError: the frame is malformed or names another edge than its topic.
        """
        chunk: UpdateChunk = wire.expect(payload, UpdateChunk)
        if chunk.meta.edge_id != topic_edge:
            raise ProtocolError(Reason.BAD_FRAME,
                                f"frame names {chunk.meta.edge_id}, topic {topic_edge}")
        return chunk

    def take(self, payload: bytes | UpdateChunk, *, topic_edge: str,
             state: RoundState | None, counted: AbstractSet[tuple[str, int]],
             now: float) -> Update | None:
        """Take one frame (raw or parsed); return the update once it is complete and valid.

        `counted` holds the (edge id, base version) of updates the round already accepted.

        Raises:
            ProtocolError: with the reason the frame or update is rejected; for a reason in
                `FINAL` the update as a whole is refused and its partial is dropped.
        """
        chunk = payload if isinstance(payload, UpdateChunk) else self.parse(
            payload, topic_edge=topic_edge)
        # A round is checked on a blob's first chunk (before any memory is spent on it) and
        # again on completion, since the round may have closed in between.
        parts = self._reassembler(topic_edge)
        if not parts.knows(chunk.header.blob_id):
            rounds.check_update(state, chunk.meta, counted)
            if self.held_bytes + chunk.header.size > self.params.max_total_bytes:
                raise ProtocolError(Reason.OVERSIZED, "total reassembly memory bound reached")
        done = parts.add(chunk.header, chunk.index, chunk.data, now)
        if done is None:
            return None
        rounds.check_update(state, chunk.meta, counted)
        delta = decode_blob(done.header, done.blob, self.spec)
        return Update(meta=chunk.meta, header=done.header, blob=done.blob, delta=delta)

    def expire(self, now: float) -> list[str]:
        """Drop partial updates that stopped arriving; return their blob ids."""
        return [b for parts in self._senders.values() for b in parts.expire(now)]
