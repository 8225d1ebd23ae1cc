"""Update frames to durable verdicts: chunks kept, updates spooled, receipts after commit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.coordinator import Coordinator, ModelVersion
from fedstream.cloud.intake import Intake
from fedstream.cloud.receiver import UpdateReceiver
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import ProtocolError, Reason, StoreError
from fedstream.shared.learning.model import spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import decode_with, encode_blob, pack_blob
from fedstream.shared.protocol.control import EdgeStatus, Receipt, ReceiptStatus, RoundState
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe

ARCH = Architecture.mlp((4, 3, 2))
ARCH_CFG = ArchitectureConfig.of(ARCH)


def _no_accuracy(_tensors: list[torch.Tensor]) -> dict[str, float]:
    return {"accuracy": 0.0}
SPEC = spec_of(build_model(ARCH))
# 4*3 + 3 + 3*2 + 2 = 23 floats = 92 bytes of f32: chunks of 32, 32 and 28 bytes.
CHUNK = 32
DELTA = [torch.full(t.shape, 0.5) for t in SPEC]


class Cloud:
    """A receiver over a real intake, store and coordinator in a temp dir; receipts recorded."""

    def __init__(self, data_dir: Path, **cfg: object) -> None:
        self.receipts: list[tuple[str, Receipt | MissingChunks]] = []
        self.rounds: list[RoundState] = []
        self.store = CloudStore.open(data_dir)
        config = CloudConfig(architecture=ARCH_CFG, **cfg)
        self.coord = Coordinator.open(cfg=config, store=self.store, evaluate=_no_accuracy,
                                      publish_model=self._publish_model,
                                      publish_round=self.rounds.append)
        self.receiver = UpdateReceiver(
            intake=Intake(spec=self.coord.spec, params=config.intake), store=self.store,
            coordinator=self.coord, send=lambda edge, r: self.receipts.append((edge, r)))
        self.coord.recover(now=0.0)

    @staticmethod
    def _publish_model(version: ModelVersion) -> int:
        return 4 * sum(int(t.numel()) for t in version.tensors)

    def open_round(self, *edges: str) -> str:
        for e in edges:
            self.coord.on_status(EdgeStatus(edge_id=e, online=True), 0.0)
        return str(self.coord.start_round(now=0.0).round_id)

    def chunks(self) -> list[tuple[str, bytes]]:
        return list(self.store.journal.chunk_frames())


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Callable[..., Cloud]]:
    """Builds clouds on `tmp_path` (a second call is a restart on the same data); closes them."""
    opened: list[Cloud] = []

    def build(**cfg: object) -> Cloud:
        if opened:
            opened[-1].store.close()
        opened.append(Cloud(tmp_path, **cfg))
        return opened[-1]

    yield build
    opened[-1].store.close()


def _update(edge: str, round_id: str, *, corrupt: int | None = None,
            blob: bytes | None = None) -> tuple[str, list[bytes]]:
    """An update's blob id and its frames; `corrupt` flips a byte of that chunk after the
    hash was taken, `blob` sends these bytes (hashed correctly) instead of the delta's."""
    enc = (encode_blob(DELTA, SPEC, codec="f32", chunk_size=CHUNK) if blob is None
           else pack_blob(blob, SPEC, codec="f32", chunk_size=CHUNK))
    meta = UpdateMeta(edge_id=edge, round_id=round_id, base_version=0, samples=3, loss=0.5)
    frames = []
    for i, view in enumerate(enc.chunks):
        data = bytearray(view)
        if i == corrupt:
            data[0] ^= 0xFF
        frames.append(wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i,
                                            data=bytes(data))))
    return enc.header.blob_id, frames


