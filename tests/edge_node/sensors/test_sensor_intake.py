"""Sensor intake against a real Mosquitto: readings in four formats and label spans reach the
store, a flood stays within the queue and row bounds, and the paho-thread handler counts
what it cannot use instead of raising."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fedstream.broker import Mosquitto
from fedstream.edge_node.sensors.config import SensorsConfig
from fedstream.edge_node.sensors.formats import Parsed
from fedstream.edge_node.sensors.intake import (
    LingeringQueue,
    MessageHandler,
    SensorIntake,
    subscriptions,
)
from fedstream.edge_node.sensors.intake_queue import ReadingQueue
from fedstream.edge_node.sensors.reading import Reading
from fedstream.edge_node.sensors.span_writer import SpanWriter
from fedstream.shared.config import BrokerConfig
from fedstream.shared.learning.series.windows import LabelSpan
from fedstream.shared.protocol.mqtt import Inbound
from fedstream.shared.protocol.topics import Topic

T0 = 1_800_000_000.0


def _until(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll `pred` until it holds or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _cfg(prefix: str, **changes: Any) -> SensorsConfig:
    table: dict[str, Any] = {
        "channels": [
            {"name": "temp", "topic": f"{prefix}/senml", "format": "senml",
             "senml_name": "dev1/temp", "unit": "Cel"},
            {"name": "hum", "topic": f"{prefix}/z2m/+", "format": "json",
             "field": "humidity", "time_field": "ts"},
            {"name": "light", "topic": f"{prefix}/homie/light", "format": "bare"},
            {"name": "press", "topic": f"{prefix}/mp", "format": "msgpack", "field": "p.hpa",
             "time_field": "ts"}],
        "labels": "topic", "label_topic": f"{prefix}/labels", "classes": 3,
        "align": {"rate_hz": 1.0, "max_gap_s": 2.0}, "windows": {"length": 4, "stride": 2}}
    table.update(changes)
    return SensorsConfig(**table)


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[paho.Client]:
    """A plain paho client on the session broker, as a device would be."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"sensors-{uuid.uuid4().hex[:10]}"


def _open(cfg: SensorsConfig, broker: Mosquitto, tmp_path: Path) -> SensorIntake:
    intake = SensorIntake.open(cfg, "edge-1", tmp_path, BrokerConfig(port=broker.port))
    intake.start()
    assert intake.wait_connected(10)
    return intake


def _subscribed(intake: SensorIntake, publisher: paho.Client, prefix: str) -> None:
    """Publish a probe span until it is stored: the intake subscribes without waiting for the
    SUBACK, so only a stored probe proves the subscriptions are live. A span, not a reading,
    so reading counts stay exact; storing it again changes nothing."""
    probe = json.dumps({"label": 0, "from": 1, "to": 2})

    def stored() -> bool:
        publisher.publish(f"{prefix}/labels", probe, qos=1)
        return intake.counts().spans_written > 0

    assert _until(stored)


@pytest.mark.mosquitto
def test_readings_in_four_formats_and_spans_in_two_reach_the_store(
        broker: Mosquitto, publisher: paho.Client, prefix: str, tmp_path: Path) -> None:
    """SenML, JSON, bare and msgpack readings land in their channels; JSON and msgpack
    spans in the labels table; a bad label, a reading in the wrong unit and a retained
    reading (an old value the broker hands a new subscriber) are counted, not stored."""
    # Prepare
    publisher.publish(f"{prefix}/homie/light", b"7", qos=1, retain=True).wait_for_publish(5)
    intake = _open(_cfg(prefix), broker, tmp_path)
    _subscribed(intake, publisher, prefix)

    # Execute
    publisher.publish(f"{prefix}/senml", json.dumps([{"n": "dev1/temp", "u": "K", "v": 1}]),
                      qos=1)
    publisher.publish(f"{prefix}/senml", json.dumps(
        [{"bn": "dev1/", "bt": T0, "n": "temp", "u": "Cel", "v": 21.5},
         {"n": "temp", "t": 1, "v": 21.75}]), qos=1)
    publisher.publish(f"{prefix}/z2m/kitchen", json.dumps({"humidity": 40, "ts": T0}), qos=1)
    publisher.publish(f"{prefix}/mp", msgpack.packb({"p": {"hpa": 1013.0}, "ts": T0}), qos=1)
    publisher.publish(f"{prefix}/labels", json.dumps({"label": 1, "from": T0, "to": T0 + 5}),
                      qos=1)
    publisher.publish(f"{prefix}/labels", msgpack.packb({"label": 2, "from": T0 + 5,
                                                         "to": T0 + 9}), qos=1)
    publisher.publish(f"{prefix}/labels", b'{"label": 1, "from": 5, "to": 1}', qos=1)
    done = _until(lambda: intake.counts().rows == 4 and intake.counts().spans_written == 3
                  and intake.counts().labels_dropped != {})
    store = intake.store
    got = store.window(["temp", "hum", "press"], T0 - 1, T0 + 10)
    spans = store.spans(T0 - 1, T0 + 10)
    counts = intake.counts()
    intake.stop()
    publisher.publish(f"{prefix}/homie/light", b"", qos=1, retain=True)  # clears it

    # Assert
    assert done, counts
    assert got["temp"][0].tolist() == [T0, T0 + 1] and got["temp"][1].tolist() == [21.5, 21.75]
    assert got["hum"][1].tolist() == [40.0] and got["press"][1].tolist() == [1013.0]
    assert spans == [LabelSpan(label=1, start=T0, end=T0 + 5),
                     LabelSpan(label=2, start=T0 + 5, end=T0 + 9)]
    assert counts.labels_dropped == {"empty_span": 1}
    assert counts.retained_ignored == 1
    assert counts.readings_dropped == {"wrong_unit": 1}
    assert counts.connected and counts.reconnects == 0


