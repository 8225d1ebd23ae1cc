"""Sensor readings from MQTT into the sample store through `SensorIntake`, against a bare paho
subscriber receiving the same messages, measured in one run; and memory under a flood.

    .venv/bin/python bench/sensor_intake.py [--messages 40000] [--runs 3] [--workloads json]

Starts its own Mosquitto (the project's config) on a free loopback port. Each receiver runs in
a child process (spawned, so its memory is its own) and first opens a persistent session with
its subscription, then leaves. The parent publishes `--messages` QoS 1 messages, which the
broker queues for the absent session (our config queues up to 50,000); the receiver then
reconnects and the clock runs from its reconnect to the last message handled. So what is timed
is how fast a receiver takes a backlog the broker can send at full speed, not how fast one
Python publisher can produce it.

- `bare_paho`: a plain paho 2.x client (MQTT v5, QoS 1) that only counts messages.
- `intake`: `SensorIntake` as `SensorIntake.open` builds it (router, bounded queue, store
  writer thread, SQLite WAL store in a temp dir), given a persistent-session client for the
  backlog (production uses a clean session; the receive path is the same). The clock stops
  when the writer has committed the last reading.

Workloads: `json`, one `{"v": .., "t": ..}` reading per message (zigbee2mqtt style), and
`senml10`, a SenML pack of 10 records per message. Readings/s = messages x readings per
message / seconds; `vs_bare_paho` = intake readings/s / bare readings/s on the same messages
(best run of each). Then `flood`: the senml10 backlog into an intake with a 2,000-reading
queue and a 50,000-row store, against the bare subscriber: peak RSS (VmHWM) of each child,
RSS just before the reconnect, readings stored and dropped. Prints JSON lines; nothing asserts
absolute times.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.edge_node.sensors.config import SensorsConfig
from fedstream.edge_node.sensors.intake import SensorIntake
from fedstream.shared.config import BrokerConfig
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol.connection import Connection as BrokerConnection
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topic

T0 = 1_800_000_000.0
TIMEOUT_S = 120.0
PER_MESSAGE = {"json": 1, "senml10": 10}
FLOOD_QUEUE, FLOOD_ROWS = 2_000, 50_000


@dataclass(frozen=True, slots=True)
class Job:
    """What a receiver child does."""

    host: str
    port: int
    topic: str
    workload: str
    messages: int
    queue_capacity: int
    max_rows: int
    data_dir: str


def payloads(workload: str, n: int) -> list[bytes]:
    """The messages of a workload, each reading at its own time."""
    if workload == "json":
        return [json.dumps({"v": 20.0 + (i % 100) / 10, "t": T0 + i / 100}).encode()
                for i in range(n)]
    return [json.dumps([{"bn": "dev/", "bt": T0 + i, "n": "temp", "u": "Cel", "v": 20.0}]
                       + [{"n": "temp", "t": k / 10, "v": 20.0 + k} for k in range(1, 10)]
                       ).encode() for i in range(n)]


def sensors_config(job: Job) -> SensorsConfig:
    """One channel reading the workload's format from the job's topic."""
    channel = ({"name": "temp", "topic": job.topic, "format": "json", "field": "v",
                "time_field": "t"} if job.workload == "json" else
               {"name": "temp", "topic": job.topic, "format": "senml",
                "senml_name": "dev/temp", "unit": "Cel"})
    return SensorsConfig(channels=[channel], labels="forecast", horizon=1, targets=["temp"],
                         align={"rate_hz": 10.0, "max_gap_s": 1.0},
                         windows={"length": 10, "stride": 10},
                         store={"max_rows": job.max_rows},
                         writer={"queue_capacity": job.queue_capacity})


def _status_kib(key: str) -> int:
    """A size from /proc/self/status: VmRSS now, VmHWM the peak. (`ru_maxrss` would not do:
    Linux carries it across the exec that spawns the child, so it holds the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _report(conn: Connection, took: float, before_kib: int, **extra: Any) -> None:
    conn.send(("done", {"s": took, "rss_before_mib": round(before_kib / 1024, 1),
                        "rss_peak_mib": round(_status_kib("VmHWM") / 1024, 1), **extra}))


def bare_receiver(job: Job, conn: Connection) -> None:
    """Child: a plain paho subscriber with a persistent session that counts messages."""
    configure_logging(json=True, level="warning", stream=sys.stderr)
    client_id = f"bare-{uuid.uuid4().hex[:12]}"
    subscribed, done = threading.Event(), threading.Event()
    count = [0]

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        count[0] += 1
        if count[0] == job.messages:
            done.set()

    def client() -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        c.on_message = on_message
        c.on_subscribe = lambda *_: subscribed.set()
        return c

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    first = client()
    first.connect(job.host, job.port, clean_start=False, properties=props)
    first.loop_start()
    first.subscribe(job.topic, qos=1)
    if not subscribed.wait(10):
        conn.send(("error", "no SUBACK"))
        return
    first.disconnect()
    first.loop_stop()
    conn.send(("ready", None))
    conn.recv()  # the backlog is queued
    before = _status_kib("VmRSS")
    again = client()
    started = time.perf_counter()
    again.connect(job.host, job.port, clean_start=False, properties=props)
    again.loop_start()
    ok = done.wait(TIMEOUT_S)
    took = time.perf_counter() - started
    again.disconnect()
    again.loop_stop()
    if not ok:
        conn.send(("error", f"{count[0]}/{job.messages} messages"))
        return
    _report(conn, took, before, stored=0, dropped=0)


def intake_receiver(job: Job, conn: Connection) -> None:
    """Child: SensorIntake on a persistent session, until the writer committed every reading
    (or, with drops, until every reading is stored or counted)."""
    configure_logging(json=True, level="warning", stream=sys.stderr)
    cfg = sensors_config(job)
    client_id = f"intake-{uuid.uuid4().hex[:12]}"
    broker = BrokerConnection(host=job.host, port=job.port)

    def client(on_message: Any = None, on_reconnect: Any = None) -> MqttClient:
        return MqttClient(client_id=client_id, conn=broker, on_message=on_message,
                          subscriptions=[Topic(job.topic)], persistent=True,
                          session_expiry_s=3600, on_reconnect=on_reconnect,
                          no_delay=False)  # as SensorIntake.open makes it

    first = client()
    first.connect(10)  # subscribes on CONNACK; the broker reads it before the DISCONNECT
    first.close()
    conn.send(("ready", None))
    built = SensorIntake.open(cfg, "bench", Path(job.data_dir), BrokerConfig(port=job.port))
    intake = SensorIntake(client=client(built.handler, built.handler.reconnected),
                          handler=built.handler, queue=built.queue,
                          writer=built.writer, spans=built.spans, store=built.store)
    conn.recv()
    readings = job.messages * PER_MESSAGE[job.workload]
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    intake.start()
    deadline = time.monotonic() + TIMEOUT_S
    while (intake.writer.written + intake.queue.dropped().get("queue_full", 0) < readings
           and time.monotonic() < deadline):
        time.sleep(0.01)  # coarse: each wake-up takes the GIL from paho's thread
    took = time.perf_counter() - started
    counts = intake.counts()
    intake.stop(10)
    if counts.readings_written + counts.readings_dropped.get("queue_full", 0) < readings:
        conn.send(("error", f"timed out: {counts}"))
        return
    _report(conn, took, before, stored=counts.rows,
            dropped=counts.readings_dropped.get("queue_full", 0), queue_peak=counts.queue_peak)


def run(target: Any, broker: Mosquitto, job: Job) -> dict[str, Any]:
    """Start a receiver child, queue the backlog for it, and return what it measured."""
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(job, theirs), daemon=True)
    proc.start()
    try:
        kind, detail = _recv(ours, 60)
        if kind != "ready":
            raise RuntimeError(f"receiver: {detail}")
        _publish(broker, job.topic, payloads(job.workload, job.messages))
        ours.send("go")
        kind, detail = _recv(ours, TIMEOUT_S + 30)
        if kind != "done":
            raise RuntimeError(f"receiver: {detail}")
        return dict(detail)
    finally:
        proc.join(15)
        if proc.is_alive():
            proc.kill()


