"""The example configs shipped in deploy/config load as documented."""

from __future__ import annotations

from pathlib import Path

from fedstream.cloud.config import CloudConfig
from fedstream.edge_node.config import EdgeConfig
from fedstream.shared.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "config"


def test_edge_example_loads() -> None:
    """deploy/config/edge.example.toml is a valid edge config naming a CSV source."""
    # Execute
    cfg = load_config(EdgeConfig, EXAMPLES / "edge.example.toml")

    # Assert
    assert cfg.edge_id == "gateway-01"
    assert cfg.source.name == "csv" and cfg.source.params["label_column"] == "label"


def test_cloud_example_loads() -> None:
    """deploy/config/cloud.example.toml is a valid cloud config equal to the defaults."""
    # Execute
    cfg = load_config(CloudConfig, EXAMPLES / "cloud.example.toml")

    # Assert
    assert cfg == CloudConfig()
