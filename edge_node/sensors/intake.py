"""Sensor intake: an MQTT session on the sensors broker feeding the sample store.

Threads and what each may do:

- paho's network thread runs `MessageHandler` per message: route the payload (pure), `offer`
  the readings to the bounded `ReadingQueue` or a parsed label span to the `SpanWriter`, count.
  It never touches SQLite and never raises (a failing message is counted and logged, sampled).
- `StoreWriter` drains the readings into the `SampleStore` through a `LingeringQueue`, so
  it commits one batch per `linger_s` under load instead of waking for every message (each
  wake-up costs paho's thread the GIL); `SpanWriter` stores label spans.
- A connector thread makes the first connection, retrying while the broker is unreachable,
  so a gateway whose local broker starts after the edge daemon still collects. After that
  paho reconnects by itself (1-10 s back-off) and re-subscribes; reconnects are counted.

The session is separate from the federation's, so readings keep arriving while the federation
broker is away, even when both are the same Mosquitto (the client ids differ).

Decisions:

- Clean session (no persistent session). Readings timed on arrival (bare numbers, JSON without
  a time field, SenML with relative times) that a broker queued while the edge was away would
  all be stamped with the reconnect time, a false burst in the series. What is missed while
  away is lost instead, as a gap the windows skip (`max_gap_s`). Label spans carry their own
  times, so a labeller that needs them to survive an edge outage publishes them retained.
- A retained message on a channel topic is ignored (counted as `retained_ignored`): it is an
  old value, which would be stored at the time of subscribing. A retained label span is taken
  (its times are its own; storing it again changes nothing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import structlog

from fedstream.edge_node.sensors.channels import Router, build_router
from fedstream.edge_node.sensors.config import SensorsConfig
from fedstream.edge_node.sensors.intake_queue import ReadingQueue, StoreWriter
from fedstream.edge_node.sensors.label_spans import parse_span
from fedstream.edge_node.sensors.reading import Reading
from fedstream.edge_node.sensors.span_writer import SpanWriter
from fedstream.edge_node.sensors.store import SampleStore
from fedstream.shared.config import BrokerConfig
from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topic

log = structlog.get_logger(__name__)

SAMPLES_FILE = "samples.db"
CLIENT_SUFFIX = "-sensors"
_RETRY_MAX_S = 10.0
_ATTEMPT_S = 5.0  # one connect call at most: a stopped intake's connector ends soon after


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeCounts:
    """What the intake has done so far, for the daemon's status.

    Args:
        messages: MQTT messages received (readings and labels).
        rows: Readings in the store now.
        spans: Label spans in the store now.
        readings_written: Readings this intake stored (new to the store).
        spans_written: Label spans this intake stored.
        readings_dropped: Readings dropped, by `DropReason` (routing, queue, store).
        labels_dropped: Label payloads or spans dropped, by `SpanDrop`.
        retained_ignored: Retained messages on channel topics, not stored (see the module).
        failed: Messages whose handling raised (a bug: logged, sampled).
        queue_len: Readings waiting for the writer now.
        queue_peak: The most readings that waited at once.
        queue_capacity: The queue's bound.
        reconnects: Sessions re-established after losing the broker.
        connected: Whether the sensors broker holds our session now.
        error: Why the last connect attempt failed ("" once connected).
    """

    messages: int
    rows: int
    spans: int
    readings_written: int
    spans_written: int
    readings_dropped: dict[str, int]
    labels_dropped: dict[str, int]
    retained_ignored: int
    failed: int
    queue_len: int
    queue_peak: int
    queue_capacity: int
    reconnects: int
    connected: bool
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for a status message or a log line."""
        return asdict(self)


class LingeringQueue(ReadingQueue):
    """A `ReadingQueue` whose `drain`, once readings are there, waits `linger_s` for more
    before it returns (unless a full batch is there already).

    Readings reach the store at most `linger_s` later, in fewer, larger transactions. While
    the writer lingers paho's thread offers without waking it. The bound on memory is the
    queue's `capacity`, as before.

    Args:
        capacity: Readings queued at most.
        linger_s: Seconds to wait for a batch to fill, >= 0 (0 behaves as `ReadingQueue`).
    """

    def __init__(self, capacity: int, linger_s: float) -> None:
        super().__init__(capacity)
        if not 0 <= linger_s <= 1:
            raise ValueError(f"linger_s must be in [0, 1]; got {linger_s!r}")
        self.linger_s = linger_s

    def drain(self, max_items: int, timeout_s: float) -> list[Reading]:
        """Up to `max_items` oldest readings, waiting up to `timeout_s` for the first and then
        `linger_s` for the rest."""
        first = super().drain(max_items, timeout_s)
        if not first or len(first) >= max_items or not self.linger_s:
            return first
        time.sleep(self.linger_s)  # a stop during it only waits this long for the flush
        return first + super().drain(max_items - len(first), 0.0)