def _recv(conn: Connection, timeout_s: float) -> tuple[str, Any]:
    if not conn.poll(timeout_s):
        raise RuntimeError("receiver never answered")
    kind, detail = conn.recv()
    return str(kind), detail


def _publish(broker: Mosquitto, topic: str, messages: list[bytes]) -> None:
    """Publish at QoS 1 and wait until the broker has acknowledged every message."""
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:12]}",
                      protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        infos = [pub.publish(topic, m, qos=1) for m in messages]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        pub.disconnect()
        pub.loop_stop()


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=40_000, help="at most 50,000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", nargs="*", choices=sorted(PER_MESSAGE),
                        default=list(PER_MESSAGE))
    parser.add_argument("--no-flood", action="store_true", help="skip the flood")
    args = parser.parse_args()
    configure_logging(json=True, level="warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fedstream-bench-") as tmp, \
            Mosquitto(BrokerParams(data_dir=Path(tmp) / "mosquitto")) as broker:

        def job(workload: str, queue_capacity: int, max_rows: int) -> Job:
            name = uuid.uuid4().hex[:10]
            return Job(host=broker.host, port=broker.port, topic=f"bench/{name}",
                       workload=workload, messages=args.messages,
                       queue_capacity=queue_capacity, max_rows=max_rows,
                       data_dir=str(Path(tmp) / name))

        for workload in args.workloads:
            per = PER_MESSAGE[workload]
            best = {"bare_paho": float("inf"), "intake": float("inf")}
            for n in range(args.runs):
                for path, target in (("bare_paho", bare_receiver), ("intake", intake_receiver)):
                    got = run(target, broker, job(workload, 100_000, 1_000_000))
                    best[path] = min(best[path], got["s"])
                    print(json.dumps({"run": n, "workload": workload, "path": path, **got}),
                          flush=True)
            readings = args.messages * per
            bare, ours = readings / best["bare_paho"], readings / best["intake"]
            common = {"workload": workload, "messages": args.messages, "readings": readings,
                      "runs": args.runs}
            print(json.dumps({"path": "bare_paho", "readings_per_s": round(bare), **common}))
            print(json.dumps({"path": "intake", "readings_per_s": round(ours),
                              "vs_bare_paho": round(ours / bare, 3), **common}), flush=True)
        if args.no_flood:
            return
        bare_flood = run(bare_receiver, broker, job("senml10", FLOOD_QUEUE, FLOOD_ROWS))
        flood = run(intake_receiver, broker, job("senml10", FLOOD_QUEUE, FLOOD_ROWS))
        print(json.dumps({"bench": "flood", "workload": "senml10", "messages": args.messages,
                          "readings": args.messages * 10, "queue_capacity": FLOOD_QUEUE,
                          "max_rows": FLOOD_ROWS, "intake": flood, "bare_paho": bare_flood,
                          "peak_rss_vs_bare_paho": round(flood["rss_peak_mib"]
                                                         / bare_flood["rss_peak_mib"], 3)}))


if __name__ == "__main__":
    main()
