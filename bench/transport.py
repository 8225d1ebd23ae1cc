"""A 64 MiB update through our MQTT path against bare paho-mqtt, measured in one run.

    .venv/bin/python bench/transport.py [--runs 3]

Starts its own Mosquitto (the project's config) on a free loopback port. Each run moves the
same 16M float32 weights (seeded), in 64 KiB chunks at QoS 1, from a publisher in this process
to a receiver in a child process (edge and cloud are different machines; separate processes
keep one GIL from slowing both ends):

- `fedstream`: the frames of `encode_blob` + `wire.pack(UpdateChunk)` published with
  `MqttClient.publish_many`, as `edge_node/daemon.py` sends them (each frame is packed while
  earlier ones are on the wire). The receiver is an `MqttClient` with `manual_ack=True` whose
  network thread hands messages to a consumer thread, which runs `wire.expect`,
  `Reassembler.add` and acks each chunk once it is copied in, like the cloud; the clock stops
  when `decode_blob` has returned the tensors of the sha256-verified blob.
- `bare_paho`: a plain paho 2.x client publishing the same blob bytes in the same chunk size
  at QoS 1 to a plain paho subscriber that only concatenates payloads. MQTT v5 and the same
  client-side in-flight window as `MqttClient` on both publishers.

The clock runs from the first publish to the receiver holding the blob (the encode itself is
timed by bench/wire_codec.py). Paths alternate, `--runs` times each; the best run of each is
reported. Prints JSON lines; `vs_bare_paho` = fedstream MB/s / bare paho MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import multiprocessing as mp
import queue
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
import torch
from paho.mqtt.enums import CallbackAPIVersion

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.blobs import decode_blob, encode_blob
from fedstream.shared.protocol.chunks import DEFAULT_CHUNK_SIZE, Reassembler
from fedstream.shared.protocol.connection import Connection as BrokerConnection
from fedstream.shared.protocol.messages import Spec, TensorSpec, UpdateChunk, UpdateMeta
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topic, Topics

SPEC: Spec = (TensorSpec(name="l0.w", shape=(4096, 2048)),
              TensorSpec(name="l1.w", shape=(2048, 2048)),
              TensorSpec(name="l2.w", shape=(2048, 2047)),
              TensorSpec(name="l2.b", shape=(2048,)))
MIB = 1 << 20
WINDOW: int = inspect.signature(MqttClient).parameters["max_inflight"].default
RECEIVE_TIMEOUT_S = 60.0


def update(seed: int = 0) -> list[torch.Tensor]:
    """Seeded weights matching SPEC, scaled like a training delta."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*t.shape, generator=gen) * 0.01 for t in SPEC]


@dataclass(frozen=True, slots=True)
class Job:
    """What a receiver process waits for."""

    host: str
    port: int
    topic: str
    count: int
    sha256: bytes


def _quiet() -> None:
    """Warnings only, on stderr: stdout carries the JSON lines."""
    configure_logging(json=True, level="warning", stream=sys.stderr)


def _bare_receiver(job: Job, conn: Connection) -> None:
    """Child process: a plain paho subscriber that concatenates `job.count` payloads."""
    _quiet()
    host, port, topic, count, sha256 = job.host, job.port, job.topic, job.count, job.sha256
    parts: list[bytes | bytearray] = []
    done, subscribed = threading.Event(), threading.Event()
    finished: list[float] = []

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        parts.append(msg.payload)
        if len(parts) == count:
            b"".join(parts)
            finished.append(time.perf_counter())
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-sub-{uuid.uuid4().hex}",
                         protocol=paho.MQTTv5)
    client.max_inflight_messages_set(WINDOW)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            conn.send(("error", "no SUBACK"))
            return
        conn.send(("ready", None))
        ok = done.wait(RECEIVE_TIMEOUT_S)
        good = ok and hashlib.sha256(b"".join(parts)).digest() == sha256  # after the clock
        conn.send(("done", finished[0]) if good else ("error", f"{len(parts)}/{count} chunks"))
    finally:
        client.disconnect()
        client.loop_stop()


def _fedstream_receiver(job: Job, conn: Connection) -> None:
    """Child process: an MqttClient + consumer thread doing what the cloud's intake does."""
    _quiet()
    host, port, topic, sha256 = job.host, job.port, job.topic, job.sha256
    inbox: queue.Queue[Inbound] = queue.Queue()
    probe = Topic(f"{topic}/probe")
    client = MqttClient(client_id=f"fs-sub-{uuid.uuid4().hex}",
                        conn=BrokerConnection(host=host, port=port),
                        on_message=inbox.put, subscriptions=[Topic(f"{topic}/#")],
                        manual_ack=True)
    client.connect(10)
    parts = Reassembler(max_blob_bytes=1 << 30, max_total_bytes=1 << 30, timeout_s=60.0)
    try:
        # MqttClient subscribes on CONNACK without waiting; our own probe coming back proves
        # the subscription is live before the sender starts.
        client.publish(probe, b"probe")
        first = inbox.get(timeout=10)
        client.ack(first)
        if first.topic != str(probe):
            conn.send(("error", f"unexpected message on {first.topic}"))
            return
        conn.send(("ready", None))
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = inbox.get(timeout=RECEIVE_TIMEOUT_S)
            chunk = wire.expect(msg.payload, UpdateChunk)
            done = parts.add(chunk.header, chunk.index, chunk.data, time.monotonic())
            client.ack(msg)
            if done is not None:
                tensors = decode_blob(done.header, done.blob, SPEC)
                end = time.perf_counter()
                ok = done.header.sha256 == sha256 and len(tensors) == len(SPEC)
                conn.send(("done", end) if ok else ("error", "wrong blob"))
                return
        conn.send(("error", "timed out"))
    finally:
        client.close()


