"""Update frames -> exactly one durable verdict per update, answered to its edge.

The journal is the one record of "decided". An update's verdict (accepted, or rejected with its
reason) is committed before its receipt goes out, and nothing in memory marks an update done:
a re-send or probe of a decided update is answered from the journal. Every chunk taken is kept
in the journal until its update is decided, so what memory loses (a restart, an idle partial
freed after `partial_timeout_s`) is rebuilt from there, and an edge's probe learns exactly which
chunks the cloud lacks (P17). A complete update whose verdict could not be recorded (spool or
journal failure) is retried from its kept chunks, with backoff, until it is: never stranded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.intake import Intake
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import FedstreamError, ProtocolError, Reason, Scope, StoreError
from fedstream.shared.protocol.chunks import Completed, missing_ranges
from fedstream.shared.protocol.control import Receipt, ReceiptStatus, RoundStatus
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe, capped

log = structlog.get_logger(__name__)

Answer = Receipt | MissingChunks
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0


@dataclass(frozen=True, slots=True)
class _Retry:
    """When to try an undecided update's verdict again, and the wait after that."""

    at: float
    delay: float

    def later(self, now: float) -> _Retry:
        delay = min(MAX_RETRY_S, 2 * self.delay)
        return _Retry(at=now + delay, delay=delay)


