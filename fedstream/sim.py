"""`fedstream sim`: a simulated fleet of N edges against a real broker and cloud, for load tests.

The N logical edges run in a few host processes (`edge_node/host.py`: each edge the real
daemon, with its own MQTT client, identity, outbox and data shard; training shared by the
host). Without `--broker` the sim starts its own Mosquitto and `fedstream cloud run`, as the
demo does. It runs the rounds, then checks that every update was counted exactly once: with its own
cloud, from the cloud's journal (each round accepted one update from every edge, none twice);
with another's, from the counts (the cloud's rounds took as many updates as the edges sent,
each answered with an accepted receipt); and in both, that no outbox holds an update at the
end, no edge failed and none trained a round twice. With `kill_host`, host 0 is SIGKILLed in
the first round and started again: its edges resume from their outboxes, and those whose
update was already counted do not train the round again (they keep what they trained for).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.demo import Processes, wait_holding, wait_ready
from fedstream.edge_node.host_report import HostReport, sim_edge_id
from fedstream.operator import start_round
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.protocol.commands import RoundReply, RoundStart
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import RoundState, RoundStatus

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
        kill_host: 0, or a share in (0, 1): once the first round has counted that share of
            the updates, host 0 is SIGKILLed and started again.
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
    kill_host: float = 0.0

    def __post_init__(self) -> None:
        rules = ((1 <= self.edges <= MAX_EDGES, f"edges must be 1..{MAX_EDGES}"),
                 (0 <= self.hosts <= self.edges, "hosts must be 0..edges"),
                 (1 <= self.rounds <= 1000, "rounds must be 1..1000"),
                 (1 <= self.samples <= 1 << 20, "samples must be 1..2**20"),
                 (self.alpha > 0, "alpha must be > 0"),
                 (0 <= self.kill_host < 1, "kill_host must be in [0, 1)"),
                 # A killed host's counts die with it: only the own cloud's journal can judge.
                 (not (self.kill_host and self.broker), "kill_host needs the sim's own cloud "
                                                        "(no --broker)"))
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
        hosts: Each host's counts (`HostReport`; a host started again counts from then).
        startup_s: From starting the hosts to every edge online with the model.
        edges: The fleet's edge ids.
        journal: Round id -> the edge id of every update the cloud's journal accepted in
            it; None when the cloud is not the sim's own.
    """

    rounds: list[Mapping[str, Any]]
    hosts: list[HostReport]
    startup_s: float
    edges: tuple[str, ...] = ()
    journal: Mapping[str, list[str]] | None = None

    def problems(self) -> list[str]:
        """Why the run did not count every update exactly once (empty: it did)."""
        checks = [*(self._journal_checks() if self.journal is not None
                    else self._count_checks()),
                  (sum(h.rejected for h in self.hosts) == 0, "updates were rejected"),
                  # Edges keep what they trained for: a second update of a round is a bug.
                  (sum(h.duplicates for h in self.hosts) == 0, "edges trained a round twice"),
                  (sum(h.unanswered for h in self.hosts) == 0, "updates left without receipt"),
                  (sum(h.failed for h in self.hosts) == 0, "edges failed (see host logs)")]
        return [what for ok, what in checks if not ok]

    def _journal_checks(self) -> list[tuple[bool, str]]:
        assert self.journal is not None
        checks = []
        for round_id, accepted in self.journal.items():
            twice = sorted(e for e, n in Counter(accepted).items() if n > 1)
            missing = sorted(set(self.edges) - set(accepted))
            checks += [(not twice, f"round {round_id} counted {twice[:5]} more than once"),
                       (not missing, f"round {round_id} has no update of {missing[:5]} "
                                     f"({len(missing)} edges)")]
        return checks

    def _count_checks(self) -> list[tuple[bool, str]]:
        counted = sum(int(r["updates"]) for r in self.rounds)
        sent = sum(h.sent - h.duplicates for h in self.hosts)
        accepted = sum(h.accepted for h in self.hosts)
        return [(counted == sent, f"the cloud counted {counted} updates, the edges sent {sent}"),
                (accepted == sent, f"{accepted} accepted receipts for {sent} updates")]


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
            started: Callable[[Processes, Mosquitto | None], None] | None = None,
            between_rounds: Callable[[int], None] | None = None) -> SimResult:
    """Start what the run needs, come up, run the rounds, stop, and collect the reports.

    Args:
        params: The fleet and the rounds.
        out: Where progress goes.
        started: Called once every process is started (a benchmark samples them).
        between_rounds: Called with i just before round i starts (0: the fleet is ready) and
            with `params.rounds` just after the last one ends (a benchmark reads clocks there).

    Raises:
        FedstreamError: a process exited, the fleet did not come up, or a round failed.
    """
    shutil.rmtree(params.workdir, ignore_errors=True)
    params.workdir.mkdir(parents=True)
    if params.broker is not None:
        return _run_on(params, params.broker, None, out=out, started=started,
                       between_rounds=between_rounds)
    with Mosquitto(BrokerParams(port=0, data_dir=params.workdir / "broker")) as broker:
        return _run_on(params, Connection(host=broker.host, port=broker.port), broker,
                       out=out, started=started, between_rounds=between_rounds)