def _start_receiver(target: Any, broker: Mosquitto, topic: str, count: int,
                    sha256: bytes) -> tuple[mp.process.BaseProcess, Connection]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    job = Job(host=broker.host, port=broker.port, topic=topic, count=count, sha256=sha256)
    proc = ctx.Process(target=target, args=(job, theirs), daemon=True)
    proc.start()
    if not ours.poll(60):
        raise RuntimeError("receiver did not start")
    kind, detail = ours.recv()
    if kind != "ready":
        raise RuntimeError(f"receiver: {detail}")
    return proc, ours


def _finish(proc: mp.process.BaseProcess, conn: Connection, start: float) -> float:
    if not conn.poll(RECEIVE_TIMEOUT_S + 10):
        proc.kill()
        raise RuntimeError("receiver never answered")
    kind, detail = conn.recv()
    proc.join(10)
    if kind != "done":
        raise RuntimeError(f"receiver: {detail}")
    return float(detail) - start


def run_bare(broker: Mosquitto, chunks: list[bytes], sha256: bytes) -> float:
    """Seconds from the first publish until the bare subscriber holds every payload."""
    topic = f"bench/{uuid.uuid4().hex}"
    proc, conn = _start_receiver(_bare_receiver, broker, topic, len(chunks), sha256)
    connected = threading.Event()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-pub-{uuid.uuid4().hex}",
                      protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(WINDOW)
    pub.max_queued_messages_set(0)
    pub.on_connect = lambda *_: connected.set()
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("bare publisher: no CONNACK")
        start = time.perf_counter()
        infos = [pub.publish(topic, chunk, qos=1) for chunk in chunks]
        elapsed = _finish(proc, conn, start)
        for info in infos:
            info.wait_for_publish(10)
        return elapsed
    finally:
        pub.disconnect()
        pub.loop_stop()


def run_fedstream(broker: Mosquitto, tensors: list[torch.Tensor]) -> float:
    """Seconds from the first publish until the receiver holds the verified, decoded blob."""
    federation = f"b{uuid.uuid4().hex[:10]}"
    topics = Topics(federation)
    enc = encode_blob(tensors, SPEC, codec="f32", chunk_size=DEFAULT_CHUNK_SIZE)
    meta = UpdateMeta(edge_id="edge-0001", round_id="r-000042", base_version=41,
                      samples=1200, loss=0.3125)
    topic = topics.update("mlp", "edge-0001")
    proc, conn = _start_receiver(_fedstream_receiver, broker, f"{topics.prefix}/update",
                                 enc.header.count, enc.header.sha256)
    pub = MqttClient(client_id=f"fs-pub-{uuid.uuid4().hex}",
                     conn=BrokerConnection(host=broker.host, port=broker.port))
    pub.connect(10)
    try:
        start = time.perf_counter()
        # As edge_node/daemon.py sends an update (bytes(view) included).
        pub.publish_many(
            (topic, wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i,
                                          data=bytes(view))))
            for i, view in enumerate(enc.chunks))
        return _finish(proc, conn, start)
    finally:
        pub.close()


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    _quiet()
    tensors = update()
    blob = b"".join(t.numpy().tobytes() for t in tensors)
    sha256 = hashlib.sha256(blob).digest()
    view = memoryview(blob)
    chunks = [bytes(view[i:i + DEFAULT_CHUNK_SIZE])
              for i in range(0, len(blob), DEFAULT_CHUNK_SIZE)]
    best = {"bare_paho": float("inf"), "fedstream": float("inf")}
    with tempfile.TemporaryDirectory(prefix="fedstream-bench-") as tmp, \
            Mosquitto(BrokerParams(data_dir=Path(tmp))) as broker:
        for run in range(args.runs):
            for path in ("bare_paho", "fedstream"):
                took = (run_bare(broker, chunks, sha256) if path == "bare_paho"
                        else run_fedstream(broker, tensors))
                best[path] = min(best[path], took)
                print(json.dumps({"run": run, "path": path, "s": round(took, 3)}), flush=True)
    mb = len(blob) / MIB
    bare = mb / best["bare_paho"]
    fed = mb / best["fedstream"]
    common = {"bytes": len(blob), "chunk": DEFAULT_CHUNK_SIZE, "inflight": WINDOW,
              "runs": args.runs}
    print(json.dumps({"path": "bare_paho", "mb_s": round(bare, 1), **common}))
    print(json.dumps({"path": "fedstream", "mb_s": round(fed, 1),
                      "vs_bare_paho": round(fed / bare, 3), **common}))


if __name__ == "__main__":
    main()
