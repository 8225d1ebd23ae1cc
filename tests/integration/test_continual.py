"""Continual learning through real processes: a cloud with fine-tuning, the promotion gate and
the inference service on, three edges, a real broker, and the CLI's own functions.

One fleet, one story, in order: cloud data arrives (bad batches get error replies), a round's
fine-tuned candidate is promoted, a candidate fine-tuned on one class only is rejected and kept,
`model show` prints its scores, `model promote` serves it, and five versions are swapped in
while clients query the model over MQTT and HTTP without a single failed request.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress
from fedstream.demo import MODEL, Processes, wait_ready, write_configs
from fedstream.operator import fleet_status, model_command, start_round
from fedstream.predict import predict_csv
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import ModelListReply, ModelVersionReply, Reply, RoundStart
from fedstream.shared.protocol.data import DataBatch
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topic, Topics

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

CLOUD_TABLES = """
[rounds]
epochs = 3
deadline_s = 60

[continual]
enabled = true
window_s = 1e9

[continual.finetune]
steps = 150
lr = 0.05
replay_ratio = 0.0
backend = "torch"
precision = "fp32"

[continual.gate]
tolerance_newest = 0.02
tolerance_past = 0.02

[inference]
enabled = true
http_port = 0
"""


class Fleet:
    """Broker connection details, the processes, and an MQTT client of the test's own."""

    def __init__(self, broker: Mosquitto, federation: str, workdir: Path) -> None:
        self.address = FleetAddress.local(host=broker.host, port=broker.port,
                                          federation=federation, model=MODEL, timeout_s=30.0)
        self.topics = Topics(federation)
        self.reply_to = self.topics.reply("anonymous", f"{federation}-test")
        self.client = MqttClient(client_id=f"{federation}-test", conn=self.address.conn,
                                 on_message=lambda _m: None,
                                 subscriptions=(self.reply_to,))
        cloud, edges = write_configs(workdir, port=broker.port, federation=federation, edges=3,
                                     dirichlet_alpha=5.0, cloud_tables=CLOUD_TABLES)
        self.procs = Processes(workdir)
        self.procs.spawn("cloud", "cloud", cloud)
        for i, path in enumerate(edges):
            self.procs.spawn(f"edge-{i}", "edge", path)
        wait_ready(self.address, edges=3, procs=self.procs)
        self.client.connect(10)

    def ask(self, topic: Topic, payload: bytes) -> bytes:
        """MQTT v5 request/response on `topic`."""
        return self.client.request(topic, payload, self.reply_to, timeout_s=30).payload

    def send_window(self, name: str, x: np.ndarray, y: np.ndarray) -> Reply:
        return wire.expect(
            self.ask(self.topics.data(MODEL), wire.pack(DataBatch.of(x, y, window=name))),
            Reply)

    def close(self) -> None:
        self.client.close()
        self.procs.stop()


@pytest.fixture
def fleet(broker: Mosquitto, federation: str, tmp_path: Path) -> Iterator[Fleet]:
    """A running cloud (continual + inference) with three edges."""
    running = Fleet(broker, federation, tmp_path)
    yield running
    running.close()


def test_continual_fleet_end_to_end(fleet: Fleet, tmp_path: Path) -> None:
    """Data replies, gate accept and reject, promote by hand, hot swap under load, predict."""
    test = SOURCES.build("digits", split="test").load()
    x, y = test.features, test.labels
    _bad_input_gets_error_replies(fleet)
    _gate_promotes_a_good_candidate_and_rejects_a_damaged_one(fleet, x, y)
    promoted = _hot_swap_under_load(fleet, x)

    # `fedstream predict --csv` goes through the same service.
    csv = tmp_path / "rows.csv"
    np.savetxt(csv, x[:5], delimiter=",", header=",".join(f"f{i}" for i in range(64)),
               comments="")
    rows = predict_csv(csv, fleet.address)
    assert [r.row for r in rows] == [0, 1, 2, 3, 4] and {r.version for r in rows} == {
        promoted[-1]}


def _bad_input_gets_error_replies(fleet: Fleet) -> None:
    """Bad input on the data topic: each request gets its reason back; nothing is stored.
    Bad input on the inference topic gets an error reply too."""
    bad = {"spec_mismatch": wire.pack(DataBatch.of(np.zeros((2, 3)), [0, 1])),
           "non_finite": wire.pack(DataBatch.of(np.full((1, 64), np.nan), [0])),
           "not_msgpack": b"\x00garbage",
           "unknown_kind": wire.pack(InferRequest.of(np.zeros((1, 64)))),
           "bad_frame": msgpack.packb({"v": 1, "k": "data", "x": "text", "r": 1, "c": 64,
                                       "y": b"\x00" * 8})}
    replies = {want: wire.expect(fleet.ask(fleet.topics.data(MODEL), frame), Reply)
               for want, frame in bad.items()}
    assert {want: (r.ok, r.reason) for want, r in replies.items()} == {
        want: (False, want) for want in bad}

    # Bad input on the inference topic, before and after a model: clear error replies.
    bad_infer = {"non_finite": wire.pack(InferRequest.of(np.full((1, 64), np.nan))),
                 "spec_mismatch": wire.pack(InferRequest.of(np.zeros((1, 5)))),
                 "bad_frame": msgpack.packb({"v": 1, "k": "infer", "x": 7, "r": 1, "c": 64}),
                 "size_mismatch": msgpack.packb({"v": 1, "k": "infer", "x": b"\x00" * 12,
                                                 "r": 1, "c": 64})}
    for want, frame in bad_infer.items():
        answer = wire.expect(fleet.ask(fleet.topics.infer(MODEL), frame), InferReply)
        assert (answer.ok, answer.reason) == (False, want)


