"""End to end on live sensor streams: replays publish BasicMotions readings on a gateway
broker, three edge processes store and window them and federate a 1-D CNN through the cloud
(its continual pipeline on); a spy on the federation broker sees no reading or window."""

from __future__ import annotations

import io
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstream.demo_sensors import (
    FEDERATION,
    WINDOW_PARAMS,
    SensorDemoParams,
    SensorFleet,
    print_sensor_table,
)
from fedstream.operator import fleet_status, show_edges
from fedstream.shared.learning.metrics import ACCURACY
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import ROOT, Topic

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]
EDGES = 3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SensorFleet]:
    """The running sensor demo: brokers, cloud, three edges and their replays, each service
    serving its metrics on a free port."""
    params = SensorDemoParams(rounds=2, edges=EDGES, workdir=tmp_path_factory.mktemp("sensors"),
                              speed=20.0, min_spans=8)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEDSTREAM_METRICS__PORT", "0")
        with SensorFleet.running(params, out=io.StringIO()) as running:
            yield running


def _spy(fleet: SensorFleet, got: queue.Queue[Inbound]) -> MqttClient:
    conn = Connection(host=fleet.federation.host, port=fleet.federation.port)
    spy = MqttClient(client_id="sensor-test-spy", conn=conn, on_message=got.put,
                     subscriptions=(Topic("#"),))
    spy.connect(10)
    return spy


def test_streamed_readings_federate_a_cnn_and_never_reach_the_federation_broker(
    fleet: SensorFleet,
) -> None:
    """Two rounds on streamed windows lift test accuracy well above the initial model's, each
    edge trains on windows it stored, and everything published on the federation broker
    during them is one of our frames under the federation's prefix: no SenML pack, no
    reading's value, no window's bytes."""
    # Prepare
    got: queue.Queue[Inbound] = queue.Queue()
    spy = _spy(fleet, got)
    initial = float(fleet_status(fleet.address).model_metrics["accuracy"])
    windows = [SOURCES.build("sensor_archive", split="train", part=i, parts=EDGES + 1,
                             **WINDOW_PARAMS).load().features[:20] for i in range(EDGES)]

    # Execute
    try:
        results = [fleet.round(io.StringIO()) for _ in range(2)]
    finally:
        spy.close()
    seen = []
    while not got.empty():
        seen.append(got.get_nowait())
    table = io.StringIO()
    print_sensor_table(results, ACCURACY, table)

    # Assert
    final = float(results[-1]["accuracy"])
    assert final > max(0.6, initial + 0.3), table.getvalue()
    for result in results:
        assert result["updates"] == EDGES
        assert all(stored > 0 and trained >= 20 for stored, trained in
                   result["edges"].values()), table.getvalue()
    assert seen, "the spy saw nothing"
    assert all(m.topic.startswith(f"{ROOT}/{FEDERATION}/") for m in seen)
    kinds = {wire.unpack(m.payload).KIND for m in seen if m.payload}
    assert kinds <= {"update", "probe", "status", "receipt", "round", "round_progress",
                     "manifest", "model", "missing", "round_start", "round_reply",
                     "status_query", "status_reply"}, kinds
    assert {"update", "status", "receipt"} <= kinds
    raw = [np.ascontiguousarray(w[j]).tobytes() for w in windows for j in range(0, 20, 5)]
    for m in seen:
        assert b"watch:" not in m.payload and b'"bn"' not in m.payload
        assert not any(r[:64] in m.payload for r in raw)


def test_unlabelled_streams_federate_a_forecaster_scored_by_mae(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With no labels at all, edges learn to forecast the accelerometer (a GRU, regression):
    two rounds lower the test windows' MAE below the initial model's, and the round results
    carry MAE and RMSE, not accuracy."""
    # Prepare
    params = SensorDemoParams(rounds=2, edges=EDGES, workdir=tmp_path_factory.mktemp("fc"),
                              speed=20.0, min_spans=8, task="forecast")

    # Execute
    with SensorFleet.running(params, out=io.StringIO()) as fleet:
        initial = fleet_status(fleet.address).model_metrics
        results = [fleet.round(io.StringIO()) for _ in range(2)]

    # Assert
    assert "accuracy" not in initial and "accuracy" not in results[-1]
    assert float(results[-1]["mae"]) < float(initial["mae"]) - 0.3, results
    assert float(results[-1]["rmse"]) < float(initial["rmse"])
    assert all(r["updates"] == EDGES for r in results)


def test_edges_shows_what_each_edge_stored(fleet: SensorFleet) -> None:
    """`fedstream edges` prints, per sensor edge, the readings and label spans it stored."""
    # Prepare
    printed = io.StringIO()

    # Execute
    show_edges(fleet.address, out=printed)

    # Assert
    lines = [line for line in printed.getvalue().splitlines() if "readings" in line]
    assert len(lines) == EDGES, printed.getvalue()
    assert all("label spans" in line for line in lines)


def test_sensor_edges_serve_their_intake_metrics(
    fleet: SensorFleet, scrape: Callable[[Path], dict[str, float]],
) -> None:
    """Each sensor edge's /metrics holds the readings it stores, a message count that grows
    while the replay runs, and the drop counter the dashboard draws (every reason from zero:
    a rate needs the series before the first drop)."""
    # Prepare
    logs = [fleet.params.workdir / f"edge-{i}.log" for i in range(EDGES)]
    first = [scrape(log) for log in logs]

    # Execute
    deadline = time.monotonic() + 60
    later = [scrape(log) for log in logs]
    while time.monotonic() < deadline and not all(
            b["fedstream_sensor_messages_total"] > a["fedstream_sensor_messages_total"]
            for a, b in zip(first, later, strict=True)):
        time.sleep(0.5)
        later = [scrape(log) for log in logs]

    # Assert
    assert all(m["fedstream_sensor_readings_stored"] > 0 for m in later)
    assert all(b["fedstream_sensor_messages_total"] > a["fedstream_sensor_messages_total"]
               for a, b in zip(first, later, strict=True))
    assert all("fedstream_sensor_readings_dropped_total" in m for m in later)

