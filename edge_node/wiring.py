"""Builds the edge daemon from its config: the one place that opens its feed, outbox and
keys and makes its MQTT client (`cloud/wiring.py` does the same for the cloud)."""

from __future__ import annotations

import queue
import threading

from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.daemon import EdgeDaemon
from fedstream.edge_node.feed import Feed, open_feed
from fedstream.edge_node.feedback_store import FeedbackStore
from fedstream.edge_node.metrics import EdgeMetrics
from fedstream.edge_node.outbox import Outbox
from fedstream.shared.metrics import MetricsEndpoint
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import EdgeStatus
from fedstream.shared.protocol.mqtt import Inbound, MqttClient, Will
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.security.signing import load_signer, load_verifier


def open_edge(cfg: EdgeConfig, inbox: queue.Queue[Inbound] | None = None) -> EdgeDaemon:
    """The daemon `cfg` describes: its data set loaded or sample store opened, its outbox
    and residual read back, its MQTT client made (not yet connected), and what its last
    backend choice needs loaded (see `AutoTuner.preload`), so that the first round after a
    restart costs what the others do. `inbox` takes the daemon's messages (default: a queue
    of its own; a host of many edges passes one that tells it which edge has work).

    Raises:
        ConfigError: a bad data source, sensor channel or key file.
        StoreError: the outbox directory or sample store cannot be used.
    """
    feed = open_feed(cfg)
    try:
        daemon = _around(cfg, feed, queue.Queue() if inbox is None else inbox)
        daemon.backends.tuner.preload()
        return daemon
    except BaseException:
        feed.stop()  # a feed never started only closes what it opened
        raise


def _around(cfg: EdgeConfig, feed: Feed, inbox: queue.Queue[Inbound]) -> EdgeDaemon:
    """The rest of `open_edge`, around an opened feed."""
    feedback_store = FeedbackStore(cfg.data_dir / "outbox")
    outbox = Outbox(cfg.data_dir / "outbox")
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
    keys, metrics = cfg.security, EdgeMetrics()
    daemon = EdgeDaemon(
        cfg=cfg, feed=feed, mqtt=mqtt, inbox=inbox, reconnected=reconnected, outbox=outbox,
        feedback_store=feedback_store, kept=feedback_store.load(), metrics=metrics,
        endpoint=MetricsEndpoint(cfg.metrics, metrics.registry),
        signer=None if keys.signing_key is None else load_signer(keys.signing_key),
        cloud_key=None if keys.cloud_key is None else load_verifier(keys.cloud_key))
    metrics.watch(daemon.live)
    return daemon
