"""Signed updates through the real receiver, intake, keyring and coordinator: forged,
replayed, revoked, unsigned and wrong-round updates are refused with their reasons and
receipts, and the round still completes from the honest edges."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.coordinator import Coordinator, ModelVersion
from fedstream.cloud.intake import Intake
from fedstream.cloud.receiver import UpdateReceiver
from fedstream.cloud.signatures import UpdateSignatures
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.learning.model import spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.control import EdgeStatus, Receipt, RoundStatus
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta
from fedstream.shared.protocol.statements import update_statement
from fedstream.shared.security.signing import Signer, make_key

ARCH = Architecture.mlp((4, 3, 2))
SPEC = spec_of(build_model(ARCH))
FED, MODEL = "lab", "m"


class SignedCloud:
    """A receiver whose intake checks signatures against a real keyring; receipts kept."""

    def __init__(self, data_dir: Path, *, required: bool) -> None:
        self.receipts: list[Receipt] = []
        self.store = CloudStore.open(data_dir)
        cfg = CloudConfig(architecture=ArchitectureConfig.of(ARCH), federation=FED,
                          model=MODEL, rounds={"deadline_s": 10.0, "quorum": 2})
        self.coord = Coordinator.open(cfg=cfg, store=self.store,
                                      evaluate=lambda _t: {"accuracy": 0.0},
                                      publish_model=self._publish, publish_round=lambda _s: None)
        signatures = UpdateSignatures(keyring=self.store.keys, federation=FED, model=MODEL,
                                      required=required)
        self.receiver = UpdateReceiver(
            intake=Intake(spec=self.coord.spec, params=cfg.intake, signatures=signatures),
            store=self.store, coordinator=self.coord, send=self._send)
        self.coord.recover(now=0.0)

    def _send(self, _edge: str, answer: object) -> None:
        if isinstance(answer, Receipt):
            self.receipts.append(answer)

    @staticmethod
    def _publish(version: ModelVersion) -> int:
        return sum(int(t.numel()) for t in version.tensors)

    def open_round(self, *edges: str) -> str:
        for e in edges:
            self.coord.on_status(EdgeStatus(edge_id=e, online=True), 0.0)
        return str(self.coord.start_round(now=0.0).round_id)

    def send(self, edge: str, frames: list[bytes]) -> Reason | None:
        """Feed the frames; the reason of the first refusal, if any."""
        for frame in frames:
            try:
                self.receiver.on_frame(frame, edge, now=1.0)
            except ProtocolError as err:
                return err.reason
        return None


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[SignedCloud]:
    """A cloud that requires signed updates."""
    built = SignedCloud(tmp_path / "cloud", required=True)
    yield built
    built.store.close()


def _frames(edge: str, round_id: str, signer: Signer | None, *, seq: int = 1,
            blob_id: str | None = None, samples: int = 3, claim_round: str | None = None,
            signed_round: str | None = None) -> list[bytes]:
    """An update's frames: signed by `signer` over `signed_round` (default: the round it
    claims), claiming `claim_round` (default `round_id`)."""
    enc = encode_blob([torch.full(t.shape, 0.1) for t in SPEC], SPEC, codec="f32",
                      chunk_size=32)
    header = enc.header if blob_id is None else dataclasses.replace(enc.header, blob_id=blob_id)
    meta = UpdateMeta(edge_id=edge, round_id=claim_round or round_id, base_version=0,
                      samples=samples, loss=0.5, seq=seq)
    if signer is not None:
        signed = dataclasses.replace(meta, round_id=signed_round or meta.round_id)
        meta = dataclasses.replace(meta, sig=signer.sign(update_statement(
            federation=FED, model=MODEL, meta=signed, header=header)))
    return [wire.pack(UpdateChunk(header=header, meta=meta, index=i, data=view))
            for i, view in enumerate(enc.chunks)]


def test_attacks_are_refused_with_their_reasons_and_the_round_completes_from_the_honest(
    cloud: SignedCloud, tmp_path: Path,
) -> None:
    """Honest a and b are accepted. c signs with a key that is not its enrolled one
    (bad_signature); a's update copied under a fresh id is replayed; d was revoked; e has
    no key (unenrolled); f strips its signature (unsigned); b's inflated sample count on a
    signature over the true one is bad_signature. Each refused update gets a rejected
    receipt with its reason; the round publishes a version from a and b."""
    # Prepare
    signers = {e: make_key(tmp_path / f"{e}.key") for e in "abcdf"}
    for e in "abcdf":
        cloud.store.keys.enrol(e, signers[e].public, 0.0)
    cloud.store.keys.revoke("d", 0.0)
    round_id = cloud.open_round(*"abcdef")
    honest_a = _frames("a", round_id, signers["a"], seq=1)
    attacks = {
        "c": _frames("c", round_id, make_key(tmp_path / "stolen.key"), seq=1),
        "a": _frames("a", round_id, signers["a"], seq=1, blob_id="copy-of-a"),
        "d": _frames("d", round_id, signers["d"], seq=1),
        "e": _frames("e", round_id, make_key(tmp_path / "e.key"), seq=1),
        "f": _frames("f", round_id, None, seq=1),
    }
    inflated = [wire.pack(dataclasses.replace(
        chunk, meta=dataclasses.replace(chunk.meta, samples=10**9)))
        for chunk in (wire.expect(f, UpdateChunk)
                      for f in _frames("b", round_id, signers["b"], seq=4, blob_id="b-fat"))]

    # Execute
    accepted_a = cloud.send("a", honest_a)
    refused = {edge: cloud.send(edge, frames) for edge, frames in attacks.items()}
    refused["b-inflated"] = cloud.send("b", inflated)
    accepted_b = cloud.send("b", _frames("b", round_id, signers["b"], seq=5))
    cloud.coord.tick(now=11.0)  # the deadline: the attackers never count

    # Assert
    assert accepted_a is accepted_b is None
    assert refused == {"c": Reason.BAD_SIGNATURE, "a": Reason.REPLAYED, "d": Reason.REVOKED,
                       "e": Reason.UNENROLLED, "f": Reason.UNSIGNED,
                       "b-inflated": Reason.BAD_SIGNATURE}
    verdicts = {(r.update_id, r.status, r.reason) for r in cloud.receipts}
    assert ("copy-of-a", "rejected", "replayed") in verdicts
    assert ("b-fat", "rejected", "bad_signature") in verdicts
    assert sum(r.status == "accepted" for r in cloud.receipts) == 2
    state = cloud.coord.round
    assert state is not None and state.status is RoundStatus.PUBLISHED
    assert cloud.coord.current.version == 1


def test_an_update_signed_for_another_round_is_refused(cloud: SignedCloud,
                                                       tmp_path: Path) -> None:
    """Signed over round r-old but claiming the open round: bad_signature; the same update
    honestly claiming r-old: stale_round."""
    # Prepare
    signer = make_key(tmp_path / "a.key")
    cloud.store.keys.enrol("a", signer.public, 0.0)
    round_id = cloud.open_round("a")

    # Execute
    relabelled = cloud.send("a", _frames("a", round_id, signer, signed_round="r-old"))
    stale = cloud.send("a", _frames("a", "r-old", signer, seq=2, blob_id="stale"))

    # Assert
    assert relabelled is Reason.BAD_SIGNATURE
    assert stale is Reason.STALE_ROUND


def test_a_revocation_refuses_an_update_half_way_through(cloud: SignedCloud,
                                                          tmp_path: Path) -> None:
    """The first chunks pass while the edge is enrolled; it is revoked before the last: the
    update is refused `revoked` when it completes."""
    # Prepare
    signer = make_key(tmp_path / "a.key")
    cloud.store.keys.enrol("a", signer.public, 0.0)
    frames = _frames("a", cloud.open_round("a"), signer)

    # Execute
    first = cloud.send("a", frames[:-1])
    cloud.store.keys.revoke("a", 1.0)
    last = cloud.send("a", frames[-1:])

    # Assert
    assert first is None
    assert last is Reason.REVOKED
    assert [r.reason for r in cloud.receipts] == ["revoked"]


def test_without_required_signatures_only_enrolled_edges_are_checked(tmp_path: Path) -> None:
    """Not required: an unenrolled edge's unsigned update counts, an enrolled edge's
    unsigned one is still refused (stripping the signature does not get past)."""
    # Prepare
    open_cloud = SignedCloud(tmp_path / "open", required=False)
    open_cloud.store.keys.enrol("a", make_key(tmp_path / "a.key").public, 0.0)
    round_id = open_cloud.open_round("a", "z")

    # Execute
    stripped = open_cloud.send("a", _frames("a", round_id, None))
    plain = open_cloud.send("z", _frames("z", round_id, None))
    open_cloud.store.close()

    # Assert
    assert stripped is Reason.UNSIGNED
    assert plain is None
