"""The first round after an edge (re)starts against its steady state, and the edge's peak RSS.

    .venv/bin/python bench/first_round.py [--rounds 4] [--restarts 3] [--hidden 100,100]

Real processes: Mosquitto, `fedstream cloud run` and one `fedstream edge run` on the digits
data (an MLP 64-HIDDEN-10). A round's edge latency is from the round's `opened` time to the
edge's `update_sent` log line for it. Steady state: the median of rounds 2..ROUNDS of one edge
process. Then the edge is stopped and started again, and a round is opened the moment its
status says online (the model still arriving); `first_vs_steady` is that round's latency over
the steady one (the median over RESTARTS restarts). The edge's VmHWM (peak RSS) is read from
/proc after its rounds, once for the long-running process and once per restarted one, against
the baseline of the same run: a bare Python that imports torch and trains the same round on the
same data with stock torch (`rss_vs_torch_alone`). Prints JSON lines; nothing here asserts an
absolute time or size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress
from fedstream.demo import MODEL, Processes, write_configs
from fedstream.operator import fleet_status, start_round
from fedstream.shared.errors import TransportError
from fedstream.shared.learning.backends import ipex_status
from fedstream.shared.logs import configure_logging
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import EdgeStatus

FEDERATION = "bench-first-round"
# Stock torch's own peak: the edge's round without the edge (no MQTT, no status, no IPEX).
_TORCH_ALONE = """
import sys, torch
from fedstream.edge_node.trainer import train_round
from fedstream.shared.learning.backends import BACKENDS
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.control import TrainParams
torch.set_num_threads(1)
arch = Architecture.mlp((64, *map(int, sys.argv[1].split(",")), 10))
data = SOURCES.build("digits", partitions=1, partition=0, alpha=1.0).load()
train_round(arch=arch, base=tensors_of(build_model(arch)), data=data,
            params=TrainParams(epochs=5, lr=0.05, momentum=0.9, batch_size=32),
            backend=BACKENDS.build("torch"), seed=0)
print("intel_extension_for_pytorch" in sys.modules)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
"""


def _events(log: Path, event: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _ipex_loaded(pid: int) -> bool:
    return "intel_extension_for_pytorch" in Path(f"/proc/{pid}/maps").read_text()


def _edge(address: FleetAddress, procs: Processes, *, ready: bool,
          timeout_s: float = 300.0) -> EdgeStatus:
    """The edge's status once it is online (and, with `ready`, has a backend chosen)."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        procs.check_alive()
        try:
            for edge in fleet_status(address).edges:
                backend = dict(edge.backend)
                chosen = bool(backend) and backend.get("state", "ready") == "ready"
                if edge.online and (chosen or not ready):
                    return edge
        except TransportError:
            pass  # the cloud is still starting
        time.sleep(0.05)
    raise TimeoutError("the edge did not come up")


def _round(address: FleetAddress, log: Path, request: RoundStart) -> float:
    """Seconds from the round's opening to the edge's update for it."""
    with open("/dev/null", "w") as quiet:
        state = start_round(address, request, wait=True, out=quiet)
    for _ in range(100):
        sent = [e for e in _events(log, "update_sent") if e.get("round_id") == state.round_id]
        if sent:
            at = datetime.fromisoformat(str(sent[0]["timestamp"])).timestamp()
            return at - state.opened
        time.sleep(0.05)
    raise RuntimeError(f"no update_sent for {state.round_id}")


def _torch_alone_mib(hidden: list[int]) -> float:
    done = subprocess.run([sys.executable, "-c", _TORCH_ALONE, ",".join(map(str, hidden))],
                          capture_output=True, text=True, check=True, timeout=300)
    ipex_loaded, hwm = done.stdout.split()[-2:]
    assert ipex_loaded == "False"
    return round(float(hwm), 1)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--hidden", default="100,100")
    parser.add_argument("--backend", default="auto", help="the edge's backend.name")
    args = parser.parse_args()
    configure_logging(json=True, level="warning", stream=sys.stderr)
    hidden = [int(h) for h in args.hidden.split(",")]
    print(json.dumps({"python": sys.executable, "torch": torch.__version__,
                      "ipex": ipex_status()[1], "hidden": hidden, "backend": args.backend}))
    tables = (f'[architecture]\nfamily = "mlp"\ninput_shape = [64]\noutputs = 10\n'
              f"params = {{hidden = {hidden}}}\n\n[rounds]\ndeadline_s = 600\n")
    with tempfile.TemporaryDirectory() as tmp, \
            Mosquitto(BrokerParams(port=0, data_dir=Path(tmp) / "broker")) as broker:
        work = Path(tmp)
        cloud_cfg, (edge_cfg,) = write_configs(
            work, port=broker.port, federation=FEDERATION, edges=1, dirichlet_alpha=1.0,
            cloud_tables=tables)
        with edge_cfg.open("a") as cfg:
            cfg.write(f'\n[backend]\nname = "{args.backend}"\n')
        address = FleetAddress.local(host=broker.host, port=broker.port,
                                     federation=FEDERATION, model=MODEL)
        procs = Processes(work)
        log = work / "edge.log"
        request = RoundStart()
        try:
            procs.spawn("cloud", "cloud", cloud_cfg)
            procs.spawn("edge", "edge", edge_cfg)
            started = _edge(address, procs, ready=True)
            steady = [_round(address, log, request) for _ in range(args.rounds)]
            print(json.dumps({"phase": "steady", "backend": dict(started.backend),
                              "latency_s": [round(s, 4) for s in steady],
                              "edge_vm_hwm_mib": _vm_hwm_mib(procs.procs["edge"].pid)}),
                  flush=True)
            steady_s = statistics.median(steady[1:])
            firsts, restarted_hwm = [], float("nan")
            for _ in range(args.restarts):
                procs.procs["edge"].terminate()
                procs.procs["edge"].wait(30)
                procs.spawn("edge", "edge", edge_cfg)
                _edge(address, procs, ready=False)
                first = _round(address, log, request)
                firsts.append(first)
                restarted_hwm = _vm_hwm_mib(procs.procs["edge"].pid)
                print(json.dumps({"phase": "restart", "first_round_s": round(first, 4),
                                  "edge_vm_hwm_mib": restarted_hwm,
                                  "edge_ipex_loaded": _ipex_loaded(procs.procs["edge"].pid)}),
                      flush=True)
        finally:
            procs.stop()
        alone = _torch_alone_mib(hidden)
        print(json.dumps({"steady_round_s": round(steady_s, 4),
                          "first_round_s": round(statistics.median(firsts), 4),
                          "first_vs_steady": round(statistics.median(firsts) / steady_s, 2),
                          "torch_alone_vm_hwm_mib": alone,
                          "rss_vs_torch_alone": round(restarted_hwm / alone, 2)}))


if __name__ == "__main__":
    main()
