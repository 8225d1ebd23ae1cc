"""The inference server (cloud/inference/server.py): hot swaps under load, status, start/stop."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from fedstream.broker import Mosquitto, find_free_port
from fedstream.cloud.config import InferenceConfig
from fedstream.cloud.inference import InferenceServer, ServedModel
from fedstream.shared.errors import ConfigError, FedstreamError, Reason, TransportError
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = pytest.mark.mosquitto

MODEL = "mlp"
VERSIONS = (1, 2, 3, 4, 5, 6)  # 1 before the load starts, 2-6 swapped in under load
ANSWERS_PER_VERSION = 3
WAIT_S = 20.0


def _server(broker: Mosquitto, federation: str, arch: Architecture,
            **cfg: object) -> InferenceServer:
    settings: dict[str, object] = {"http_port": 0, "precision": "fp32", **cfg}
    return InferenceServer(cfg=InferenceConfig(**settings),  # type: ignore[arg-type]
                           arch=arch, topics=Topics(federation), model=MODEL,
                           conn=Connection(host=broker.host, port=broker.port))


@pytest.fixture
def server(broker: Mosquitto, federation: str,
           arch: Architecture) -> Iterator[InferenceServer]:
    """A started server (HTTP on a free port), stopped after the test."""
    with _server(broker, federation, arch, max_wait_ms=1.0) as running:
        yield running


@dataclass
class _Log:
    """What one load client saw: (row index, version, class) per answer, and failures."""

    answers: list[tuple[int, int, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class _Progress:
    """Answers of every client, with a condition the test thread waits on."""

    def __init__(self, clients: tuple[str, ...]) -> None:
        self.cond = threading.Condition()
        self.logs = {c: _Log() for c in clients}
        self.stop = threading.Event()

    def record(self, client: str, row: int, reply: InferReply | str) -> None:
        with self.cond:
            log = self.logs[client]
            if isinstance(reply, str):
                log.failures.append(reply)
            else:
                log.answers.append((row, reply.version, reply.predictions[0]))
            self.cond.notify_all()

    def wait_until_all_saw(self, version: int, count: int) -> None:
        def done() -> bool:
            return all(sum(v == version for _, v, _ in log.answers) >= count
                       or log.failures for log in self.logs.values())

        with self.cond:
            assert self.cond.wait_for(done, WAIT_S), f"clients never saw version {version}"


def _mqtt_load(server: InferenceServer, broker: Mosquitto, federation: str,
               inputs: np.ndarray, progress: _Progress) -> None:
    topics = Topics(federation)
    reply_to = topics.reply("anonymous", f"{federation}-load")
    client = MqttClient(client_id=f"{federation}-load",
                        conn=Connection(host=broker.host, port=broker.port),
                        subscriptions=(reply_to,))
    client.connect(10)
    try:
        i = 0
        while not progress.stop.is_set():
            row = i % len(inputs)
            try:
                msg = client.request(topics.infer(MODEL),
                                     wire.pack(InferRequest.of(inputs[row:row + 1])),
                                     reply_to, timeout_s=10)
                reply = wire.expect(msg.payload, InferReply)
                progress.record("mqtt", row, reply if reply.ok else reply.reason)
            except Exception as err:  # every failure is a finding, recorded for the assert
                progress.record("mqtt", row, repr(err))
            i += 1
    finally:
        client.close()


def _http_load(server: InferenceServer, inputs: np.ndarray, progress: _Progress) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        i = 0
        while not progress.stop.is_set():
            row = i % len(inputs)
            try:
                conn.request("POST", "/v1/predict",
                             json.dumps({"inputs": inputs[row:row + 1].tolist()}))
                response = conn.getresponse()
                body = json.loads(response.read())
                progress.record("http", row, InferReply(
                    ok=True, version=body["version"], predictions=tuple(body["predictions"]))
                    if response.status == 200 else f"{response.status} {body}")
            except Exception as err:  # every failure is a finding, recorded for the assert
                progress.record("http", row, repr(err))
            i += 1
    finally:
        conn.close()


def test_hot_swap_under_load_drops_nothing_and_versions_only_advance(
    server: InferenceServer, broker: Mosquitto, federation: str, arch: Architecture,
) -> None:
    """An MQTT and an HTTP client in a loop while five versions are swapped in: every request
    is answered by a swapped version matching its predictions, never older than the last one
    that client saw, and the last answers come from the last version."""
    # Prepare
    inputs = np.random.default_rng(11).standard_normal((32, arch.features)).astype(np.float32)
    weights = {v: tensors_of(build_model(arch, seed=v)) for v in VERSIONS}
    served: dict[int, ServedModel] = {VERSIONS[0]: server.swap(VERSIONS[0],
                                                               weights[VERSIONS[0]])}
    progress = _Progress(("mqtt", "http"))
    clients = [threading.Thread(target=_mqtt_load,
                                args=(server, broker, federation, inputs, progress)),
               threading.Thread(target=_http_load, args=(server, inputs, progress))]
    for t in clients:
        t.start()

    # Execute
    try:
        progress.wait_until_all_saw(VERSIONS[0], ANSWERS_PER_VERSION)
        for version in VERSIONS[1:]:
            served[version] = server.swap(version, weights[version])
            progress.wait_until_all_saw(version, ANSWERS_PER_VERSION)
    finally:
        progress.stop.set()
        for t in clients:
            t.join()

    # Assert
    expected = {v: m.predict(inputs)[0].tolist() for v, m in served.items()}
    for name, log in progress.logs.items():
        versions = [v for _, v, _ in log.answers]
        assert log.failures == [], name
        assert set(versions) == set(VERSIONS), name
        assert versions == sorted(versions), name
        assert versions[-ANSWERS_PER_VERSION:] == [VERSIONS[-1]] * ANSWERS_PER_VERSION, name
        assert all(expected[v][row] == c for row, v, c in log.answers), name
    status = server.status()
    answered = sum(len(log.answers) for log in progress.logs.values())
    assert (status["served"], status["rejected"], status["version"]) == (answered, 0, 6)


def test_status_counts_served_and_rejected_requests(
    server: InferenceServer, weights: Callable[[int], list[torch.Tensor]]
) -> None:
    """Status names the served version and counts answers and refusals per front door."""
    # Prepare
    server.swap(2, weights(2))
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)

    # Execute
    for body in ({"inputs": [[0.0] * 8]}, {"inputs": [[0.0] * 3]}):
        conn.request("POST", "/v1/predict", json.dumps(body))
        conn.getresponse().read()
    conn.close()
    status = server.status()

    # Assert
    assert status["version"] == 2 and status["precision"] == "fp32"
    assert status["http_port"] == server.http_port
    assert (status["served"], status["served.http"]) == (1, 1)
    assert (status["rejected"], status["reason.spec_mismatch"]) == (1, 1)


def test_swap_of_tensors_that_do_not_fit_keeps_the_old_version(
    server: InferenceServer, weights: Callable[[int], list[torch.Tensor]]
) -> None:
    """A refused swap leaves the previous version serving."""
    # Prepare
    server.swap(1, weights(1))

    # Execute
    with pytest.raises(ConfigError) as info:
        server.swap(2, weights(2)[:-1])

    # Assert
    assert info.value.reason is Reason.SPEC_MISMATCH
    assert server.status()["version"] == 1


def test_start_failure_stops_what_started(
    broker: Mosquitto, federation: str, arch: Architecture,
    weights: Callable[[int], list[torch.Tensor]],
) -> None:
    """An HTTP port in use fails start, and the batcher it had started is stopped again."""
    # Prepare
    with _server(broker, federation, arch) as first:
        second = _server(broker, federation, arch, http_port=first.http_port)
        second.swap(1, weights(1))

        # Execute
        with pytest.raises(ConfigError) as info:
            second.start()

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    with pytest.raises(FedstreamError) as stopped:
        second.batcher.submit(np.zeros((1, arch.features), np.float32))
    assert stopped.value.reason is Reason.OVERLOADED


def test_unreachable_broker_fails_start(arch: Architecture, federation: str) -> None:
    """No broker listening makes start raise broker_unreachable after its timeout."""
    # Prepare
    server = InferenceServer(cfg=InferenceConfig(http_port=0), arch=arch,
                             topics=Topics(federation), model=MODEL,
                             conn=Connection(host="127.0.0.1", port=find_free_port()))

    # Execute
    with pytest.raises(TransportError) as info:
        server.start(timeout_s=0.5)

    # Assert
    assert info.value.reason is Reason.BROKER_UNREACHABLE
