"""Edge fixtures: an in-process edge daemon on the real broker, and spies on its topics."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedstream.broker import Mosquitto
from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.daemon import EdgeDaemon
from fedstream.edge_node.wiring import open_edge
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topic

Spy = Callable[..., "queue.Queue[Inbound]"]


@pytest.fixture
def connected_edge(broker: Mosquitto, federation: str, tmp_path: Path) -> Iterator[EdgeDaemon]:
    """Edge `e1` built from its config (an eighth of the digits), connected, not running."""
    cfg = EdgeConfig(edge_id="e1", federation=federation, data_dir=tmp_path / "edge",
                     broker={"host": broker.host, "port": broker.port},
                     source={"name": "digits", "params": {"partitions": 8}})
    daemon = open_edge(cfg)
    daemon.mqtt.connect(10)
    try:
        yield daemon
    finally:
        daemon.mqtt.close()


@pytest.fixture
def spy(connected_edge: EdgeDaemon) -> Iterator[Spy]:
    """`spy(*topics)`: a queue of what is published on those topics from now on."""
    clients: list[MqttClient] = []

    def start(*topics: Topic) -> queue.Queue[Inbound]:
        got: queue.Queue[Inbound] = queue.Queue()
        client = MqttClient(client_id=f"{connected_edge.cfg.federation}-spy{len(clients)}",
                            conn=connected_edge.mqtt.conn, on_message=got.put,
                            subscriptions=topics)
        client.connect(10)
        clients.append(client)
        return got

    yield start
    for client in clients:
        client.close()
