"""Everything the cloud sends: model versions, round states, receipts, replies."""

from __future__ import annotations

import time

import structlog

from fedstream.cloud.inference import InferenceServer
from fedstream.cloud.metrics import CloudMetrics
from fedstream.cloud.publisher import ModelPublisher
from fedstream.cloud.redelivery import Redelivery
from fedstream.cloud.versions import ModelVersion
from fedstream.shared.errors import TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import Answer
from fedstream.shared.protocol.control import Receipt, RoundProgress, RoundState
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.protocol.transfer import MissingChunks

log = structlog.get_logger(__name__)


class Outlet:
    """Publishes on the cloud's behalf.

    Args:
        mqtt: The cloud's client.
        topics: The federation's topics.
        model: The model name.
        publisher: Publishes model versions as retained chunks and manifest.
        inference: Serves each published version, if serving is on.
        redelivery: Decides when a version some edge lacks is published again.
    """

    def __init__(self, *, mqtt: MqttClient, topics: Topics, model: str,
                 publisher: ModelPublisher, inference: InferenceServer | None,
                 metrics: CloudMetrics | None = None,
                 redelivery: Redelivery | None = None) -> None:
        self.mqtt, self.topics, self.model = mqtt, topics, model
        self.publisher, self.inference, self.metrics = publisher, inference, metrics
        self.redelivery = redelivery or Redelivery(0.0)
        # The version last published in full (None until one is): a recovery republishes
        # the model only if the served one is not it.
        self.announced: int | None = None

    def publish_model(self, version: ModelVersion) -> int:
        """Make `version` the retained global model (and the served one); returns the bytes
        of its blob.

        Raises:
            TransportError: publish_failed if the broker refused or did not confirm it.
        """
        sent = self._publish(version)
        self.announced = version.version
        if self.metrics is not None:
            self.metrics.model_published(sent)
        if self.inference is not None:
            # On this (the coordinator's) thread: preparing a model with IPEX must not overlap
            # another preparation (see cloud/inference/serving.py).
            try:
                self.inference.swap(version.version, version.tensors)
            except Exception as err:
                # The version is saved and published; serving the previous one beats a cloud
                # that dies here, and again on every restart.
                log.exception("model_swap_failed", version=version.version, detail=repr(err))
        return sent

    def redeliver(self, version: ModelVersion, state: RoundState | None) -> None:
        """Publish `version` (the served model) and the open round again, for edges that
        subscribed where they were not retained (see cloud/redelivery.py).

        Raises:
            TransportError: publish_failed if the broker refused or did not confirm them.
        """
        self._publish(version)
        if state is not None and not state.terminal:
            self.publish_round(state)

    def _publish(self, version: ModelVersion) -> int:
        sent = self.publisher.publish(version=version.version, parent=version.parent,
                                      tensors=version.tensors, metrics=dict(version.metrics))
        self.redelivery.published(version.version, time.time())
        return sent

    def publish_round(self, state: RoundState) -> None:
        """Announce a round state (retained).

        Raises:
            TransportError: publish_failed if the broker refused or did not confirm it.
        """
        self.mqtt.publish(self.topics.round(self.model), wire.pack(state), retain=True)
        if self.metrics is not None:
            self.metrics.round_state(state, time.time())

    def publish_progress(self, progress: RoundProgress) -> None:
        """Announce a round's count of updates (not retained: the operator following the
        round is subscribed already), without waiting for the broker: a refusal is logged,
        and the next count or the round's next state says it again."""
        try:
            self.mqtt.publish_unwaited(self.topics.round_progress(self.model),
                                       wire.pack(progress))
        except TransportError as err:
            log.warning("progress_publish_failed", round_id=progress.round_id,
                        reason=str(err.reason), detail=err.detail)

    def send_to_edge(self, edge_id: str, answer: Receipt | MissingChunks) -> None:
        """Publish a receipt or a list of missing chunks, without waiting for the broker (a
        thousand edges' receipts would each cost a round trip on the service's loop). One
        the broker refuses is logged, not raised: the verdict is in the journal, and the
        edge's next probe gets it."""
        fields = ({"status": str(answer.status), "reason": answer.reason or None}
                  if isinstance(answer, Receipt) else {"missing": len(answer.indices)})
        try:
            self.mqtt.publish_unwaited(self.topics.receipt(edge_id), wire.pack(answer))
        except TransportError as err:
            log.warning("receipt_failed", edge_id=edge_id, update_id=answer.update_id,
                        reason=str(err.reason), detail=err.detail)
            return
        log.info("receipt_sent", edge_id=edge_id, update_id=answer.update_id, **fields)

    def answer(self, msg: Inbound, reply: Answer) -> None:
        """Reply on the request's response topic, if it has one. A reply the broker refuses
        or never confirms is logged: the message itself was handled, and the requester
        times out and asks again."""
        if msg.response_topic is None:
            return
        try:
            self.mqtt.reply(msg, wire.pack(reply))
        except TransportError as err:
            log.warning("reply_failed", topic=msg.topic, reason=str(err.reason),
                        detail=err.detail)
