"""fedstream's side of `vs_flower.py`: the real services on the benchmark's task, per round.

Mosquitto, `fedstream cloud run` and one `fedstream edge run` per part as processes (the
demo's code path), plain FedAvg (the default defences off: Flower's FedAvg has none), edges
on stock torch fp32 with one thread like Flower's clients. Per round: the wall time at the
operator (round_start sent -> published seen), the cloud's own round seconds, each edge's
training seconds (`update_sent`'s `train_ms`: building the model and optimizer, and the
epoch), the overhead (wall - slowest edge's training) and the accuracy on the digits test split.

`startup_s` runs from just before Mosquitto starts to every edge being online with a backend
chosen, which an edge does once it holds the initial model: unlike Flower, whose first model
goes out with round 1's train messages, fedstream delivers it during start-up. Memory and TCP
bytes come from `bench/proctree.py`'s sampler on the broker's, the cloud's and the edges'
process trees: `peak_rss_mib` by kind (`broker`, `cloud`, `edges`), `bytes.broker_tcp` on
Mosquitto's port by peer (`cloud`, `edges`, `other`: the operator's connections from this
process), over the whole run. The run ends once every edge reports holding the last round's
model, so that delivery (which Flower's run has no counterpart of) is counted in full, not
cut short at random. `bytes.broker_rchar_wchar`: the broker's /proc io from ready to the end;
`bytes.update_payload`: the update bytes the cloud received (its rounds' `bytes_in`).
`total_s`: from starting Mosquitto to the last round's result. `initial_accuracy`: the cloud's
own score of its start model at ready; `edge_samples`: each edge's data set size, from its log.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from proctree import Sampler, io_bytes

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress
from fedstream.demo import FEDERATION, MODEL, Processes, wait_holding, wait_ready, write_configs
from fedstream.edge_node.config import EdgeConfig
from fedstream.edge_node.feed import open_feed
from fedstream.operator import fleet_status, start_round
from fedstream.shared.config import load_config
from fedstream.shared.protocol.commands import RoundStart

# Flower's FedAvg has no sample cap or norm clip; the same aggregate needs them off here.
PLAIN_FEDAVG = "[defences]\nsample_cap = 0\nclip = 0\n"
REQUEST = RoundStart(epochs=1, lr=0.05, momentum=0.9, batch_size=32, deadline_s=600.0)
READY_TIMEOUT_S = 600.0
HOLD_TIMEOUT_S = 300.0
LOG_WAIT_S = 10.0


def _architecture(hidden: tuple[int, ...]) -> str:
    sizes = ", ".join(str(h) for h in hidden)
    return ('[architecture]\nfamily = "mlp"\ninput_shape = [64]\noutputs = 10\n'
            f"[architecture.params]\nhidden = [{sizes}]\n")


def write_task_configs(work_dir: Path, *, port: int, hidden: tuple[int, ...], edges: int,
                       alpha: float) -> tuple[Path, list[Path]]:
    """The cloud's and the edges' config files for the task (see the module doc)."""
    return write_configs(work_dir, port=port, federation=FEDERATION, edges=edges,
                         dirichlet_alpha=alpha, cloud_tables=PLAIN_FEDAVG + _architecture(hidden),
                         edge_extra='backend.name = "torch"\nbackend.precision = "fp32"')


def planned_edge_samples(work_dir: Path, *, edges: int = 3, alpha: float = 0.5) -> list[int]:
    """Each edge's data set size, loaded from its config by the edge's own code path."""
    work_dir.mkdir(parents=True, exist_ok=True)
    _, paths = write_task_configs(work_dir, port=1883, hidden=(1,), edges=edges, alpha=alpha)
    return [int(open_feed(load_config(EdgeConfig, path)).stats()["samples"]) for path in paths]


def _log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of one event in a service's log."""
    tag = f'"event": "{event}"'
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines()
            if tag in line and line.startswith("{")]


def _train_s(log: Path, round_id: str) -> float:
    """The edge's `train_ms` for the round; its line may land just after the round's end."""
    give_up = time.monotonic() + LOG_WAIT_S
    while True:
        for event in _log_events(log, "update_sent"):
            if event.get("round_id") == round_id:
                return float(event["train_ms"]) / 1000
        if time.monotonic() > give_up:
            raise RuntimeError(f"no update_sent for round {round_id} in {log}")
        time.sleep(0.05)


def edge_samples(work_dir: Path, edges: int) -> list[int]:
    """Each edge's data set size, from its `edge_started` log line (its first start)."""
    return [int(_log_events(work_dir / f"edge-{i}.log", "edge_started")[0]["samples"])
            for i in range(edges)]