def test_complete_update_is_spooled_recorded_counted_and_acknowledged(
    cloud: Callable[..., Cloud],
) -> None:
    """All three chunks give one accepted receipt, a spooled blob equal to the delta, an
    accepted journal row, no kept chunks, and one update counted by the round."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id)

    # Execute
    for f in frames:
        c.receiver.on_frame(f, "a", now=1.0)

    # Assert
    assert c.receipts == [("a", Receipt(update_id=update_id, round_id=round_id,
                                        status="accepted"))]
    row = c.store.journal.update(update_id)
    assert row is not None and (row.status, row.edge_id, row.samples, row.bytes, row.codec,
                                row.spool) == ("accepted", "a", 3, 92, "f32",
                                               f"{round_id}/{update_id}.blob")
    spooled = decode_with("f32", c.store.spool.get(row.spool), SPEC)
    assert all(torch.equal(s, d) for s, d in zip(spooled, DELTA, strict=True))
    assert c.chunks() == []
    assert c.coord.round is not None and c.coord.round.received == 1
    assert c.coord.round.status == "collecting"


def test_partial_update_survives_a_restart_and_completes_from_the_missing_chunk(
    cloud: Callable[..., Cloud],
) -> None:
    """Two of three chunks are kept in the journal; after a restart `replay` feeds them back,
    and the third chunk alone completes the update."""
    # Prepare
    first = cloud()
    round_id = first.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    for f in frames[:2]:
        first.receiver.on_frame(f, "a", now=1.0)
    kept = first.chunks()

    # Execute
    again = cloud()
    replayed = again.receiver.replay(now=2.0)
    again.receiver.on_frame(frames[2], "a", now=3.0)

    # Assert
    assert first.receipts == []
    assert kept == [("a", frames[0]), ("a", frames[1])]
    assert replayed == 2
    assert again.receipts == [("a", Receipt(update_id=update_id, round_id=round_id,
                                            status="accepted"))]
    row = again.store.journal.update(update_id)
    assert row is not None and row.status == "accepted"
    spooled = decode_with("f32", again.store.spool.get(row.spool), SPEC)
    assert all(torch.equal(s, d) for s, d in zip(spooled, DELTA, strict=True))
    assert again.chunks() == []
    assert again.coord.round is not None and again.coord.round.round_id == round_id
    assert again.coord.round.received == 1


def test_resent_decided_update_gets_one_receipt_on_its_last_chunk_and_nothing_else(
    cloud: Callable[..., Cloud],
) -> None:
    """Re-sending an accepted update repeats its receipt once, on the last chunk, and changes
    neither the journal, the spool nor the round."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    for f in frames:
        c.receiver.on_frame(f, "a", now=1.0)
    row, spooled = c.store.journal.update(update_id), c.store.spool.get(f"{round_id}/"
                                                                        f"{update_id}.blob")
    announced = len(c.rounds)

    # Execute
    counts = []
    for f in frames:
        c.receiver.on_frame(f, "a", now=2.0)
        counts.append(len(c.receipts))

    # Assert
    assert counts == [1, 1, 2]
    assert c.receipts[1] == c.receipts[0]
    assert c.store.journal.update(update_id) == row
    assert c.store.spool.get(f"{round_id}/{update_id}.blob") == spooled
    assert c.chunks() == []
    assert c.coord.round is not None and c.coord.round.received == 1
    assert len(c.rounds) == announced


def test_update_from_an_unselected_edge_is_rejected_with_a_receipt(
    cloud: Callable[..., Cloud],
) -> None:
    """An edge outside the round gets a rejected unknown_edge receipt and a journal row on its
    first chunk, which raises; nothing is kept or counted."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    update_id, frames = _update("c", round_id)

    # Execute
    with pytest.raises(ProtocolError) as caught:
        c.receiver.on_frame(frames[0], "c", now=1.0)

    # Assert
    assert caught.value.reason is Reason.UNKNOWN_EDGE
    assert [(e, r.update_id, r.status, r.reason) for e, r in c.receipts] == [
        ("c", update_id, "rejected", "unknown_edge")]
    row = c.store.journal.update(update_id)
    assert row is not None and (row.edge_id, row.status, row.reason, row.spool) == (
        "c", "rejected", "unknown_edge", "")
    assert c.chunks() == []
    assert c.coord.round is not None and c.coord.round.received == 0


def test_corrupted_update_is_rejected_with_bad_hash(cloud: Callable[..., Cloud]) -> None:
    """A flipped byte in the middle chunk fails the hash on completion: a rejected bad_hash
    receipt, a rejected row, its kept chunks dropped and nothing spooled."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id, corrupt=1)
    for f in frames[:2]:
        c.receiver.on_frame(f, "a", now=1.0)
    kept = len(c.chunks())

    # Execute
    with pytest.raises(ProtocolError) as caught:
        c.receiver.on_frame(frames[2], "a", now=1.0)

    # Assert
    assert caught.value.reason is Reason.BAD_HASH
    assert kept == 2
    assert [(e, r.update_id, r.status, r.reason) for e, r in c.receipts] == [
        ("a", update_id, "rejected", "bad_hash")]
    row = c.store.journal.update(update_id)
    assert row is not None and (row.status, row.reason) == ("rejected", "bad_hash")
    assert c.chunks() == []
    assert list(c.store.spool.root.rglob("*.blob")) == []
    assert c.coord.round is not None and c.coord.round.received == 0


