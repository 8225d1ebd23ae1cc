"""The cloud consumer service: MQTT in, coordinator in the middle, models and rounds out."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import assert_never

import structlog
import torch

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.continual_stage import ContinualStage
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.finetune import FineTuner
from fedstream.cloud.inference import InferenceServer
from fedstream.cloud.intake import Intake
from fedstream.cloud.journal import VersionRow
from fedstream.cloud.publisher import ModelPublisher
from fedstream.cloud.receiver import UpdateReceiver
from fedstream.cloud.rejections import RejectionLog
from fedstream.cloud.store import CloudStore
from fedstream.cloud.versions import ModelVersion
from fedstream.shared import wire
from fedstream.shared.commands import (
    COMMANDS,
    Answer,
    Command,
    ModelList,
    ModelListReply,
    ModelPromote,
    ModelRollback,
    ModelVersionReply,
    Reply,
    RoundReply,
    RoundStart,
    RoundStop,
    StatusQuery,
    StatusReply,
)
from fedstream.shared.control import EdgeStatus, ModelInfo, Receipt, RoundState
from fedstream.shared.errors import (
    ConfigError,
    FedstreamError,
    ProtocolError,
    Reason,
    StoreError,
    TransportError,
)
from fedstream.shared.model import accuracy, build_mlp, load_tensors
from fedstream.shared.mqtt import Connection, Inbound, MqttClient
from fedstream.shared.sources import SOURCES, Dataset
from fedstream.shared.topics import Topics
from fedstream.shared.transfer import MissingChunks

log = structlog.get_logger(__name__)

TICK_S = 0.5


def load_eval(cfg: CloudConfig) -> Dataset:
    """The configured held-out source, checked against the model's shape."""
    data = SOURCES.build(cfg.eval_source.name, **cfg.eval_source.params).load()
    if data.features.shape[1] != cfg.layers[0] or data.num_classes > cfg.layers[-1]:
        raise ConfigError(
            Reason.BAD_CONFIG,
            f"eval data has {data.features.shape[1]} features and {data.num_classes} classes; "
            f"layers are {list(cfg.layers)}")
    return data


