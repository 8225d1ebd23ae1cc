"""Following the retained global model: manifest and chunks in any order."""

from __future__ import annotations

import random

import pytest
import torch

from fedstream.edge_node.model_sync import ModelSync
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.messages import Manifest, ModelChunk

ARCH = Architecture.mlp((64, 40, 10))


def _frames(version: int, seed: int) -> tuple[list[bytes], list[torch.Tensor]]:
    model = build_model(ARCH, seed=seed)
    tensors = tensors_of(model)
    enc = encode_blob(tensors, spec_of(model), codec="f32", chunk_size=4096)
    chunks = [wire.pack(ModelChunk(header=enc.header, model="m", version=version, index=i,
                                   data=bytes(v))) for i, v in enumerate(enc.chunks)]
    manifest = wire.pack(Manifest(model="m", version=version, parent=None, header=enc.header,
                                  arch=ARCH))
    return [manifest, *chunks], tensors


def test_model_completes_whatever_the_order() -> None:
    """Shuffled chunks with duplicates and the manifest last still give the exact tensors."""
    # Prepare
    frames, tensors = _frames(3, seed=0)
    manifest, chunks = frames[0], frames[1:]
    mixed = chunks + chunks[:3]
    random.Random(0).shuffle(mixed)
    sync = ModelSync(model="m", max_bytes=1 << 20)

    # Execute
    early = [sync.take(f, now=0.0) for f in mixed]
    held = sync.take(manifest, now=0.0)

    # Assert
    assert early == [None] * len(mixed)
    assert held is not None and held.version == 3 and held.arch == ARCH
    assert all(torch.equal(a, b) for a, b in zip(held.tensors, tensors, strict=True))


def test_older_versions_and_cleared_chunks_are_ignored() -> None:
    """Once v2 is held, v1 frames and empty (cleared retained) payloads change nothing."""
    # Prepare
    sync = ModelSync(model="m", max_bytes=1 << 20)
    new, _ = _frames(2, seed=1)
    old, _ = _frames(1, seed=2)
    for f in new:
        sync.take(f, now=0.0)

    # Execute
    results = [sync.take(f, now=0.0) for f in [*old, b""]]

    # Assert
    assert results == [None] * (len(old) + 1)
    assert sync.current is not None and sync.current.version == 2


def test_oversized_model_is_refused() -> None:
    """A model larger than the configured bound is rejected with reason oversized."""
    # Prepare
    frames, _ = _frames(1, seed=0)
    sync = ModelSync(model="m", max_bytes=1024)

    # Execute / Assert
    with pytest.raises(ProtocolError) as caught:
        sync.take(frames[1], now=0.0)
    assert caught.value.reason is Reason.OVERSIZED