def test_replayed_partial_of_a_closed_round_gets_one_rejected_receipt(
    cloud: Callable[..., Cloud],
) -> None:
    """A partial kept from a round that failed before the restart is rejected stale_round once
    on replay, with one receipt, and its chunks are dropped."""
    # Prepare
    first = cloud(rounds={"deadline_s": 10})
    round_id = first.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    for f in frames[:2]:
        first.receiver.on_frame(f, "a", now=1.0)
    first.coord.tick(now=11.0)  # deadline, no update complete: the round fails

    # Execute
    again = cloud(rounds={"deadline_s": 10})
    replayed = again.receiver.replay(now=12.0)

    # Assert
    assert replayed == 0
    assert again.chunks() == []
    assert [(e, r.update_id, r.status, r.reason) for e, r in again.receipts] == [
        ("a", update_id, "rejected", "stale_round")]


def _verdicts(c: Cloud) -> list[tuple[str, str, str]]:
    """(update id, status, reason) of every receipt sent, in order."""
    return [(r.update_id, r.status, r.reason) for _, r in c.receipts if isinstance(r, Receipt)]


@pytest.mark.parametrize(("blob", "reason"), [
    (b"\0" * 88, Reason.SIZE_MISMATCH),  # 22 floats where the spec holds 23
    (np.full(23, np.nan, dtype="<f4").tobytes(), Reason.NON_FINITE),
])
def test_update_that_hashes_right_but_does_not_decode_is_rejected_once_and_answered_again(
    cloud: Callable[..., Cloud], blob: bytes, reason: Reason,
) -> None:
    """A whole, correctly hashed blob that fails to decode is a verdict on the update: one
    rejected row, one receipt, its chunks dropped; a re-send is answered with the same
    verdict from the journal and is neither kept nor decided again."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id, blob=blob)
    for f in frames[:-1]:
        c.receiver.on_frame(f, "a", now=1.0)

    # Execute
    with pytest.raises(ProtocolError) as caught:
        c.receiver.on_frame(frames[-1], "a", now=1.0)
    for f in frames:
        c.receiver.on_frame(f, "a", now=2.0)

    # Assert
    assert caught.value.reason is reason
    assert _verdicts(c) == [(update_id, "rejected", str(reason))] * 2
    row = c.store.journal.update(update_id)
    assert row is not None and (row.status, row.reason) == ("rejected", str(reason))
    assert c.chunks() == []
    assert c.coord.round is not None and c.coord.round.received == 0


def test_spool_failure_leaves_the_update_undecided_and_tick_decides_it_once_it_heals(
    cloud: Callable[..., Cloud], tmp_path: Path,
) -> None:
    """With the spool unwritable (a file where its round directory goes), the completing
    chunk raises StoreError: no verdict, no receipt, every chunk kept. Ticks retry from the
    kept chunks; once the spool heals, the update is accepted and counted exactly once."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    blocker = c.store.spool.root / round_id
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a directory")
    for f in frames[:-1]:
        c.receiver.on_frame(f, "a", now=1.0)

    # Execute
    with pytest.raises(StoreError):
        c.receiver.on_frame(frames[-1], "a", now=1.0)
    stranded = (c.store.journal.update(update_id), len(c.chunks()), c.receiver.undecided)
    c.receiver.on_frame(frames[-1], "a", now=1.5)  # a redelivery while undecided
    c.receiver.tick(now=2.0)  # still broken: stays undecided
    still = c.receiver.undecided
    blocker.unlink()
    c.receiver.tick(now=3.0)
    c.receiver.tick(now=4.0)

    # Assert
    assert stranded == (None, 3, frozenset({("a", update_id)}))
    assert still == frozenset({("a", update_id)})
    assert c.receiver.undecided == frozenset()
    assert _verdicts(c) == [(update_id, "accepted", "")]
    row = c.store.journal.update(update_id)
    assert row is not None and row.status is ReceiptStatus.ACCEPTED
    assert c.chunks() == []
    assert c.coord.round is not None and c.coord.round.received == 1


