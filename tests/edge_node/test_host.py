"""A host of simulated edges (`edge_node/host.py`) on the real broker: each edge its own id,
data shard, outbox and MQTT session; one failing edge stops alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from fedstream.broker import Mosquitto
from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.feed import DatasetFeed
from fedstream.edge_node.host import EdgeHost, edge_config
from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import EdgeStatus
from fedstream.shared.protocol.mqtt import Inbound
from fedstream.shared.protocol.topics import Topic, Topics

pytestmark = pytest.mark.mosquitto

WAIT_S = 20.0


def _base(broker: Mosquitto, federation: str, root: Path) -> EdgeConfig:
    return EdgeConfig(edge_id="sim", federation=federation, data_dir=root,
                      broker={"host": broker.host, "port": broker.port},
                      backend={"name": "torch", "precision": "fp32"},
                      source={"name": "digits", "params": {"draw": 16}})


def test_each_simulated_edge_has_its_own_id_seed_directory_and_shard(tmp_path: Path) -> None:
    """Edges 0..2 of 1,000: distinct ids, seeds, directories and drawn shards."""
    # Prepare
    base = EdgeConfig(edge_id="sim", data_dir=tmp_path, source={
        "name": "digits", "params": {"draw": 16}})

    # Execute
    configs = [edge_config(base, i, edges=1000, root=tmp_path / "edges") for i in (0, 1, 999)]

    # Assert
    assert [c.edge_id for c in configs] == ["sim-00000", "sim-00001", "sim-00999"]
    assert [c.seed for c in configs] == [0, 1, 999]
    assert [c.data_dir for c in configs] == [tmp_path / "edges" / c.edge_id for c in configs]
    assert [c.source.params for c in configs] == [
        {"draw": 16, "partitions": 1000, "partition": i} for i in (0, 1, 999)]


def test_a_host_runs_its_edges_on_sessions_of_their_own(broker: Mosquitto, federation: str,
                                                        tmp_path: Path) -> None:
    """Three edges come up connected, each with its own client id, outbox and shard."""
    # Prepare
    base = _base(broker, federation, tmp_path)
    host = EdgeHost(edge_config(base, i, edges=3, root=tmp_path) for i in range(3))

    # Execute
    host.start()
    try:
        connected = [d.mqtt.connected for d in host.daemons]
        clients = {d.mqtt.client_id for d in host.daemons}
        feeds = [d.feed for d in host.daemons]
    finally:
        host.shut_down()

    # Assert
    assert connected == [True, True, True]
    assert len(clients) == 3
    assert all((tmp_path / f"sim-0000{i}" / "outbox").is_dir() for i in range(3))
    assert all(isinstance(f, DatasetFeed) and len(f.data) == 16 for f in feeds)
    assert not np.array_equal(feeds[0].data.features,  # type: ignore[attr-defined]
                              feeds[1].data.features)  # type: ignore[attr-defined]
    assert host.report().edges == 3 and host.report().failed == 0


def test_a_failing_edge_stops_alone(
        broker: Mosquitto, federation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        retained: Callable[[Connection, Topic], list[Inbound]]) -> None:
    """An edge whose loop raises is logged (`edge_failed`, with its reason), counted, no longer
    driven and disconnected, so its last will tells the cloud it is offline (not selected
    again); the host and its other edges go on."""
    # Prepare
    base = _base(broker, federation, tmp_path)
    host = EdgeHost(edge_config(base, i, edges=2, root=tmp_path) for i in range(2))
    host.start()
    turns = {"healthy": 0}

    def broken(timeout_s: float) -> None:
        raise TransportError(Reason.PUBLISH_FAILED, "broker refused the probe")

    healthy_turn = host.daemons[1].turn

    def counted(timeout_s: float) -> None:
        turns["healthy"] += 1
        healthy_turn(timeout_s)

    monkeypatch.setattr(host.daemons[0], "turn", broken)
    monkeypatch.setattr(host.daemons[1], "turn", counted)
    stop = threading.Event()
    serving = threading.Thread(target=host.serve, args=(stop,))

    # Execute
    with capture_logs() as logs:
        serving.start()
        give_up = time.monotonic() + WAIT_S
        while turns["healthy"] < 3 and time.monotonic() < give_up:
            time.sleep(0.05)
        status = [wire.expect(m.payload, EdgeStatus) for m in retained(
            Connection(host=broker.host, port=broker.port),
            Topics(federation).status("sim-00000"))]
        stop.set()
        serving.join()
        host.shut_down()

    # Assert
    failed = [e for e in logs if e["event"] == "edge_failed"]
    assert [(e["edge_id"], e["reason"]) for e in failed] == [("sim-00000", "publish_failed")]
    assert turns["healthy"] >= 3
    assert host.report().failed == 1
    assert [s.online for s in status] == [False]
