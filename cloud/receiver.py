"""Update frames -> exactly one durable verdict per update, answered to its edge.

The journal is the one record of "decided". The order is what makes intake lossless: a chunk
is in the journal before its MQTT message is acknowledged; an update's verdict (accepted, or
rejected with its reason) is committed before its receipt goes out; and nothing in memory marks
an update done — a re-send of a decided update is answered from the journal. A complete update
whose verdict could not be recorded (spool or journal failure) is retried from its kept chunks
on every `tick` until it is, so it is never stranded.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.intake import Intake
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import ProtocolError, Scope, StoreError
from fedstream.shared.protocol.chunks import Completed, missing_ranges
from fedstream.shared.protocol.control import Receipt, ReceiptStatus
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe, capped

log = structlog.get_logger(__name__)

Answer = Receipt | MissingChunks


class UpdateReceiver:
    """Handles every frame from the update topics.

    Args:
        intake: Reassembly and validation.
        store: Journal and spool.
        coordinator: Told about each accepted update.
        send: Publishes a receipt or a list of missing chunks to an edge.
    """

    def __init__(self, *, intake: Intake, store: CloudStore, coordinator: Coordinator,
                 send: Callable[[str, Answer], None]) -> None:
        self.intake, self.store, self.coordinator = intake, store, coordinator
        self._send = send
        # (edge id, update id) of complete updates whose verdict is not recorded yet.
        self._undecided: set[tuple[str, str]] = set()

    @property
    def undecided(self) -> frozenset[tuple[str, str]]:
        """Complete updates waiting for their verdict to be recorded."""
        return frozenset(self._undecided)

    def replay(self, now: float) -> int:
        """Feed every chunk kept before a restart back into reassembly; returns how many were
        taken back (chunks of updates decided on the way are dropped, with one receipt)."""
        return sum(self._replay(edge_id, frame, now)
                   for edge_id, frame in self.store.journal.chunk_frames())

    def on_frame(self, payload: bytes, edge_id: str, now: float) -> None:
        """Handle one frame from `edge_id`'s update topic: a chunk or a probe.

        Raises:
            ProtocolError: the frame or its update is rejected (after any receipt is sent).
            StoreError: the chunk or the verdict could not be recorded (not acknowledged; a
                complete update is retried on `tick`).
        """
        frame = self.intake.parse(payload, topic_edge=edge_id)
        if isinstance(frame, UpdateProbe):
            self._answer_probe(frame)
            return
        decided = self.store.journal.update(frame.header.blob_id)
        if decided is not None:
            # A re-send of a decided update (QoS 1 redelivery, an old edge's full re-send):
            # answer once per pass, on its last chunk, and keep nothing.
            if frame.index == frame.header.count - 1:
                self._receipt(decided)
            return
        if (edge_id, frame.header.blob_id) in self._undecided:
            return  # complete and kept; its verdict is retried on tick
        self._take(frame, payload, now)

    def tick(self, now: float) -> None:
        """Retry the verdicts that could not be recorded, drop partial updates that stopped
        arriving, and tell the edges of idle ones which chunks are missing."""
        for edge_id, update_id in sorted(self._undecided):
            self._undecided.discard((edge_id, update_id))
            try:
                for sender, frame in self.store.journal.chunk_frames(update_id):
                    self._replay(sender, frame, now)
            except StoreError as err:
                log.error("update_undecided", edge_id=edge_id, update_id=update_id,
                          reason=str(err.reason), detail=err.detail)
        for edge_id, update_id in self.intake.expire(now):
            self.store.journal.drop_chunks(update_id)
            log.warning("update_dropped", edge_id=edge_id, update_id=update_id,
                        reason="partial_timeout")
        for edge_id, header in self.intake.idle(now):
            self._answer_missing(edge_id, header.blob_id, header.count)

    def _replay(self, edge_id: str, frame: bytes, now: float) -> int:
        """Take a kept chunk again; 1 if it was taken, 0 if its update is decided."""
        try:
            chunk = self.intake.parse(frame, topic_edge=edge_id)
            if not isinstance(chunk, UpdateChunk):
                return 0
            if self.store.journal.update(chunk.header.blob_id) is not None:
                return 0
            self._take(chunk, frame, now)
        except ProtocolError as err:
            log.warning("chunk_dropped", edge_id=edge_id, reason=str(err.reason),
                        detail=err.detail)
            return 0
        except StoreError as err:
            log.error("chunk_replay_failed", edge_id=edge_id, reason=str(err.reason),
                      detail=err.detail)
            return 0
        return 1

    def _take(self, chunk: UpdateChunk, frame: bytes, now: float) -> None:
        coord = self.coordinator
        try:
            done = self.intake.collect(chunk, state=coord.round, counted=coord.counted, now=now)
        except ProtocolError as err:
            if err.scope is Scope.UPDATE:
                self._reject(chunk.meta, chunk.header.blob_id, err)
            raise
        self.store.journal.put_chunk(chunk.header.blob_id, chunk.index, chunk.meta.edge_id,
                                     frame)
        if done is not None:
            self._conclude(chunk.meta, done, now)

    def _conclude(self, meta: UpdateMeta, done: Completed, now: float) -> None:
        """Verify a complete update, spool it and record its verdict; then answer."""
        coord = self.coordinator
        update_id = done.header.blob_id
        try:
            update = self.intake.verify(meta, done, state=coord.round, counted=coord.counted)
        except ProtocolError as err:
            self._reject(meta, update_id, err)
            raise
        try:
            path = self.store.spool.put(meta.round_id, update_id, update.blob)
            row = UpdateRow(update_id=update_id, round_id=meta.round_id, edge_id=meta.edge_id,
                            status=ReceiptStatus.ACCEPTED, samples=meta.samples,
                            bytes=update.header.size, codec=update.header.codec, spool=path,
                            base=meta.base_version)
            self.store.journal.record_update(row)
        except StoreError:
            self._undecided.add((meta.edge_id, update_id))
            raise
        coord.on_update(row, now)
        self._receipt(row)

    def _reject(self, meta: UpdateMeta, update_id: str, err: ProtocolError) -> None:
        """Record an update-scoped rejection as the update's verdict, then answer it."""
        self.intake.drop(meta.edge_id, update_id)
        row = UpdateRow(update_id=update_id, round_id=meta.round_id, edge_id=meta.edge_id,
                        status=ReceiptStatus.REJECTED, reason=str(err.reason))
        try:
            self.store.journal.record_update(row)
        except StoreError:
            if self.store.journal.chunk_indices(update_id):
                self._undecided.add((meta.edge_id, update_id))
            raise
        self._receipt(row, err.detail)

    def _answer_probe(self, probe: UpdateProbe) -> None:
        """Tell an edge what became of an update: its verdict, or the chunks still missing."""
        decided = self.store.journal.update(probe.update_id)
        if decided is not None:
            self._receipt(decided)
        elif (probe.edge_id, probe.update_id) not in self._undecided:
            self._answer_missing(probe.edge_id, probe.update_id, probe.count)

    def _answer_missing(self, edge_id: str, update_id: str, count: int) -> None:
        """Name the chunk runs the journal does not hold (what is durable, not what is in
        memory: only those survive a restart)."""
        held = self.store.journal.chunk_indices(update_id)
        runs = capped(missing_ranges(held, count), count)
        if runs:
            self._send(edge_id, MissingChunks(update_id=update_id, count=count, runs=runs))

    def _receipt(self, row: UpdateRow, detail: str = "") -> None:
        self._send(row.edge_id, Receipt(update_id=row.update_id, round_id=row.round_id,
                                        status=row.status, reason=row.reason, detail=detail))