def _gate_promotes_a_good_candidate_and_rejects_a_damaged_one(fleet: Fleet, x: np.ndarray,
                                                              y: np.ndarray) -> None:
    """Round 1's fine-tuned candidate is promoted; round 2's, fine-tuned on one class, is
    rejected, kept, shown with its scores, and then promoted by hand."""
    one_class = y == 3
    # Windows: a (all classes, fine-tune data), b (newest, held out).
    assert fleet.send_window("a", x[:100], y[:100]).ok
    assert fleet.send_window("b", x[100:200], y[100:200]).ok

    # Round 1: the fine-tuned candidate beats the random initial model: promoted.
    out = io.StringIO()
    first = start_round(fleet.address, RoundStart(), wait=True, out=out)
    assert first.status == "published" and first.result["version"] == 1

    # Round 2: the fresh window c holds one class only; d is the newest. Fine-tuning on c
    # collapses the candidate onto class 3, and the gate refuses it.
    assert fleet.send_window("c", x[one_class][:60], y[one_class][:60]).ok
    assert fleet.send_window("d", x[200:], y[200:]).ok
    with pytest.raises(FedstreamError) as refused:
        start_round(fleet.address, RoundStart(), wait=True, out=io.StringIO())
    assert refused.value.reason in (Reason.REGRESSED_NEWEST, Reason.REGRESSED_PAST)
    status = fleet_status(fleet.address)
    assert status.model_version == 1 and status.serving["version"] == 1

    # The registry keeps it, rejected with the reason; `model show` prints the matrix.
    shown = io.StringIO()
    listing = model_command(fleet.address, action="show", version=2, out=shown)
    assert isinstance(listing, ModelListReply)
    (candidate,) = [v for v in listing.versions if v.version == 2]
    assert candidate.status == "rejected" and candidate.reason == refused.value.reason
    # c holds 36 rows of class 3: 10 evaluation rows, too few to be scored (min 20).
    assert list(candidate.evals) == ["a", "b", "d"]
    text = shown.getvalue()
    assert "accuracy matrix" in text and "forgetting" in text and "rejected" in text
    assert "finetune.backend: torch" in text

    # Promote by hand: the candidate becomes the served model.
    model_command(fleet.address, action="promote", version=2, out=io.StringIO())
    assert fleet_status(fleet.address).serving["version"] == 2


def _hot_swap_under_load(fleet: Fleet, x: np.ndarray) -> list[int]:
    """MQTT and HTTP clients query while five versions are promoted: no request fails, every
    answer names a served version, versions never go back, both clients see the last one."""
    port = int(fleet_status(fleet.address).serving["http_port"])
    seen: dict[str, list[int]] = {"mqtt": [], "http": []}
    failures: list[str] = []
    stop = threading.Event()
    final: dict[str, int] = {}
    saw_final = {"mqtt": threading.Event(), "http": threading.Event()}

    def record(client: str, version: int) -> None:
        seen[client].append(version)
        if version == final.get("version"):
            saw_final[client].set()

    def mqtt_client() -> None:
        while not stop.is_set():
            try:
                reply = wire.expect(fleet.ask(
                    fleet.topics.infer(MODEL), wire.pack(InferRequest.of(x[:4]))), InferReply)
                if reply.ok:
                    record("mqtt", reply.version)
                else:
                    failures.append(f"mqtt {reply.reason}")
            except FedstreamError as err:
                failures.append(f"mqtt {err}")

    def http_client() -> None:
        body = json.dumps({"inputs": x[:4].tolist()}).encode()
        while not stop.is_set():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    record("http", int(json.load(resp)["version"]))
            except (urllib.error.URLError, OSError) as err:
                failures.append(f"http {err}")

    clients = [threading.Thread(target=mqtt_client), threading.Thread(target=http_client)]
    for t in clients:
        t.start()
    promoted = []
    try:
        for target in (0, 1, 2, 1, 0):
            moved = model_command(fleet.address, action="rollback", version=target,
                                  out=io.StringIO())
            assert isinstance(moved, ModelVersionReply)
            promoted.append(moved.model_version)
        final["version"] = int(fleet_status(fleet.address).serving["version"])
        # Each client keeps going until it has been answered by the last version.
        for event in saw_final.values():
            event.wait(60)
    finally:
        stop.set()
        for t in clients:
            t.join(60)

    assert failures == []
    assert promoted == [3, 4, 5, 6, 7] and final["version"] == 7
    assert all(event.is_set() for event in saw_final.values())
    for versions in seen.values():
        assert set(versions) <= {2, *promoted}
        assert versions == sorted(versions)
    return promoted
