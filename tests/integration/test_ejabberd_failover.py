"""End to end on a real two-node ejabberd cluster: three edge processes on node 0 (node 1 their
failover), the cloud on node 1 (node 0 its failover), both logging in with the cluster's
username and a password file; one round, then node 0 SIGKILLed mid-round.

Start order matters, because ejabberd 23.01 does not replicate retained messages between nodes
(tests/broker/test_ejabberd_cluster.py): a node serves a new subscription only what was
retained through that node. So the edges start first and the cloud only once every edge has
logged `edge_started` (connected and subscribed on node 0):
- the cloud's first model (v0, retained, through node 1) then reaches the edges live; an edge
  subscribing on node 0 after it was published would never get it (the cloud publishes each
  version once), and would never be ready: the last test shows node 0 serving no model topic;
- the edges' first retained status (through node 0, before the cloud subscribed on node 1)
  never reaches the cloud, but each edge publishes its status again on taking v0, live.
After the kill the edges are on node 1, which serves them what the cloud retained there (the
round state, the model): they resubscribe in a session that is not present (theirs died with
node 0), probe their outbox at once, and the cloud's session on node 1 never noticed a thing.

Edge 2 trains on the whole digits train split (3x the others' share, at SLOW_EPOCHS) so that
it is still training when the first update of round 2 is accepted and node 0 is killed: its
update then travels through node 1 only. The kill comes many seconds after every client's
last connect to node 0 (ejabberd orders two registrations of one client id within one
wall-clock second badly)."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedstream.broker.ejabberd import EjabberdCluster, EjabberdParams
from fedstream.client import FleetAddress, FleetClient
from fedstream.cloud.store import CloudStore
from fedstream.demo import MODEL, Processes, wait_holding, wait_ready, write_configs
from fedstream.operator import fleet_status, start_round
from fedstream.shared.protocol.commands import RoundReply, RoundStart, StatusReply
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import RoundState
from fedstream.shared.protocol.mqtt import Inbound
from fedstream.shared.protocol.topics import Topic, Topics

pytestmark = [
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.skipif(shutil.which("ejabberdctl") is None
                       and not Path("/usr/sbin/ejabberdctl").exists(),
                       reason="ejabberd is not installed (apt-get install -y ejabberd)"),
]

EDGES = ("edge-0", "edge-1", "edge-2")
EDGE_EXTRA = ('backend.name = "torch"\nbackend.precision = "fp32"\nresend_after_s = 3.0\n'
              "status_every_s = 1.0\n")
# The cloud publishes the model again for an online edge still lacking it this long after it
# went out (cloud/redelivery.py): how edge 0, restarted on node 0 after round 1, gets v1.
CLOUD_EXTRA = "redeliver_after_s = 2.0"
SLOW_EPOCHS = 60  # round 2: edge 2 trains ~3x longer than the first update takes to land
WAIT_S = 60.0


@dataclass
class Run:
    """What the fixture's two rounds left behind, for the tests to check."""

    nodes: tuple[str, ...]  # HOST:PORT of node 0 and node 1
    first: RoundState
    second: RoundState
    killed_at: RoundState
    after: StatusReply
    accepted: dict[str, list[str]]  # round id -> edge ids the journal accepted
    model_topics: str  # the federation's model topic prefix
    retained_node0: list[str]  # topics a new model subscriber on node 0 got after round 1
    retained_node1: list[str]  # ... on node 1, after round 2
    logs: dict[str, list[dict[str, object]]]  # process name -> its JSON events


