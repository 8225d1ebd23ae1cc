"""The edge's side of resuming (P17), in-process against a real broker: it probes what its
outbox holds and sends exactly the chunks the cloud names, once per answer."""

from __future__ import annotations

import queue
from collections.abc import Callable

import pytest
import torch

from fedstream.edge_node.daemon import EdgeDaemon
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.messages import TensorSpec, UpdateChunk, UpdateMeta
from fedstream.shared.protocol.mqtt import Inbound
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.protocol.transfer import MissingChunks, UpdateProbe

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def edge(connected_edge: EdgeDaemon) -> EdgeDaemon:
    """The connected edge with one 5-chunk update in its outbox."""
    enc = encode_blob([torch.arange(50, dtype=torch.float32)],
                      (TensorSpec(name="w", shape=(50,)),), codec="f32", chunk_size=40)
    meta = UpdateMeta(edge_id="e1", round_id="r1", base_version=0, samples=1, loss=0.0)
    connected_edge.outbox.put(enc.header.blob_id, [
        wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i, data=v))
        for i, v in enumerate(enc.chunks)])
    return connected_edge


@pytest.fixture
def seen(edge: EdgeDaemon, spy: Callable[..., queue.Queue[Inbound]]) -> queue.Queue[Inbound]:
    """What the edge publishes on its update topic."""
    return spy(Topics(edge.cfg.federation).update(edge.cfg.model, "e1"))


def _drain(got: queue.Queue[Inbound], count: int) -> list[object]:
    return [wire.unpack(got.get(timeout=10).payload) for _ in range(count)]


def test_edge_probes_its_outbox_and_sends_only_the_named_chunks_once(
    edge: EdgeDaemon, seen: queue.Queue[Inbound],
) -> None:
    """A resend pass sends one probe per kept update, never its chunks; an answer naming
    chunks 1 and 3-4 gets exactly those, and the same answer again (the idle notice after
    the probe's answer) gets nothing: the next frame out is the next pass's probe, after
    which the answer counts again. The metrics count 2 probes and 6 re-sent chunks."""
    # Prepare
    (item,) = edge.outbox.pending()
    missing = MissingChunks(update_id=item.update_id, count=5, runs=((1, 2), (3, 5)))

    # Execute
    edge.sender.probe(min_age_s=0.0)
    probes = _drain(seen, 1)
    edge.sender.on_missing(missing)
    edge.sender.on_missing(missing)
    sent = _drain(seen, 3)
    edge.sender.probe(min_age_s=0.0)
    edge.sender.on_missing(missing)
    after_probe = _drain(seen, 4)

    # Assert
    assert probes == [UpdateProbe(edge_id="e1", update_id=item.update_id, round_id="r1",
                                  count=5)]
    assert [f.index for f in sent if isinstance(f, UpdateChunk)] == [1, 3, 4]
    assert isinstance(after_probe[0], UpdateProbe)
    assert [f.index for f in after_probe[1:] if isinstance(f, UpdateChunk)] == [1, 3, 4]
    sample = edge.metrics.registry.get_sample_value
    assert sample("fedstream_edge_probes_sent_total") == 2
    assert sample("fedstream_edge_resent_chunks_total") == 6