def test_probe_is_answered_with_the_missing_runs_the_verdict_or_everything(
    cloud: Callable[..., Cloud],
) -> None:
    """A probe for a partial update names the chunk runs the journal lacks; for an update
    never seen, all of them; for a decided one, its receipt."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    partial_id, partial = _update("a", round_id)
    c.receiver.on_frame(partial[1], "a", now=1.0)
    unseen_id, _ = _update("a", round_id)
    done_id, done = _update("b", round_id)
    for f in done:
        c.receiver.on_frame(f, "b", now=1.0)
    c.receipts.clear()

    def probe(edge: str, update_id: str) -> bytes:
        return wire.pack(UpdateProbe(edge_id=edge, update_id=update_id, round_id=round_id,
                                     count=3))

    # Execute
    for edge, update_id in (("a", partial_id), ("a", unseen_id), ("b", done_id)):
        c.receiver.on_frame(probe(edge, update_id), edge, now=2.0)

    # Assert
    assert c.receipts == [
        ("a", MissingChunks(update_id=partial_id, count=3, runs=((0, 1), (2, 3)))),
        ("a", MissingChunks(update_id=unseen_id, count=3, runs=((0, 3),))),
        ("b", Receipt(update_id=done_id, round_id=round_id, status=ReceiptStatus.ACCEPTED)),
    ]


def test_idle_partial_is_told_its_missing_chunks_once_and_resumes_from_them(
    cloud: Callable[..., Cloud],
) -> None:
    """A partial silent for `intake.idle_s` gets one unprompted MissingChunks; sending just
    those chunks completes it."""
    # Prepare
    c = cloud(intake={"idle_s": 5.0})
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    c.receiver.on_frame(frames[0], "a", now=0.0)

    # Execute
    c.receiver.tick(now=4.0)
    c.receiver.tick(now=5.0)
    c.receiver.tick(now=9.0)
    told = list(c.receipts)
    answer = told[0][1]
    assert isinstance(answer, MissingChunks)
    for i in answer.indices:
        c.receiver.on_frame(frames[i], "a", now=10.0)

    # Assert
    assert told == [("a", MissingChunks(update_id=update_id, count=3, runs=((1, 3),)))]
    assert _verdicts(c) == [(update_id, "accepted", "")]


def test_memory_bound_refuses_the_frame_only(cloud: Callable[..., Cloud]) -> None:
    """A blob that does not fit while others are held is refused frame by frame (no verdict,
    no receipt): it may fit on a later pass. One larger than any update may be is refused as
    a whole, with a receipt."""
    # Prepare
    c = cloud(intake={"max_total_bytes": 1024, "max_update_bytes": 1024})
    round_id = c.open_round("a", "b")
    _, filler = _update("b", round_id, blob=b"\0" * 1000)  # held, never completed
    c.receiver.on_frame(filler[0], "b", now=0.0)
    crowded_id, crowded = _update("a", round_id)
    huge_id, huge = _update("a", round_id, blob=b"\0" * 2048)

    # Execute
    reasons = []
    for frames in (crowded, huge):
        with pytest.raises(ProtocolError) as caught:
            c.receiver.on_frame(frames[0], "a", now=1.0)
        reasons.append((caught.value.reason, caught.value.scope))

    # Assert
    assert reasons == [(Reason.OVERSIZED, "frame"), (Reason.OVERSIZED, "update")]
    assert c.store.journal.update(crowded_id) is None
    assert _verdicts(c) == [(huge_id, "rejected", "oversized")]


def test_idle_partial_is_freed_but_kept_and_resumes_at_once_from_the_journal(
    cloud: Callable[..., Cloud],
) -> None:
    """A partial idle past `partial_timeout_s` leaves memory but not the journal: the probe
    names only the missing chunk, and that chunk alone completes the update at once."""
    # Prepare
    c = cloud(intake={"partial_timeout_s": 5.0})
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    for f in frames[:2]:
        c.receiver.on_frame(f, "a", now=0.0)
    c.receiver.tick(now=6.0)
    freed = (c.receiver.intake.held_bytes, len(c.chunks()))

    # Execute
    c.receiver.on_frame(wire.pack(UpdateProbe(edge_id="a", update_id=update_id,
                                              round_id=round_id, count=3)), "a", now=7.0)
    told = list(c.receipts)
    c.receiver.on_frame(frames[2], "a", now=7.0)

    # Assert
    assert freed == (0, 2)
    assert told == [("a", MissingChunks(update_id=update_id, count=3, runs=((2, 3),)))]
    assert _verdicts(c) == [(update_id, "accepted", "")]


def test_kept_chunks_of_a_freed_partial_go_when_its_round_is_over(
    cloud: Callable[..., Cloud],
) -> None:
    """A freed partial's chunks stay while its round collects and are dropped once the round
    has ended; a probe for it then gets a stale_round verdict, not a list of chunks."""
    # Prepare
    c = cloud(intake={"partial_timeout_s": 5.0})
    round_id = c.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    c.receiver.on_frame(frames[0], "a", now=0.0)
    c.receiver.tick(now=6.0)
    kept_while_open = len(c.chunks())

    # Execute
    c.coord.stop_round(now=7.0)
    c.receiver.tick(now=8.0)
    c.receiver.on_frame(wire.pack(UpdateProbe(edge_id="a", update_id=update_id,
                                              round_id=round_id, count=3)), "a", now=9.0)

    # Assert
    assert kept_while_open == 1
    assert c.chunks() == []
    assert _verdicts(c) == [(update_id, "rejected", "stale_round")]


def test_complete_update_left_out_of_memory_is_decided_after_a_probe(
    cloud: Callable[..., Cloud],
) -> None:
    """A restart whose replay cannot take an update back (memory full) leaves its chunks in
    the journal, complete and undecided: the edge's probe finds nothing missing, and the
    next tick past the retry wait decides it."""
    # Prepare
    first = cloud()
    round_id = first.open_round("a", "b")
    update_id, frames = _update("a", round_id)
    for f in frames[:2]:
        first.receiver.on_frame(f, "a", now=0.0)
    first.store.journal.put_chunk(update_id, 2, "a", frames[2])  # taken, then the crash
    again = cloud(intake={"max_total_bytes": 1024, "max_update_bytes": 1024})
    _, filler = _update("b", round_id, blob=b"\0" * 1000)
    again.receiver.on_frame(filler[0], "b", now=1.0)  # the memory the replay needed
    again.receiver.replay(now=1.0)
    stranded = (again.store.journal.update(update_id), len(again.chunks()))

    # Execute
    again.receiver.intake.drop("b", _blob_id(filler[0]))  # the memory frees up
    again.receiver.on_frame(wire.pack(UpdateProbe(edge_id="a", update_id=update_id,
                                                  round_id=round_id, count=3)), "a", now=2.0)
    again.receiver.tick(now=3.0)

    # Assert
    assert stranded == (None, 4)
    assert _verdicts(again) == [(update_id, "accepted", "")]


def test_an_update_id_of_another_edge_is_refused(cloud: Callable[..., Cloud]) -> None:
    """An edge re-sending an update id already decided for another edge gets bad_frame,
    and the other edge's verdict is not sent to it."""
    # Prepare
    c = cloud()
    round_id = c.open_round("a", "b")
    _, frames = _update("a", round_id)
    for f in frames:
        c.receiver.on_frame(f, "a", now=0.0)
    stolen = wire.expect(frames[2], UpdateChunk)
    forged = wire.pack(UpdateChunk(header=stolen.header, index=2, data=stolen.data,
                                   meta=UpdateMeta(edge_id="b", round_id=round_id,
                                                   base_version=0, samples=3, loss=0.5)))

    # Execute
    with pytest.raises(ProtocolError) as caught:
        c.receiver.on_frame(forged, "b", now=1.0)

    # Assert
    assert caught.value.reason is Reason.BAD_FRAME
    assert [edge for edge, _ in c.receipts] == ["a"]


def _blob_id(frame: bytes) -> str:
    return str(wire.expect(frame, UpdateChunk).header.blob_id)