def _spawn(procs: Processes, cloud_cfg: Path, edge_cfgs: list[Path],
           profile_cloud: Path | None) -> None:
    cloud = ["-m", "fedstream", "cloud", "run", "--config", str(cloud_cfg)]
    if profile_cloud is not None:
        cloud = ["-m", "cProfile", "-o", str(profile_cloud), *cloud]
    procs.spawn_command("cloud", [sys.executable, *cloud])
    for i, path in enumerate(edge_cfgs):
        procs.spawn(f"edge-{i}", "edge", path)


def run_fedstream(*, work_dir: Path, rounds: int, hidden: tuple[int, ...], edges: int = 3,
                  alpha: float = 0.5, profile_cloud: Path | None = None) -> dict[str, Any]:
    """Run `rounds` rounds and return the figures (see the module doc).

    Args:
        work_dir: Configs, data directories and logs (emptied first by the caller).
        rounds: Rounds to run, one after the other.
        hidden: The MLP's hidden sizes (64-hidden-10).
        edges: Edge processes, each on its own part of the Dirichlet(`alpha`) split.
        alpha: The split's skew.
        profile_cloud: Write the cloud's cProfile statistics here (on its clean exit).
    """
    began = time.time()
    work_dir.mkdir(parents=True, exist_ok=True)
    with Mosquitto(BrokerParams(port=0, data_dir=work_dir / "broker")) as broker, \
            Sampler(port=broker.port) as sampler:
        assert broker.pid is not None
        sampler.add("broker", broker.pid)
        cloud_cfg, edge_cfgs = write_task_configs(work_dir, port=broker.port, hidden=hidden,
                                                  edges=edges, alpha=alpha)
        procs = Processes(work_dir)
        try:
            _spawn(procs, cloud_cfg, edge_cfgs, profile_cloud)
            for name, proc in procs.procs.items():
                sampler.add("cloud" if name == "cloud" else "edges", proc.pid)
            address = FleetAddress.local(host=broker.host, port=broker.port,
                                         federation=FEDERATION, model=MODEL)
            wait_ready(address, edges=edges, procs=procs, timeout_s=READY_TIMEOUT_S)
            startup_s = time.time() - began
            io_at_ready = io_bytes(broker.pid)
            initial = fleet_status(address).model_metrics.get("accuracy", float("nan"))
            per_round = [_round(address, work_dir, edges) for _ in range(rounds)]
            finished = time.time()
            wait_holding(address, version=per_round[-1]["version"], edges=edges,
                         timeout_s=HOLD_TIMEOUT_S)
            sampler.sample()
            broker_io = io_bytes(broker.pid) - io_at_ready
        finally:
            procs.stop(timeout_s=60.0)
    return {**_summary(sampler, per_round, startup_s=startup_s, total_s=finished - began,
                       broker_io=broker_io),
            "initial_accuracy": float(initial), "edge_samples": edge_samples(work_dir, edges)}


def _summary(sampler: Sampler, per_round: list[dict[str, Any]], *, startup_s: float,
             total_s: float, broker_io: int) -> dict[str, Any]:
    tcp = sampler.tcp_bytes()
    return {"framework": "fedstream", "rounds": per_round, "startup_s": round(startup_s, 3),
            "peak_rss_mib": sampler.peak_rss_mib(),
            "concurrent_rss_peak_mib": sampler.concurrent_rss_peak_mib(),
            "processes": sampler.process_counts(),
            "bytes": {"broker_tcp": None if tcp is None else sum(tcp.values()),
                      "broker_tcp_by_peer": tcp, "broker_rchar_wchar": broker_io,
                      "update_payload": sum(r["bytes_in"] for r in per_round)},
            "total_s": round(total_s, 3)}


def _round(address: FleetAddress, work_dir: Path, edges: int) -> dict[str, Any]:
    started = time.perf_counter()
    final = start_round(address, REQUEST, wait=True, out=io.StringIO())
    wall = time.perf_counter() - started
    train = [_train_s(work_dir / f"edge-{i}.log", final.round_id) for i in range(edges)]
    result = final.result
    return {"round_id": final.round_id, "version": int(result.get("version", -1)),
            "wall_s": round(wall, 4), "cloud_s": float(result.get("seconds", 0.0)),
            "train_s": train, "overhead_s": round(wall - max(train), 4),
            "accuracy": float(result.get("accuracy", float("nan"))),
            "bytes_in": int(result.get("bytes_in", 0))}
