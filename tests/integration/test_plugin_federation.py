"""A user's own model joins through the `fedstream.models` entry-point group and federates
end to end: cloud and edge processes find the plug-in, build it from the manifest and train
it through the backend layer."""

from __future__ import annotations

import io
import queue
from collections.abc import Callable
from pathlib import Path

import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress
from fedstream.demo import Processes, wait_ready, write_configs
from fedstream.operator import fleet_status, start_round
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.messages import Manifest
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

PLUGIN = """
    import math
    from torch import nn

    def build(*, input_shape, outputs, width=16):
        return nn.Sequential(nn.Linear(math.prod(input_shape), width), nn.Tanh(),
                             nn.Linear(width, outputs))
"""
TABLE = """
[architecture]
family = "tanh_mlp"
input_shape = [64]
outputs = 10
params = {width = 32}
"""


def test_a_plugin_model_federates_end_to_end(
    broker: Mosquitto, federation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    install_plugin: Callable[[Path, str, str], None],
) -> None:
    """A round over cloud + 2 edge processes on a plug-in family publishes v1 with both
    updates, more accurate than v0, and the manifest names the plug-in's architecture."""
    # Prepare
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    install_plugin(plugins, "tanh_mlp", PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(plugins))  # what the child processes import from
    cloud_cfg, edge_cfgs = write_configs(tmp_path, port=broker.port, federation=federation,
                                         edges=2, dirichlet_alpha=5.0, cloud_tables=TABLE)
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model="digits-mlp", timeout_s=10.0)
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        for i, path in enumerate(edge_cfgs):
            procs.spawn(f"edge-{i}", "edge", path)
        wait_ready(address, edges=2, procs=procs)
        initial = float(fleet_status(address).model_metrics["accuracy"])

        # Execute
        final = start_round(address, RoundStart(epochs=3), wait=True, out=io.StringIO())
        manifest = _retained_manifest(broker, federation)
    finally:
        procs.stop()

    # Assert
    assert final.status == "published" and final.result["updates"] == 2
    assert float(final.result["accuracy"]) > initial + 0.3
    assert manifest.version == 1
    assert manifest.arch.family == "tanh_mlp" and dict(manifest.arch.params) == {"width": 32}


def _retained_manifest(broker: Mosquitto, federation: str) -> Manifest:
    got: queue.Queue[Inbound] = queue.Queue()
    topics = Topics(federation)
    spy = MqttClient(client_id=f"{federation}-manifest-spy",
                     conn=FleetAddress.local(host=broker.host, port=broker.port,
                                             federation=federation, model="digits-mlp").conn,
                     on_message=got.put, subscriptions=(topics.manifest("digits-mlp"),))
    spy.connect(10)
    try:
        return wire.expect(got.get(timeout=10).payload, Manifest)
    finally:
        spy.close()
