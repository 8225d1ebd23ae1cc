"""Tests for fedstream/sensors_replay.py: BasicMotions replayed to a real Mosquitto in each
payload format, read back through the edge's own parsers, label spans, loops, pacing, and the
`fedstream sensors replay` command's exit codes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from fedstream.broker import Mosquitto, find_free_port
from fedstream.edge_node.sensors.channels import Router, build_router
from fedstream.edge_node.sensors.label_spans import parse_span
from fedstream.edge_node.sensors.reading import Channel, Reading
from fedstream.sensors_replay import (
    ReplayFormat,
    ReplayParams,
    parse_broker,
    replay,
    replay_steps,
)
from fedstream.shared.errors import REASONS, ConfigError, Reason
from fedstream.shared.learning.series.archive import load_archive
from fedstream.shared.learning.series.stream import part_cases
from fedstream.shared.learning.series.windows import LabelSpan
from fedstream.shared.protocol.connection import Connection

TRAIN = load_archive("BasicMotions", "train")
NAMES = [c.name for c in TRAIN.channels]
UNITS = [c.unit for c in TRAIN.channels]
DEVICE = "watch-1"


@dataclass(frozen=True, slots=True)
class Got:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    arrived: float


class Subscriber:
    """A plain paho client holding every message under a prefix, in arrival order."""

    def __init__(self, broker: Mosquitto, prefix: str) -> None:
        self.messages: list[Got] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{prefix}",
                                   protocol=paho.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, _c: object, _u: object, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Got(m.topic, bytes(m.payload), time.time()))

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Got]:
        """The first `count` messages, once that many arrived (fails after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.01)
        pytest.fail(f"{len(self.messages)} of {count} messages arrived")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def subscriber(broker: Mosquitto, prefix: str) -> Iterator[Subscriber]:
    """A subscriber to everything under `prefix`, ready before the test publishes."""
    sub = Subscriber(broker, prefix)
    yield sub
    sub.close()


def _edge_channels(fmt: ReplayFormat, prefix: str) -> list[Channel]:
    """The channels an edge would configure to take this replay's readings."""
    out = []
    for name, unit in zip(NAMES, UNITS, strict=True):
        where = {
            ReplayFormat.SENML: {"topic": f"{prefix}/{DEVICE}", "senml_name": f"{DEVICE}:{name}"},
            ReplayFormat.JSON: {"topic": f"{prefix}/{DEVICE}", "field": name, "time_field": "ts"},
            ReplayFormat.MSGPACK: {"topic": f"{prefix}/{DEVICE}", "field": name,
                                   "time_field": "ts"},
            ReplayFormat.BARE: {"topic": f"{prefix}/{DEVICE}/{name}"},
        }[fmt]
        out.append(Channel(name=name, format=str(fmt), unit=unit, **where))  # type: ignore[arg-type]
    return out


def _params(prefix: str, **kw: object) -> ReplayParams:
    base: dict[str, object] = {"device": DEVICE, "topic": prefix,
                               "label_topic": f"{prefix}/labels", "parts": 4, "part": 1,
                               "limit": 3, "speed": 100.0}
    return ReplayParams(**{**base, **kw})  # type: ignore[arg-type]


def _expected_values(part: int, parts: int, cases: int) -> np.ndarray:
    """`[channels, steps]` of the first `cases` cases of a part, end to end."""
    chosen = part_cases(40, part, parts, 0)[:cases]
    return np.concatenate(list(TRAIN.x[chosen]), axis=1)