def _events(log: Path) -> list[dict[str, object]]:
    """The JSON log lines of a service (IPEX and torch print a few plain lines too)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _wait_logged(procs: Processes, name: str, event: str) -> None:
    """Until process `name` has logged `event` (an event, polled in its log; no fixed sleep)."""
    give_up = time.monotonic() + WAIT_S
    while not any(e["event"] == event for e in _events(procs.workdir / f"{name}.log")):
        procs.check_alive()
        assert time.monotonic() < give_up, f"{name} did not log {event}"
        time.sleep(0.1)


def _broker_table(cluster: EjabberdCluster, node: int, password_file: Path) -> str:
    """The `[broker]` table of a service on `node`, the other node as failover."""
    conn = cluster.connection(node)
    failover = ", ".join(f'"{host}:{port}"' for host, port in conn.failover)
    return (f'[broker]\nhost = "{conn.host}"\nport = {conn.port}\nfailover = [{failover}]\n'
            f'username = "{conn.username}"\npassword_file = "{password_file}"\n')


def _point_at(config: Path, table: str) -> None:
    """Replace the `[broker]` table `write_configs` wrote (host and port only)."""
    text = config.read_text()
    config.write_text(re.sub(r"\[broker\]\n(?:[^\[\n].*\n)*", table, text, count=1))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory,
        retained: Callable[[Connection, Topic], list[Inbound]]) -> Iterator[Run]:
    """Cluster, edges on node 0, cloud on node 1; round 1; round 2 with node 0 killed once
    its first update is accepted; then the edges holding v2; everything stopped."""
    work = tmp_path_factory.mktemp("ejabberd-fleet")
    federation = f"t{uuid.uuid4().hex[:10]}"
    params = EjabberdParams(work_dir=work / "cluster")
    with EjabberdCluster(params) as cluster:
        password_file = work / "mqtt-password"
        password_file.write_text(params.password + "\n")
        password_file.chmod(0o600)
        cloud_cfg, edge_cfgs = write_configs(work, port=cluster.nodes[0].mqtt_port,
                                             federation=federation, edges=len(EDGES),
                                             dirichlet_alpha=0.5, edge_extra=EDGE_EXTRA,
                                             cloud_extra=CLOUD_EXTRA)
        _point_at(cloud_cfg, _broker_table(cluster, 1, password_file))
        for path in edge_cfgs:
            _point_at(path, _broker_table(cluster, 0, password_file))
        slow = edge_cfgs[2].read_text().replace("partitions = 3\npartition = 2\n",
                                                "partitions = 1\npartition = 0\n")
        edge_cfgs[2].write_text(slow)
        address = FleetAddress(conn=cluster.connection(1), federation=federation, model=MODEL,
                               timeout_s=10.0)
        procs = Processes(work)
        try:
            for name, path in zip(EDGES, edge_cfgs, strict=True):
                procs.spawn(name, "edge", path)
            for name in EDGES:
                _wait_logged(procs, name, "edge_started")
            procs.spawn("cloud", "cloud", cloud_cfg)
            wait_ready(address, edges=len(EDGES), procs=procs, timeout_s=WAIT_S)

            first = start_round(address, RoundStart(epochs=1), wait=True, out=io.StringIO())
            models = Topics(federation).model_all(MODEL)
            on_node0 = [m.topic for m in retained(cluster.connection(0), models)]
            # Edge 0 restarts on node 0, which retains no model: the cloud publishes v1 again.
            procs.kill("edge-0")
            procs.spawn("edge-0", "edge", edge_cfgs[0])
            wait_holding(address, version=1, edges=len(EDGES), timeout_s=WAIT_S)
            killed: list[RoundState] = []

            def kill_once(state: RoundState) -> None:
                if state.received >= 1 and not killed:
                    cluster.kill(0)
                    killed.append(state)

            with FleetClient(address) as fleet:
                opened = fleet.command(RoundStart(epochs=SLOW_EPOCHS), RoundReply).round
                assert opened is not None
                second = fleet.wait_round(opened.round_id, on_change=kill_once, grace_s=30)
            wait_holding(address, version=2, edges=len(EDGES), timeout_s=WAIT_S)
            after = fleet_status(address)
            on_node1 = [m.topic for m in retained(cluster.connection(1), models)]
        finally:
            procs.stop()
        nodes = tuple(f"{n.host}:{n.mqtt_port}" for n in cluster.nodes)
    store = CloudStore.open(work / "cloud-data")
    accepted = {r.round_id: sorted(row.edge_id for row in store.journal.accepted(r.round_id))
                for r in (first, second)}
    store.close()
    yield Run(nodes=nodes, first=first, second=second, killed_at=killed[0], after=after,
              accepted=accepted,
              model_topics=str(models).removesuffix("#"), retained_node0=on_node0,
              retained_node1=on_node1,
              logs={name: _events(work / f"{name}.log") for name in ("cloud", *EDGES)})


def _of(events: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    """The events called `name`, in order."""
    return [e for e in events if e["event"] == name]


def test_an_edge_restarted_on_the_other_node_is_sent_the_model_again(run: Run) -> None:
    """Edge 0, restarted on node 0 after round 1 (v1 retained only on node 1), reports no
    model; the cloud publishes v1 again (`model_redelivered`) and edge 0 takes it."""
    # Prepare
    again = [(e["edge_id"], e["version"]) for e in _of(run.logs["cloud"], "model_redelivered")]
    taken = [e["version"] for e in _of(run.logs["edge-0"], "model_received")]

    # Assert
    assert again and set(again) == {("edge-0", 1)}
    assert taken[-2:] == [1, 2]


def test_round_across_nodes_counts_every_edge(run: Run) -> None:
    """Round 1, edges on node 0 and cloud and operator on node 1, publishes v1 with all three
    updates."""
    # Assert
    assert run.first.status == "published"
    assert run.first.result["version"] == 1
    assert run.first.received == 3
    assert run.accepted[run.first.round_id] == list(EDGES)


def test_edges_fail_over_to_node_1_and_the_cloud_stays(run: Run) -> None:
    """Each edge logs one `broker_failover` from node 0 to node 1; the cloud, on node 1, none."""
    # Assert
    for name in EDGES:
        moves = [(e["lost"], e["to"]) for e in _of(run.logs[name], "broker_failover")]
        assert moves == [run.nodes], name
    assert _of(run.logs["cloud"], "broker_failover") == []
    assert [e for e in run.logs["cloud"] if e["level"] in ("warning", "error")] == []
    for name in EDGES:
        assert [e["event"] for e in run.logs[name] if e["level"] in ("warning", "error")] == [
            "broker_disconnected"], name


def test_round_with_a_node_killed_counts_each_update_once(run: Run) -> None:
    """Node 0 killed after round 2's first accepted update: the round publishes v2 with one
    update per edge, as does round 1 (`update_accepted` once per edge per round), and edge 2's
    update (3x the data) went out only after its failover."""
    # Prepare
    accepted = Counter((e["round_id"], e["edge_id"])
                       for e in _of(run.logs["cloud"], "update_accepted"))
    slow = [e["event"] for e in run.logs["edge-2"]
            if e["event"] in ("broker_failover", "update_sent")]

    # Assert
    assert 1 <= run.killed_at.received < 3
    assert run.second.status == "published"
    assert run.second.result["version"] == 2
    assert run.second.received == 3
    assert run.accepted[run.second.round_id] == list(EDGES)
    assert accepted == {(r.round_id, e): 1 for r in (run.first, run.second) for e in EDGES}
    assert slow == ["update_sent", "broker_failover", "update_sent"]


def test_new_model_reaches_every_edge_through_node_1(run: Run) -> None:
    """After the kill, every edge (now on node 1) holds v2 and is online in the cloud's view."""
    # Assert
    assert run.after.model_version == 2
    assert {e.edge_id for e in run.after.edges if e.online and e.version == 2} == set(EDGES)


def test_retained_model_is_served_only_by_the_node_it_was_published_through(run: Run) -> None:
    """A new subscriber to the model topics gets nothing on node 0 (the cloud publishes through
    node 1: why the edges subscribe first) and, on node 1 after round 2, v2's manifest and
    chunks only (v0's and v1's were cleared)."""
    # Assert
    assert run.retained_node0 == []
    assert sorted(t.removeprefix(run.model_topics) for t in run.retained_node1) == [
        "manifest", "v/2/0", "v/2/1"]
