"""Replaying a packaged sensor archive as live MQTT readings, in the payload formats devices use.

Each time step of the stream (`case_stream` over the chosen cases) becomes the messages one
device would send, in a format the edge parses (`edge_node/sensors/formats/`):

- `senml`: one pack per step on `{topic}/{device}`: `bn` = device + ":", `bt` = step time,
  one record per channel (`n`, `v`, `u` where the unit is known);
- `json` / `msgpack`: one flat map per step on `{topic}/{device}`, channel name -> value, plus
  `ts` (seconds since the epoch);
- `bare`: one number as text per channel on `{topic}/{device}/{channel}`; no timestamp, so the
  edge times it on arrival, which matches the stream only at speed 1.

Step times are the stream's own: the first step is the wall-clock time the replay starts and
steps follow at the dataset's rate; `speed` paces publishing only. Once a case is fully
published its label span goes to the label topic as `{"label": k, "from": t0, "to": t1}`
(msgpack with the msgpack format, JSON otherwise).

Publishing goes through `MqttClient` (QoS 1, each batch confirmed by PUBACK): it already
publishes raw bytes to a topic, and it brings the connect retries and the translation of paho
errors into `TransportError` reasons the CLI turns into exit codes. It publishes at QoS 1 only.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

# shared/protocol/wire.py is the only module that speaks our own protocol in msgpack; this is
# a device's payload, foreign to that protocol, as in edge_node/sensors/formats/msgpack_map.py.
import msgpack
import numpy as np
import numpy.typing as npt
import structlog

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.series.archive import (
    SPLITS,
    Archive,
    ArchiveChannel,
    load_archive,
)
from fedstream.shared.learning.series.stream import case_stream, part_cases
from fedstream.shared.learning.series.windows import LabelSpan
from fedstream.shared.protocol.connection import Connection, parse_address
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topic

log = structlog.get_logger(__name__)

Message = tuple[Topic, bytes]
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a topic level and a SenML name
_MAX_BATCH = 1000  # messages per confirmed publish when behind (or unpaced)


class ReplayFormat(StrEnum):
    """The payload format of the replayed readings."""

    SENML = "senml"
    JSON = "json"
    MSGPACK = "msgpack"
    BARE = "bare"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayParams:
    """What to replay, how and where.

    Args:
        device: Device name: a topic level and the SenML base name (1-64 of letters, digits,
            '_', '.', '-', starting with a letter or digit).
        topic: Topic prefix; readings go under `{topic}/{device}`.
        format: Payload format (see the module docstring).
        dataset: Packaged dataset name.
        split: "train" or "test".
        part: Which part of the split's cases (see `part_cases`), in [0, parts).
        parts: Number of parts.
        seed: Seed of the case shuffle.
        rate_hz: The dataset's sampling rate; step times are `1 / rate_hz` apart.
        speed: Publishing pace relative to real time (10: ten times faster); `inf` publishes
            as fast as the broker confirms. Step times keep the dataset's rate either way.
        label_topic: Where label spans go; None publishes none.
        loop: Start over when the part's cases are done, time moving on.
        limit: Stop after this many cases (counted across loops); None: all (or forever).
        progress_s: Seconds between `replay_progressed` log events.

    Raises:
        ConfigError: BAD_CONFIG for a value out of range.
    """

    device: str
    topic: str
    format: ReplayFormat = ReplayFormat.SENML
    dataset: str = "BasicMotions"
    split: str = "train"
    part: int = 0
    parts: int = 1
    seed: int = 0
    rate_hz: float = 10.0
    speed: float = 1.0
    label_topic: str | None = None
    loop: bool = False
    limit: int | None = None
    progress_s: float = 10.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "format", ReplayFormat(self.format))
        except ValueError:
            _bad(f"format must be one of {[f.value for f in ReplayFormat]}; got {self.format!r}")
        _check_topic("topic", self.topic)
        if self.label_topic is not None:
            _check_topic("label_topic", self.label_topic)
        ints = all(type(v) is int for v in (self.part, self.parts, self.seed))
        rules = (
            (isinstance(self.device, str) and bool(_DEVICE.fullmatch(self.device)),
             "device must be 1-64 letters, digits, '_', '.' or '-', starting alphanumeric"),
            (self.split in SPLITS, f"split must be one of {list(SPLITS)}"),
            (ints and self.parts >= 1 and 0 <= self.part < self.parts and self.seed >= 0,
             "need int part in [0, parts), parts >= 1 and seed >= 0"),
            (_real(self.rate_hz) and math.isfinite(self.rate_hz) and self.rate_hz > 0,
             "rate_hz must be a finite number > 0"),
            (_real(self.speed) and self.speed > 0, "speed must be a number > 0 (inf: unpaced)"),
            (self.limit is None or (type(self.limit) is int and self.limit >= 1),
             "limit must be None or an int >= 1"),
            (_real(self.progress_s) and self.progress_s > 0, "progress_s must be > 0"),
            (type(self.loop) is bool, "loop must be true or false"),
        )
        for ok, rule in rules:
            if not ok:
                _bad(f"{rule}; got {self!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayResult:
    """What a replay published: MQTT messages, channel readings, label spans and cases."""

    messages: int
    readings: int
    spans: int
    cases: int
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One time step's messages, due `offset_s` of stream time after the replay's start."""

    offset_s: float
    messages: list[Message]
    readings: int
    spans: int
    cases: int


