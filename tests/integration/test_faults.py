"""Fault tests with real processes and a real broker: kill the cloud, restart Mosquitto, kill an
edge mid-upload. Every test ends with each update counted exactly once and nothing held."""

from __future__ import annotations

import io
import json
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import fleet_status, start_round
from fedstream.shared.learning.model import spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.commands import RoundReply, RoundStart
from fedstream.shared.protocol.control import EdgeStatus, RoundState
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.chaos]

# A wider model than the demo's, so uploads and aggregation take long enough to be cut into.
ARCH = Architecture.mlp((64, 512, 512, 10))
ARCH_TABLE = "[architecture]\nparams.hidden = [512, 512]\n\n"


@dataclass
class Fleet:
    """A cloud and three edges running as processes against one broker."""

    procs: Processes
    address: FleetAddress
    cloud_cfg: Path
    data_dir: Path

    def restart_cloud(self) -> None:
        """SIGKILL the cloud and start it again on the same data directory."""
        self.procs.kill("cloud")
        self.procs.spawn("cloud", "cloud", self.cloud_cfg)

    def run_round(self, on_change: Callable[[RoundState], None]) -> RoundState:
        """Start a round and follow it to its end, calling `on_change` on every state."""
        with FleetClient(self.address) as fleet:
            opened = fleet.command(RoundStart(epochs=1), RoundReply).round
            assert opened is not None
            return fleet.wait_round(opened.round_id, on_change=on_change, grace_s=60)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own, free to be restarted."""
    with Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "broker")) as running:
        yield running


@contextmanager
def _fleet(tmp_path: Path, broker: Mosquitto, federation: str, *, cloud_tables: str = "",
           edge_extra: str = "") -> Iterator[Fleet]:
    cloud_cfg, edge_cfgs = write_configs(
        tmp_path, port=broker.port, federation=federation, edges=3, dirichlet_alpha=0.5,
        cloud_tables=ARCH_TABLE + cloud_tables, edge_extra=edge_extra)
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=10.0)
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        for i, path in enumerate(edge_cfgs):
            procs.spawn(f"edge-{i}", "edge", path)
        wait_ready(address, edges=3, procs=procs)
        yield Fleet(procs=procs, address=address, cloud_cfg=cloud_cfg,
                    data_dir=tmp_path / "cloud-data")
    finally:
        procs.stop()


def _uninterrupted_model(data_dir: Path, round_id: str, scratch: Path) -> list[torch.Tensor]:
    """What an uninterrupted cloud makes of the same accepted updates: a fresh coordinator on a
    fresh store, fed the same spooled blobs, run from the same base version."""
    crashed = CloudStore.open(data_dir)
    rows = crashed.journal.accepted(round_id)
    clean = CloudStore.open(scratch)
    coord = Coordinator.open(cfg=CloudConfig(architecture=ArchitectureConfig.of(ARCH)),
                             store=clean,
                             evaluate=lambda ts: {"accuracy": 0.0}, publish_model=lambda v: 0,
                             publish_round=lambda s: None)
    # The fresh store starts from the same seeded v0 as the crashed one.
    for edge in sorted({r.edge_id for r in rows}):
        coord.on_status(EdgeStatus(edge_id=edge, online=True), 0.0)
    state = coord.start_round(now=0.0, request=RoundStart(deadline_s=1e9))
    for row in rows:
        blob = crashed.spool.get(row.spool)
        clean_row = UpdateRow(update_id=row.update_id, round_id=state.round_id,
                              edge_id=row.edge_id, status="accepted", samples=row.samples,
                              bytes=row.bytes, codec=row.codec,
                              spool=clean.spool.put(state.round_id, row.update_id, blob))
        clean.journal.record_update(clean_row)
        coord.on_update(clean_row, now=1.0)
    assert coord.round is not None and coord.round.status == "published"
    return coord.current.tensors


def _published(data_dir: Path, version: int) -> list[torch.Tensor]:
    store = CloudStore.open(data_dir)
    row = next(v for v in store.journal.versions() if v.version == version)
    tensors, _ = store.models.load(row.path, spec_of(build_model(ARCH)))
    return tensors


def _events(log: Path) -> list[dict[str, object]]:
    """The JSON log lines of a service (IPEX and torch print a few plain lines too)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _assert_counted_once(data_dir: Path, final: RoundState) -> None:
    journal = CloudStore.open(data_dir).journal
    rows = journal.accepted(final.round_id)
    assert final.status == "published", final
    assert sorted(r.edge_id for r in rows) == ["edge-0", "edge-1", "edge-2"]
    assert final.received == 3 and final.result["updates"] == 3
    assert [v.version for v in journal.versions()] == [0, 1]
    assert list(journal.chunk_frames()) == []


