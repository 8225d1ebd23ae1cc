"""The cloud consumer service: the message loop. MQTT in, each message handled on one thread
(so the coordinator needs no locks), the periodic tick; `cloud/wiring.py` builds it."""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import assert_never

import structlog

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.inference import InferenceServer
from fedstream.cloud.intake import Intake
from fedstream.cloud.journal import VersionRow
from fedstream.cloud.metrics import Live
from fedstream.cloud.outlet import Outlet
from fedstream.cloud.receiver import UpdateReceiver
from fedstream.cloud.recovery import Recovery
from fedstream.cloud.rejections import RejectionLog
from fedstream.cloud.status_line import cloud_status_line
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import (
    ConfigError,
    FedstreamError,
    ProtocolError,
    Reason,
    StoreError,
    TransportError,
)
from fedstream.shared.metrics import MetricsEndpoint
from fedstream.shared.notify import Notifier, Pulse
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import (
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
from fedstream.shared.protocol.control import EdgeStatus, ModelInfo
from fedstream.shared.protocol.enrolment import EdgeEnrol, EdgeRevoke
from fedstream.shared.protocol.history import RoundList, RoundListReply
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topic, Topics

log = structlog.get_logger(__name__)

TICK_S = 0.5
# Messages handled before their chunks are written and acked together (at most 4 MiB of
# 64 KiB chunks held); Mosquitto gives the cloud 100 in flight.
BATCH = 64


@dataclass(frozen=True, slots=True)
class Subscriptions:
    """The filters the cloud subscribes to, by what arrives on them."""

    update: Topic
    status: Topic
    command: Topic
    data: Topic | None

    @classmethod
    def of(cls, topics: Topics, model: str, *, data: bool) -> Subscriptions:
        """The filters of one model's cloud; `data` adds its data topic (continual on)."""
        return cls(update=topics.update_all(model), status=topics.status_all(),
                   command=topics.command_all(), data=topics.data(model) if data else None)

    def all(self) -> tuple[Topic, ...]:
        """Every filter, to subscribe to."""
        return tuple(t for t in (self.update, self.status, self.command, self.data)
                     if t is not None)


class CloudService:
    """Consumes updates, status, commands and data; ticks rounds along.

    Built by `cloud.wiring.build_cloud`; the constructor only assigns.
    """

    def __init__(self, *, cfg: CloudConfig, topics: Topics, subs: Subscriptions,
                 inbox: queue.Queue[Inbound], mqtt: MqttClient, store: CloudStore,
                 data: DataIntake | None, inference: InferenceServer | None,
                 coordinator: Coordinator, intake: Intake, receiver: UpdateReceiver,
                 outlet: Outlet, metrics: MetricsEndpoint | None = None,
                 pulse: Pulse | None = None) -> None:
        self.cfg, self.topics, self._subs, self._inbox = cfg, topics, subs, inbox
        self.mqtt, self.store, self.data, self.inference = mqtt, store, data, inference
        self.coordinator, self.intake, self.receiver = coordinator, intake, receiver
        self.outlet, self.metrics = outlet, metrics
        self._pulse = pulse
        self.rejections = RejectionLog()
        self._recovery = Recovery()

    def run(self, stop: threading.Event, notify: Notifier | None = None) -> None:
        """Serve until `stop` is set. `notify` tells systemd when the cloud serves
        (connected, recovered), what its round is doing, and that the loop is alive."""
        notify = notify or Notifier.quiet()
        if self._pulse is not None:
            self._pulse.attach(notify)
        notify.status(f"connecting to the broker at {self.mqtt.conn}")
        # Connected first: replaying a kept update may decide it, count it and close its
        # round, and those answers and announcements need the broker.
        self.mqtt.connect(self.cfg.broker.connect_timeout_s)
        try:
            if self.inference is not None:
                self.inference.start(self.cfg.broker.connect_timeout_s)
            if self.metrics is not None:
                self.metrics.start()
            notify.status("recovering: replaying kept updates, announcing the model")
            replayed = self.receiver.replay(time.time())
            self.coordinator.recover(time.time())
            log.info("service_started", federation=self.cfg.federation, model=self.cfg.model,
                     port=self.cfg.broker.port, version=self.coordinator.current.version,
                     chunks_replayed=replayed, data_dir=str(self.cfg.data_dir))
            while not stop.is_set():
                self._tell(notify)
                batch = self._take_batch()
                for msg in batch:
                    self._handle(msg)
                self._commit(batch)
                self.tick(time.time())
        finally:
            notify.stopping()
            self.rejections.flush(math.inf)  # what the interval held back, before going
            if self.inference is not None:
                self.inference.stop()
            if self.metrics is not None:
                self.metrics.stop()
            self.mqtt.close()
            self.store.close()
            log.info("service_stopped")

    def _tell(self, notify: Notifier) -> None:
        """systemd's view of the loop: READY once connected (after the recovery), the status
        line (`cloud/status_line.py`), a watchdog ping."""
        coord, connected = self.coordinator, self.mqtt.connected
        line = cloud_status_line(connected=connected, state=coord.round,
                                 version=coord.current.version,
                                 edges_online=sum(e.online for e in coord.edges.values()))
        if connected:
            notify.ready(line)
        notify.status(line)
        notify.pet(time.monotonic())

    def _take_batch(self) -> list[Inbound]:
        """The next message (waiting up to a tick for it) and those already queued behind
        it, up to BATCH: their chunks are journaled in one transaction."""
        try:
            batch = [self._inbox.get(timeout=TICK_S)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while len(batch) < BATCH:
                batch.append(self._inbox.get_nowait())
        return batch

    def _commit(self, batch: list[Inbound]) -> None:
        """Write the batch's chunks, then ack its messages: a chunk is acked only once it is
        on disk. Acked all the same when the write failed: Mosquitto redelivers only on a
        reconnect, and each unacked message holds one of its in-flight slots for us (100 of
        them stop all delivery). What a lost chunk leaves missing, the edge's next probe
        fills (P17)."""
        try:
            self.store.journal.flush()
        except StoreError as err:
            self._recovery.request(time.time())
            log.error("chunks_not_kept", messages=len(batch), reason=str(err.reason),
                      detail=err.detail)
        for msg in batch:
            self.mqtt.ack(msg)

    def _handle(self, msg: Inbound) -> None:
        # The one broad guard of the service: a bad message is logged, never fatal (and acked
        # with its batch, `_commit`). A data producer whose batch we failed to store is told
        # store_failed and sends again.
        try:
            if self._subs.update.matches(msg.topic):
                self._on_update(msg)
            elif self._subs.status.matches(msg.topic):
                self._on_status(msg)
            elif self._subs.command.matches(msg.topic):
                self._on_command(msg)
            elif self._subs.data is not None and self._subs.data.matches(msg.topic):
                self._on_data(msg)
        except FedstreamError as err:
            if isinstance(err, ProtocolError | ConfigError):
                self.rejections.record(sender=self._sender(msg.topic), reason=str(err.reason),
                                       topic=msg.topic, detail=err.detail, now=time.time())
            else:
                # The message was fine; acting on it failed half-way (the disk, a publish the
                # broker did not confirm): the round is recovered as after a restart.
                self._recovery.request(time.time())
                log.error("message_failed", topic=msg.topic, reason=str(err.reason),
                          detail=err.detail)
            if self._subs.data is not None and self._subs.data.matches(msg.topic):
                # A data producer that asked for an answer learns why it was refused.
                self.outlet.answer(msg, Reply(ok=False, reason=str(err.reason),
                                              detail=err.detail))
        except Exception as err:
            self.rejections.totals[str(Reason.INTERNAL)] += 1
            self._recovery.request(time.time())
            log.exception("message_rejected", topic=msg.topic, reason=str(Reason.INTERNAL),
                          detail=repr(err))

    def _on_update(self, msg: Inbound) -> None:
        self.receiver.on_frame(msg.payload, self.topics.last_but(msg.topic, 0), time.time())

    def _sender(self, topic: str) -> str:
        """Who sent a message, as far as its topic tells (an edge's id on its topics)."""
        if self._subs.update.matches(topic):
            return self.topics.last_but(topic, 0)
        if self._subs.status.matches(topic):
            return self.topics.last_but(topic, 1)
        return topic

    def _on_data(self, msg: Inbound) -> None:
        assert self.data is not None
        kept = self.data.take(msg.payload, time.time())
        self.outlet.answer(msg, Reply(ok=True, detail=f"{kept} rows stored"))

    def _on_status(self, msg: Inbound) -> None:
        if not msg.payload:  # a cleared retained status
            return
        status = wire.expect(msg.payload, EdgeStatus)
        if self.store.keys.revoked(status.edge_id):
            # Its retained status outlives the revocation: never select it again.
            raise ProtocolError(Reason.REVOKED, f"status of revoked edge {status.edge_id}")
        now = time.time()
        self.coordinator.on_status(status, now)
        log.info("edge_seen", edge_id=status.edge_id, online=status.online,
                 version=status.version, backend=status.backend.get("backend"))
        if self.outlet.redelivery.due(edge_id=status.edge_id, online=status.online,
                                      held=status.version, now=now):
            current = self.coordinator.current
            log.info("model_redelivered", version=current.version, edge_id=status.edge_id,
                     held=status.version)
            self.outlet.redeliver(current, self.coordinator.round)

    def _on_command(self, msg: Inbound) -> None:
        try:
            cmd = self._read_command(msg)
        except ProtocolError as err:
            # A requester whose frame we cannot read learns why instead of timing out.
            self.outlet.answer(msg, Reply(ok=False, reason=str(err.reason), detail=err.detail))
            raise
        log.info("command_received", verb=cmd.VERB, args=cmd.to_wire())
        try:
            reply = self._command(cmd)
        except FedstreamError as err:
            if isinstance(err, TransportError | StoreError):
                # Refused half-way (a round saved but not announced): recover it.
                self._recovery.request(time.time())
            reply = Reply(ok=False, reason=str(err.reason), detail=err.detail)
        self.outlet.answer(msg, reply)

    def _read_command(self, msg: Inbound) -> Command:
        """The command of a frame on `cmd/<verb>`: a kind of that verb (P13)."""
        cmd = wire.unpack(msg.payload)
        verb = self.topics.last_but(msg.topic, 0)
        if not isinstance(cmd, COMMANDS) or verb != cmd.VERB:
            raise ProtocolError(Reason.UNKNOWN_KIND, f"{cmd.KIND} on cmd/{verb}")
        return cmd

    def _command(self, cmd: Command) -> Answer:
        coord, now = self.coordinator, time.time()
        match cmd:
            case RoundStart() | RoundStop():
                state = (coord.start_round(now, cmd) if isinstance(cmd, RoundStart)
                         else coord.stop_round(now))
                return RoundReply(round=state, model_version=coord.current.version)
            case StatusQuery() | ModelList() | RoundList():
                return self._query(cmd)
            case ModelRollback():
                return ModelVersionReply(model_version=coord.rollback(cmd.version).version)
            case ModelPromote():
                return ModelVersionReply(model_version=coord.promote(cmd.version).version)
            case EdgeEnrol() | EdgeRevoke():
                return self._identity(cmd, now)
            case _:
                assert_never(cmd)

    def _query(self, cmd: StatusQuery | ModelList | RoundList) -> Answer:
        """The read-only commands: the fleet view, the registry, the journal's rounds."""
        coord, journal = self.coordinator, self.store.journal
        match cmd:
            case StatusQuery():
                return StatusReply(round=coord.round, edges=tuple(coord.edges.values()),
                                   model_version=coord.current.version,
                                   model_metrics=coord.current.metrics,
                                   rejections=dict(self.rejections.totals),
                                   intake_bytes=self.intake.held_bytes,
                                   serving=self.inference.status() if self.inference else {})
            case ModelList():
                evals = journal.evals()
                return ModelListReply(model_version=coord.current.version,
                                      versions=tuple(model_info(r, evals.get(r.version, {}))
                                                     for r in journal.versions()))
            case RoundList():
                return RoundListReply(rounds=tuple(journal.rounds(cmd.limit)))
            case _:
                assert_never(cmd)

    def live(self) -> Live:
        """What the metrics read at a scrape (on the metrics thread: copies only)."""
        coord, inference = self.coordinator, self.inference
        state, current = coord.round, coord.current
        return Live(model_version=current.version,
                    scores={k: float(v) for k, v in current.metrics.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)},
                    edges_online=sum(e.online for e in list(coord.edges.values())),
                    intake_bytes=self.intake.held_bytes,
                    round_open=state is not None and not state.terminal,
                    rejections=dict(self.rejections.totals),
                    inference={} if inference is None else inference.tally.snapshot(),
                    latency={} if inference is None else inference.tally.latencies())

    def _identity(self, cmd: EdgeEnrol | EdgeRevoke, now: float) -> Reply:
        """Enrol or revoke an edge's key (audited in the journal); a revoked edge is offline
        to the rounds from now on."""
        if isinstance(cmd, EdgeEnrol):
            fresh = self.store.keys.enrol(cmd.edge, cmd.key, now)
            done = "enrolled" if fresh else "was enrolled with this key already"
        else:
            fresh = self.store.keys.revoke(cmd.edge, now)
            self.coordinator.on_status(EdgeStatus(edge_id=cmd.edge, online=False), now)
            done = "revoked" if fresh else "was revoked already"
        return Reply(ok=True, detail=f"edge {cmd.edge} {done}")

    def tick(self, now: float) -> None:
        """The periodic work of the service, each step guarded like a message: a failure (a
        publish the broker refused, a fine-tune that crashed, the disk) is logged and the
        round recovered as after a restart, retried with backoff; the receiver's work (verdict
        retries, idle partials) goes on meanwhile."""
        if self._recovery.due_at(now):
            try:
                republish = self.outlet.announced != self.coordinator.current.version
                self.coordinator.recover(now, republish=republish)
                self._recovery.succeeded(now)
            except Exception as err:
                self._failed("recover", err, now)
        elif self._recovery.due is None:
            try:
                self.coordinator.tick(now)
            except Exception as err:
                self._failed("coordinator", err, now)
        try:
            self.receiver.tick(now)
        except Exception as err:
            log.exception("tick_failed", step="receiver", reason=_reason(err), detail=str(err))
        self.rejections.flush(now)

    def _failed(self, step: str, err: Exception, now: float) -> None:
        self._recovery.failed(now)
        log.exception("tick_failed", step=step, reason=_reason(err), detail=str(err),
                      retry_in_s=self._recovery.delay)


def _reason(err: Exception) -> str:
    return str(err.reason if isinstance(err, FedstreamError) else Reason.INTERNAL)


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

