"""The cloud's durable intake path, and what resuming a cut-off upload saves, in one run.

    .venv/bin/python bench/resume.py [--repeats 3]

In-process and real below MQTT: `UpdateReceiver` over a real intake, coordinator, SQLite
journal and spool in a temp directory, fed the frames of one 9.9 MB f32 update (152 chunks of
64 KiB). Baseline, same run: `Reassembler.add` + sha256 + decode alone (what the transport
bench's receiver does, nothing durable). Then an upload cut after half its chunks, followed by
a restart of the cloud (replay from the journal) and either the edge's old full re-send or a
probe plus the missing chunks only (P17). Prints JSON lines: `durable_vs_memory` (MB/s of the
receiver's journaled path / MB/s of the bare reassembler), and per recovery mode the frames and
bytes sent after the cut and the seconds from restart to the verdict; `resume_vs_resend` is
the ratio of bytes. Nothing here asserts an absolute time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.intake import Intake
from fedstream.cloud.receiver import Answer, UpdateReceiver
from fedstream.cloud.store import CloudStore
from fedstream.shared.learning.metrics import ACCURACY
from fedstream.shared.learning.model import spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import decode_blob, encode_blob
from fedstream.shared.protocol.chunks import Reassembler
from fedstream.shared.protocol.control import EdgeStatus, Receipt
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe

ARCH = Architecture.mlp((64, 1536, 1536, 10))


class Cloud:
    """A receiver on a data directory, as the service wires it (no MQTT)."""

    def __init__(self, data_dir: Path) -> None:
        self.answers: list[Answer] = []
        self.cfg = CloudConfig(architecture=ArchitectureConfig.of(ARCH), data_dir=data_dir,
                               rounds={"deadline_s": 1e9})
        self.store = CloudStore.open(data_dir)
        self.coord = Coordinator.open(cfg=self.cfg, store=self.store,
                                      evaluate=lambda t: {ACCURACY.name: 0.0},
                                      publish_model=lambda v: 0, publish_round=lambda s: None)
        self.receiver = UpdateReceiver(
            intake=Intake(spec=self.coord.spec, params=self.cfg.intake), store=self.store,
            coordinator=self.coord, send=lambda edge, a: self.answers.append(a))
        self.coord.recover(0.0)
        for edge in ("e1", "e2"):
            self.coord.on_status(EdgeStatus(edge_id=edge, online=True), 0.0)

    def close(self) -> None:
        self.store.journal.close()


def _frames(round_id: str) -> list[bytes]:
    spec = spec_of(build_model(ARCH))
    gen = torch.Generator().manual_seed(0)
    delta = [torch.randn(t.shape, generator=gen) * 0.01 for t in spec]
    enc = encode_blob(delta, spec, codec="f32", chunk_size=64 * 1024)
    meta = UpdateMeta(edge_id="e1", round_id=round_id, base_version=0, samples=10, loss=0.1)
    return [wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i, data=v))
            for i, v in enumerate(enc.chunks)]


def _seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _memory_only(frames: list[bytes]) -> None:
    parts = Reassembler(max_blob_bytes=1 << 30, max_total_bytes=1 << 30, timeout_s=60)
    for frame in frames:
        chunk = wire.expect(frame, UpdateChunk)
        done = parts.add(chunk.header, chunk.index, chunk.data, 0.0)
        if done is not None:
            decode_blob(done.header, done.blob, None)


def _durable(root: Path, frames_of: Callable[[str], list[bytes]]) -> float:
    cloud = Cloud(root)
    try:
        frames = frames_of(cloud.coord.start_round(0.0).round_id)
        return _seconds(lambda: [cloud.receiver.on_frame(f, "e1", 1.0) for f in frames])
    finally:
        cloud.close()


def _recovery(root: Path, *, resume: bool) -> dict[str, float | int]:
    """Cut after half the chunks, restart, recover by full re-send or by resume."""
    first = Cloud(root)
    frames = _frames(first.coord.start_round(0.0).round_id)
    for frame in frames[:len(frames) // 2]:
        first.receiver.on_frame(frame, "e1", 1.0)
    first.close()
    started = time.perf_counter()
    again = Cloud(root)
    again.receiver.replay(2.0)
    if resume:
        first_chunk = wire.expect(frames[0], UpdateChunk)
        header = first_chunk.header
        # The round id from the chunk's meta, as the edge's probe carries it: a probe for
        # another round is refused as stale.
        again.receiver.on_frame(wire.pack(UpdateProbe(
            edge_id="e1", update_id=header.blob_id, round_id=first_chunk.meta.round_id,
            count=header.count)), "e1", 3.0)
        missing = next(a for a in again.answers if isinstance(a, MissingChunks))
        sent = [frames[i] for i in missing.indices]
    else:
        sent = frames
    for frame in sent:
        again.receiver.on_frame(frame, "e1", 3.0)
    seconds = time.perf_counter() - started
    verdicts = [a for a in again.answers if isinstance(a, Receipt)]
    again.close()
    assert [v.status for v in verdicts][:1] == ["accepted"], verdicts
    return {"frames_after_cut": len(sent), "bytes_after_cut": sum(len(f) for f in sent),
            "restart_to_verdict_s": round(seconds, 3)}


def main() -> None:
    """Measure and print the JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sample = _frames("r")
    megabytes = sum(len(f) for f in sample) / 1e6
    memory, durable = float("inf"), float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            memory = min(memory, _seconds(lambda: _memory_only(sample)))
            durable = min(durable, _durable(Path(tmp) / f"d{i}", _frames))
        print(json.dumps({"path": "memory_only", "mb_s": round(megabytes / memory, 1)}))
        print(json.dumps({"path": "durable_receiver", "mb_s": round(megabytes / durable, 1),
                          "durable_vs_memory": round(memory / durable, 3)}))
        resend = _recovery(Path(tmp) / "resend", resume=False)
        resumed = _recovery(Path(tmp) / "resume", resume=True)
    print(json.dumps({"recovery": "full_resend", **resend}))
    print(json.dumps({"recovery": "resume", **resumed,
                      "resume_vs_resend": round(resumed["bytes_after_cut"]
                                                / resend["bytes_after_cut"], 3)}))


if __name__ == "__main__":
    main()