def test_cloud_killed_mid_collection_resumes_with_every_update(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """SIGKILL the cloud after its first accepted update: the restarted cloud resumes the round
    from its journal, takes the other updates from its broker session, counts each once, and
    publishes bit-for-bit the model an uninterrupted cloud makes of them."""
    with _fleet(tmp_path, broker, federation) as fleet:
        killed: list[int] = []

        def crash_once(state: RoundState) -> None:
            if state.received >= 1 and not killed:
                killed.append(state.received)
                fleet.restart_cloud()

        # Execute
        final = fleet.run_round(crash_once)

        # Assert
        assert killed == [1]
        _assert_counted_once(fleet.data_dir, final)
        expected = _uninterrupted_model(fleet.data_dir, final.round_id, tmp_path / "clean")
        assert all(torch.equal(a, b) for a, b in
                   zip(_published(fleet.data_dir, 1), expected, strict=True))


def test_cloud_killed_mid_aggregation_reaches_the_same_model(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """SIGKILL the cloud as soon as it announces aggregation: after a restart the round is
    published once, as v1, equal bit for bit to the uninterrupted result."""
    with _fleet(tmp_path, broker, federation) as fleet:
        killed: list[str] = []

        def crash_once(state: RoundState) -> None:
            if state.status == "aggregating" and not killed:
                killed.append(state.status)
                fleet.restart_cloud()

        # Execute
        final = fleet.run_round(crash_once)

        # Assert
        assert killed == ["aggregating"]
        _assert_counted_once(fleet.data_dir, final)
        resumed = [e for e in _events(tmp_path / "cloud.log") if e["event"] == "round_resumed"]
        assert [e["status"] for e in resumed] == ["aggregating"]
        expected = _uninterrupted_model(fleet.data_dir, final.round_id, tmp_path / "clean")
        assert all(torch.equal(a, b) for a, b in
                   zip(_published(fleet.data_dir, 1), expected, strict=True))


def test_broker_restart_mid_upload_loses_and_duplicates_nothing(
    own_broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """Restart Mosquitto (persistence on) while updates are in flight: reconnects, QoS 1
    redelivery and the edges' outbox get every update to the cloud exactly once."""
    with _fleet(tmp_path, own_broker, federation, edge_extra="chunk_size = 4096\n"
                        "resend_after_s = 3.0\n") as fleet:
        restarted: list[int] = []

        def restart_once(state: RoundState) -> None:
            if state.received >= 1 and not restarted:
                restarted.append(state.received)
                own_broker.restart()

        # Execute
        final = fleet.run_round(restart_once)

        # Assert
        assert restarted == [1]
        _assert_counted_once(fleet.data_dir, final)


def test_edge_killed_mid_upload_is_dropped_and_round_completes(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """SIGKILL an edge on its first update chunk: its partial update is dropped after the
    timeout, the round publishes with the other two (quorum 2), and intake memory is freed."""
    tables = "[rounds]\nquorum = 2\ndeadline_s = 8.0\n\n[intake]\npartial_timeout_s = 2.0\n"
    with _fleet(tmp_path, broker, federation, cloud_tables=tables,
                        edge_extra="chunk_size = 1024\n") as fleet:
        seen: queue.Queue[Inbound] = queue.Queue()
        spy = MqttClient(client_id=f"{federation}-spy", conn=fleet.address.conn,
                         on_message=seen.put,
                         subscriptions=(Topics(federation).update(MODEL, "edge-2"),))
        spy.connect(10)
        killed: list[str] = []

        def kill_on_first_chunk(state: RoundState) -> None:
            if not killed:
                seen.get(timeout=60)
                fleet.procs.kill("edge-2")
                killed.append("edge-2")

        # Execute
        final = fleet.run_round(kill_on_first_chunk)
        after = fleet_status(fleet.address)
        spy.close()

        # Assert
        journal = CloudStore.open(fleet.data_dir).journal
        assert final.status == "published" and final.received == 2
        assert sorted(r.edge_id for r in journal.accepted(final.round_id)) == [
            "edge-0", "edge-1"]
        assert after.intake_bytes == 0
        assert list(journal.chunk_frames()) == []
        assert any(e["event"] == "update_dropped" for e in _events(tmp_path / "cloud.log"))


def test_killed_edge_restores_its_error_feedback_residual(
        broker: Mosquitto, federation: str, tmp_path: Path) -> None:
    """With a lossy codec (topk 5%), an edge SIGKILLed after its update was received comes
    back with exactly the residual that update left (same sequence and norm), and trains on."""
    # Prepare
    cloud_cfg, (edge_cfg,) = write_configs(tmp_path, port=broker.port, federation=federation,
                                           edges=1, dirichlet_alpha=0.5)
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=30.0)
    request = RoundStart(epochs=1, codec="topk", codec_params={"density": 0.05})
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        procs.spawn("edge", "edge", edge_cfg)
        wait_ready(address, edges=1, procs=procs)
        first = start_round(address, request, wait=True, out=io.StringIO())

        # Execute
        procs.kill("edge")
        procs.spawn("edge", "edge", edge_cfg)
        wait_ready(address, edges=1, procs=procs)
        second = start_round(address, request, wait=True, out=io.StringIO())
    finally:
        procs.stop()

    # Assert
    events = [json.loads(line) for line in (tmp_path / "edge.log").read_text().splitlines()
              if line.startswith("{")]
    sent = [e for e in events if e["event"] == "update_sent"]
    restored = [e for e in events if e["event"] == "feedback_restored"]
    assert first.status == second.status == "published" and len(sent) == 2
    assert len(restored) == 1 and restored[0]["seq"] == sent[0]["feedback_seq"] == 1
    assert restored[0]["norm"] == sent[0]["feedback_norm"] > 0
