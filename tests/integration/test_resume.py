"""A cut-off upload resumes from what is missing (P17): a ~10 MB update, the broker (and the
cloud beside it) SIGKILLed when the cloud holds half its chunks, and an edge that then sends
only the rest."""

from __future__ import annotations

import io
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress
from fedstream.cloud.store import CloudStore
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import start_round
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import RoundState
from fedstream.shared.protocol.messages import UpdateChunk
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.chaos]

# 64*1536 + 1536 + 1536*1536 + 1536 + 1536*10 + 10 = 2,476,042 floats: 9.9 MB of f32, in 152
# chunks of 64 KiB.
ARCH_TABLE = "[architecture]\nparams.hidden = [1536, 1536]\n\n"


def _journaled(db: Path, *, mode: str = "ro") -> list[int]:
    """Indices of the chunks the cloud holds in its journal now (read beside the running
    cloud: WAL mode lets a reader in). After the cloud was killed, read with `mode="rw"`:
    a commit it made durable in the WAL but had not indexed in the shared memory yet is
    only seen once a writer's connection recovers the WAL, as the restarted cloud will."""
    try:
        with sqlite3.connect(f"file:{db}?mode={mode}", uri=True, timeout=1) as con:
            return [i for (i,) in con.execute("SELECT idx FROM chunks")]
    except sqlite3.OperationalError:
        return []  # not created yet, or busy for a moment


def _events(log: Path, name: str) -> list[dict[str, object]]:
    return [e for e in (json.loads(line) for line in log.read_text().splitlines()
                        if line.startswith("{")) if e["event"] == name]


def test_upload_cut_by_a_broker_kill_resumes_with_only_the_missing_chunks(
    tmp_path: Path, federation: str, monkeypatch: pytest.MonkeyPatch,
    scrape: Callable[[Path], dict[str, float]],
) -> None:
    """SIGKILL Mosquitto and the cloud once the cloud journaled half of a 152-chunk update
    (the rest was PUBACKed to the edge and dies with the broker's queue and the cloud's
    inbox); after both restart, the cloud names the runs its journal lacks and the edge sends
    exactly those chunks: no full re-send, and the update is accepted once. The edge's
    metrics count those re-sent chunks."""
    # Prepare
    monkeypatch.setenv("FEDSTREAM_METRICS__PORT", "0")
    broker = Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "broker"))
    broker.start()
    # FULL makes the cloud fsync each chunk, so it is still taking them in when the test sees
    # half of the update journaled.
    cloud_cfg, (edge_cfg,) = write_configs(
        tmp_path, port=broker.port, federation=federation, edges=1, dirichlet_alpha=0.5,
        cloud_extra='synchronous = "FULL"\n',
        cloud_tables=ARCH_TABLE + "[intake]\nidle_s = 2.0\n", edge_extra="resend_after_s = 5.0\n")
    procs = Processes(tmp_path)
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=30.0)
    db = tmp_path / "cloud-data" / "journal.db"
    after_restart: queue.Queue[Inbound] = queue.Queue()
    result: dict[str, RoundState] = {}
    try:
        procs.spawn("cloud", "cloud", cloud_cfg)
        procs.spawn("edge", "edge", edge_cfg)
        wait_ready(address, edges=1, procs=procs)
        runner = threading.Thread(target=lambda: result.update(state=start_round(
            address, RoundStart(epochs=1, deadline_s=120.0), wait=True, out=io.StringIO())))
        runner.start()

        # Execute
        deadline = time.monotonic() + 120
        while runner.is_alive() and time.monotonic() < deadline and len(_journaled(db)) < 76:
            time.sleep(0.005)
        procs.kill("cloud")
        held = set(_journaled(db, mode="rw"))
        broker.kill()
        broker.start()
        spy = MqttClient(client_id=f"{federation}-spy", conn=address.conn,
                         on_message=after_restart.put,
                         subscriptions=(Topics(federation).update(MODEL, "edge-0"),))
        spy.connect(10)
        procs.spawn("cloud", "cloud", cloud_cfg)
        runner.join(timeout=150)
        spy.close()
        edge_metrics = scrape(tmp_path / "edge.log")
    finally:
        procs.stop()
        broker.stop()

    # Assert
    frames = [wire.unpack(m.payload) for m in list(after_restart.queue)]
    resent = [f.index for f in frames if isinstance(f, UpdateChunk)]
    resumed = _events(tmp_path / "edge.log", "update_resumed")
    (sent,) = _events(tmp_path / "edge.log", "update_sent")
    journal = CloudStore.open(tmp_path / "cloud-data").journal
    final = result["state"]
    missing = set(range(152)) - held
    assert final.status == "published", final
    assert sent["chunks"] == 152 and 76 <= len(held) < 152
    assert [r.edge_id for r in journal.accepted(final.round_id)] == ["edge-0"]
    assert sorted(resent) == sorted(missing)
    assert edge_metrics["fedstream_edge_resent_chunks_total"] == len(missing)
    assert sum(int(str(e["chunks"])) for e in resumed) == len(missing)