@pytest.mark.mosquitto
@pytest.mark.parametrize("fmt", list(ReplayFormat))
def test_each_format_round_trips_through_the_edge_parser(
        broker: Mosquitto, subscriber: Subscriber, prefix: str, fmt: ReplayFormat) -> None:
    """Three cases (300 steps) arrive in order and the edge's router reads back every value and
    timestamp exactly; each label span arrives right after its case; pacing never runs early."""
    # Prepare
    router = build_router(_edge_channels(fmt, prefix))
    per_step = 6 if fmt is ReplayFormat.BARE else 1
    before = time.time()

    # Execute
    done = replay(Connection(host=broker.host, port=broker.port), _params(prefix, format=fmt))
    after = time.time()
    got = subscriber.wait_for(300 * per_step + 3)

    # Assert: counts
    assert (done.messages, done.readings, done.spans, done.cases) == (300 * per_step + 3,
                                                                      1800, 3, 3)
    assert len(got) == done.messages
    # Assert: every reading, through the edge's own parser
    labels = [i for i, m in enumerate(got) if m.topic == f"{prefix}/labels"]
    readings = [r for i, m in enumerate(got) if i not in labels
                for r in _route(router, m)]
    values = np.array([r.value for r in readings]).reshape(300, 6).T
    np.testing.assert_array_equal(values, _expected_values(1, 4, 3))
    assert [r.channel for r in readings] == NAMES * 300
    assert {r.unit for r in readings[:3]} == {"m/s2"} and readings[3].unit == "rad/s"
    times = np.array([r.t for r in readings[::6]])
    if fmt is ReplayFormat.BARE:  # no timestamp on the wire: arrival time, in order
        assert (np.diff(times) >= 0).all()
    else:
        assert before <= times[0] <= after  # the stream starts when the replay does
        np.testing.assert_array_equal(times, times[0] + np.arange(300) / 10.0)
        assert all(r.t == t for r, t in zip(readings, np.repeat(times, 6), strict=True))
    # Assert: labels, each after its case's last reading and before the next case's first
    assert labels == [(i + 1) * 100 * per_step + i for i in range(3)]
    unpack = msgpack.unpackb if fmt is ReplayFormat.MSGPACK else json.loads
    raw = [unpack(got[i].payload) for i in labels]  # msgpack with msgpack, else JSON
    spans = [parse_span(got[i].payload) for i in labels]  # as the edge reads them
    chosen = part_cases(40, 1, 4, 0)[:3]
    assert all(isinstance(r, dict) for r in raw)
    assert [s.label for s in spans if isinstance(s, LabelSpan)] == TRAIN.y[chosen].tolist()
    if fmt is not ReplayFormat.BARE:
        bounds = times[0] + np.arange(4) * 100 / 10.0
        assert spans == [LabelSpan(label=int(k), start=lo, end=hi) for k, (lo, hi)
                         in zip(TRAIN.y[chosen], itertools.pairwise(bounds), strict=True)]


def _route(router: Router, got: Got) -> list[Reading]:
    """The readings the edge takes from one message; it drops none of them."""
    parsed = router.route(got.topic, got.payload, got.arrived)
    assert not parsed.drops, parsed.drops
    return parsed.readings


@pytest.mark.mosquitto
def test_loop_repeats_the_part_with_time_moving_on(
        broker: Mosquitto, subscriber: Subscriber, prefix: str) -> None:
    """A part of two cases with loop and limit 5 plays a, b, a, b, a; time runs on without a
    jump or a repeat, 0.1 s a step."""
    # Prepare
    router = build_router(_edge_channels(ReplayFormat.JSON, prefix))

    # Execute
    done = replay(Connection(host=broker.host, port=broker.port),
                  _params(prefix, format="json", parts=20, part=7, loop=True, limit=5,
                          label_topic=None, speed=float("inf")))
    got = subscriber.wait_for(500)

    # Assert
    assert (done.messages, done.cases, done.spans) == (500, 5, 0)
    readings = [r for m in got for r in _route(router, m)]
    values = np.array([r.value for r in readings]).reshape(500, 6).T
    two = _expected_values(7, 20, 2)
    np.testing.assert_array_equal(values, np.concatenate([two, two, two[:, :100]], axis=1))
    times = np.array([r.t for r in readings[::6]])
    np.testing.assert_allclose(np.diff(times), 0.1, rtol=0, atol=1e-6)


@pytest.mark.mosquitto
def test_progress_is_logged_with_growing_counts(broker: Mosquitto, prefix: str) -> None:
    """With a short progress interval, replay_progressed events report growing counts."""
    # Execute: 100 steps at 2000 steps/s take at least 0.0495 s, past the first 0.01 s mark
    with capture_logs() as logs:
        replay(Connection(host=broker.host, port=broker.port),
               _params(prefix, limit=1, speed=200.0, progress_s=0.01))

    # Assert
    progress = [e for e in logs if e["event"] == "replay_progressed"]
    assert progress
    assert [e["readings"] for e in progress] == sorted(e["readings"] for e in progress)
    assert all(e["device"] == DEVICE and e["messages"] <= 101 for e in progress)
    assert [e["event"] for e in logs if e["event"] in ("replay_started", "replay_finished")] == [
        "replay_started", "replay_finished"]


@pytest.mark.mosquitto
def test_a_set_stop_event_publishes_nothing(broker: Mosquitto, prefix: str) -> None:
    """A replay whose stop event is already set connects, publishes nothing and says so."""
    # Prepare
    stop = threading.Event()
    stop.set()

    # Execute
    done = replay(Connection(host=broker.host, port=broker.port), _params(prefix), stop=stop)

    # Assert
    assert (done.messages, done.readings, done.cases) == (0, 0, 0)


