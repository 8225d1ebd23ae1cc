"""The cloud consumer service: MQTT in, coordinator in the middle, models and rounds out."""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

import structlog
import torch

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.coordinator import Coordinator, ModelVersion
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.intake import Intake
from fedstream.cloud.journal import VersionRow
from fedstream.cloud.publisher import ModelPublisher
from fedstream.cloud.receiver import UpdateReceiver
from fedstream.cloud.store import CloudStore
from fedstream.shared import wire
from fedstream.shared.control import (
    CommandReply,
    CommandRequest,
    EdgeStatus,
    ModelInfo,
    Receipt,
    RoundState,
)
from fedstream.shared.errors import ConfigError, FedstreamError, Reason, StoreError
from fedstream.shared.model import accuracy, build_mlp, load_tensors
from fedstream.shared.mqtt import Inbound, MqttClient
from fedstream.shared.sources import SOURCES
from fedstream.shared.topics import Topics

log = structlog.get_logger(__name__)

TICK_S = 0.5


def make_evaluator(cfg: CloudConfig) -> Callable[[list[torch.Tensor]], float]:
    """Accuracy on the configured held-out source (loaded once)."""
    data = SOURCES.build(cfg.eval_source.name, **cfg.eval_source.params).load()
    if data.features.shape[1] != cfg.layers[0] or data.num_classes > cfg.layers[-1]:
        raise ConfigError(
            Reason.BAD_CONFIG,
            f"eval data has {data.features.shape[1]} features and {data.num_classes} classes; "
            f"layers are {list(cfg.layers)}")
    features, labels = torch.tensor(data.features), torch.tensor(data.labels)
    model = build_mlp(cfg.layers)

    def evaluate(tensors: list[torch.Tensor]) -> float:
        load_tensors(model, tensors)
        return accuracy(model, features, labels)

    return evaluate


