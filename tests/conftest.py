"""Shared fixtures: one real Mosquitto per test session, unique federation names per test."""

from __future__ import annotations

import importlib
import json
import re
import textwrap
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.shared.learning.models import ENTRY_POINTS

PLUGIN_PREFIX = "fedstream_test_plugin_"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port, ready on a connect probe."""
    data_dir: Path = tmp_path_factory.mktemp("mosquitto")
    with Mosquitto(BrokerParams(port=0, data_dir=data_dir)) as running:
        yield running


@pytest.fixture
def federation() -> str:
    """A federation name no other test uses, so retained messages never leak between tests."""
    return f"t{uuid.uuid4().hex[:10]}"


def _install_plugin(tmp_path: Path, name: str, source: str) -> None:
    """Install a real `fedstream.models` entry point `name` into `tmp_path`.

    Writes the module `fedstream_test_plugin_<name>` (the dedented `source`, which defines
    `build`) and its `<module>-0.1.dist-info/` with `METADATA` and `entry_points.txt`. The
    entry point is found once `tmp_path` is on `sys.path`.

    Args:
        tmp_path: A directory that is, or will be, on `sys.path`.
        name: The model-family name the entry point registers.
        source: Python source of the plug-in module.
    """
    module = PLUGIN_PREFIX + re.sub(r"\W", "_", name)
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINTS}]\n{name} = {module}:build\n")
    importlib.invalidate_caches()  # the path finders cache directory listings


@pytest.fixture(scope="session")
def install_plugin() -> Callable[[Path, str, str], None]:
    """Writes a real `fedstream.models` entry point into a directory (see `_install_plugin`)."""
    return _install_plugin


METRICS_WAIT_S = 60.0


def _metrics_port(log: Path) -> int:
    """The port a service logged as `metrics_started` (with `metrics.port = 0`, a free one)."""
    give_up = time.monotonic() + METRICS_WAIT_S
    while time.monotonic() < give_up:
        for line in log.read_text().splitlines():
            if line.startswith("{") and (event := json.loads(line))["event"] == \
                    "metrics_started":
                return int(event["port"])
        time.sleep(0.2)
    raise AssertionError(f"{log}: no metrics_started event")


def _scrape(log: Path) -> dict[str, float]:
    """The metrics of the service that writes `log`: sample name -> the sum of its values
    over every label set."""
    port = _metrics_port(log)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    sums: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] += sample.value
    return dict(sums)


@pytest.fixture(scope="session")
def scrape() -> Callable[[Path], dict[str, float]]:
    """Scrapes `/metrics` of a service process started with `FEDSTREAM_METRICS__PORT=0`,
    found by the port in its log (see `_scrape`)."""
    return _scrape