def make_evaluator(cfg: CloudConfig, data: Dataset) -> Callable[[list[torch.Tensor]], float]:
    """Accuracy on the held-out `data`."""
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
            client_id=f"fedstream-cloud-{cfg.federation}-{cfg.model}",
            conn=Connection.from_config(cfg.broker), on_message=self._inbox.put,
            subscriptions=self._subs.values(), persistent=True, manual_ack=True)
        self.store = CloudStore.open(cfg.data_dir, synchronous=cfg.synchronous)
        self.data = DataIntake.open(cfg, self.store) if cfg.continual.enabled else None
        held_out = load_eval(cfg)
        self.inference = InferenceServer(
            cfg=cfg.inference, layers=cfg.layers, topics=self.topics, model=cfg.model,
            conn=Connection.from_config(cfg.broker),
            evaluation=(held_out.features, held_out.labels)) if cfg.inference.enabled else None
        self.coordinator = Coordinator(cfg=cfg, store=self.store,
                                       evaluate=make_evaluator(cfg, held_out),
                                       publish_model=self._publish_model,
                                       publish_round=self._publish_round,
                                       stage=make_stage(cfg, self.data))
        self.intake = Intake(spec=self.coordinator.spec, params=cfg.intake)
        self.receiver = UpdateReceiver(intake=self.intake, store=self.store,
                                       coordinator=self.coordinator, send=self._send_to_edge)
        self.rejections = RejectionLog()
        # Set when a tick failed half-way: the next tick recovers the round first.
        self._recover = False
        self.publisher = ModelPublisher(mqtt=self.mqtt, topics=self.topics, model=cfg.model,
                                        spec=self.coordinator.spec, layers=cfg.layers,
                                        chunk_size=cfg.chunk_size)

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set."""
        replayed = self.receiver.replay(time.time())
        self.mqtt.connect(self.cfg.broker.connect_timeout_s)
        try:
            if self.inference is not None:
                self.inference.start(self.cfg.broker.connect_timeout_s)
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
                self.tick(time.time())
        finally:
            self.rejections.flush(math.inf)  # what the interval held back, before going
            if self.inference is not None:
                self.inference.stop()
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
                self._on_data(msg)
        except StoreError as err:
            ack = False
            log.error("message_deferred", topic=msg.topic, reason=str(err.reason),
                      detail=err.detail)
        except FedstreamError as err:
            if isinstance(err, ProtocolError | ConfigError):
                self.rejections.record(sender=self._sender(msg.topic), reason=str(err.reason),
                                       topic=msg.topic, detail=err.detail, now=time.time())
            else:
                # The message was fine; acting on it failed half-way (a publish the broker
                # did not confirm): the next tick recovers the round as after a restart.
                self._recover = True
                log.error("message_failed", topic=msg.topic, reason=str(err.reason),
                          detail=err.detail)
            if self.data is not None and self._subs["data"].matches(msg.topic):
                # A data producer that asked for an answer learns why it was refused.
                self._answer(msg, Reply(ok=False, reason=str(err.reason), detail=err.detail))
        except Exception as err:
            self.rejections.totals[str(Reason.INTERNAL)] += 1
            self._recover = True
            log.exception("message_rejected", topic=msg.topic, reason=str(Reason.INTERNAL),
                          detail=repr(err))
        finally:
            if ack:
                self.mqtt.ack(msg)

    def _on_update(self, msg: Inbound) -> None:
        self.receiver.on_frame(msg.payload, self.topics.last_but(msg.topic, 0), time.time())

    def _sender(self, topic: str) -> str:
        """Who sent a message, as far as its topic tells (an edge's id on its topics)."""
        if self._subs["update"].matches(topic):
            return self.topics.last_but(topic, 0)
        if self._subs["status"].matches(topic):
            return self.topics.last_but(topic, 1)
        return topic

    def _on_data(self, msg: Inbound) -> None:
        assert self.data is not None
        kept = self.data.take(msg.payload, time.time())
        self._answer(msg, Reply(ok=True, detail=f"{kept} rows stored"))

    def _on_status(self, msg: Inbound) -> None:
        if not msg.payload:  # a cleared retained status
            return
        status = wire.expect(msg.payload, EdgeStatus)
        self.coordinator.on_status(status)
        log.info("edge_seen", edge_id=status.edge_id, online=status.online,
                 version=status.version, backend=status.backend.get("name"))

    def _on_command(self, msg: Inbound) -> None:
        try:
            cmd = self._read_command(msg)
        except ProtocolError as err:
            # A requester whose frame we cannot read learns why instead of timing out.
            self._answer(msg, Reply(ok=False, reason=str(err.reason), detail=err.detail))
            raise
        log.info("command_received", verb=cmd.VERB, args=cmd.to_wire())
        try:
            reply = self._command(cmd)
        except FedstreamError as err:
            reply = Reply(ok=False, reason=str(err.reason), detail=err.detail)
        self._answer(msg, reply)

    def _read_command(self, msg: Inbound) -> Command:
        """The command of a frame on `cmd/<verb>`: a kind of that verb (P13)."""
        cmd = wire.unpack(msg.payload)
        verb = self.topics.last_but(msg.topic, 0)
        if not isinstance(cmd, COMMANDS) or verb != cmd.VERB:
            raise ProtocolError(Reason.UNKNOWN_KIND, f"{cmd.KIND} on cmd/{verb}")
        return cmd

    def _answer(self, msg: Inbound, reply: Answer) -> None:
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

    def _command(self, cmd: Command) -> Answer:
        coord, now = self.coordinator, time.time()
        match cmd:
            case RoundStart():
                return RoundReply(round=coord.start_round(now, cmd),
                                  model_version=coord.current.version)
            case RoundStop():
                return RoundReply(round=coord.stop_round(now),
                                  model_version=coord.current.version)
            case StatusQuery():
                return StatusReply(round=coord.round, edges=tuple(coord.edges.values()),
                                   model_version=coord.current.version,
                                   model_metrics=coord.current.metrics,
                                   rejections=dict(self.rejections.totals),
                                   intake_bytes=self.intake.held_bytes,
                                   serving=self.inference.status() if self.inference else {})
            case ModelList():
                evals = self.store.journal.evals()
                return ModelListReply(model_version=coord.current.version,
                                      versions=tuple(model_info(r, evals.get(r.version, {}))
                                                     for r in self.store.journal.versions()))
            case ModelRollback():
                return ModelVersionReply(model_version=coord.rollback(cmd.version).version)
            case ModelPromote():
                return ModelVersionReply(model_version=coord.promote(cmd.version).version)
            case _:
                assert_never(cmd)

    def tick(self, now: float) -> None:
        """The periodic work of the service, guarded like a message: a failure (a publish the
        broker refused, a fine-tune that crashed) is logged and retried on the next tick,
        after the coordinator recovered its round as after a restart."""
        try:
            if self._recover:
                self.coordinator.start(now)
                self._recover = False
            self.receiver.tick(now)
            self.coordinator.tick(now)
        except Exception as err:
            self._recover = True
            reason = err.reason if isinstance(err, FedstreamError) else Reason.INTERNAL
            log.exception("tick_failed", reason=str(reason), detail=str(err))
        self.rejections.flush(now)

    def _publish_model(self, version: ModelVersion) -> int:
        sent = self.publisher.publish(version=version.version, parent=version.parent,
                                      tensors=version.tensors, metrics=dict(version.metrics))
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

    def _send_to_edge(self, edge_id: str, answer: Receipt | MissingChunks) -> None:
        """Publish a receipt or a list of missing chunks. One the broker does not confirm is
        logged, not raised: the verdict is in the journal, and the edge's next probe gets it."""
        fields = ({"status": str(answer.status), "reason": answer.reason or None}
                  if isinstance(answer, Receipt) else {"missing": len(answer.indices)})
        try:
            self.mqtt.publish(self.topics.receipt(edge_id), wire.pack(answer))
        except TransportError as err:
            log.warning("receipt_failed", edge_id=edge_id, update_id=answer.update_id,
                        reason=str(err.reason), detail=err.detail)
            return
        log.info("receipt_sent", edge_id=edge_id, update_id=answer.update_id, **fields)

    def _publish_round(self, state: RoundState) -> None:
        self.mqtt.publish(self.topics.round(self.cfg.model), wire.pack(state), retain=True)


def make_stage(cfg: CloudConfig, data: DataIntake | None) -> ContinualStage | None:
    """The fine-tune-and-judge stage when continual learning is on (with fine-tuning only
    when it has steps to run)."""
    if data is None:
        return None
    tune = cfg.continual.finetune
    tuner = FineTuner(cfg.layers, tune, cfg.seed) if tune.steps else None
    return ContinualStage(data=data, layers=cfg.layers, cfg=cfg.continual, tuner=tuner)


def model_info(row: VersionRow, evals: Mapping[str, float]) -> ModelInfo:
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
                     lineage=flat, status=row.status, reason=row.reason, evals=evals)

