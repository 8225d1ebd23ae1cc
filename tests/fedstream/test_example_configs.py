"""The example configs and systemd units shipped in deploy/ load as documented and agree."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from fedstream.cloud.config import CloudConfig
from fedstream.edge_node.config import EdgeConfig
from fedstream.shared.config import MetricsConfig, load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLES = DEPLOY / "config"


def test_edge_example_loads() -> None:
    """deploy/config/edge.example.toml is a valid edge config naming a CSV source."""
    # Execute
    cfg = load_config(EdgeConfig, EXAMPLES / "edge.example.toml")

    # Assert
    assert cfg.edge_id == "gateway-01"
    assert cfg.source.name == "csv" and cfg.source.params["label_column"] == "label"


def test_cloud_example_loads() -> None:
    """deploy/config/cloud.example.toml is a valid cloud config equal to the defaults but for
    the metrics endpoint it turns on (the shipped port)."""
    # Execute
    cfg = load_config(CloudConfig, EXAMPLES / "cloud.example.toml")

    # Assert
    assert cfg == CloudConfig(metrics=MetricsConfig(port=9610))


@pytest.mark.parametrize(("unit", "cfg"), [("fedstream-cloud", CloudConfig),
                                          ("fedstream-edge", EdgeConfig)])
def test_unit_state_directory_is_the_default_data_dir(
    monkeypatch: pytest.MonkeyPatch, unit: str, cfg: type[CloudConfig | EdgeConfig]
) -> None:
    """Each unit's StateDirectory= is the directory its service defaults to outside systemd."""
    # Prepare
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(DEPLOY / "systemd" / f"{unit}.service")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)

    # Execute
    default = cfg.model_fields["data_dir"].get_default(call_default_factory=True)

    # Assert
    assert parser["Service"]["StateDirectory"] == unit
    assert default == Path("/var/lib") / unit


def test_edge_sensors_example_loads() -> None:
    """deploy/config/edge-sensors.example.toml is a valid edge config with three channels on
    the gateway's own broker and labels from a label topic, shaped for a [3 x 36] model."""
    # Execute
    cfg = load_config(EdgeConfig, EXAMPLES / "edge-sensors.example.toml")

    # Assert
    assert cfg.sensors is not None and cfg.sensors.broker is not None
    assert [c.name for c in cfg.sensors.channels] == ["temperature", "humidity", "power"]
    io = cfg.sensors.model_io()
    assert (io.input_shape, str(io.task), io.outputs) == ((3, 36), "classification", 2)
