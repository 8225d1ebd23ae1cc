"""The edge daemon: follow the global model, train on rounds, publish updates, report status.

In a sync round the edge trains once, on the round's base version, if it is selected. In an
async session (any edge may join) it trains whenever it holds a model version it has not
trained on in that session yet, never twice on one version, and sends the update with that
version as its base.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
import zlib

import structlog
import tenacity

from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.feed import Feed, open_feed
from fedstream.edge_node.feedback_store import FeedbackStore, Residual, keep_update
from fedstream.edge_node.model_sync import HeldModel, ModelSync
from fedstream.edge_node.outbox import Outbox
from fedstream.edge_node.participation import Step, next_step
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
from fedstream.shared.learning.backends import BackendChoice, select_backend
from fedstream.shared.learning.training import probe_batch
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.codecs.feedback import ErrorFeedback
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import EdgeStatus, Receipt, RoundState
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta
from fedstream.shared.protocol.mqtt import Inbound, MqttClient, Will
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe
from fedstream.shared.security.signing import Signer, Verifier, load_signer, load_verifier

log = structlog.get_logger(__name__)

PROBE_BATCH = 32
# The offline status on the way out waits this long at most: with the broker gone, waiting out
# the publish timeout would outlast systemd's stop timeout, and the last will says it anyway.
OFFLINE_TIMEOUT_S = 2.0


class EdgeDaemon:
    """One gateway's participant in the federation. Build one with `open`; the constructor
    only assigns.

    Messages arrive on paho's thread and are handled (training included) on the caller's
    thread, so a long local round never blocks the MQTT keepalive.
    """

    def __init__(self, *, cfg: EdgeConfig, feed: Feed, mqtt: MqttClient,
                 inbox: queue.Queue[Inbound], reconnected: threading.Event, outbox: Outbox,
                 feedback_store: FeedbackStore, seq: int, residual: Residual,
                 signer: Signer | None = None, cloud_key: Verifier | None = None) -> None:
        self.cfg, self.feed, self.mqtt, self.outbox = cfg, feed, mqtt, outbox
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
        self.backend: BackendChoice | None = None
        self._pending: RoundState | None = None
        # (round or session id, version) of the last training, or of the last decline.
        self._trained: tuple[str, int] | None = None
        self._samples = 0  # samples the last round trained on
        self._last_trained = ""  # the round (or session) the edge last trained for
        self._declined: tuple[str, str] = ("", "")  # (round id, reason) of the last decline
        self._next_status = 0.0
        # What lossy codecs dropped from earlier updates, sent with the next one (P9); on disk
        # with the outbox, so a restart neither loses it nor counts it twice.
        self._feedback = ErrorFeedback()
        self._seq, self._feedback.residual = seq, residual
        self._model_filter = self.topics.model_all(cfg.model)
        self._round_topic = self.topics.round(cfg.model)
        self._receipt_topic = self.topics.receipt(cfg.edge_id)
        self._status_topic = self.topics.status(cfg.edge_id)
        self._next_resend = 0.0
        # The last runs resumed per update and when, since the last probe: a probe's answer
        # and the cloud's idle notice often name the same runs moments apart; one send of
        # them is enough.
        self._resumed: dict[str, tuple[float, tuple[tuple[int, int], ...]]] = {}
        self.log = log.bind(edge_id=cfg.edge_id)

    @classmethod
    def open(cls, cfg: EdgeConfig) -> EdgeDaemon:
        """The daemon `cfg` describes: its data set loaded or sample store opened, its outbox
        and residual read back, its MQTT client made (not yet connected).

        Raises:
            ConfigError: a bad data source or sensor channel.
            StoreError: the outbox directory or sample store cannot be used.
        """
        feed = open_feed(cfg)
        try:
            return cls._around(cfg, feed)
        except BaseException:
            feed.stop()  # a feed never started only closes what it opened
            raise

    @classmethod
    def _around(cls, cfg: EdgeConfig, feed: Feed) -> EdgeDaemon:
        """The rest of `open`, around an opened feed."""
        feedback_store = FeedbackStore(cfg.data_dir / "outbox")
        seq, residual = feedback_store.load()
        outbox = Outbox(cfg.data_dir / "outbox")
        inbox: queue.Queue[Inbound] = queue.Queue()
        reconnected = threading.Event()
        topics = Topics(cfg.federation)
        offline = EdgeStatus(edge_id=cfg.edge_id, online=False)
        mqtt = MqttClient(
            client_id=f"fedstream-edge-{cfg.federation}-{cfg.edge_id}",
            conn=Connection.from_config(cfg.broker), on_message=inbox.put,
            subscriptions=(topics.model_all(cfg.model), topics.round(cfg.model),
                           topics.receipt(cfg.edge_id)),
            persistent=True, will=Will(topics.status(cfg.edge_id), wire.pack(offline)),
            on_reconnect=reconnected.set)
        keys = cfg.security
        return cls(cfg=cfg, feed=feed, mqtt=mqtt, inbox=inbox, reconnected=reconnected,
                   outbox=outbox, feedback_store=feedback_store, seq=seq, residual=residual,
                   signer=None if keys.signing_key is None else load_signer(keys.signing_key),
                   cloud_key=None if keys.cloud_key is None else load_verifier(keys.cloud_key))

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; the status goes offline on the way out."""
        said_offline = False
        try:
            self.feed.start()
            self.mqtt.connect(self.cfg.broker.connect_timeout_s)
            self._publish_status(online=True)
            self.log.info("edge_started", **self.feed.stats())
            if self._feedback.residual is not None:
                self.log.info("feedback_restored", seq=self._seq, norm=self._residual_norm())
            self._resend(min_age_s=0.0)  # ask about whatever a previous run left
            while not stop.is_set():
                with contextlib.suppress(queue.Empty):
                    self._handle(self._inbox.get(timeout=0.5))
                if self._reconnected.is_set():
                    # A cut may have lost chunks the broker had confirmed: ask about all.
                    self._reconnected.clear()
                    self._resend(min_age_s=0.0)
                elif time.monotonic() >= self._next_resend:
                    # Only updates that had a full interval to get their receipt.
                    self._resend(min_age_s=self.cfg.resend_after_s)
                if time.monotonic() >= self._next_status:
                    self._refresh_status()
                    self._maybe_train()  # a session this edge declined: its data has grown
            said_offline = self._say_offline()
        finally:
            # Unless we said it ourselves, the broker's last will says we are offline.
            self.mqtt.close(will=not said_offline)
            self.feed.stop()
            self.log.info("edge_stopped")

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
            if self._model_filter.matches(msg.topic):
                held = self.sync.take(msg.payload, time.time())
                if held is not None:
                    self._on_model(held)
            elif msg.topic == str(self._round_topic) and msg.payload:
                self._on_round(wire.expect(msg.payload, RoundState))
            elif msg.topic == str(self._receipt_topic):
                answer = wire.unpack(msg.payload)
                if isinstance(answer, Receipt):
                    self._on_receipt(answer)
                elif isinstance(answer, MissingChunks):
                    self._on_missing(answer)
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
        if self.backend is None:
            self.backend = self._select_backend(held)
        self._publish_status(online=True)
        self._maybe_train()

    def _select_backend(self, held: HeldModel) -> BackendChoice:
        """The backend and precision, timed on the model this edge will train. A model it
        cannot build (a plug-in it lacks) is not timed: its rounds are declined with the
        reason (see `_train_and_send`), and a later model is timed instead."""
        cfg = self.cfg.backend
        try:
            probe_batch(held.arch, 1, 0)
        except ConfigError as err:
            self.log.error("model_unbuildable", version=held.version, reason=str(err.reason),
                           detail=err.detail)
            return select_backend(preference=cfg.name, precision=cfg.precision)
        return select_backend(preference=cfg.name, precision=cfg.precision,
                              probe=lambda: probe_batch(held.arch, PROBE_BATCH, 0))

    def _on_receipt(self, receipt: Receipt) -> None:
        self._resumed.pop(receipt.update_id, None)
        self.feedback_store.drop(receipt.update_id)
        if self.outbox.remove(receipt.update_id):
            self.log.info("receipt_received", update_id=receipt.update_id,
                          round_id=receipt.round_id, status=receipt.status,
                          reason=receipt.reason or None, outbox=len(self.outbox))

    def _on_missing(self, missing: MissingChunks) -> None:
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
            self._publish_frames([item.frames[i] for i in wanted])
        except TransportError as err:
            # Still in the outbox: the next probe asks again.
            self.log.warning("update_resend_failed", update_id=item.update_id,
                             reason=str(err.reason), detail=err.detail)

    def _resend(self, *, min_age_s: float) -> None:
        """Ask the cloud about every update still waiting for its receipt (P17): it answers
        with the verdict, or with the chunks it lacks, which `_on_missing` sends."""
        self._next_resend = time.monotonic() + self.cfg.resend_after_s
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
            self._publish_frames(probes)
        except TransportError as err:
            # Still in the outbox: the next pass tries again; the daemon keeps serving.
            self.log.warning("update_probe_failed", reason=str(err.reason),
                             detail=err.detail)

    @tenacity.retry(retry=tenacity.retry_if_exception_type(TransportError), reraise=True,
                    wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=10),
                    stop=tenacity.stop_after_delay(60),
                    before_sleep=lambda rs: log.warning("retry_scheduled", op="publish_update",
                                                        attempt=rs.attempt_number))
    def _publish_frames(self, frames: list[bytes]) -> None:
        topic = self.topics.update(self.cfg.model, self.cfg.edge_id)
        self.mqtt.publish_many((topic, f) for f in frames)

    def _on_round(self, state: RoundState) -> None:
        self._pending = state
        self._maybe_train()

    def _maybe_train(self) -> None:
        state, held = self._pending, self.sync.current
        if state is None or self.backend is None:
            return
        step = next_step(state, edge_id=self.cfg.edge_id,
                         held=held.version if held else None, trained=self._trained)
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
                                 seed=zlib.crc32(f"{self.cfg.seed}:{held.version}".encode()))
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
                    update_id=header.blob_id, seq=self._seq + 1, frames=frames)
        self._seq += 1
        self.feedback_store.commit(self._seq, self._feedback.residual)
        self._publish_frames(frames)
        self.log.info("update_sent", round_id=state.round_id, update_id=header.blob_id,
                      base=held.version,
                      loss=round(result.loss, 4), samples=result.samples,
                      bytes=header.size, chunks=header.count, codec=state.codec,
                      feedback_seq=self._seq, feedback_norm=self._residual_norm(),
                      train_ms=round(train_s * 1000), send_ms=round(
                          (time.monotonic() - started - train_s) * 1000))
        self._publish_status(online=True)
        return True

    def _residual_norm(self) -> float:
        """L2 norm of what lossy codecs still owe the cloud (0 with none)."""
        residual = self._feedback.residual or []
        return round(math.sqrt(sum(float(r.norm()) ** 2 for r in residual)), 6)

    def _decline(self, state: RoundState, err: FedstreamError) -> None:
        """Answer the round with why this edge sends nothing (its status carries the
        reason), rather than a bad update; the cloud stops waiting for it."""
        self.log.warning("round_declined", round_id=state.round_id, reason=str(err.reason),
                         detail=err.detail)
        self._declined = (state.round_id, str(err.reason))
        self._publish_status(online=True)

    def _refresh_status(self) -> None:
        """The periodic status: what the data source holds now (a stream keeps growing)."""
        try:
            self._publish_status(online=True, timeout_s=5.0)
        except TransportError as err:  # the next period tries again
            self.log.warning("status_publish_failed", reason=str(err.reason), detail=err.detail)

    def _publish_status(self, *, online: bool, timeout_s: float = 30.0) -> None:
        self._next_status = time.monotonic() + self.cfg.status_every_s
        held = self.sync.current
        stats = self.feed.stats()
        samples = self._samples or int(stats.get("samples", 0))
        status = EdgeStatus(edge_id=self.cfg.edge_id, online=online,
                            version=held.version if held else None, samples=samples,
                            backend=self.backend.describe() if self.backend else {},
                            last_round=self._last_trained,
                            declined=self._declined[0], decline_reason=self._declined[1],
                            data=stats)
        self.mqtt.publish(self._status_topic, wire.pack(status), retain=True, timeout_s=timeout_s)