def _run_on(params: SimParams, conn: Connection, broker: Mosquitto | None, *, out: TextIO,
            started: Callable[[Processes, Mosquitto | None], None] | None,
            between_rounds: Callable[[int], None] | None) -> SimResult:
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
        states: list[RoundState] = []
        for i in range(params.rounds):
            if between_rounds is not None:
                between_rounds(i)
            states.append(_round_killing_host_0(address, params, procs, host_argv(
                params, base, 0), out) if i == 0 and params.kill_host else start_round(
                address, params.round_request, wait=True, out=out))
        if between_rounds is not None:
            between_rounds(params.rounds)
        # Every edge holding the last version has taken its receipts (they come first).
        wait_holding(address, version=int(states[-1].result["version"]), edges=params.edges,
                     timeout_s=params.ready_timeout_s)
        # Each host writes its report as it exits on SIGTERM.
        procs.stop(STOP_TIMEOUT_S, only=[n for n in procs.procs if n.startswith("host-")])
    finally:
        procs.stop(timeout_s=STOP_TIMEOUT_S)
    return SimResult(
        rounds=[s.result for s in states], startup_s=startup_s,
        hosts=[_report(params.workdir, i) for i in range(params.host_count)],
        edges=tuple(sim_edge_id(i) for i in range(params.edges)),
        journal=None if broker is None else _accepted(params.workdir / "cloud-data", states))


def _report(workdir: Path, index: int) -> HostReport:
    """Host `index`'s counts, which it writes as it stops.

    Raises:
        FedstreamError: round_failed if it wrote none (it was killed, or crashed: its log says).
    """
    path = workdir / f"host-{index}.json"
    try:
        return HostReport(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise FedstreamError(Reason.ROUND_FAILED, f"host-{index} left no report at {path} "
                                                  f"({err}); see host-{index}.log") from err


def _round_killing_host_0(address: FleetAddress, params: SimParams, procs: Processes,
                          argv: list[str], out: TextIO) -> RoundState:
    """A round during which host 0 is SIGKILLed, once the cloud has counted `kill_host` of
    the updates, and started again at once (its log goes on in the same file)."""
    threshold = max(1, int(params.kill_host * params.edges))
    killed: list[int] = []

    def watch(state: RoundState) -> None:
        if not killed and not state.terminal and state.received >= threshold:
            procs.kill("host-0")
            procs.spawn_command("host-0", argv)
            killed.append(state.received)
            print(f"  host-0 SIGKILLed at {state.received} updates, started again", file=out,
                  flush=True)

    with FleetClient(address) as fleet:
        opened = fleet.command(params.round_request, RoundReply).round
        assert opened is not None
        final = fleet.wait_round(opened.round_id, on_change=watch)
    if final.status is not RoundStatus.PUBLISHED:
        raise FedstreamError(Reason.ROUND_FAILED, f"round {final.round_id}: {final.reason}")
    if not killed:
        raise FedstreamError(Reason.ROUND_FAILED, f"round {final.round_id} ended before "
                                                  f"{threshold} updates were counted")
    return final


def _accepted(cloud_data: Path, states: list[RoundState]) -> dict[str, list[str]]:
    """Each round's accepted updates by edge id, from the cloud's journal (after it stopped)."""
    from fedstream.cloud.store import CloudStore  # noqa: PLC0415 (torch, only here)

    store = CloudStore.open(cloud_data)
    try:
        return {s.round_id: [row.edge_id for row in store.journal.accepted(s.round_id)]
                for s in states}
    finally:
        store.close()


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
    how = ("by the cloud's journal: one update of every edge in every round"
           if result.journal is not None else "by the counts: the cloud's, and the receipts")
    if result.journal is not None:  # a host started again counts its sends from then on
        sent = sum(len(accepted) for accepted in result.journal.values())
    print(f"{params.edges} edges, {len(result.rounds)} rounds: {sent} updates, each "
          f"counted exactly once ({how})", file=out)
    return 0