class Encoder:
    """Turns one step's readings, and a finished case's span, into MQTT messages.

    Args:
        params: The replay's format, device, topics.
        channels: The archive's channels, in row order.
    """

    def __init__(self, params: ReplayParams, channels: tuple[ArchiveChannel, ...]) -> None:
        self._format = params.format
        self._device = params.device
        self._channels = channels
        self._names = [c.name for c in channels]
        self._topic = Topic(f"{params.topic}/{params.device}")
        self._bare = [Topic(f"{params.topic}/{params.device}/{c.name}") for c in channels]
        self._labels = None if params.label_topic is None else Topic(params.label_topic)

    def step(self, t: float, values: list[float]) -> list[Message]:
        """The messages of one step at time `t` (seconds since the epoch)."""
        if self._format is ReplayFormat.BARE:
            return [(topic, repr(v).encode()) for topic, v in zip(self._bare, values, strict=True)]
        if self._format is ReplayFormat.SENML:
            pack: list[dict[str, object]] = []
            for channel, v in zip(self._channels, values, strict=True):
                record: dict[str, object] = {"n": channel.name, "v": v}
                if channel.unit is not None:
                    record["u"] = channel.unit
                pack.append(record)
            pack[0] = {"bn": f"{self._device}:", "bt": t, **pack[0]}
            return [(self._topic, _json(pack))]
        fields: dict[str, float] = {**dict(zip(self._names, values, strict=True)), "ts": t}
        return [(self._topic, self._pack(fields))]

    def span(self, span: LabelSpan) -> list[Message]:
        """The label message of a case that has been fully published (none without a topic)."""
        if self._labels is None:
            return []
        return [(self._labels, self._pack({"label": span.label, "from": span.start,
                                           "to": span.end}))]

    def _pack(self, obj: dict[str, float] | dict[str, int | float]) -> bytes:
        if self._format is not ReplayFormat.MSGPACK:
            return _json(obj)
        packed: bytes = msgpack.packb(obj)
        return packed


def replay_steps(params: ReplayParams, start: float) -> Iterator[Step]:
    """The replay's steps in order, lazily (endless with `loop` and no `limit`).

    The archive is read when this is called, not when the first step is taken.

    Args:
        params: What to replay.
        start: Time of the first step, seconds since the epoch.

    Raises:
        ConfigError: BAD_DATA for a missing or malformed archive; BAD_CONFIG for more parts
            than the split has cases.
    """
    return _steps(params, *_chosen(params), start)


def _chosen(params: ReplayParams) -> tuple[Archive, npt.NDArray[np.int64]]:
    """The archive and the indices of the part's cases, in play order."""
    archive = load_archive(params.dataset, params.split)
    try:
        return archive, part_cases(len(archive.y), params.part, params.parts, params.seed)
    except ValueError as err:
        raise ConfigError(Reason.BAD_CONFIG, f"replay: {err}") from None


