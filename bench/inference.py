"""Inference requests/s and latency through MQTT and HTTP against the model in-process, one run.

    .venv/bin/python bench/inference.py [--seconds 1.5] [--clients 16]

Starts its own Mosquitto (the project's config) on a free loopback port and an
`InferenceServer` for the digits MLP (64-100-100-10), trained for a few epochs on the digits
train split with the edge's `train_round`, then measures, for fp32 and bf16 (forced):

- `inproc` (the ceiling): `ServedModel.predict` called directly. In `series` one row per call;
  in `concurrent` `--clients` rows per call, counted as that many requests (a perfectly merged
  batch without queueing).
- `batcher`: threads of this process (1 in series, `--clients` concurrent) each submitting one
  row at a time to the server's `MicroBatcher`: queueing and batching, no transport.
- `http`: `POST /v1/predict` with one row, one keep-alive connection per client thread.
- `mqtt`: `InferRequest` over MQTT v5 request/response, one `MqttClient` per client thread.

HTTP and MQTT clients run in a child process, so they do not share the server's GIL. Each cell
runs `--seconds` after a short warm-up, with the server's `max_wait_ms` at 0 and at the config
default (2 ms: a lone request waits that long for company). Prints JSON lines: the precision
"auto" chooses on the digits test split and why, then per cell `req_s`, `p50_ms`, `p99_ms`
and `vs_inproc` = req_s / in-process req_s of the same precision and mode.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.cloud.config import InferenceConfig
from fedstream.cloud.continual import apply_delta
from fedstream.cloud.inference import InferenceServer, MicroBatcher, ModelPreparer, ServedModel
from fedstream.edge_node.trainer import train_round
from fedstream.shared.learning.backends import BACKENDS
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection as BrokerConnection
from fedstream.shared.protocol.control import TrainParams
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics

ARCH = Architecture.mlp((64, 100, 100, 10))
MODEL = "digits"
WARMUP_S = 0.3
WAITS_MS = (0.0, 2.0)

Rows = npt.NDArray[np.float32]
Call = Callable[[Rows], object]


@dataclass(frozen=True, slots=True)
class Job:
    """One measurement for the client process."""

    path: str
    threads: int
    seconds: float
    host: str
    port: int
    federation: str
    rows: Rows


def _quiet() -> None:
    """Warnings only, on stderr: stdout carries the JSON lines."""
    configure_logging(json=True, level="warning", stream=sys.stderr)


def _loop(call: Call, rows: Rows, start_timing: float, until: float, out: list[float]) -> None:
    i = 0
    while (began := time.perf_counter()) < until:
        call(rows[i % len(rows)][None])
        if began >= start_timing:
            out.append(time.perf_counter() - began)
        i += 1


def run_clients(calls: list[Call], rows: Rows, seconds: float) -> list[float]:
    """Each call in its own thread, one row at a time; latencies of the timed window."""
    start_timing = time.perf_counter() + WARMUP_S
    until = start_timing + seconds
    lists: list[list[float]] = [[] for _ in calls]
    threads = [threading.Thread(target=_loop, args=(call, rows, start_timing, until, out))
               for call, out in zip(calls, lists, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for out in lists for x in out]


def _http_client(job: Job) -> tuple[Call, Callable[[], None]]:
    conn = http.client.HTTPConnection(job.host, job.port, timeout=30)

    def call(row: Rows) -> object:
        conn.request("POST", "/v1/predict", json.dumps({"inputs": row.tolist()}))
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"http {response.status}: {body!r}")
        return body

    return call, conn.close


def _mqtt_client(job: Job) -> tuple[Call, Callable[[], None]]:
    topics = Topics(job.federation)
    session = uuid.uuid4().hex[:8]
    client_id = f"bench-{session}"
    reply_to = topics.reply("bench", session)
    client = MqttClient(client_id=client_id,
                        conn=BrokerConnection(host=job.host, port=job.port),
                        subscriptions=(reply_to,))
    client.connect(10)

    def call(row: Rows) -> object:
        msg = client.request(topics.infer(MODEL), wire.pack(InferRequest.of(row)), reply_to,
                             timeout_s=30)
        reply = wire.expect(msg.payload, InferReply)
        return reply.checked()

    return call, client.close


def _client_process(conn: Connection) -> None:
    """Child process: runs each HTTP or MQTT job it is sent and answers with latencies."""
    _quiet()
    while (job := conn.recv()) is not None:
        clients = [(_http_client if job.path == "http" else _mqtt_client)(job)
                   for _ in range(job.threads)]
        conn.send(run_clients([call for call, _ in clients], job.rows, job.seconds))
        for _, close in clients:
            close()


def _through(batcher: MicroBatcher) -> Call:
    return lambda row: batcher.submit(row).result(30)


def summary(latencies: list[float], seconds: float, per_call: int = 1) -> dict[str, float]:
    """Requests/s over the timed window and latency percentiles in ms."""
    ms = np.array(latencies) * 1000
    return {"req_s": round(len(latencies) * per_call / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def trained_digits() -> tuple[list[torch.Tensor], Rows, npt.NDArray[np.int64]]:
    """Weights trained briefly on the digits train split, and the test split."""
    base = tensors_of(build_model(ARCH, seed=0))
    result = train_round(arch=ARCH, base=base, data=SOURCES.build("digits").load(),
                         params=TrainParams(epochs=15, lr=0.05, momentum=0.9, batch_size=32),
                         backend=BACKENDS.build("torch"), seed=0)
    test = SOURCES.build("digits", split="test").load()
    assert test.labels is not None  # digits is labelled
    return apply_delta(base, result.delta), test.features, test.labels


def inproc(served: ServedModel, batch: int, rows: Rows, seconds: float) -> dict[str, float]:
    """The ceiling: `batch` rows per direct forward pass, counted as `batch` requests."""
    latencies = run_clients([lambda r: served.predict(np.repeat(r, batch, axis=0))], rows,
                            seconds)
    return summary(latencies, seconds, per_call=batch)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    _quiet()
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_client_process, args=(theirs,), daemon=True)
    child.start()
    tensors, features, labels = trained_digits()
    rows = features[:256]
    auto = ModelPreparer(arch=ARCH, precision="auto", evaluation=(features, labels))
    chosen = auto.prepare(1, tensors)
    print(json.dumps({"auto_precision": chosen.precision, "backend": chosen.backend.name,
                      "why": chosen.reason, "clients": args.clients, "seconds": args.seconds}),
          flush=True)
    modes = {"series": 1, "concurrent": args.clients}
    with tempfile.TemporaryDirectory(prefix="fedstream-bench-") as tmp, \
            Mosquitto(BrokerParams(data_dir=Path(tmp))) as broker:
        for precision in ("fp32", "bf16"):
            served = ModelPreparer(arch=ARCH, precision=precision).prepare(1, tensors)
            print(json.dumps({"precision": precision, "backend": served.backend.name,
                              "test_accuracy": round(float(
                                  (served.predict(features)[0] == labels).mean()), 4)}),
                  flush=True)
            ceiling: dict[str, float] = {}
            for mode, batch in modes.items():
                stats = inproc(served, batch, rows, args.seconds)
                ceiling[mode] = stats["req_s"]
                print(json.dumps({"precision": precision, "mode": mode, "path": "inproc",
                                  **stats, "vs_inproc": 1.0}), flush=True)
            for wait_ms in WAITS_MS:
                federation = f"b{uuid.uuid4().hex[:10]}"
                cfg = InferenceConfig(http_port=0, precision=precision, max_wait_ms=wait_ms)
                with InferenceServer(cfg=cfg, arch=ARCH, topics=Topics(federation),
                                     model=MODEL, conn=BrokerConnection(
                                         host=broker.host, port=broker.port)) as server:
                    server.swap(1, tensors)
                    for mode, clients in modes.items():
                        for path in ("batcher", "http", "mqtt"):
                            if path == "batcher":
                                latencies = run_clients(
                                    [_through(server.batcher)] * clients, rows, args.seconds)
                            else:
                                ours.send(Job(path=path, threads=clients, seconds=args.seconds,
                                              host=broker.host, federation=federation,
                                              port=(server.http_port if path == "http"
                                                    else broker.port), rows=rows))
                                latencies = ours.recv()
                            stats = summary(latencies, args.seconds)
                            print(json.dumps({
                                "precision": precision, "mode": mode, "path": path,
                                "wait_ms": wait_ms, **stats,
                                "vs_inproc": round(stats["req_s"] / ceiling[mode], 3)}),
                                flush=True)
                    print(json.dumps({"precision": precision, "wait_ms": wait_ms,
                                      "server": server.status()}), flush=True)
    ours.send(None)
    child.join(10)


if __name__ == "__main__":
    main()
