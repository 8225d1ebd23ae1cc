"""The edge daemon: follow the global model, train on rounds, publish updates, report status.

In a sync round the edge trains once, on the round's base version, if it is selected. In an
async session (any edge may join) it trains whenever it holds a model version it has not
trained on in that session yet, never twice on one version, with that version as its base."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import zlib

import structlog

from fedstream.edge_node.backend_tuning import BACKEND_TUNED, TUNING_WAIT, EdgeBackend
from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.feed import Feed
from fedstream.edge_node.feedback_store import FeedbackStore, Kept, Trained, keep_update
from fedstream.edge_node.metrics import EdgeLive, EdgeMetrics
from fedstream.edge_node.model_sync import HeldModel, ModelSync
from fedstream.edge_node.outbox import Outbox
from fedstream.edge_node.participation import Step, next_step
from fedstream.edge_node.sender import UpdateSender
from fedstream.edge_node.status_line import edge_status_line
from fedstream.edge_node.trainer import train_round
from fedstream.edge_node.update_frames import UpdateFraming
from fedstream.shared.errors import (
    ConfigError,
    FedstreamError,
    ProtocolError,
    Reason,
    StoreError,
    TransportError,
)
from fedstream.shared.learning.backends import BackendChoice
from fedstream.shared.learning.training import probe_batch
from fedstream.shared.metrics import MetricsEndpoint
from fedstream.shared.notify import Notifier
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.codecs.feedback import ErrorFeedback
from fedstream.shared.protocol.control import EdgeStatus, Receipt, RoundState
from fedstream.shared.protocol.messages import UpdateMeta
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.protocol.transfer import MissingChunks
from fedstream.shared.security.signing import Signer, Verifier

log = structlog.get_logger(__name__)

# The offline status on the way out waits this long at most: with the broker gone, waiting out
# the publish timeout would outlast systemd's stop timeout, and the last will says it anyway.
OFFLINE_TIMEOUT_S = 2.0


class EdgeDaemon:
    """One gateway's participant in the federation. `edge_node/wiring.py` builds one; the
    constructor only assigns. Messages arrive on paho's thread and are handled (training
    included) on the caller's thread: a long local round never blocks the MQTT keepalive."""

    def __init__(self, *, cfg: EdgeConfig, feed: Feed, mqtt: MqttClient,
                 inbox: queue.Queue[Inbound], reconnected: threading.Event, outbox: Outbox,
                 feedback_store: FeedbackStore, kept: Kept,
                 metrics: EdgeMetrics, endpoint: MetricsEndpoint,
                 signer: Signer | None = None, cloud_key: Verifier | None = None) -> None:
        self.cfg, self.feed, self.mqtt, self.outbox = cfg, feed, mqtt, outbox
        self.metrics, self._endpoint = metrics, endpoint
        self.sender = UpdateSender(cfg=cfg, mqtt=mqtt, outbox=outbox,
                                   feedback_store=feedback_store, metrics=metrics)
        self._framing = UpdateFraming(federation=cfg.federation, model=cfg.model,
                                      chunk_size=cfg.chunk_size, signer=signer)
        self.feedback_store = feedback_store
        self._inbox = inbox
        # Set on paho's thread when the broker takes us back: probe the outbox at once.
        self._reconnected = reconnected
        self.topics = Topics(cfg.federation)
        self.sync = ModelSync(model=cfg.model, max_bytes=cfg.max_model_bytes,
                              cloud_key=None if cloud_key is None
                              else (cloud_key, cfg.federation))
        # Chosen off the loop; messages wake the loop when it is (edge_node/backend_tuning.py).
        self.backends = EdgeBackend.of(cfg, wake=self._wake)
        self._pending: RoundState | None = None
        # (round or session id, version) of the last training or decline; from disk at start.
        self._trained: Trained = kept.trained
        self._samples = 0  # samples the last round trained on
        self._last_trained = kept.trained[0] if kept.trained else ""  # round last trained for
        self._declined: tuple[str, str] = ("", "")  # (round id, reason) of the last decline
        self._next_status = 0.0
        # What lossy codecs dropped from earlier updates, sent with the next one (P9); on disk
        # with the outbox, so a restart neither loses it nor counts it twice.
        self._feedback = ErrorFeedback()
        self._seq, self._feedback.residual = kept.seq, kept.residual
        self._model_filter = self.topics.model_all(cfg.model)
        self._round_topic = self.topics.round(cfg.model)
        self._receipt_topic = self.topics.receipt(cfg.edge_id)
        self._status_topic = self.topics.status(cfg.edge_id)
        self._notify = Notifier.quiet()  # systemd's, once `run` is given one
        self.log = log.bind(edge_id=cfg.edge_id)

    def run(self, stop: threading.Event, notify: Notifier | None = None) -> None:
        """Serve until `stop` is set; the status goes offline on the way out. `notify` tells
        systemd when the edge is ready (connected, holding a model), what it is doing, and
        that the loop is alive."""
        try:
            self.start(notify)
            while not stop.is_set():
                self.turn(timeout_s=0.5)
        except BaseException:
            self._finish(said_offline=False)
            raise
        self.shut_down()

    def start(self, notify: Notifier | None = None) -> None:
        """Start the feed, connect, publish the status, ask about what the outbox holds: what
        `run` does before its loop (a host of many edges calls it, then drives `turn`).

        Raises:
            TransportError: the broker cannot be reached or refuses the edge.
        """
        self._notify = notify or self._notify
        self.feed.start()
        self._notify.status(f"connecting to the broker at {self.mqtt.conn}")
        self.mqtt.connect(self.cfg.broker.connect_timeout_s)
        self._endpoint.start()
        self._publish_status(online=True, timeout_s=30.0)
        self.log.info("edge_started", **self.feed.stats())
        if self._feedback.residual is not None:
            self.log.info("feedback_restored", seq=self._seq, norm=self._feedback.norm())
        self.sender.probe(min_age_s=0.0)  # ask about whatever a previous run left

    def turn(self, timeout_s: float) -> None:
        """One pass of the loop: handle the next message (waiting up to `timeout_s` for it),
        then what is due: probes for unanswered updates, the periodic status."""
        self._tell()
        with contextlib.suppress(queue.Empty):
            self._handle(self._inbox.get(timeout=timeout_s))
        if self._reconnected.is_set():
            # A cut may have lost chunks the broker had confirmed: ask about all.
            self._reconnected.clear()
            self.sender.probe(min_age_s=0.0)
        elif time.monotonic() >= self.sender.next_probe:
            # Only updates that had a full interval to get their receipt.
            self.sender.probe(min_age_s=self.cfg.resend_after_s)
        if time.monotonic() >= self._next_status:
            self._publish_status(online=True)  # what the data source holds now
            self._maybe_train()  # a session this edge declined: its data has grown

    def shut_down(self) -> None:
        """Say offline (best effort), then close what `start` opened."""
        said_offline = False
        try:
            said_offline = self._say_offline()
        finally:
            self._finish(said_offline=said_offline)

    def _finish(self, *, said_offline: bool) -> None:
        self._notify.stopping()
        # Unless we said it ourselves, the broker's last will says we are offline.
        self.mqtt.close(will=not said_offline)
        self._endpoint.stop()
        self.feed.stop()
        self.log.info("edge_stopped")

    def _tell(self) -> None:
        """systemd's view of the loop: READY once connected with a model, the status line
        (`edge_node/status_line.py`), a watchdog ping."""
        held, connected = self.sync.current, self.mqtt.connected
        line = edge_status_line(
            connected=connected, version=held.version if held else None,
            trained=self._last_trained, declined=self._declined, outbox=len(self.outbox),
            backend=self.backend.describe() if self.backend else {})
        if connected and held is not None:
            self._notify.ready(line)
        self._notify.status(line)
        self._notify.pet(time.monotonic())

    def _say_offline(self) -> bool:
        """Publish the offline status, best effort and within `OFFLINE_TIMEOUT_S`; True if
        the broker confirmed it (a failure is logged: the stop goes on)."""
        if not self.mqtt.connected:
            self.log.warning("status_publish_failed", reason=str(Reason.BROKER_UNREACHABLE),
                             detail="not connected")
            return False
        try:
            self._publish_status(online=False, timeout_s=OFFLINE_TIMEOUT_S)
        except TransportError as err:
            self.log.warning("status_publish_failed", reason=str(err.reason), detail=err.detail)
            return False
        return True

    def _handle(self, msg: Inbound) -> None:
        # The one broad guard: a bad message is logged, never fatal to the daemon.
        try:
            if msg.topic == BACKEND_TUNED:
                self._on_tuned()
            elif msg.topic == TUNING_WAIT:
                self._maybe_train()
            elif self._model_filter.matches(msg.topic):
                held = self.sync.take(msg.payload, time.time())
                if held is not None:
                    self._on_model(held)
            elif msg.topic == str(self._round_topic) and msg.payload:
                self._on_round(wire.expect(msg.payload, RoundState))
            elif msg.topic == str(self._receipt_topic):
                answer = wire.unpack(msg.payload)
                if isinstance(answer, Receipt):
                    self.sender.on_receipt(answer)
                elif isinstance(answer, MissingChunks):
                    self.sender.on_missing(answer)
                else:
                    raise ProtocolError(Reason.UNKNOWN_KIND, f"{answer.KIND} on receipts")
        except FedstreamError as err:
            self.log.warning("message_rejected", topic=msg.topic, reason=str(err.reason),
                             detail=err.detail)
        except Exception as err:
            self.log.exception("message_rejected", topic=msg.topic, reason="internal",
                               detail=repr(err))

    def _on_model(self, held: HeldModel) -> None:
        self.log.info("model_received", version=held.version)
        if self._feedback.residual is not None and [
                tuple(r.shape) for r in self._feedback.residual] != [t.shape for t in held.spec]:
            self._feedback.reset()  # a new architecture: the old residual means nothing
        self._select_backend(held)
        self._publish_status(online=True)
        self._maybe_train()

    @property
    def backend(self) -> BackendChoice | None:
        """The training backend chosen so far; None until the first model's is."""
        return self.backends.choice

    @backend.setter
    def backend(self, choice: BackendChoice | None) -> None:
        self.backends.choice = choice

    def _select_backend(self, held: HeldModel, batch_size: int | None = None) -> None:
        """Choose the backend and precision for the model this edge trains, at the batch size
        of its rounds: from the cache at once, else measured in child processes while the
        loop goes on serving (`_on_tuned` takes the result). A model the edge cannot build
        (a plug-in it lacks) is not timed: its rounds are declined with the reason (see
        `_train_and_send`)."""
        try:
            probe_batch(held.arch, 1, 0)
        except ConfigError as err:
            self.log.error("model_unbuildable", version=held.version, reason=str(err.reason),
                           detail=err.detail)
            self.backends.untimed()
            return
        self.backends.select(held.arch, batch_size)

    def _on_tuned(self) -> None:
        """A tuning finished on its thread: take its choice, say so, train a round that
        waited for it."""
        if self.backends.take():
            self._publish_status(online=True)
            self._maybe_train()

    def _wake(self, topic: str) -> None:
        """Hand the loop an event from another thread, as a message on `topic`."""
        self._inbox.put(Inbound(topic=topic, payload=b"", retain=False, qos=0, mid=0))

    def _on_round(self, state: RoundState) -> None:
        self._pending = state
        held, tuned = self.sync.current, self.backends.tuned_batch
        if held is not None and tuned is not None and state.train.batch_size != tuned:
            # Rounds train at another batch size than the one tuned for: tune for it (at
            # once when cached); this round trains with the backend chosen so far.
            self._select_backend(held, state.train.batch_size)
        self._maybe_train()

    def _maybe_train(self) -> None:
        state, held = self._pending, self.sync.current
        if state is None:
            return
        step = next_step(state, edge_id=self.cfg.edge_id,
                         held=held.version if held else None, trained=self._trained)
        if self.backend is None:
            if step is Step.TRAIN:
                self._await_backend(state)
            return
        if step is Step.STALE:
            self.log.info("round_skipped", round_id=state.round_id, reason="stale_round")
        if step in (Step.STALE, Step.DROP):
            self._pending = None
        if step is not Step.TRAIN or held is None:
            return
        self._trained = (state.round_id, held.version)
        if not self._train_and_send(state, held) and state.is_async:
            # A session takes an update on this version whenever the data is there: try
            # again at the next status period (a stream keeps filling).
            self._trained = None

    def _await_backend(self, state: RoundState) -> None:
        """A round this edge would train now while its backend is still being measured: a
        sync round waits, then is declined with backend_tuning (see
        `edge_node/backend_tuning.py`); an async session simply waits."""
        if state.is_async or self._declined[0] == state.round_id:
            return
        why = self.backends.waited_out(state.round_id)
        if why is not None:
            self._decline(state, FedstreamError(Reason.BACKEND_TUNING, why))

    def _train_and_send(self, state: RoundState, held: HeldModel) -> bool:
        """Train for the round and send the update; False when the edge declined it."""
        # The update's base is the version trained on: the round's base version in a sync
        # round (checked by the caller), the held one in an async session.
        assert self.backend is not None
        started = time.monotonic()
        try:
            self.feed.check(held.arch)
            data = self.feed.round_data(state.train)
            # Seeded by the base version, not the random round id, so reruns are
            # reproducible. A model this edge cannot build (a plug-in it lacks, tensors that do
            # not fit the architecture) is a decline too, with its reason.
            result = train_round(arch=held.arch, base=held.tensors, data=data,
                                 params=state.train, backend=self.backend.backend,
                                 seed=zlib.crc32(f"{self.cfg.seed}:{held.version}".encode()),
                                 # Training runs on the loop's thread: the watchdog is pet
                                 # between minibatches, however long the round.
                                 on_batch=lambda: self._notify.pet(time.monotonic()))
        except (ConfigError, StoreError) as err:
            self._decline(state, err)
            return False
        self._samples, self._last_trained = len(data), state.round_id
        train_s = time.monotonic() - started
        codec = CODECS.build(state.codec, **state.codec_params)
        before = self._feedback.residual
        try:
            blob = self._feedback.compress(result.delta, codec)
        except ValueError as err:
            # A diverged run (NaN/Inf, or beyond the codec's range) is not worth sending: the
            # round goes on without this edge and its deadline/quorum decide.
            self.log.warning("update_skipped", round_id=state.round_id, reason="non_finite",
                             detail=str(err))
            return True
        header, frames = self._framing.frames(blob, held.spec, codec=state.codec, meta=UpdateMeta(
            edge_id=self.cfg.edge_id, round_id=state.round_id, base_version=held.version,
            samples=result.samples, loss=result.loss, seq=self._seq + 1))
        # On disk before the first byte goes out: a crash from here on re-sends, never loses.
        # The residual this update leaves is kept with it (see edge_node/feedback_store.py).
        keep_update(self._feedback, before, store=self.feedback_store, outbox=self.outbox,
                    update_id=header.blob_id, seq=self._seq + 1, frames=frames,
                    trained=self._trained)
        self._seq += 1
        self.feedback_store.commit(self._seq, self._feedback.residual, self._trained)
        self.sender.send(frames)
        self.metrics.training_seconds.observe(train_s)
        self.metrics.trained_samples.inc(result.samples)
        self.metrics.updates_sent.inc()
        self.metrics.sent_bytes.inc(header.size)
        self.log.info("update_sent", round_id=state.round_id, update_id=header.blob_id,
                      base=held.version,
                      loss=round(result.loss, 4), samples=result.samples,
                      bytes=header.size, chunks=header.count, codec=state.codec,
                      feedback_seq=self._seq, feedback_norm=self._feedback.norm(),
                      train_ms=round(train_s * 1000), send_ms=round(
                          (time.monotonic() - started - train_s) * 1000))
        self._publish_status(online=True)
        return True

    def _decline(self, state: RoundState, err: FedstreamError) -> None:
        """Answer the round with why this edge sends nothing (its status carries the
        reason), rather than a bad update; the cloud stops waiting for it."""
        self.log.warning("round_declined", round_id=state.round_id, reason=str(err.reason),
                         detail=err.detail)
        self._declined = (state.round_id, str(err.reason))
        self.metrics.declines.labels(reason=str(err.reason)).inc()
        self._publish_status(online=True)

    def live(self) -> EdgeLive:
        """What the metrics read at a scrape (on the metrics thread)."""
        held = self.sync.current
        return EdgeLive(model_version=-1 if held is None else held.version,
                        outbox=len(self.outbox), data=dict(self.feed.stats()))

    def _publish_status(self, *, online: bool, timeout_s: float | None = None) -> None:
        """Publish the status (retained). With `timeout_s` (the first and the offline one),
        wait that long for the broker: TransportError if it does not confirm. Else do not
        wait: a failure is logged (the next status tries again), a refusal when it comes."""
        self._next_status = time.monotonic() + self.cfg.status_every_s
        held = self.sync.current
        stats = self.feed.stats()
        samples = self._samples or int(stats.get("samples", 0))
        status = EdgeStatus(edge_id=self.cfg.edge_id, online=online,
                            version=held.version if held else None, samples=samples,
                            backend=self.backends.describe(),
                            last_round=self._last_trained,
                            declined=self._declined[0], decline_reason=self._declined[1],
                            data=stats)
        if timeout_s is not None:
            self.mqtt.publish(self._status_topic, wire.pack(status), retain=True,
                              timeout_s=timeout_s)
            return
        try:
            self.mqtt.publish_unwaited(self._status_topic, wire.pack(status), retain=True)
        except TransportError as err:
            self.log.warning("status_publish_failed", reason=str(err.reason), detail=err.detail)
