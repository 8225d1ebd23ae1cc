"""Stateful property test of the receiver: every update that reaches the cloud gets exactly one
verdict, recorded once and answered to its edge, whatever the interleaving of chunks,
duplicates, re-sends, probes, corrupt and undecodable blobs, spool failures, restarts, ticks
and round changes."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.intake import Intake
from fedstream.cloud.receiver import MAX_RETRY_S, Answer, UpdateReceiver
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import FedstreamError
from fedstream.shared.learning.model import spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import decode_with, encode_blob, pack_blob
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import EdgeStatus, Receipt, ReceiptStatus, RoundMode
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe

pytestmark = pytest.mark.fuzz

ARCH = Architecture.mlp((8, 8, 2))
ARCH_CFG = ArchitectureConfig.of(ARCH)


def _no_accuracy(_tensors: list[torch.Tensor]) -> dict[str, float]:
    return {"accuracy": 0.0}
SPEC = spec_of(build_model(ARCH))
FLOATS = sum(t.numel for t in SPEC)  # 90: 360-byte f32 blobs, in three chunks
EDGES = ("a", "b", "c")
CHUNK = 128
KINDS = ("good", "corrupt", "undecodable", "nan")


@dataclass
class Sent:
    """One update as its edge made it, and what the machine did with it."""

    edge: str
    round_id: str
    kind: str
    frames: list[bytes]
    delta: list[torch.Tensor]
    delivered: set[int] = field(default_factory=set)

    @property
    def update_id(self) -> str:
        chunk = wire.expect(self.frames[0], UpdateChunk)
        return str(chunk.header.blob_id)


def _make(edge: str, round_id: str, base: int, kind: str, seed: int) -> Sent:
    gen = torch.Generator().manual_seed(seed)
    delta = [torch.randn(t.shape, generator=gen) for t in SPEC]
    if kind == "undecodable":  # hashed right, one float short of the spec
        enc = pack_blob(b"\0" * (4 * FLOATS - 4), SPEC, codec="f32", chunk_size=CHUNK)
    elif kind == "nan":
        enc = pack_blob(np.full(FLOATS, np.nan, dtype="<f4").tobytes(), SPEC, codec="f32",
                        chunk_size=CHUNK)
    else:
        enc = encode_blob(delta, SPEC, codec="f32", chunk_size=CHUNK)
    meta = UpdateMeta(edge_id=edge, round_id=round_id, base_version=base, samples=3, loss=0.1)
    frames = []
    for i, view in enumerate(enc.chunks):
        data = bytearray(view)
        if kind == "corrupt" and i == 1:
            data[0] ^= 0x01  # after hashing: the blob fails sha256
        frames.append(wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i,
                                            data=bytes(data))))
    return Sent(edge=edge, round_id=round_id, kind=kind, frames=frames, delta=delta)


class ReceiverMachine(RuleBasedStateMachine):
    """Drives a real receiver, intake, coordinator, journal and spool in a temp directory."""

    sent = Bundle("sent")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="fedstream-states-"))
        self.cfg = CloudConfig(architecture=ARCH_CFG, data_dir=self.dir,
                               rounds={"deadline_s": 1e9},
                               # Room for two partial updates: crowds happen; a 40 s tick
                               # frees idle ones from memory.
                               intake={"partial_timeout_s": 30.0, "idle_s": 20.0,
                                       "max_update_bytes": 1024, "max_sender_bytes": 1024,
                                       "max_total_bytes": 1024})
        self.now = 0.0
        self.seed = 0
        self.spool_broken = False
        self.answers: list[tuple[str, Answer]] = []
        self.verdicts: dict[str, tuple[str, str]] = {}  # update id -> first verdict seen
        self.updates: dict[str, Sent] = {}
        self.store: CloudStore
        self._open()

    def _open(self) -> None:
        self.store = CloudStore.open(self.dir)
        self.coord = Coordinator.open(cfg=self.cfg, store=self.store, evaluate=_no_accuracy,
                                      publish_model=lambda v: 0, publish_round=lambda s: None)
        self.receiver = UpdateReceiver(
            intake=Intake(spec=self.coord.spec, params=self.cfg.intake), store=self.store,
            coordinator=self.coord, send=lambda edge, a: self.answers.append((edge, a)))
        for edge in EDGES:
            self.coord.on_status(EdgeStatus(edge_id=edge, online=True), 0.0)
        self.receiver.replay(self.now)  # in the service's order: replay, then recover
        self.coord.recover(self.now)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _frame(self, sent: Sent, payload: bytes) -> None:
        self.now += 0.01
        # Rejected or deferred: the invariants say whether that was right.
        with contextlib.suppress(FedstreamError):
            self.receiver.on_frame(payload, sent.edge, self.now)

    @initialize()
    def open_first_round(self) -> None:
        self.coord.start_round(self.now)

    @rule(target=sent, edge=st.sampled_from(EDGES), kind=st.sampled_from(KINDS))
    def make_update(self, edge: str, kind: str) -> Sent:
        assert self.coord.round is not None
        self.seed += 1
        made = _make(edge, self.coord.round.round_id, self.coord.current.version, kind,
                     self.seed)
        self.updates[made.update_id] = made
        return made

    @rule(sent=sent, index=st.integers(0, 2), copies=st.integers(1, 2))
    def deliver_chunk(self, sent: Sent, index: int, copies: int) -> None:
        for _ in range(copies):
            sent.delivered.add(index)
            self._frame(sent, sent.frames[index])

    @rule(sent=sent)
    def resend_whole(self, sent: Sent) -> None:
        for i, frame in enumerate(sent.frames):
            sent.delivered.add(i)
            self._frame(sent, frame)

    @rule(sent=sent)
    def probe_and_fill(self, sent: Sent) -> None:
        before = len(self.answers)
        probe = UpdateProbe(edge_id=sent.edge, update_id=sent.update_id,
                            round_id=sent.round_id, count=len(sent.frames))
        self._frame(sent, wire.pack(probe))
        for _, answer in self.answers[before:]:
            if isinstance(answer, MissingChunks) and answer.update_id == sent.update_id:
                for i in answer.indices:
                    sent.delivered.add(i)
                    self._frame(sent, sent.frames[i])

    @precondition(lambda self: not self.spool_broken)
    @rule()
    def break_spool(self) -> None:
        root = self.store.spool.root
        if root.exists():
            root.rename(root.with_name("spool.off"))
        root.write_bytes(b"the spool is gone")
        self.spool_broken = True

    @precondition(lambda self: self.spool_broken)
    @rule()
    def heal_spool(self) -> None:
        root = self.store.spool.root
        root.unlink()
        if root.with_name("spool.off").exists():
            root.with_name("spool.off").rename(root)
        self.spool_broken = False

    @rule(dt=st.sampled_from([0.5, 40.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        # A broken spool fails aggregation; the service retries on its next tick.
        with contextlib.suppress(FedstreamError):
            self.receiver.tick(self.now)
            self.coord.tick(self.now)

    @rule()
    def restart(self) -> None:
        self.store.close()
        self._open()

    @rule(mode=st.sampled_from([RoundMode.SYNC, RoundMode.ASYNC]))
    def next_round(self, mode: RoundMode) -> None:
        request = RoundStart(mode=mode, buffer=2, max_staleness=1) if mode is RoundMode.ASYNC \
            else RoundStart()
        with contextlib.suppress(FedstreamError):  # e.g. stuck aggregating on a broken spool
            self.coord.stop_round(self.now)
            self.coord.start_round(self.now, request)

    @invariant()
    def one_verdict_each_answered_alike(self) -> None:
        receipts: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
        for _, answer in self.answers:
            if isinstance(answer, Receipt):
                receipts[answer.update_id].add((str(answer.status), answer.reason))
        for update_id, sent in self.updates.items():
            row = self.store.journal.update(update_id)
            if row is None:
                assert update_id not in receipts, f"{sent.kind} answered without a verdict"
                assert update_id not in self.verdicts, "a recorded verdict vanished"
                continue
            verdict = (str(row.status), row.reason)
            assert self.verdicts.setdefault(update_id, verdict) == verdict
            assert receipts[update_id] == {verdict}, "every receipt repeats the verdict"
            assert self.store.journal.chunk_indices(update_id) == []
            if row.status is ReceiptStatus.ACCEPTED:
                assert sent.kind == "good", f"a {sent.kind} update was accepted"
                if self.spool_broken:
                    continue
                spooled = decode_with("f32", self.store.spool.get(row.spool), SPEC)
                assert all(torch.equal(a, b) for a, b in zip(spooled, sent.delta, strict=True))

    @invariant()
    def counted_once(self) -> None:
        state = self.coord.round
        if state is None:
            return
        accepted = self.store.journal.accepted(state.round_id)
        assert state.received == len(accepted)
        assert len({(r.edge_id, r.base) for r in accepted}) == len(accepted)

    def check_settled(self) -> None:
        """Once the spool works, an edge that probes each of its updates and sends what the
        cloud names gets every update decided, with nothing left undecided."""
        if self.spool_broken:
            self.heal_spool()
        self.tick(MAX_RETRY_S)  # past any verdict retry's backoff
        for _ in range(3):
            for update_id, sent in sorted(self.updates.items()):
                if self.store.journal.update(update_id) is None:
                    self.probe_and_fill(sent)
            self.tick(MAX_RETRY_S)
        assert self.receiver.undecided == frozenset()
        for update_id, sent in self.updates.items():
            assert self.store.journal.update(update_id) is not None, sent.kind
        self.one_verdict_each_answered_alike()


class SettlingMachine(ReceiverMachine):
    """The same machine, checking at the end that nothing was left undecided."""

    def teardown(self) -> None:
        try:
            self.check_settled()
        finally:
            super().teardown()


SettlingMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_every_update_gets_exactly_one_verdict = SettlingMachine.TestCase