@pytest.mark.mosquitto
def test_a_flood_stays_within_the_queue_and_the_row_cap(
        broker: Mosquitto, publisher: paho.Client, prefix: str, tmp_path: Path) -> None:
    """10^5 readings in 1000 SenML packs into a 50-reading queue and a 2000-row store: at
    least half are dropped as queue_full, every reading is either stored or counted, the
    queue never held more than 50, and memory grows by little."""
    # Prepare
    cfg = _cfg(prefix, store={"max_rows": 2000}, writer={"queue_capacity": 50})
    intake = _open(cfg, broker, tmp_path)
    _subscribed(intake, publisher, prefix)
    rss_before = _rss_kib()

    # Execute
    for i in range(1000):
        pack = [{"bn": "dev1/", "bt": T0 + i * 100, "n": "temp", "v": 20.0}] + [
            {"n": "temp", "t": k, "v": 20.0 + k / 100} for k in range(1, 100)]
        publisher.publish(f"{prefix}/senml", json.dumps(pack), qos=1)

    def accounted() -> bool:
        c = intake.counts()
        return c.readings_written + c.readings_dropped.get("queue_full", 0) >= 10**5

    done = _until(accounted, 15.0)
    rss_growth_mib = (_rss_kib() - rss_before) / 1024
    counts = intake.counts()
    intake.stop()

    # Assert
    assert done, counts
    dropped = counts.readings_dropped["queue_full"]
    assert dropped >= 50 * 1000
    assert counts.readings_written + dropped == 10**5
    assert counts.queue_peak <= 50 and counts.queue_capacity == 50
    assert counts.rows <= 2000
    assert rss_growth_mib < 64, rss_growth_mib


@pytest.mark.mosquitto
def test_a_message_two_channel_filters_match_arrives_once(
        broker: Mosquitto, publisher: paho.Client, prefix: str, tmp_path: Path) -> None:
    """Channels on `<p>/#` and `<p>/room/air` both read `<p>/room/air`: one delivery, one
    reading each (two subscriptions would make Mosquitto send it twice)."""
    # Prepare
    cfg = _cfg(prefix, channels=[
        {"name": "wide", "topic": f"{prefix}/#", "format": "json", "field": "a"},
        {"name": "air", "topic": f"{prefix}/room/air", "format": "json", "field": "b"}])
    intake = _open(cfg, broker, tmp_path)
    _subscribed(intake, publisher, prefix)  # the label topic goes to the labels, not `wide`

    # Execute
    publisher.publish(f"{prefix}/room/air", json.dumps({"a": 1, "b": 2}), qos=1)
    done = _until(lambda: intake.counts().readings_written == 2)
    publisher.publish(f"{prefix}/labels", b"{}", qos=1)  # a marker: everything before it is in
    marked = _until(lambda: intake.counts().labels_dropped.get("malformed", 0) == 1)
    counts = intake.counts()
    intake.stop()

    # Assert
    assert done and marked, counts
    assert counts.readings_written == 2 and counts.rows == 2  # a second copy would add two
    assert counts.readings_dropped == {}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_the_intake_has_its_own_session_on_the_sensors_broker(tmp_path: Path) -> None:
    """`<edge>-sensors` on the [sensors] broker when one is given, else the federation's."""
    # Prepare
    own = _cfg("p", broker={"host": "gateway.local", "port": 1884})

    # Execute
    default = SensorIntake.open(_cfg("p"), "e7", tmp_path / "a", BrokerConfig(port=1999))
    local = SensorIntake.open(own, "e7", tmp_path / "b", BrokerConfig(port=1999))

    # Assert
    assert default.client.client_id == "e7-sensors" == local.client.client_id
    assert str(default.client.conn) == "127.0.0.1:1999"
    assert str(local.client.conn) == "gateway.local:1884"
    for intake in (default, local):
        intake.stop(1.0)


