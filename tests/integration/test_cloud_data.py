"""The data topic through a real cloud process: good batches are stored, bad ones are refused
with a counted reason, and the service keeps serving."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress
from fedstream.cloud.windows import EvalWindows
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import fleet_status
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import StatusReply
from fedstream.shared.protocol.data import DataBatch
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def test_data_topic_stores_good_batches_and_counts_bad_ones(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """Two good batches and three bad ones (wrong width, NaN, garbage) on the data topic: the
    good rows are in the cloud's evaluation windows, the bad ones show in its rejection counters,
    and `status` still answers."""
    # Prepare
    cloud_cfg, _ = write_configs(tmp_path, port=broker.port, federation=federation, edges=0,
                                 dirichlet_alpha=0.5,
                                 cloud_tables="[continual]\nenabled = true\nwindow_s = 1e9\n")
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=10.0)
    rng = np.random.default_rng(0)
    good = [DataBatch.of(rng.random((n, 64)), rng.integers(0, 10, n)) for n in (5, 7)]
    bad = [wire.pack(DataBatch.of(np.zeros((2, 3)), [0, 1])),
           wire.pack(DataBatch.of(np.full((1, 64), np.nan), [0])), b"\x00garbage"]
    producer = MqttClient(client_id=f"{federation}-producer", conn=address.conn)
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        wait_ready(address, edges=0, procs=procs)
        producer.connect(10)

        # Execute
        topic = Topics(federation).data(MODEL)
        producer.publish_many((topic, f) for f in [wire.pack(good[0]), *bad,
                                                   wire.pack(good[1])])
        status = _status_after(address, rejected=3)
    finally:
        producer.close()
        procs.stop()

    # Assert
    assert status.rejections == {"spec_mismatch": 1, "non_finite": 1, "not_msgpack": 1}
    windows = EvalWindows(tmp_path / "cloud-data" / "windows.db", window_s=1e9,
                          max_rows_per_window=2000)
    (name,) = windows.names()
    x, y = windows.get(name)
    assert len(y) == 12
    assert np.array_equal(x[:5], np.frombuffer(good[0].features, "<f4").reshape(5, 64))


def _status_after(address: FleetAddress, *, rejected: int) -> StatusReply:
    """The cloud's status once it has counted `rejected` rejections. Every frame was
    acknowledged by the broker before the first status request was sent, and the cloud handles
    its inbox in order, so the last good batch is stored by then too."""
    give_up = time.monotonic() + 30
    while True:
        status = fleet_status(address)
        if sum(int(v) for v in status.rejections.values()) >= rejected or \
                time.monotonic() > give_up:
            return status
        time.sleep(0.1)
