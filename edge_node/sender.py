"""The edge's side of delivering updates: send, probe what still lacks a receipt, send only
the chunks the cloud names missing (P17), and drop an update once its receipt came."""

from __future__ import annotations

import time

import structlog
import tenacity

from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.feedback_store import FeedbackStore
from fedstream.edge_node.metrics import EdgeMetrics
from fedstream.edge_node.outbox import Outbox
from fedstream.shared.errors import TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.control import Receipt
from fedstream.shared.protocol.messages import UpdateChunk
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe

log = structlog.get_logger(__name__)


class UpdateSender:
    """Moves the outbox's updates to the cloud until each has its receipt.

    Args:
        cfg: The edge's id, model and re-send interval.
        mqtt: The federation broker's client.
        outbox: Updates waiting for their receipt.
        feedback_store: Drops an update's residual record with it.
        metrics: Counts probes, re-sent chunks and receipts.
    """

    def __init__(self, *, cfg: EdgeConfig, mqtt: MqttClient, outbox: Outbox,
                 feedback_store: FeedbackStore, metrics: EdgeMetrics) -> None:
        self.cfg, self.mqtt, self.outbox = cfg, mqtt, outbox
        self.feedback_store, self.metrics = feedback_store, metrics
        self._topic = Topics(cfg.federation).update(cfg.model, cfg.edge_id)
        self.next_probe = 0.0
        # The last runs resumed per update and when, since the last probe: a probe's answer
        # and the cloud's idle notice often name the same runs moments apart; one send of
        # them is enough.
        self._resumed: dict[str, tuple[float, tuple[tuple[int, int], ...]]] = {}
        self.log = log.bind(edge_id=cfg.edge_id)

    def on_receipt(self, receipt: Receipt) -> None:
        """The cloud's verdict: the update leaves the outbox."""
        self._resumed.pop(receipt.update_id, None)
        self.feedback_store.drop(receipt.update_id)
        if self.outbox.remove(receipt.update_id):
            self.metrics.receipts.labels(verdict=str(receipt.status),
                                         reason=receipt.reason or "none").inc()
            self.log.info("receipt_received", update_id=receipt.update_id,
                          round_id=receipt.round_id, status=receipt.status,
                          reason=receipt.reason or None, outbox=len(self.outbox))

    def on_missing(self, missing: MissingChunks) -> None:
        """Send only the chunks the cloud says it lacks (P17)."""
        item = self.outbox.get(missing.update_id)
        if item is None:
            return  # decided and dropped meanwhile, or another run's update
        now = time.monotonic()
        last = self._resumed.get(missing.update_id)
        if last is not None and last[1] == missing.runs and now - last[0] < self.cfg.resend_after_s:
            return
        self._resumed[missing.update_id] = (now, missing.runs)
        wanted = [i for i in missing.indices if i < len(item.frames)]
        self.log.info("update_resumed", update_id=missing.update_id, chunks=len(wanted),
                      of=len(item.frames))
        try:
            self.send([item.frames[i] for i in wanted])
        except TransportError as err:
            # Still in the outbox: the next probe asks again.
            self.log.warning("update_resend_failed", update_id=item.update_id,
                             reason=str(err.reason), detail=err.detail)
            return
        self.metrics.resent_chunks.inc(len(wanted))

    def probe(self, *, min_age_s: float) -> None:
        """Ask the cloud about every update still waiting for its receipt (P17): it answers
        with the verdict, or with the chunks it lacks, which `on_missing` sends."""
        self.next_probe = time.monotonic() + self.cfg.resend_after_s
        self._resumed.clear()  # the answers to these probes are news, whatever came before
        probes = []
        for item in self.outbox.pending(min_age_s=min_age_s):
            first = wire.expect(item.frames[0], UpdateChunk)
            probes.append(wire.pack(UpdateProbe(
                edge_id=self.cfg.edge_id, update_id=item.update_id,
                round_id=first.meta.round_id, count=first.header.count)))
            self.log.info("update_probed", update_id=item.update_id, chunks=len(item.frames))
        if not probes:
            return
        try:
            self.send(probes)
        except TransportError as err:
            # Still in the outbox: the next pass tries again; the daemon keeps serving.
            self.log.warning("update_probe_failed", reason=str(err.reason),
                             detail=err.detail)
            return
        self.metrics.probes.inc(len(probes))

    @tenacity.retry(retry=tenacity.retry_if_exception_type(TransportError), reraise=True,
                    wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=10),
                    stop=tenacity.stop_after_delay(60),
                    before_sleep=lambda rs: log.warning("retry_scheduled", op="publish_update",
                                                        attempt=rs.attempt_number))
    def send(self, frames: list[bytes]) -> None:
        """Publish frames on this edge's update topic (retried for a minute).

        Raises:
            TransportError: publish_failed once the retries are spent.
        """
        self.mqtt.publish_many((self._topic, f) for f in frames)
