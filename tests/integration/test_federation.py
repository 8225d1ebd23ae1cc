"""End to end: a real broker, the cloud and three edge daemons as separate OS processes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress
from fedstream.cloud.registry_store import ModelFiles
from fedstream.demo import Processes, wait_ready, write_configs
from fedstream.operator import fleet_status, model_command, show_status, start_round
from fedstream.shared.learning.model import spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.commands import ModelListReply, ModelVersionReply, RoundStart

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def test_two_rounds_advance_the_model_and_count_every_edge(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """Two rounds over cloud + 3 edge processes (one reading a CSV file), the second with the
    int8 codec, publish v1 and v2 with all 3 updates each, move ~4x fewer bytes in int8, and
    end more accurate than the initial model."""
    # Prepare
    cloud_cfg, edge_cfgs = write_configs(tmp_path, port=broker.port, federation=federation,
                                         edges=3, dirichlet_alpha=0.5)
    _use_csv_source(edge_cfgs[2], tmp_path / "edge-2.csv", partition=2)
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model="digits-mlp", timeout_s=10.0)
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        for i, path in enumerate(edge_cfgs):
            procs.spawn(f"edge-{i}", "edge", path)
        wait_ready(address, edges=3, procs=procs)
        initial = fleet_status(address)

        # Execute
        results = [start_round(address, request, wait=True, out=io.StringIO())
                   for request in (RoundStart(epochs=2), RoundStart(epochs=2, codec="int8"))]
        printed = io.StringIO()
        after = show_status(address, out=printed)
        rolled = model_command(address, action="rollback", version=1, out=io.StringIO())
        listing = io.StringIO()
        versions = model_command(address, action="list", version=None, out=listing)
    finally:
        procs.stop()

    # Assert
    assert initial.model_version == 0
    assert [r.status for r in results] == ["published", "published"]
    assert [r.result["version"] for r in results] == [1, 2]
    assert [r.received for r in results] == [3, 3]
    assert [r.result["updates"] for r in results] == [3, 3]
    assert sorted(results[0].selection) == ["edge-0", "edge-1", "edge-2"]
    assert results[-1].result["accuracy"] > initial.model_metrics["accuracy"] + 0.2
    assert [r.codec for r in results] == ["f32", "int8"]
    assert 3.5 < int(results[0].result["bytes_in"]) / int(results[1].result["bytes_in"]) < 4.1
    assert after.model_version == 2
    assert {e.edge_id for e in after.edges if e.online} == {"edge-0", "edge-1", "edge-2"}
    assert all(e.backend.get("backend") in ("ipex", "torch") for e in after.edges)
    assert "\nedges       3 online of 3\n" in printed.getvalue()
    assert all(p.returncode == 0 for p in procs.procs.values())
    assert isinstance(rolled, ModelVersionReply) and rolled.model_version == 3
    assert isinstance(versions, ModelListReply)
    assert [(v.version, v.parent) for v in versions.versions] == [(0, None), (1, 0), (2, 1),
                                                                  (3, 1)]
    assert versions.versions[3].lineage["rollback_of"] == 1
    served = [line for line in listing.getvalue().splitlines() if line.startswith("*")]
    assert len(served) == 1 and served[0].split()[1:3] == ["v3", "v1"], listing.getvalue()
    assert served[0].endswith("rollback of v1")
    files = ModelFiles(tmp_path / "cloud-data" / "models")
    spec = spec_of(build_model(Architecture.mlp((64, 100, 100, 10))))
    assert all(torch.equal(a, b) for a, b in zip(files.load("v1.safetensors", spec)[0],
                                                 files.load("v3.safetensors", spec)[0],
                                                 strict=True))


def _use_csv_source(config: Path, csv_path: Path, *, partition: int) -> None:
    """Point an edge at a CSV file holding the same digits partition (the user-data path)."""
    data = SOURCES.build("digits", partitions=3, partition=partition).load()
    header = ",".join([*(f"px{i}" for i in range(data.features.shape[1])), "label"])
    rows = [",".join([*(f"{v:.6g}" for v in x), str(int(y))])
            for x, y in zip(data.features, data.labels, strict=True)]
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    text = config.read_text().split("[source]")[0]
    config.write_text(text + f'[source]\nname = "csv"\n\n[source.params]\n'
                             f'path = "{csv_path}"\nlabel_column = "label"\nnum_classes = 10\n')


def test_demo_command_runs_rounds_and_exits_zero(tmp_path: Path) -> None:
    """`fedstream demo` (the README's first command, at a smaller size) prints its table and
    exits 0."""
    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "fedstream", "demo", "--rounds", "1", "--edges", "2",
         "--workdir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240, check=False)

    # Assert
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round version accuracy" in done.stdout
    assert "published v1" in done.stdout
