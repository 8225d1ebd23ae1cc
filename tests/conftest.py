"""Shared fixtures: one real Mosquitto per test session, unique federation names per test, and
what a new subscriber would be sent as retained."""

from __future__ import annotations

import dataclasses
import importlib
import json
import queue
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
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topic

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


def _retained(conn: Connection, topic: Topic) -> list[Inbound]:
    """The retained messages a new subscriber to `topic` on `conn`'s first node (no
    failover) is sent. Fenced: a message to a topic only it subscribes to, published once its
    subscriptions are acknowledged, queues behind whatever retained the broker sends it."""
    got: queue.Queue[Inbound] = queue.Queue()
    fence = Topic(f"fence/{uuid.uuid4().hex}")
    probe = MqttClient(client_id=f"probe-{uuid.uuid4().hex[:8]}",
                       conn=dataclasses.replace(conn, failover=()), on_message=got.put,
                       subscriptions=(topic, fence))
    probe.connect(10)
    try:
        probe.publish(fence, b"fence")
        messages = []
        while (msg := got.get(timeout=10)).topic != str(fence):
            messages.append(msg)
        return messages
    finally:
        probe.close()


@pytest.fixture(scope="session")
def retained() -> Callable[[Connection, Topic], list[Inbound]]:
    """`retained(conn, topic)`: what a new subscriber would be sent (see `_retained`)."""
    return _retained