class CloudService:
    """Consumes updates, status and commands; runs rounds; publishes models.

    Messages arrive on paho's thread and are handled one at a time on the caller's thread,
    so the coordinator needs no locks.
    """

    def __init__(self, cfg: CloudConfig) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.federation)
        self._inbox: queue.Queue[Inbound] = queue.Queue()
        self._subs = {
            "update": self.topics.update_all(cfg.model),
            "status": self.topics.status_all(),
            "command": self.topics.command_all(),
        }
        if cfg.continual.enabled:
            self._subs["data"] = self.topics.data(cfg.model)
        self.mqtt = MqttClient(
            client_id=f"fedstream-cloud-{cfg.federation}-{cfg.model}", host=cfg.broker.host,
            port=cfg.broker.port, on_message=self._inbox.put,
            subscriptions=self._subs.values(), persistent=True, manual_ack=True,
            keepalive_s=cfg.broker.keepalive_s)
        self.store = CloudStore.open(cfg.data_dir, synchronous=cfg.synchronous)
        self.coordinator = Coordinator(cfg=cfg, store=self.store, evaluate=make_evaluator(cfg),
                                       publish_model=self._publish_model,
                                       publish_round=self._publish_round)
        self.intake = Intake(spec=self.coordinator.spec, params=cfg.intake)
        self.receiver = UpdateReceiver(intake=self.intake, store=self.store,
                                       coordinator=self.coordinator,
                                       send_receipt=self._send_receipt)
        self.rejections: Counter[str] = Counter()
        self.data = DataIntake.open(cfg, self.store) if cfg.continual.enabled else None
        self.publisher = ModelPublisher(mqtt=self.mqtt, topics=self.topics, model=cfg.model,
                                        spec=self.coordinator.spec, layers=cfg.layers,
                                        chunk_size=cfg.chunk_size)

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set."""
        replayed = self.receiver.replay(time.time())
        self.mqtt.connect(self.cfg.broker.connect_timeout_s)
        try:
            self.coordinator.start(time.time())
            log.info("service_started", federation=self.cfg.federation, model=self.cfg.model,
                     port=self.cfg.broker.port, version=self.coordinator.current.version,
                     chunks_replayed=replayed, data_dir=str(self.cfg.data_dir))
            while not stop.is_set():
                try:
                    msg = self._inbox.get(timeout=TICK_S)
                except queue.Empty:
                    msg = None
                if msg is not None:
                    self._handle(msg)
                self._tick(time.time())
        finally:
            self.mqtt.close()
            self.store.journal.close()
            log.info("service_stopped")

    def _handle(self, msg: Inbound) -> None:
        # The one broad guard of the service: a bad message is logged and acked, never fatal.
        # A message we failed to store (StoreError) is not acked: the broker redelivers it.
        ack = True
        try:
            if self._subs["update"].matches(msg.topic):
                self._on_update(msg)
            elif self._subs["status"].matches(msg.topic):
                self._on_status(msg)
            elif self._subs["command"].matches(msg.topic):
                self._on_command(msg)
            elif self.data is not None and self._subs["data"].matches(msg.topic):
                self.data.take(msg.payload, time.time())
        except StoreError as err:
            ack = False
            log.error("message_deferred", topic=msg.topic, reason=str(err.reason),
                      detail=err.detail)
        except FedstreamError as err:
            self.rejections[str(err.reason)] += 1
            log.warning("message_rejected", topic=msg.topic, reason=str(err.reason),
                        detail=err.detail)
        except Exception as err:
            self.rejections["internal"] += 1
            log.exception("message_rejected", topic=msg.topic, reason="internal",
                          detail=repr(err))
        finally:
            if ack:
                self.mqtt.ack(msg)

    def _on_update(self, msg: Inbound) -> None:
        self.receiver.on_frame(msg.payload, self.topics.last_but(msg.topic, 0), time.time())

    def _on_status(self, msg: Inbound) -> None:
        if not msg.payload:  # a cleared retained status
            return
        status: EdgeStatus = wire.expect(msg.payload, EdgeStatus)
        self.coordinator.on_status(status)
        log.info("edge_seen", edge_id=status.edge_id, online=status.online,
                 version=status.version, backend=status.backend.get("name"))

    def _on_command(self, msg: Inbound) -> None:
        req: CommandRequest = wire.expect(msg.payload, CommandRequest)
        log.info("command_received", verb=req.verb, args=dict(req.args))
        try:
            reply = self._command(req)
        except FedstreamError as err:
            reply = CommandReply(ok=False, reason=str(err.reason), detail=err.detail)
        self.mqtt.reply(msg, wire.pack(reply))

    def _command(self, req: CommandRequest) -> CommandReply:
        coord = self.coordinator
        if req.verb == "round_start":
            return CommandReply(ok=True, round=coord.start_round(time.time(), **req.args),
                                model_version=coord.current.version)
        if req.verb == "round_stop":
            return CommandReply(ok=True, round=coord.stop_round(time.time()),
                                model_version=coord.current.version)
        if req.verb == "status":
            return CommandReply(ok=True, round=coord.round, edges=tuple(coord.edges.values()),
                                model_version=coord.current.version,
                                model_metrics=coord.current.metrics,
                                rejections=dict(self.rejections),
                                intake_bytes=self.intake.held_bytes)
        if req.verb == "model_list":
            return CommandReply(ok=True, model_version=coord.current.version,
                                versions=tuple(model_info(r) for r in
                                               self.store.journal.versions()))
        if req.verb == "model_rollback":
            target = req.args.get("version")
            if not isinstance(target, int) or isinstance(target, bool):
                raise FedstreamError(Reason.BAD_CONFIG, "model_rollback needs an int version")
            restored = coord.rollback(target)
            return CommandReply(ok=True, model_version=restored.version)
        raise FedstreamError(Reason.UNKNOWN_NAME, f"unknown verb {req.verb!r}")

    def _tick(self, now: float) -> None:
        for blob_id in self.intake.expire(now):
            self.store.journal.drop_chunks(blob_id)
            log.warning("update_dropped", blob_id=blob_id, reason="partial_timeout")
        self.coordinator.tick(now)

    def _publish_model(self, version: ModelVersion) -> int:
        return self.publisher.publish(version=version.version, parent=version.parent,
                                      tensors=version.tensors, metrics=dict(version.metrics))

    def _send_receipt(self, edge_id: str, receipt: Receipt) -> None:
        self.mqtt.publish(self.topics.receipt(edge_id), wire.pack(receipt))
        log.info("receipt_sent", edge_id=edge_id, update_id=receipt.update_id,
                 status=receipt.status, reason=receipt.reason or None)

    def _publish_round(self, state: RoundState) -> None:
        self.mqtt.publish(self.topics.round(self.cfg.model), wire.pack(state), retain=True)


def model_info(row: VersionRow) -> ModelInfo:
    """A registry row as the CLI shows it (lineage flattened to scalars)."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in row.lineage.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()
                         if isinstance(v, int | float | str | bool)})
        elif isinstance(value, list):
            flat[key] = ",".join(str(v) for v in value)
        elif isinstance(value, int | float | str | bool):
            flat[key] = value
    return ModelInfo(version=row.version, parent=row.parent, round_id=row.round_id,
                     lineage=flat)

