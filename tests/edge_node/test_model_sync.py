"""Following the retained global model: manifest and chunks in any order."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from fedstream.edge_node.model_sync import ModelSync
from fedstream.shared.errors import ProtocolError, Reason, SecurityError
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.messages import Manifest, ModelChunk
from fedstream.shared.protocol.statements import manifest_statement
from fedstream.shared.security.signing import Signer, Verifier, make_key

ARCH = Architecture.mlp((64, 40, 10))


def _frames(version: int, seed: int, *,
            signer: Signer | None = None) -> tuple[list[bytes], list[torch.Tensor]]:
    model = build_model(ARCH, seed=seed)
    tensors = tensors_of(model)
    enc = encode_blob(tensors, spec_of(model), codec="f32", chunk_size=4096)
    chunks = [wire.pack(ModelChunk(header=enc.header, model="m", version=version, index=i,
                                   data=bytes(v))) for i, v in enumerate(enc.chunks)]
    manifest = Manifest(model="m", version=version, parent=None, header=enc.header, arch=ARCH)
    if signer is not None:
        manifest = dataclasses.replace(manifest, sig=signer.sign(
            manifest_statement(federation="lab", manifest=manifest)))
    return [wire.pack(manifest), *chunks], tensors


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


def test_a_pinned_key_refuses_another_signer_and_unsigned_manifests(tmp_path: Path) -> None:
    """With the cloud's key pinned, v1 signed by it is held; v2 signed by another key is
    bad_signature and v3 unsigned is unsigned, each before its chunks are used: v1 stays."""
    # Prepare
    cloud, rogue = make_key(tmp_path / "cloud.key"), make_key(tmp_path / "rogue.key")
    sync = ModelSync(model="m", max_bytes=1 << 20, cloud_key=(Verifier(cloud.public), "lab"))
    good, _ = _frames(1, seed=0, signer=cloud)
    forged, _ = _frames(2, seed=1, signer=rogue)
    unsigned, _ = _frames(3, seed=2)
    held = [sync.take(f, now=0.0) for f in good]

    # Execute
    reasons = []
    for frames in (forged, unsigned):
        with pytest.raises(SecurityError) as info:
            sync.take(frames[0], now=0.0)
        reasons.append(info.value.reason)
        assert [sync.take(f, now=0.0) for f in frames[1:]] == [None] * (len(frames) - 1)

    # Assert
    assert held[-1] is not None and held[-1].version == 1
    assert reasons == [Reason.BAD_SIGNATURE, Reason.UNSIGNED]
    assert sync.current is not None and sync.current.version == 1


def test_a_manifest_signed_for_another_federation_is_refused(tmp_path: Path) -> None:
    """The cloud's own signature, made for federation lab, does not pass in federation
    plant."""
    # Prepare
    cloud = make_key(tmp_path / "cloud.key")
    sync = ModelSync(model="m", max_bytes=1 << 20, cloud_key=(Verifier(cloud.public), "plant"))
    frames, _ = _frames(1, seed=0, signer=cloud)

    # Execute
    with pytest.raises(SecurityError) as info:
        sync.take(frames[0], now=0.0)

    # Assert
    assert info.value.reason is Reason.BAD_SIGNATURE
