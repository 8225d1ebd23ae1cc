"""The MQTT v5 front door (cloud/inference/mqtt_api.py) against a real Mosquitto."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from fedstream.broker import Mosquitto
from fedstream.cloud.inference import BatcherParams, MicroBatcher, ServedModel
from fedstream.cloud.inference._tally import Tally
from fedstream.cloud.inference.mqtt_api import MqttApi
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = pytest.mark.mosquitto

Rows = Callable[[int], npt.NDArray[np.float32]]
MODEL = "mlp"


class _Setup:
    """A batcher + MQTT API serving `MODEL`, and a client subscribed to its reply topic."""

    def __init__(self, broker: Mosquitto, federation: str) -> None:
        self.topics = Topics(federation)
        self.batcher = MicroBatcher(BatcherParams(cols=8, max_rows=4))
        self.tally = Tally()
        conn = Connection(host=broker.host, port=broker.port)
        self.api = MqttApi(batcher=self.batcher, tally=self.tally, topics=self.topics,
                           model=MODEL, conn=conn)
        self.reply_to = self.topics.reply("anonymous", f"{federation}-client")
        self.client = MqttClient(client_id=f"{federation}-client", conn=conn,
                                 subscriptions=(self.reply_to,))

    def ask(self, payload: bytes) -> InferReply:
        msg = self.client.request(self.topics.infer(MODEL), payload, self.reply_to,
                                  timeout_s=10)
        return wire.expect(msg.payload, InferReply)


@pytest.fixture
def setup(broker: Mosquitto, federation: str) -> Iterator[_Setup]:
    """Started batcher, API and client; stopped in the right order after the test."""
    s = _Setup(broker, federation)
    s.batcher.start()
    s.api.start(10)
    s.client.connect(10)
    yield s
    s.client.close()
    s.batcher.stop()
    s.api.stop()


def test_request_is_answered_with_the_served_version(
    setup: _Setup, served: Callable[[int], ServedModel], rows: Rows
) -> None:
    """An InferRequest gets an ok InferReply naming the version, on its own correlation data."""
    # Prepare
    model = served(5)
    setup.batcher.swap(model)
    x = rows(3)

    # Execute: `request` only returns for a reply carrying the correlation data it sent
    reply = setup.ask(wire.pack(InferRequest.of(x)))

    # Assert
    classes, scores = model.predict(x)
    assert (reply.ok, reply.version) == (True, 5)
    assert list(reply.predictions) == classes.tolist()
    np.testing.assert_allclose(reply.score_values(), scores, rtol=1e-5)
    assert setup.tally.snapshot()["served.mqtt"] == 1


def _raw_request(**changes: object) -> bytes:
    raw = msgpack.unpackb(wire.pack(InferRequest.of(np.zeros((2, 8)))), raw=False)
    raw.update(changes)
    packed: bytes = msgpack.packb(raw, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1 not msgpack", "not_msgpack"),
        (wire.pack(InferReply(ok=True, version=1, predictions=(2,))), "unknown_kind"),
        (_raw_request(r=3), "size_mismatch"),
        (_raw_request(x="rows"), "bad_frame"),
        (wire.pack(InferRequest.of([[0.0] * 7 + [float("nan")]])), "non_finite"),
        (wire.pack(InferRequest.of(np.zeros((1, 5)))), "spec_mismatch"),
        (wire.pack(InferRequest.of(np.zeros((5, 8)))), "bad_frame"),
    ],
    ids=["not-msgpack", "wrong-kind", "wrong-sizes", "wrong-type", "nan", "wrong-width",
         "over-max-rows"],
)
def test_malformed_request_gets_an_error_reply(
    setup: _Setup, served: Callable[[int], ServedModel], rows: Rows,
    payload: bytes, reason: str,
) -> None:
    """A bad request is answered with its reason code and logged; the next one is served."""
    # Prepare
    setup.batcher.swap(served(1))

    # Execute
    with capture_logs() as logs:
        refused = setup.ask(payload)
    answered = setup.ask(wire.pack(InferRequest.of(rows(1))))

    # Assert
    assert (refused.ok, refused.reason, refused.version) == (False, reason, -1)
    assert refused.detail
    assert (answered.ok, answered.version) == (True, 1)
    assert [e["reason"] for e in logs if e["event"] == "infer_rejected"] == [reason]


def test_request_before_any_model_gets_no_model(setup: _Setup, rows: Rows) -> None:
    """Before the first swap the reply says no_model."""
    # Execute
    reply = setup.ask(wire.pack(InferRequest.of(rows(1))))

    # Assert
    assert (reply.ok, reply.reason) == (False, "no_model")


def test_request_without_response_topic_is_dropped_and_logged(
    setup: _Setup, served: Callable[[int], ServedModel], rows: Rows
) -> None:
    """A plain publish cannot be answered: it is logged and counted, and serving goes on."""
    # Prepare
    setup.batcher.swap(served(1))

    # Execute: one client's messages on one topic are handled in order, so the answer to the
    # second proves the first was handled
    with capture_logs() as logs:
        setup.client.publish(setup.topics.infer(MODEL), wire.pack(InferRequest.of(rows(1))))
        answered = setup.ask(wire.pack(InferRequest.of(rows(1))))

    # Assert
    assert answered.ok
    assert [e for e in logs if e["event"] == "infer_dropped"] == [
        {"event": "infer_dropped", "log_level": "info", "reason": "no_response_topic",
         "topic": str(setup.topics.infer(MODEL))}]
    assert setup.tally.snapshot()["reason.no_response_topic"] == 1


def test_failed_forward_pass_gets_an_internal_error_reply(
    setup: _Setup, preparer_for: Callable[[Architecture], ServedModel], rows: Rows
) -> None:
    """A forward pass that raises is answered with reason "internal", not silence."""
    # Prepare
    setup.batcher.swap(preparer_for(Architecture.mlp((5, 4))))  # takes 5 features, requests carry 8

    # Execute
    reply = setup.ask(wire.pack(InferRequest.of(rows(1))))

    # Assert
    assert (reply.ok, reply.reason) == (False, "internal")
    assert "mat1" not in reply.detail and "service log" in reply.detail  # no torch internals
    assert setup.tally.snapshot()["reason.internal"] == 1
    with pytest.raises(FedstreamError) as raised:  # what `fedstream predict` shows
        reply.checked()
    assert raised.value.reason is Reason.INTERNAL
