"""The model publisher against a real Mosquitto: a new version's chunks and manifest are
retained, the superseded version's chunks are cleared (without waiting on the clears)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from fedstream.broker import Mosquitto
from fedstream.cloud.publisher import ModelPublisher
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topic, Topics

pytestmark = pytest.mark.mosquitto

ARCH = Architecture.mlp((64, 100, 10))


Retained = Callable[[Connection, Topic], list[Inbound]]


def _conn(broker: Mosquitto) -> Connection:
    return Connection(host=broker.host, port=broker.port)


def _client(broker: Mosquitto) -> MqttClient:
    client = MqttClient(client_id=f"c-{uuid.uuid4().hex[:8]}", conn=_conn(broker))
    client.connect(10)
    return client


def test_a_new_version_clears_the_chunks_of_the_one_it_supersedes(
        broker: Mosquitto, federation: str, retained: Retained) -> None:
    """After v1 then v2 (4 KiB chunks: several each), a new subscriber gets v2's manifest and
    chunks only; the clears of v1's are not waited for, yet done by the broker in order."""
    # Prepare
    topics = Topics(federation)
    model = build_model(ARCH, seed=0)
    cloud = _client(broker)
    publisher = ModelPublisher(mqtt=cloud, topics=topics, model="m", spec=spec_of(model),
                               arch=ARCH, chunk_size=4096)
    tensors = tensors_of(model)

    # Execute
    publisher.publish(version=1, parent=0, tensors=tensors, metrics={})
    size = publisher.publish(version=2, parent=1, tensors=tensors, metrics={})
    cloud.publish(Topic(f"{topics.prefix}/after"), b"")  # PUBACKs in order: clears are done
    left = [m.topic for m in retained(_conn(broker), topics.model_all("m"))]
    cloud.clear_retained([Topic(t) for t in left])
    cloud.close()

    # Assert
    chunks = -(-size // 4096)
    prefix = f"{topics.prefix}/model/m/"
    assert sorted(t.removeprefix(prefix) for t in left) == sorted(
        ["manifest", *(f"v/2/{i}" for i in range(chunks))])
    assert chunks > 1


def test_publishing_the_same_version_again_keeps_its_chunks(
        broker: Mosquitto, federation: str, retained: Retained) -> None:
    """A restart announces a version saved before the cloud died, already published once:
    its chunks stay retained (the clear of the superseded version must not hit them)."""
    # Prepare
    topics = Topics(federation)
    model = build_model(ARCH, seed=0)
    cloud = _client(broker)
    publisher = ModelPublisher(mqtt=cloud, topics=topics, model="m", spec=spec_of(model),
                               arch=ARCH, chunk_size=4096)

    # Execute
    size = publisher.publish(version=1, parent=0, tensors=tensors_of(model), metrics={})
    publisher.publish(version=1, parent=0, tensors=tensors_of(model), metrics={})
    cloud.publish(Topic(f"{topics.prefix}/after"), b"")
    left = [m.topic for m in retained(_conn(broker), topics.model_all("m"))]
    cloud.clear_retained([Topic(t) for t in left])
    cloud.close()

    # Assert
    prefix = f"{topics.prefix}/model/m/"
    assert sorted(t.removeprefix(prefix) for t in left) == sorted(
        ["manifest", *(f"v/1/{i}" for i in range(-(-size // 4096)))])