def _steps(params: ReplayParams, archive: Archive, cases: npt.NDArray[np.int64],
           start: float) -> Iterator[Step]:
    encoder = Encoder(params, archive.channels)
    steps = archive.x.shape[2]
    left = params.limit
    done = 0  # steps before this pass
    while left is None or left > 0:
        chosen = cases if left is None else cases[:left]
        stream = case_stream(archive.x[chosen], archive.y[chosen], params.rate_hz,
                             start + done / params.rate_hz)
        columns = stream.values.T.tolist()  # plain floats: json and msgpack take them as is
        for k, (t, values) in enumerate(zip(stream.times.tolist(), columns, strict=True)):
            finished = (k + 1) % steps == 0
            labels = encoder.span(stream.spans[k // steps]) if finished else []
            yield Step(offset_s=(done + k) / params.rate_hz,
                       messages=encoder.step(t, values) + labels, readings=len(values),
                       spans=len(labels), cases=int(finished))
        done += stream.times.size
        left = None if left is None else left - len(chosen)
        if not params.loop:
            break


def replay(conn: Connection, params: ReplayParams, *,
           stop: threading.Event | None = None) -> ReplayResult:
    """Publish the chosen cases as live readings, paced by `params.speed`, until done or `stop`.

    Args:
        conn: The broker the devices' readings go to.
        params: What to replay, how and where.
        stop: Ends the replay early when set (e.g. by SIGINT); the counts so far are returned.

    Returns:
        The counts of what was published and confirmed, and the seconds it took.

    Raises:
        ConfigError: BAD_DATA for a missing or malformed archive, BAD_CONFIG for more parts
            than cases.
        TransportError: broker_unreachable / broker_unknown_host / broker_refused when the
            broker cannot be reached; publish_failed when it does not confirm a publish.
    """
    archive, cases = _chosen(params)  # a bad dataset or part fails before connecting
    client = MqttClient(client_id=f"replay-{params.device}-{uuid.uuid4().hex[:8]}", conn=conn)
    client.connect()
    log.info("replay_started", broker=str(conn), device=params.device, dataset=params.dataset,
             split=params.split, part=params.part, parts=params.parts,
             format=str(params.format), speed=params.speed)
    if params.format is ReplayFormat.BARE and params.speed != 1:
        log.warning("timestamps_omitted", format="bare", speed=params.speed,
                    detail="bare numbers carry no time: the edge stamps them on arrival, so "
                           "their times follow the publishing pace, not the dataset's rate")
    try:
        # Stamped once connected, so the first reading is not as old as the connect took.
        result = _Pacer(client, params, stop if stop is not None else threading.Event()).run(
            _steps(params, archive, cases, time.time()))
    finally:
        client.close()
    log.info("replay_finished", device=params.device, messages=result.messages,
             readings=result.readings, spans=result.spans, cases=result.cases,
             seconds=round(result.seconds, 3))
    return result


class _Pacer:
    """Publishes each step once it is due; what is due together goes in one confirmed batch."""

    def __init__(self, client: MqttClient, params: ReplayParams, stop: threading.Event) -> None:
        self._client, self._params, self._stop = client, params, stop
        self._pending: list[Message] = []
        self._counts = [0, 0, 0, 0]  # messages, readings, spans, cases waiting in _pending
        self._totals = [0, 0, 0, 0]  # the same, confirmed by the broker

    def run(self, steps: Iterator[Step]) -> ReplayResult:
        speed, began = self._params.speed, time.monotonic()
        next_log = began + self._params.progress_s
        for step in steps:
            if step.offset_s / speed > time.monotonic() - began:
                self._flush()  # publish what is due before waiting for the next step
            wait = step.offset_s / speed - (time.monotonic() - began)
            if self._stop.is_set() or (wait > 0 and self._stop.wait(wait)):
                break
            self._pending += step.messages
            self._counts = [a + b for a, b in zip(
                self._counts, (len(step.messages), step.readings, step.spans, step.cases),
                strict=True)]
            if len(self._pending) >= _MAX_BATCH:
                self._flush()
            if time.monotonic() >= next_log:
                self._flush()
                next_log = time.monotonic() + self._params.progress_s
                lag = time.monotonic() - began - step.offset_s / speed
                log.info("replay_progressed", device=self._params.device,
                         stream_s=step.offset_s, lag_s=round(max(lag, 0.0), 3),
                         **dict(zip(("messages", "readings", "spans", "cases"), self._totals,
                                    strict=True)))
        self._flush()
        messages, readings, spans, cases = self._totals
        return ReplayResult(messages=messages, readings=readings, spans=spans, cases=cases,
                            seconds=time.monotonic() - began)

    def _flush(self) -> None:
        if self._pending:
            self._client.publish_many(self._pending)
        self._totals = [a + b for a, b in zip(self._totals, self._counts, strict=True)]
        self._pending, self._counts = [], [0, 0, 0, 0]


def parse_broker(text: str, *, connect_timeout_s: float | None = None) -> Connection:
    """A `Connection` from `HOST:PORT` (`[v6 address]:PORT` for IPv6).

    Raises:
        ConfigError: BAD_CONFIG for anything else.
    """
    host, port = parse_address(text)
    if connect_timeout_s is None:
        return Connection(host=host, port=port)
    return Connection(host=host, port=port, connect_timeout_s=connect_timeout_s)


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_topic(name: str, topic: object) -> None:
    """Refuse what cannot be a topic to publish to: empty levels, wildcards, `$` topics."""
    if (not isinstance(topic, str) or not topic or topic.startswith("$")
            or any(c in topic for c in "+#\0") or "" in topic.split("/")):
        _bad(f"{name} must be a topic name without wildcards or empty levels; got {topic!r}")


def _bad(detail: str) -> NoReturn:
    raise ConfigError(Reason.BAD_CONFIG, f"replay: {detail}")
