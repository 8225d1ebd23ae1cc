"""The MQTT v5 front door of the inference service: requests on `{p}/infer/{model}`."""

from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from fedstream.cloud.inference._tally import Tally
from fedstream.cloud.inference.batcher import FAILED, Answer, MicroBatcher
from fedstream.shared.errors import FedstreamError, TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics

log = structlog.get_logger(__name__)

VIA = "mqtt"
# Each reply waits for its PUBACK; a few threads keep those waits overlapping under load.
REPLY_THREADS = 4
REPLY_TIMEOUT_S = 2.0


class MqttApi:
    """Answers `InferRequest`s on the response topic and correlation data they carry.

    Requests are checked and queued on paho's network thread, which never waits: the
    replies' PUBACKs arrive on that same thread, so replies go out from a small pool.

    Args:
        batcher: Answers the requests.
        tally: Counts served and rejected requests.
        topics: The federation's topic tree.
        model: Model name; requests arrive on `topics.infer(model)`.
        conn: The broker.
    """

    def __init__(self, *, batcher: MicroBatcher, tally: Tally, topics: Topics, model: str,
                 conn: Connection) -> None:
        self._batcher, self._tally = batcher, tally
        self._lock = threading.Lock()
        self._closing = False
        self._replies = ThreadPoolExecutor(max_workers=REPLY_THREADS,
                                           thread_name_prefix="infer-reply")
        self.mqtt = MqttClient(client_id=f"fedstream-infer-{topics.federation}-{model}",
                               conn=conn, on_message=self._on_request,
                               subscriptions=(topics.infer(model),))

    def start(self, timeout_s: float = 30.0) -> None:
        """Connect and subscribe.

        Raises:
            TransportError: broker_unreachable once `timeout_s` has passed.
        """
        self.mqtt.connect(timeout_s)

    def stop(self) -> None:
        """Send the replies already due, then disconnect; later answers are dropped."""
        with self._lock:
            self._closing = True
        self._replies.shutdown(wait=True)
        self.mqtt.close()

    def _on_request(self, msg: Inbound) -> None:
        if msg.response_topic is None:
            self._tally.rejected(VIA, "no_response_topic")
            log.info("infer_dropped", topic=msg.topic, reason="no_response_topic")
            return
        try:
            request = wire.expect(msg.payload, InferRequest)
            future = self._batcher.submit(request.array())
        except FedstreamError as err:
            self._tally.rejected(VIA, str(err.reason))
            log.info("infer_rejected", via=VIA, topic=msg.topic, reason=str(err.reason),
                     detail=err.detail)
            self._send(msg, InferReply.refusal(err))
            return
        future.add_done_callback(functools.partial(self._on_answer, msg, time.monotonic()))

    def _on_answer(self, msg: Inbound, arrived: float, future: Future[Answer]) -> None:
        err = future.exception()
        if err is None:
            answer = future.result()
            self._tally.served(VIA, time.monotonic() - arrived)
            self._send(msg, InferReply.answer(answer.version, answer.predictions,
                                              answer.scores))
            return
        # The batcher logged a failed forward pass; here only the reply's reason is chosen.
        reply = InferReply.refusal(err if isinstance(err, FedstreamError) else FAILED)
        self._tally.rejected(VIA, reply.reason)
        self._send(msg, reply)

    def _send(self, msg: Inbound, reply: InferReply) -> None:
        with self._lock:
            if self._closing:
                log.warning("reply_dropped", topic=msg.response_topic, reason="stopping")
                return
            self._replies.submit(self._publish, msg, reply)

    def _publish(self, msg: Inbound, reply: InferReply) -> None:
        try:
            # A requester waits seconds, not a minute: a reply the broker does not take soon
            # is dropped rather than tying up a reply thread (and stop()) behind it.
            self.mqtt.reply(msg, wire.pack(reply), timeout_s=REPLY_TIMEOUT_S)
        except TransportError as err:
            log.warning("reply_failed", topic=msg.response_topic, reason=str(err.reason),
                        detail=err.detail)
