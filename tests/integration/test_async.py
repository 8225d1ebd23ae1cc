"""End to end async (FedBuff) session: a real broker, the cloud and three edge processes, driven
by the `fedstream round start --async` and `fedstream round stop` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress
from fedstream.cloud.store import CloudStore
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import fleet_status

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

EDGES = ("edge-0", "edge-1", "edge-2")


def test_async_session_publishes_versions_until_stopped(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """One `round start --async --buffer 3 --max-staleness 1 --wait` over 3 edges publishes
    v1, v2, ... with no further round start, printing each; `round stop` ends it published.
    Every accepted update was at most 1 version stale when folded in, none is left pending,
    every edge contributed, and no edge sent two updates on one version."""
    # Prepare
    cloud_cfg, edge_cfgs = write_configs(tmp_path, port=broker.port, federation=federation,
                                         edges=3, dirichlet_alpha=0.5)
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=10.0)
    cli = [sys.executable, "-m", "fedstream", "round"]
    client = ("--config", str(cloud_cfg), "--timeout", "10")
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        for i, path in enumerate(edge_cfgs):
            procs.spawn(f"edge-{i}", "edge", path)
        wait_ready(address, edges=3, procs=procs)

        # Execute
        follower = subprocess.Popen(
            [*cli, "start", "--async", "--buffer", "3", "--max-staleness", "1", "--epochs",
             "1", "--deadline", "120", "--wait", *client],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        give_up = time.monotonic() + 60
        while (fleet_status(address).model_version or 0) < 2:
            procs.check_alive()
            assert follower.poll() is None, follower.communicate()
            assert time.monotonic() < give_up, "the session did not publish v2 in time"
            time.sleep(0.25)
        stopped = subprocess.run([*cli, "stop", *client], capture_output=True, text=True,
                                 timeout=60, check=False)
        printed, errors = follower.communicate(timeout=60)
        after = fleet_status(address)
    finally:
        procs.stop()

    # Assert
    assert follower.returncode == 0, errors[-3000:]
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "(async, buffer 3, max staleness 1" in printed
    assert "published v1:" in printed and "published v2:" in printed
    assert " ended: " in printed and " published: " in stopped.stdout
    journal = CloudStore.open(tmp_path / "cloud-data").journal
    session = journal.last_round()
    assert session is not None and (session.mode, session.status) == ("async", "published")
    assert after.round == session and after.model_version == session.base_version
    versions = journal.versions()
    assert len(versions) >= 3 and int(session.result["versions"]) == len(versions) - 1
    assert {v.round_id for v in versions[1:]} == {session.round_id}
    rows = journal.accepted(session.round_id)
    assert journal.pending(session.round_id) == []
    assert all(r.applied is not None and 0 <= r.applied - 1 - r.base <= 1 for r in rows)
    per_version = Counter(r.applied for r in rows)
    assert all(per_version[v.version] >= 3 for v in versions[1:-1])  # the last may be a flush
    assert {r.edge_id for r in rows} == set(EDGES)
    assert session.received == len(rows) == session.result["updates"]
    for i, edge in enumerate(EDGES):
        sent = [e["base"] for e in _events(tmp_path / f"edge-{i}.log")
                if e["event"] == "update_sent"]
        assert sent == sorted(set(sent)), f"{edge} trained twice on a version: {sent}"


def _events(log: Path) -> list[dict[str, object]]:
    """The JSON log lines of a service (IPEX and torch print a few plain lines too)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
