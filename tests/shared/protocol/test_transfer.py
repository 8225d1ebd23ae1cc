"""Resume messages (P17): probes and missing-chunk lists validate what they carry."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import torch

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.messages import TensorSpec, UpdateChunk, UpdateMeta
from fedstream.shared.protocol.transfer import MAX_RUNS, MissingChunks, UpdateProbe, capped


def _missing(**fields: Any) -> bytes:
    frame = {"v": 1, "k": "missing", "upd": "u1", "n": 10, "miss": [0, 2, 5, 10], **fields}
    packed: bytes = msgpack.packb(frame, use_bin_type=True)
    return packed


def test_missing_chunks_lists_every_index_of_its_runs() -> None:
    """Runs [0, 2) and [5, 10) are indices 0, 1, 5, 6, 7, 8, 9."""
    # Execute
    msg = wire.expect(_missing(), MissingChunks)

    # Assert
    assert msg.runs == ((0, 2), (5, 10))
    assert msg.indices == [0, 1, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("miss", [
    [0, 2, 1, 3],      # overlapping
    [5, 10, 0, 2],     # unsorted
    [3, 3],            # empty run
    [0, 11],           # past the count
    [0, 2, 5],         # odd length
    [0, True],         # a bool is not an index
    [-1, 2],           # negative
])
def test_malformed_runs_are_bad_frames(miss: list[Any]) -> None:
    """Runs that are not sorted, disjoint, non-empty pairs inside [0, n) are refused."""
    # Execute
    with pytest.raises(ProtocolError) as caught:
        wire.unpack(_missing(miss=miss))

    # Assert
    assert caught.value.reason is Reason.BAD_FRAME


def test_probe_refuses_an_empty_update_id_and_a_zero_count() -> None:
    """A probe names an update (1-64 characters) of at least one chunk."""
    # Prepare
    good = wire.pack(UpdateProbe(edge_id="e1", update_id="u1", round_id="r1", count=3))
    raw = msgpack.unpackb(good, raw=False)

    # Execute
    reasons = []
    for edit in ({"upd": ""}, {"n": 0}, {"upd": "x" * 65}):
        with pytest.raises(ProtocolError) as caught:
            wire.unpack(msgpack.packb({**raw, **edit}, use_bin_type=True))
        reasons.append(caught.value.reason)

    # Assert
    assert reasons == [Reason.BAD_FRAME] * 3


def test_too_many_runs_become_the_whole_blob() -> None:
    """Every other chunk missing of a large blob is sent as one run over everything."""
    # Prepare
    runs = tuple((2 * i, 2 * i + 1) for i in range(MAX_RUNS + 1))

    # Execute / Assert
    assert capped(runs, 2 * MAX_RUNS + 2) == ((0, 2 * MAX_RUNS + 2),)
    assert capped(runs[:3], 10) == runs[:3]


@pytest.mark.parametrize("blob_id", ["../../etc/x", "a/b", "a b", "ü", ""])
def test_ids_that_are_not_plain_words_are_bad_frames(blob_id: str) -> None:
    """Update and blob ids name spool files: a path, a space or a non-ASCII letter in one is
    refused, in a probe and in a chunk header alike (P5)."""
    # Prepare
    probe = msgpack.unpackb(wire.pack(UpdateProbe(edge_id="e1", update_id="u1", round_id="r1",
                                                  count=3)), raw=False)
    enc = encode_blob([torch.zeros(2)], (TensorSpec(name="w", shape=(2,)),), codec="f32",
                      chunk_size=1024)
    chunk = msgpack.unpackb(wire.pack(UpdateChunk(
        header=enc.header, index=0, data=bytes(enc.chunks[0]),
        meta=UpdateMeta(edge_id="e1", round_id="r1", base_version=0, samples=1, loss=0.0))),
        raw=False)

    # Execute
    reasons = []
    for frame in ({**probe, "upd": blob_id}, {**chunk, "blob": blob_id}):
        with pytest.raises(ProtocolError) as caught:
            wire.unpack(msgpack.packb(frame, use_bin_type=True))
        reasons.append(caught.value.reason)

    # Assert
    assert reasons == [Reason.BAD_FRAME] * 2
