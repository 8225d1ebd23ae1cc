"""A rogue client flooding an update topic with garbage: the cloud counts every frame, keeps
its log to a line per class of rejection, and goes on serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import fleet_status
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

FLOOD = 3000


def test_malformed_frame_flood_is_counted_in_full_and_logged_in_a_few_lines(
    broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """3000 non-msgpack frames on one edge's update topic and 3000 on another's: the status
    counts all 6000, and the cloud's log holds one `message_rejected` line per sender (no
    more than a few lines in all), not one per frame."""
    # Prepare
    cloud_cfg, _ = write_configs(tmp_path, port=broker.port, federation=federation, edges=0,
                                 dirichlet_alpha=0.5)
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=10.0)
    rogue = MqttClient(client_id=f"{federation}-rogue", conn=address.conn)
    topics = Topics(federation)
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        wait_ready(address, edges=0, procs=procs)
        rogue.connect(10)

        # Execute
        for edge in ("rogue-1", "rogue-2"):
            rogue.publish_many((topics.update(MODEL, edge), b"\xc1garbage")
                               for _ in range(FLOOD))
        give_up = time.monotonic() + 60
        while True:
            counted = int(fleet_status(address).rejections.get("not_msgpack", 0))
            if counted >= 2 * FLOOD or time.monotonic() > give_up:
                break
            time.sleep(0.2)
    finally:
        rogue.close()
        procs.stop()

    # Assert
    events = [json.loads(line) for line in (tmp_path / "cloud.log").read_text().splitlines()
              if line.startswith("{")]
    rejected = [e for e in events if e["event"] == "message_rejected"]
    assert counted == 2 * FLOOD
    assert sorted(e["sender"] for e in rejected) == ["rogue-1", "rogue-2"]
    assert all(e["reason"] == "not_msgpack" for e in rejected)
    summaries = [e for e in events if e["event"] == "rejections_summarized"]
    assert sorted((e["sender"], e["count"]) for e in summaries) == [
        ("rogue-1", FLOOD - 1), ("rogue-2", FLOOD - 1)]
    assert len(events) < 50