class _Spans(SpanWriter):
    """Collects offers instead of storing them."""

    def __init__(self) -> None:
        self.got: list[object] = []

    def offer(self, span: object) -> None:  # type: ignore[override]
        self.got.append(span)


class _Router:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def route(self, topic: str, payload: bytes, arrived: float) -> Parsed:
        if self.fail:
            raise RuntimeError("a bug")
        return Parsed()


def _msg(topic: str, payload: bytes = b"1", retain: bool = False) -> Inbound:
    return Inbound(topic=topic, payload=payload, retain=retain, qos=1, mid=1)


def test_the_handler_sorts_labels_skips_retained_readings_and_survives_a_bug() -> None:
    """A label-topic message goes to the spans, a retained reading is counted and skipped,
    and a router that raises is counted as failed while the handler goes on."""
    # Prepare
    spans, queue = _Spans(), ReadingQueue(10)
    handler = MessageHandler(router=_Router(), queue=queue, spans=spans,  # type: ignore[arg-type]
                             label_filter=Topic("l/#"))
    broken = MessageHandler(router=_Router(fail=True), queue=queue,  # type: ignore[arg-type]
                            spans=spans, label_filter=None)

    # Execute
    handler(_msg("l/x", b'{"label": 1, "from": 1, "to": 2}', retain=True))
    handler(_msg("s/a", retain=True))
    broken(_msg("s/a"))
    broken(_msg("s/a"))

    # Assert
    assert spans.got == [LabelSpan(label=1, start=1.0, end=2.0)]
    assert (handler.messages, handler.retained, handler.failed) == (2, 1, 0)
    assert (broken.messages, broken.failed) == (2, 2)


def _readings(n: int, t0: float = 0.0) -> list[Reading]:
    return [Reading(channel="a", t=t0 + i, value=1.0, unit=None) for i in range(n)]


def test_a_lingering_drain_takes_what_arrives_while_it_waits() -> None:
    """A drain that finds 1 reading lingers, so 3 more offered meanwhile come out with it;
    a full batch (2 of max 2) comes out at once; after an empty wait it returns nothing."""
    # Prepare
    queue = LingeringQueue(10, linger_s=0.2)
    queue.offer(_readings(1))
    late = threading.Timer(0.05, lambda: queue.offer(_readings(3, 10.0)))

    # Execute
    late.start()
    batch = queue.drain(100, 1.0)
    queue.offer(_readings(3, 20.0))
    full = queue.drain(2, 1.0)
    rest = queue.drain(2, 1.0)
    empty = queue.drain(2, 0.01)

    # Assert
    assert [r.t for r in batch] == [0.0, 10.0, 11.0, 12.0]
    assert [r.t for r in full] == [20.0, 21.0] and [r.t for r in rest] == [22.0]
    assert empty == []


def test_a_lingering_queue_refuses_a_linger_beyond_a_second() -> None:
    """linger_s must lie in [0, 1]: a longer wait would hold readings back for no gain."""
    # Execute / Assert
    with pytest.raises(ValueError, match="linger_s"):
        LingeringQueue(10, linger_s=5.0)


@pytest.mark.parametrize(("filters", "subscribed"), [
    (["home/#", "home/kitchen/temp", "home/+/temp", "home"], ["home/#"]),
    (["a/+", "a/+", "a/b"], ["a/+"]),
    (["#", "a/#"], ["#"]),
    (["a/+", "a/b/c"], ["a/+", "a/b/c"]),
    (["+/+", "a/#"], ["+/+", "a/#"]),
    (["a/+/c", "a/b/+"], ["a/+/c", "a/b/+"]),  # overlapping, neither covers the other
])
def test_filters_another_one_covers_are_not_subscribed(filters: list[str],
                                                       subscribed: list[str]) -> None:
    """Mosquitto delivers once per matching subscription: a covered filter would double
    every message, so only the covering ones are subscribed (each once)."""
    # Execute
    got = subscriptions(filters)

    # Assert
    assert [str(t) for t in got] == subscribed
