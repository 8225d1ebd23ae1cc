"""Update frames -> durable verdicts: keep chunks, spool complete updates, send receipts.

The order is what makes intake lossless: a chunk is in the journal before its MQTT message is
acknowledged, and a receipt goes out only after the update's verdict is committed.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.intake import FINAL, Intake
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.shared.control import Receipt
from fedstream.shared.errors import ProtocolError
from fedstream.shared.messages import UpdateChunk

log = structlog.get_logger(__name__)


class UpdateReceiver:
    """Handles every frame from the update topics.

    Args:
        intake: Reassembly and validation.
        store: Journal and spool.
        coordinator: Told about each accepted update.
        send_receipt: Publishes a receipt to an edge.
    """

    def __init__(self, *, intake: Intake, store: CloudStore, coordinator: Coordinator,
                 send_receipt: Callable[[str, Receipt], None]) -> None:
        self.intake, self.store, self.coordinator = intake, store, coordinator
        self._send_receipt = send_receipt

    def replay(self, now: float) -> int:
        """Feed chunks kept before a restart back into reassembly; returns how many were
        taken back (chunks of updates rejected on the way are dropped, with one receipt)."""
        count = 0
        for edge_id, frame in self.store.journal.chunk_frames():
            try:
                chunk = self.intake.parse(frame, topic_edge=edge_id)
                # An update rejected by an earlier chunk of this replay is already decided.
                if self.store.journal.update(chunk.header.blob_id) is None:
                    self._take(chunk, frame, now)
                    count += 1
            except ProtocolError as err:
                log.warning("chunk_dropped", edge_id=edge_id, reason=str(err.reason))
        return count

    def on_frame(self, payload: bytes, edge_id: str, now: float) -> None:
        """Handle one frame from `edge_id`'s update topic.

        Raises:
            ProtocolError: the frame or its update is rejected (after any receipt is sent).
        """
        chunk = self.intake.parse(payload, topic_edge=edge_id)
        decided = self.store.journal.update(chunk.header.blob_id)
        if decided is not None:
            # A re-send of a decided update (outbox retry, QoS 1 redelivery): answer once per
            # pass, on its last chunk, and keep nothing.
            if chunk.index == chunk.header.count - 1:
                self._receipt(decided)
            return
        self._take(chunk, payload, now)

    def _take(self, chunk: UpdateChunk, frame: bytes, now: float) -> None:
        meta = chunk.meta
        try:
            update = self.intake.take(chunk, topic_edge=meta.edge_id,
                                      state=self.coordinator.round,
                                      counted=self.coordinator.counted, now=now)
        except ProtocolError as err:
            if err.reason in FINAL:
                self._decide(UpdateRow(update_id=chunk.header.blob_id, round_id=meta.round_id,
                                       edge_id=meta.edge_id, status="rejected",
                                       reason=str(err.reason)), err.detail)
            raise
        if update is None:
            self.store.journal.put_chunk(chunk.header.blob_id, chunk.index, meta.edge_id, frame)
            return
        path = self.store.spool.put(meta.round_id, update.header.blob_id, update.blob)
        row = UpdateRow(update_id=update.header.blob_id, round_id=meta.round_id,
                        edge_id=meta.edge_id, status="accepted", samples=meta.samples,
                        bytes=update.header.size, codec=update.header.codec, spool=path,
                        base=meta.base_version)
        self._decide(row, "")
        self.coordinator.on_update(row, now)

    def _decide(self, row: UpdateRow, detail: str) -> None:
        self.store.journal.record_update(row)
        self._receipt(row, detail)

    def _receipt(self, row: UpdateRow, detail: str = "") -> None:
        self._send_receipt(row.edge_id, Receipt(update_id=row.update_id, round_id=row.round_id,
                                                status=row.status, reason=row.reason,
                                                detail=detail))
