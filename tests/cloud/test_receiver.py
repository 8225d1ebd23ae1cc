"""Update frames to durable verdicts: chunks kept, updates spooled, receipts after commit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.coordinator import Coordinator, ModelVersion
from fedstream.cloud.intake import Intake
from fedstream.cloud.receiver import UpdateReceiver
from fedstream.cloud.store import CloudStore
from fedstream.shared import wire
from fedstream.shared.blobs import decode_with, encode_blob
from fedstream.shared.control import EdgeStatus, Receipt, RoundState
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.messages import UpdateChunk, UpdateMeta
from fedstream.shared.model import build_mlp, spec_of

LAYERS = (4, 3, 2)
SPEC = spec_of(build_mlp(LAYERS))
# 4*3 + 3 + 3*2 + 2 = 23 floats = 92 bytes of f32: chunks of 32, 32 and 28 bytes.
CHUNK = 32
DELTA = [torch.full(t.shape, 0.5) for t in SPEC]


class Cloud:
    """A receiver over a real intake, store and coordinator in a temp dir; receipts recorded."""

    def __init__(self, data_dir: Path, **cfg: object) -> None:
        self.receipts: list[tuple[str, Receipt]] = []
        self.rounds: list[RoundState] = []
        self.store = CloudStore.open(data_dir)
        config = CloudConfig(layers=LAYERS, **cfg)
        self.coord = Coordinator(cfg=config, store=self.store, evaluate=lambda ts: 0.0,
                                 publish_model=self._publish_model,
                                 publish_round=self.rounds.append)
        self.receiver = UpdateReceiver(
            intake=Intake(spec=self.coord.spec, params=config.intake), store=self.store,
            coordinator=self.coord, send_receipt=lambda edge, r: self.receipts.append((edge, r)))
        self.coord.start(now=0.0)

    @staticmethod
    def _publish_model(version: ModelVersion) -> int:
        return 4 * sum(int(t.numel()) for t in version.tensors)

    def open_round(self, *edges: str) -> str:
        for e in edges:
            self.coord.on_status(EdgeStatus(edge_id=e, online=True))
        return str(self.coord.start_round(now=0.0).round_id)

    def chunks(self) -> list[tuple[str, bytes]]:
        return list(self.store.journal.chunk_frames())


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Callable[..., Cloud]]:
    """Builds clouds on `tmp_path` (a second call is a restart on the same data); closes them."""
    opened: list[Cloud] = []

    def build(**cfg: object) -> Cloud:
        if opened:
            opened[-1].store.journal.close()
        opened.append(Cloud(tmp_path, **cfg))
        return opened[-1]

    yield build
    opened[-1].store.journal.close()


def _update(edge: str, round_id: str, *, corrupt: int | None = None) -> tuple[str, list[bytes]]:
    """An update's blob id and its three frames; `corrupt` flips a byte of that chunk."""
    enc = encode_blob(DELTA, SPEC, codec="f32", chunk_size=CHUNK)
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
