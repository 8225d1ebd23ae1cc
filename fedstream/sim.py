"""`fedstream sim`: a simulated fleet of N edges against a real broker and cloud, for load tests.

The N logical edges run in a few host processes (`edge_node/host.py`: each edge the real
daemon, with its own MQTT client, identity, outbox and data shard; training shared by the
host). Without `--broker` the sim starts its own Mosquitto and `fedstream cloud run`, as the
demo does. It runs the rounds, then checks that every update was counted exactly once: the
cloud's rounds took as many updates as the edges sent, each edge got one receipt per update,
all accepted, and no outbox holds one at the end.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress
from fedstream.demo import Processes, wait_holding, wait_ready
from fedstream.edge_node.host_report import HostReport
from fedstream.operator import start_round
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.connection import Connection

FEDERATION = "sim"
MODEL = "digits-mlp"
MAX_EDGES = 10_000
# Edges per host process the automatic choice aims at (at least two hosts: two cores).
EDGES_PER_HOST = 250
STOP_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SimParams:
    """A simulated fleet and what to run on it.

    Args:
        edges: Logical edges, 1..10,000.
        hosts: Host processes they are shared out over; 0 picks one per 250 edges, at least
            two (never more than the edges).
        rounds: Sync rounds to run.
        samples: Rows each edge draws for its shard (digits, Dirichlet(alpha) label mix).
        alpha: Dirichlet concentration of the shards' label mixes.
        workdir: Where configs, logs, outboxes and reports go (wiped first).
        broker: A running broker with a cloud on it; None starts both here.
        federation: The federation on `broker`.
        round_request: What each round asks of the edges.
        ready_timeout_s: How long the fleet may take to come up.
    """

    edges: int = 100
    hosts: int = 0
    rounds: int = 3
    samples: int = 64
    alpha: float = 0.5
    workdir: Path = Path("sim-run")
    broker: Connection | None = None
    federation: str = FEDERATION
    round_request: RoundStart = field(
        default_factory=lambda: RoundStart(epochs=1, deadline_s=600.0))
    ready_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        rules = ((1 <= self.edges <= MAX_EDGES, f"edges must be 1..{MAX_EDGES}"),
                 (0 <= self.hosts <= self.edges, "hosts must be 0..edges"),
                 (1 <= self.rounds <= 1000, "rounds must be 1..1000"),
                 (1 <= self.samples <= 1 << 20, "samples must be 1..2**20"),
                 (self.alpha > 0, "alpha must be > 0"))
        for ok, rule in rules:
            if not ok:
                raise FedstreamError(Reason.BAD_CONFIG, f"sim: {rule}")

    @property
    def host_count(self) -> int:
        """The host processes the edges run in."""
        auto = max(2, math.ceil(self.edges / EDGES_PER_HOST))
        return min(self.edges, self.hosts or auto)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    """What a sim run measured.

    Args:
        rounds: Each round's result from the cloud (seconds, updates, bytes, accuracy...).
        hosts: Each host's counts (`HostReport`).
        startup_s: From starting the hosts to every edge online with the model.
    """

    rounds: list[Mapping[str, Any]]
    hosts: list[HostReport]
    startup_s: float

    def problems(self) -> list[str]:
        """Why the run did not count every update exactly once (empty: it did)."""
        counted = sum(int(r["updates"]) for r in self.rounds)
        sent = sum(h.sent for h in self.hosts)
        accepted = sum(h.accepted for h in self.hosts)
        checks = ((counted == sent, f"the cloud counted {counted} updates, the edges sent {sent}"),
                  (accepted == sent, f"{accepted} accepted receipts for {sent} updates"),
                  (sum(h.rejected for h in self.hosts) == 0, "updates were rejected"),
                  (sum(h.unanswered for h in self.hosts) == 0, "updates left without receipt"),
                  (sum(h.failed for h in self.hosts) == 0, "edges failed (see host logs)"))
        return [what for ok, what in checks if not ok]


def write_base_config(params: SimParams, broker: Connection) -> Path:
    """The TOML every simulated edge starts from (`edge_node/host.py` gives each its own id,
    seed, data directory and shard)."""
    path = params.workdir / "edge-base.toml"
    path.write_text(
        f'edge_id = "sim"\nfederation = "{params.federation}"\nmodel = "{MODEL}"\n'
        f'threads = 1\ndata_dir = "{params.workdir / "edges"}"\nstatus_every_s = 60\n\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nconnect_timeout_s = 120\n\n'
        '[log]\njson_lines = true\n\n[backend]\nname = "torch"\nprecision = "fp32"\n\n'
        f'[source]\nname = "digits"\n\n[source.params]\ndraw = {params.samples}\n'
        f"alpha = {params.alpha}\n")
    return path


def _cloud_config(params: SimParams, port: int) -> Path:
    path = params.workdir / "cloud.toml"
    path.write_text(
        f'federation = "{params.federation}"\nmodel = "{MODEL}"\nthreads = 1\n'
        f'data_dir = "{params.workdir / "cloud-data"}"\n\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\n\n[log]\njson_lines = true\n')
    return path


def host_argv(params: SimParams, base: Path, index: int) -> list[str]:
    """The command line of host `index`: its share of the edges, in order."""
    per = math.ceil(params.edges / params.host_count)
    first = index * per
    count = min(per, params.edges - first)
    return [sys.executable, "-m", "fedstream", "sim", "host", "--config", str(base),
            "--first", str(first), "--count", str(count), "--edges", str(params.edges),
            "--report", str(params.workdir / f"host-{index}.json")]


def run_sim(params: SimParams, *, out: TextIO,
            started: Callable[[Processes, Mosquitto | None], None] | None = None) -> SimResult:
    """Start what the run needs, come up, run the rounds, stop, and collect the reports.

    Args:
        params: The fleet and the rounds.
        out: Where progress goes.
        started: Called once every process is started (a benchmark samples them).

    Raises:
        FedstreamError: a process exited, the fleet did not come up, or a round failed.
    """
    shutil.rmtree(params.workdir, ignore_errors=True)
    params.workdir.mkdir(parents=True)
    if params.broker is not None:
        return _run_on(params, params.broker, None, out=out, started=started)
    with Mosquitto(BrokerParams(port=0, data_dir=params.workdir / "broker")) as broker:
        return _run_on(params, Connection(host=broker.host, port=broker.port), broker,
                       out=out, started=started)


def _run_on(params: SimParams, conn: Connection, broker: Mosquitto | None, *, out: TextIO,
            started: Callable[[Processes, Mosquitto | None], None] | None) -> SimResult:
    procs = Processes(params.workdir)
    base = write_base_config(params, conn)
    address = FleetAddress(conn=conn, federation=params.federation, model=MODEL,
                           timeout_s=60.0)
    try:
        if broker is not None:
            procs.spawn("cloud", "cloud", _cloud_config(params, broker.port))
        began = time.monotonic()
        for i in range(params.host_count):
            procs.spawn_command(f"host-{i}", host_argv(params, base, i))
        if started is not None:
            started(procs, broker)
        print(f"{params.edges} edges in {params.host_count} host processes, broker {conn} "
              f"(logs in {params.workdir}/)", file=out, flush=True)
        wait_ready(address, edges=params.edges, procs=procs,
                   timeout_s=params.ready_timeout_s, out=out)
        startup_s = time.monotonic() - began
        print(f"fleet ready in {startup_s:.1f} s", file=out, flush=True)
        rounds = [start_round(address, params.round_request, wait=True, out=out).result
                  for _ in range(params.rounds)]
        # Every edge holding the last version has taken its receipts (they come first).
        wait_holding(address, version=int(rounds[-1]["version"]), edges=params.edges,
                     timeout_s=params.ready_timeout_s)
        # Each host writes its report as it exits on SIGTERM.
        procs.stop(STOP_TIMEOUT_S, only=[n for n in procs.procs if n.startswith("host-")])
    finally:
        procs.stop(timeout_s=STOP_TIMEOUT_S)
    return SimResult(rounds=rounds, startup_s=startup_s, hosts=[
        HostReport(**json.loads((params.workdir / f"host-{i}.json").read_text()))
        for i in range(params.host_count)])


def print_summary(params: SimParams, result: SimResult, out: TextIO) -> int:
    """The rounds as a table and the exactly-once verdict; exit code 0 when it holds."""
    print(f"\n{'round':>5} {'seconds':>8} {'updates':>7} {'update MiB':>10} {'accuracy':>8}",
          file=out)
    for i, r in enumerate(result.rounds, 1):
        print(f"{i:>5} {r['seconds']:>8.2f} {r['updates']:>7} "
              f"{r['bytes_in'] / (1 << 20):>10.1f} {r['accuracy']:>8.4f}", file=out)
    sent = sum(h.sent for h in result.hosts)
    problems = result.problems()
    if problems:
        print(f"NOT exactly once: {'; '.join(problems)}", file=out)
        return 1
    print(f"{params.edges} edges, {len(result.rounds)} rounds: {sent} updates sent, each "
          f"counted exactly once by the cloud and answered with one receipt", file=out)
    return 0