class UpdateReceiver:
    """Handles every frame from the update topics.

    Args:
        intake: Reassembly and validation.
        store: Journal and spool.
        coordinator: Told about each accepted update.
        send: Publishes a receipt or a list of missing chunks to an edge (never raises).
        on_verdict: Told about each verdict once it is recorded (the metrics count them).
    """

    def __init__(self, *, intake: Intake, store: CloudStore, coordinator: Coordinator,
                 send: Callable[[str, Answer], None],
                 on_verdict: Callable[[UpdateRow], None] | None = None) -> None:
        self.intake, self.store, self.coordinator = intake, store, coordinator
        self._send = send
        self._on_verdict = on_verdict
        # (edge id, update id) of complete updates whose verdict is not recorded yet.
        self._undecided: dict[tuple[str, str], _Retry] = {}
        # Update id -> (edge id, round id) of partials freed from memory, chunks kept.
        self._parked: dict[str, tuple[str, str]] = {}

    @property
    def undecided(self) -> frozenset[tuple[str, str]]:
        """Complete updates waiting for their verdict to be recorded."""
        return frozenset(self._undecided)

    def replay(self, now: float) -> int:
        """Feed every chunk kept before a restart back into reassembly; returns how many were
        taken back (chunks of updates decided on the way are dropped, with one receipt)."""
        swept = self.store.journal.sweep_frames()
        if swept:
            log.info("frames_swept", files=swept)
        return sum(self._replay(edge_id, frame, now)
                   for edge_id, frame in self.store.journal.chunk_frames())

    def on_frame(self, payload: bytes, edge_id: str, now: float) -> None:
        """Handle one frame from `edge_id`'s update topic: a chunk or a probe.

        Raises:
            ProtocolError: the frame or its update is rejected (after any receipt is sent).
            StoreError: the chunk or the verdict could not be recorded (a complete update is
                retried on `tick`; a lost chunk is named to the edge's next probe).
        """
        frame = self.intake.parse(payload, topic_edge=edge_id)
        if isinstance(frame, UpdateProbe):
            self._answer_probe(frame, now)
            return
        if self._answered(edge_id, frame.header.blob_id, last=frame.index ==
                          frame.header.count - 1):
            return
        self._take(frame, payload, now, kept=False)

    def tick(self, now: float) -> None:
        """Retry the verdicts that could not be recorded; free idle partials from memory
        (their chunks stay kept) and drop the kept chunks of those whose round is over; tell
        the edges of idle partials which chunks are missing."""
        for key, retry in sorted(self._undecided.items()):
            if now >= retry.at:
                self._retry(key, retry, now)
        for edge_id, update_id in self.intake.expire(now):
            self._park(edge_id, update_id)
        state = self.coordinator.round
        for update_id, (edge_id, round_id) in list(self._parked.items()):
            if state is None or state.round_id != round_id or state.terminal \
                    or state.status is RoundStatus.AGGREGATING:
                self.store.journal.drop_chunks(update_id)
                del self._parked[update_id]
                log.warning("update_dropped", edge_id=edge_id, update_id=update_id,
                            reason="partial_timeout", round_id=round_id)
        for edge_id, header in self.intake.idle(now):
            self._answer_missing(edge_id, header.blob_id, header.count, now)

    def _answered(self, edge_id: str, update_id: str, *, last: bool) -> bool:
        """True if the update needs nothing more: decided (answered again on its last chunk)
        or complete and waiting for its verdict.

        Raises:
            ProtocolError: the update id is another edge's (scope FRAME).
        """
        if self.intake.holds(edge_id, update_id):
            return False  # a partial in memory has no verdict yet: no journal read per chunk
        decided = self.store.journal.update(update_id)
        if decided is not None:
            if decided.edge_id != edge_id:
                raise ProtocolError(Reason.BAD_FRAME, f"update {update_id} is another edge's")
            if last:
                self._receipt(decided)
            return True
        return (edge_id, update_id) in self._undecided

    def _replay(self, edge_id: str, frame: bytes, now: float) -> int:
        """Take a kept chunk again; 1 if it was taken, 0 if its update is decided."""
        try:
            chunk = self.intake.parse(frame, topic_edge=edge_id)
            if not isinstance(chunk, UpdateChunk) or self._answered(
                    edge_id, chunk.header.blob_id, last=False):
                return 0
            self._take(chunk, frame, now, kept=True)
        except FedstreamError as err:
            log.warning("chunk_replay_failed", edge_id=edge_id, reason=str(err.reason),
                        detail=err.detail)
            return 0
        return 1

    def _take(self, chunk: UpdateChunk, frame: bytes, now: float, *, kept: bool) -> None:
        coord, edge_id, update_id = self.coordinator, chunk.meta.edge_id, chunk.header.blob_id
        if not kept and not self.intake.holds(edge_id, update_id) and \
                self.store.journal.chunk_indices(update_id):
            # Freed from memory (idle, or a restart's replay refused it): rebuild it first.
            self._parked.pop(update_id, None)
            for sender, kept_frame in self.store.journal.chunk_frames(update_id):
                self._replay(sender, kept_frame, now)
            if self._answered(edge_id, update_id, last=False):
                return
        try:
            done = self.intake.collect(chunk, state=coord.round, counted=coord.counted, now=now)
        except ProtocolError as err:
            if err.scope is Scope.UPDATE:
                self._reject(edge_id, update_id, chunk.meta.round_id, err)
            raise
        if not kept:
            try:
                self.store.journal.put_chunk(update_id, chunk.index, edge_id, frame)
            except StoreError:
                if done is None:
                    raise
                # The update is whole in memory: its verdict does not need this chunk's row.
        if done is not None:
            self._conclude(chunk.meta, done, now)

    def _conclude(self, meta: UpdateMeta, done: Completed, now: float) -> None:
        """Verify a complete update, spool it and record its verdict; then answer it and
        count it."""
        coord = self.coordinator
        update_id = done.header.blob_id
        try:
            update = self.intake.verify(meta, done, state=coord.round, counted=coord.counted)
        except ProtocolError as err:
            self._reject(meta.edge_id, update_id, meta.round_id, err)
            raise
        try:
            path = self.store.spool.put(meta.round_id, update_id, update.blob)
            row = UpdateRow(update_id=update_id, round_id=meta.round_id, edge_id=meta.edge_id,
                            status=ReceiptStatus.ACCEPTED, samples=meta.samples,
                            bytes=update.header.size, codec=update.header.codec, spool=path,
                            base=meta.base_version)
            self.store.journal.record_update(row)
        except StoreError:
            self._defer(meta.edge_id, update_id, due=now + FIRST_RETRY_S)
            raise
        self._recorded(row)  # the verdict is committed: answer it whatever counting does
        coord.on_update(row, now, delta=update.delta)

    def _reject(self, edge_id: str, update_id: str, round_id: str, err: ProtocolError) -> None:
        """Record an update-scoped rejection as the update's verdict, then answer it."""
        self.intake.drop(edge_id, update_id)
        row = UpdateRow(update_id=update_id, round_id=round_id, edge_id=edge_id,
                        status=ReceiptStatus.REJECTED, reason=str(err.reason))
        try:
            self.store.journal.record_update(row)
        except StoreError:
            if self.store.journal.chunk_indices(update_id):
                self._defer(edge_id, update_id, due=0.0)  # at the next tick
            raise
        self._recorded(row, err.detail)

    def _defer(self, edge_id: str, update_id: str, *, due: float) -> None:
        """Keep a complete update whose verdict is not recorded, to retry it from `due` on
        (an entry already kept keeps its own wait)."""
        self._undecided.setdefault((edge_id, update_id),
                                   _Retry(at=due, delay=FIRST_RETRY_S))

    def _retry(self, key: tuple[str, str], retry: _Retry, now: float) -> None:
        """Try an undecided update again from its kept chunks; keep it, waiting longer, until
        it is decided or back in memory."""
        edge_id, update_id = key
        del self._undecided[key]
        try:
            for sender, frame in self.store.journal.chunk_frames(update_id):
                self._replay(sender, frame, now)
            settled = (self.store.journal.update(update_id) is not None
                       or self.intake.holds(edge_id, update_id))
        except StoreError as err:
            log.error("update_undecided", edge_id=edge_id, update_id=update_id,
                      reason=str(err.reason), detail=err.detail)
            settled = False
        if not settled:
            self._undecided[key] = retry.later(now)

    def _park(self, edge_id: str, update_id: str) -> None:
        """An idle partial was freed from memory: keep its chunks while its round may still
        take it (a reconnecting edge resumes from them)."""
        frames = list(self.store.journal.chunk_frames(update_id))
        if not frames:
            log.warning("update_dropped", edge_id=edge_id, update_id=update_id,
                        reason="partial_timeout")
            return
        first = self.intake.parse(frames[0][1], topic_edge=frames[0][0])
        assert isinstance(first, UpdateChunk)
        self._parked[update_id] = (edge_id, first.meta.round_id)
        log.info("update_parked", edge_id=edge_id, update_id=update_id, chunks=len(frames))

    def _answer_probe(self, probe: UpdateProbe, now: float) -> None:
        """Tell an edge what became of an update: its verdict, or the chunks still missing;
        one for a round that is over is refused at once (no upload just to learn that)."""
        if self._answered(probe.edge_id, probe.update_id, last=True):
            return
        state = self.coordinator.round
        if state is None or state.round_id != probe.round_id or state.terminal \
                or state.status is RoundStatus.AGGREGATING:
            self._reject(probe.edge_id, probe.update_id, probe.round_id, ProtocolError(
                Reason.STALE_ROUND, f"round {probe.round_id} is not collecting",
                scope=Scope.UPDATE))
            return
        self._answer_missing(probe.edge_id, probe.update_id, probe.count, now)

    def _answer_missing(self, edge_id: str, update_id: str, count: int, now: float) -> None:
        """Name the chunk runs the journal does not hold (what is durable, not what is in
        memory: only that survives a restart). With none missing the update is complete but
        undecided: its verdict is retried."""
        held = self.store.journal.chunk_indices(update_id)
        runs = capped(missing_ranges(held, count), count)
        if runs:
            self._send(edge_id, MissingChunks(update_id=update_id, count=count, runs=runs))
        elif not self.intake.holds(edge_id, update_id):
            self._defer(edge_id, update_id, due=now)

    def _recorded(self, row: UpdateRow, detail: str = "") -> None:
        """A verdict just committed: tell its observer, then answer it."""
        if self._on_verdict is not None:
            self._on_verdict(row)
        self._receipt(row, detail)

    def _receipt(self, row: UpdateRow, detail: str = "") -> None:
        self._send(row.edge_id, Receipt(update_id=row.update_id, round_id=row.round_id,
                                        status=row.status, reason=row.reason, detail=detail))