class MessageHandler:
    """What paho's thread does with one message; no disk, no blocking, no raising.

    Args:
        router: Maps a channel message to readings.
        queue: Where readings wait for the store writer.
        spans: Where label spans wait for the store.
        label_filter: The label topic filter, or None without topic labels.
        clock: Wall-clock seconds, the arrival time of a message.
    """

    def __init__(self, *, router: Router, queue: ReadingQueue, spans: SpanWriter,
                 label_filter: Topic | None, clock: Callable[[], float] = time.time) -> None:
        self.router, self.queue, self.spans = router, queue, spans
        self.label_filter, self.clock = label_filter, clock
        # Written by paho's thread only; read (racily, for status) by others.
        self.messages = self.retained = self.failed = self.reconnects = 0

    def __call__(self, msg: Inbound) -> None:
        """Handle one message."""
        self.messages += 1
        try:
            if self.label_filter is not None and self.label_filter.matches(msg.topic):
                self.spans.offer(parse_span(msg.payload))
            elif msg.retain:
                self.retained += 1
            else:
                parsed = self.router.route(msg.topic, msg.payload, self.clock())
                self.queue.offer(parsed.readings)
                for reason, n in parsed.drops.items():
                    self.queue.count_dropped(reason, n)
        except Exception:  # the per-message guard: paho's thread must go on
            self.failed += 1
            if self.failed & (self.failed - 1) == 0:  # the 1st, 2nd, 4th, 8th...
                log.exception("message_rejected", reason=Reason.INTERNAL, topic=msg.topic,
                              failed=self.failed)

    def reconnected(self) -> None:
        """Count one re-established session (paho's thread)."""
        self.reconnects += 1
        log.info("sensor_broker_reconnected", reconnects=self.reconnects)