def test_senml_pack_of_one_step_is_exactly_what_the_edge_reads() -> None:
    """The first step's pack: base name and time on the first record, a unit on each."""
    # Prepare
    params = ReplayParams(device="w", topic="s", format=ReplayFormat.SENML, limit=1)

    # Execute
    first = next(replay_steps(params, 1_800_000_000.5))

    # Assert
    ((topic, payload),) = first.messages
    case = TRAIN.x[part_cases(40, 0, 1, 0)[0]]
    assert str(topic) == "s/w"
    assert json.loads(payload) == [
        {"bn": "w:", "bt": 1_800_000_000.5, "n": "accel_x", "u": "m/s2", "v": case[0, 0]},
        *({"n": n, "u": u, "v": case[c, 0]}
          for c, (n, u) in enumerate(zip(NAMES, UNITS, strict=True)) if c)]


def test_steps_count_spans_and_offsets_without_a_broker() -> None:
    """Two cases give 200 steps 0.1 s apart; steps 99 and 199 close a case and carry its span."""
    # Prepare
    params = ReplayParams(device="w", topic="s", format=ReplayFormat.MSGPACK, label_topic="s/l",
                          limit=2)

    # Execute
    steps = list(replay_steps(params, 1_800_000_000.0))

    # Assert
    assert len(steps) == 200
    assert [s.offset_s for s in steps[:3]] == [0.0, 0.1, 0.2]
    assert [i for i, s in enumerate(steps) if s.spans] == [99, 199]
    assert str(steps[99].messages[-1][0]) == "s/l"
    span = msgpack.unpackb(steps[99].messages[-1][1])
    assert span == {"label": int(TRAIN.y[part_cases(40, 0, 1, 0)[0]]), "from": 1_800_000_000.0,
                    "to": 1_800_000_010.0}


@pytest.mark.parametrize("kw", [
    {"device": "_w"}, {"device": "a/b"}, {"topic": "a/+/b"}, {"topic": "a//b"}, {"topic": ""},
    {"topic": "$SYS/x"}, {"label_topic": "l/#"}, {"format": "xml"}, {"split": "dev"},
    {"part": 2, "parts": 2}, {"speed": 0.0}, {"speed": -1.0}, {"rate_hz": float("inf")},
    {"limit": 0}, {"progress_s": 0}, {"loop": "yes"},
])
def test_bad_params_are_bad_config(kw: dict[str, object]) -> None:
    """Names that cannot be topics, unknown formats and values out of range are BAD_CONFIG."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        ReplayParams(**{"device": "w", "topic": "s", **kw})  # type: ignore[arg-type]

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:1883", "127.0.0.1", 1883), ("broker.local:8883", "broker.local", 8883),
    ("[::1]:1884", "::1", 1884),
])
def test_broker_addresses_parse(text: str, host: str, port: int) -> None:
    """HOST:PORT and [IPv6]:PORT give a connection; the rest is BAD_CONFIG."""
    # Execute / Assert
    conn = parse_broker(text)
    assert (conn.host, conn.port) == (host, port)
    for bad in ("localhost", ":1883", "host:", "host:port", "host:70000"):
        with pytest.raises(ConfigError):
            parse_broker(bad)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedstream", "sensors", "replay", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.mosquitto
def test_cli_replays_and_reports_counts(broker: Mosquitto, subscriber: Subscriber,
                                        prefix: str) -> None:
    """`fedstream sensors replay` publishes one case of a part and prints what it sent."""
    # Execute
    done = _cli("--broker", f"{broker.host}:{broker.port}", "--device", DEVICE, "--topic",
                prefix, "--format", "json", "--parts", "3", "--part", "2", "--speed", "1000",
                "--label-topic", f"{prefix}/labels", "--limit", "1")

    # Assert
    assert done.returncode == 0, done.stderr
    assert "published 101 messages: 600 readings of 1 cases, 1 label spans" in done.stdout
    assert len(subscriber.wait_for(101)) == 101


@pytest.mark.parametrize(("args", "reason"), [
    (["--broker", "nowhere"], Reason.BAD_CONFIG),
    (["--parts", "0"], Reason.BAD_CONFIG),
    (["--format", "xml"], Reason.BAD_CONFIG),
    (["--dataset", "NoSuchSet"], Reason.BAD_DATA),
    (["--connect-timeout", "0.3"], Reason.BROKER_UNREACHABLE),
])
def test_cli_errors_exit_with_their_reason(args: list[str], reason: Reason) -> None:
    """Bad arguments, an unknown dataset and a broker nobody listens on exit with their code."""
    # Execute
    done = _cli("--broker", f"127.0.0.1:{find_free_port()}", "--device", DEVICE, *args)

    # Assert
    assert done.returncode == REASONS[reason].exit_code, done.stderr
    assert str(reason) in done.stderr
