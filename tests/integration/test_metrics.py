"""Prometheus metrics scraped from a real fleet (a cloud serving inference and two edges, as
processes): every metric the shipped Grafana dashboard draws is served, and its counters move
over a round, a bad frame and an inference request."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import start_round
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

DASHBOARD = Path(__file__).parents[2] / "deploy" / "monitoring" / "grafana-dashboard.json"
SUFFIXES = ("_bucket", "_sum", "_count", "_total")
MOVING = ("_count", "_total")
# Metrics that only sensor edges serve (tests/integration/test_sensor_federation.py scrapes
# them) and counters that only move under faults (test_resume.py checks re-sends).
SENSOR_ONLY = re.compile(r"^fedstream_sensor_")
FAULTS_ONLY = {"fedstream_edge_resent_chunks_total"}


def dashboard_metrics() -> set[str]:
    """Every metric name a panel's query names."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {name for p in panels for t in p["targets"]
            for name in re.findall(r"\bfedstream_[a-z0-9_]+", t["expr"])}


def test_every_dashboard_metric_is_served_and_its_counters_move(
    broker: Mosquitto, federation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    scrape: Callable[[Path], dict[str, float]],
) -> None:
    """Scraped before and after one round, one garbage frame and one inference request:
    each metric of the dashboard is served by the cloud or an edge; each counter and
    histogram of them grew; the gauges say version 1 and two edges online."""
    # Prepare
    monkeypatch.setenv("FEDSTREAM_METRICS__PORT", "0")  # every service picks a free port
    cloud_cfg, edge_cfgs = write_configs(
        tmp_path, port=broker.port, federation=federation, edges=2, dirichlet_alpha=5.0,
        cloud_tables="[inference]\nenabled = true\nhttp_port = 0\n")
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=10.0)
    wanted = dashboard_metrics()
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        for i, path in enumerate(edge_cfgs):
            procs.spawn(f"edge-{i}", "edge", path)
        wait_ready(address, edges=2, procs=procs)
        logs = [tmp_path / f"{name}.log" for name in ("cloud", "edge-0", "edge-1")]
        before = [scrape(log) for log in logs]

        # Execute
        garbage = MqttClient(client_id=f"{federation}-garbage",
                             conn=Connection(host=broker.host, port=broker.port))
        garbage.connect(10)
        garbage.publish(Topics(federation).update(MODEL, "edge-0"), b"\xc1 not msgpack")
        garbage.close()
        final = start_round(address, RoundStart(epochs=1), wait=True, out=io.StringIO())
        with FleetClient(address) as fleet:
            fleet.infer(np.zeros((2, 64), dtype=np.float32))
        after = [scrape(log) for log in logs]
    finally:
        procs.stop()

    # Assert
    assert final.status == "published"
    served = set().union(*after)
    missing = {m for m in wanted if not SENSOR_ONLY.match(m) and not _served(m, served)}
    assert missing == set()
    # A histogram moves by its count (a sum of zeros, staleness in a sync round, stays 0).
    still = {name for name in served if name.startswith("fedstream_")
             and name.endswith(MOVING) and _base(name) + "_total" not in FAULTS_ONLY
             and _base(name) in {_base(m) for m in wanted}
             and sum(s.get(name, 0.0) for s in after) <= sum(b.get(name, 0.0) for b in before)}
    assert still == set()
    cloud, *edges = after
    assert cloud["fedstream_model_version"] == 1 and cloud["fedstream_edges_online"] == 2
    assert [e["fedstream_edge_model_version"] for e in edges] == [1, 1]
    assert [e["fedstream_edge_outbox_updates"] for e in edges] == [0, 0]


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _served(metric: str, names: set[str]) -> bool:
    """A dashboard name (a sample name such as `x_bucket` or `x_total`, or a gauge) is
    served when that sample, or the family it belongs to, is in the scrape."""
    return metric in names or any(_base(n) == _base(metric) for n in names)