class SensorIntake:
    """Collects sensor readings and label spans from MQTT into the sample store.

    Build it with `SensorIntake.open`; the constructor only assigns.

    Args:
        client: The MQTT session on the sensors broker (not yet connected).
        handler: The client's message handler.
        queue: Readings between the handler and the writer.
        writer: Drains `queue` into `store`.
        spans: Stores label spans.
        store: The sample store; `stop` closes it.
    """

    def __init__(self, *, client: MqttClient, handler: MessageHandler, queue: ReadingQueue,
                 writer: StoreWriter, spans: SpanWriter, store: SampleStore) -> None:
        self.client, self.handler, self.queue = client, handler, queue
        self.writer, self.spans, self.store = writer, spans, store
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._session = False  # connect() succeeded and stop() has not closed it yet
        self._stopping = False
        self.error = ""  # the connector's last failure, read by `counts`
        self._started = False
        self._connector = threading.Thread(target=self._connect, name="sensor-connect",
                                           daemon=True)

    @classmethod
    def open(cls, cfg: SensorsConfig, edge_id: str, data_dir: Path,
             default_broker: BrokerConfig) -> Self:
        """Open the store in `data_dir` and build the intake for `cfg` (nothing connects yet).

        Args:
            cfg: The `[sensors]` table.
            edge_id: The edge's id; the MQTT client id is `<edge_id>-sensors`.
            data_dir: The edge's data directory; the store is `samples.db` in it.
            default_broker: The federation's broker, used when `cfg.broker` is None.

        Raises:
            StoreError: STORE_FAILED when the store cannot be opened.
            ConfigError: BAD_CONFIG for channels the router refuses.
        """
        router = build_router(cfg.channel_values(), format_params=cfg.formats)
        conn = Connection.from_config(cfg.broker or default_broker)  # checked before any I/O
        store = SampleStore.open(data_dir / SAMPLES_FILE, cfg.store_params())
        queue = LingeringQueue(cfg.writer.queue_capacity, cfg.writer.linger_s)
        spans = SpanWriter(store)
        label_filter = cfg.label_filter()
        handler = MessageHandler(router=router, queue=queue, spans=spans,
                                 label_filter=label_filter)
        filters = [c.topic for c in cfg.channels]
        if label_filter is not None:
            filters.append(str(label_filter))
        client = MqttClient(client_id=f"{edge_id}{CLIENT_SUFFIX}", conn=conn,
                            on_message=handler, subscriptions=subscriptions(filters),
                            persistent=False, on_reconnect=handler.reconnected,
                            no_delay=False)
        return cls(client=client, handler=handler, queue=queue,
                   writer=StoreWriter(queue, store, cfg.writer_params()), spans=spans,
                   store=store)

    def start(self) -> None:
        """Start the writers, then connect in the background (see `wait_connected`)."""
        self._started = True
        self.writer.start()
        self.spans.start()
        self._connector.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the first session; True once the broker holds it."""
        self._connector.join(timeout_s)
        return self.connected

    @property
    def connected(self) -> bool:
        """True while the sensors broker holds our session."""
        return self.client.connected

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the session, store what is queued, stop the threads and close the store.

        Each step gets what is left of `timeout_s`; a thread still busy then is left behind
        (all are daemon threads, and one that writes after the store is closed only counts a
        failed write). An intake never started only closes its store.
        """
        if not self._started:
            self.store.close()
            return
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._stopping, session = True, self._session
            self._session = False
        self._stop.set()
        if session:  # else a connector still trying closes the session it may yet open
            self.client.close(timeout_s=min(2.0, _left(deadline) / 2))
        self.writer.stop(_left(deadline))
        self.spans.stop(_left(deadline))
        self.store.close()
        log.info("sensor_intake_stopped", **self.counts().as_dict())

    def counts(self) -> IntakeCounts:
        """What the intake has done so far."""
        h = self.handler
        return IntakeCounts(
            messages=h.messages, rows=self.store.count(), spans=self.store.span_count(),
            readings_written=self.writer.written, spans_written=self.spans.written,
            readings_dropped={str(k): n for k, n in self.queue.dropped().items()},
            labels_dropped={str(k): n for k, n in self.spans.dropped().items()},
            retained_ignored=h.retained, failed=h.failed, queue_len=len(self.queue),
            queue_peak=self.queue.peak, queue_capacity=self.queue.capacity,
            reconnects=h.reconnects, connected=self.connected, error=self.error)

    def _connect(self) -> None:
        """The connector thread: connect, waiting out an unreachable broker until stopped."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                self.client.connect(min(_ATTEMPT_S, self.client.conn.connect_timeout_s))
            except TransportError as err:
                self.error = f"{err.reason}: {err.detail}"
                # A name that does not resolve yet (DNS at boot) may later; a refusal will not.
                if err.reason not in (Reason.BROKER_UNREACHABLE, Reason.BROKER_UNKNOWN_HOST):
                    log.error("sensor_connect_failed", reason=err.reason, detail=err.detail)
                    return
                log.warning("sensor_connect_retried", reason=err.reason, detail=err.detail,
                            retry_s=delay)
                self._stop.wait(delay)
                delay = min(2 * delay, _RETRY_MAX_S)
                continue
            self.error = ""
            with self._lock:
                if not self._stopping:
                    self._session = True
                    log.info("sensor_broker_connected", client_id=self.client.client_id,
                             broker=str(self.client.conn))
                    return
            self.client.close()  # stop() came while we were connecting
            return


def subscriptions(filters: list[str]) -> list[Topic]:
    """The filters to subscribe to: each once, and none that another one covers.

    Mosquitto sends a message once per matching subscription of a client, so `home/#`
    beside `home/kitchen/temp` would deliver every kitchen reading twice (and a reading
    timed on arrival would be stored twice). The router still matches each channel's own
    filter, so subscribing to the wider one only loses nothing.
    """
    unique = sorted(set(filters))
    return [Topic(f) for f in unique
            if not any(other != f and _covers(other, f) for other in unique)]


def _covers(wide: str, narrow: str) -> bool:
    """True if every topic that filter `narrow` matches, filter `wide` matches too."""
    a, b = wide.split("/"), narrow.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(b) or b[i] == "#" or (level != "+" and level != b[i]):
            return False
    return len(a) == len(b)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
