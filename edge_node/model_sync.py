"""Follows the retained global model: manifest + chunks -> the latest complete version."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import decode_blob
from fedstream.shared.protocol.chunks import Reassembler
from fedstream.shared.protocol.messages import BlobHeader, Manifest, ModelChunk, Spec
from fedstream.shared.protocol.statements import manifest_statement
from fedstream.shared.security.signing import Verifier


@dataclass(frozen=True, slots=True)
class HeldModel:
    """A complete global model version held by this edge."""

    version: int
    arch: Architecture
    spec: Spec
    tensors: list[torch.Tensor]


class ModelSync:
    """Pairs a manifest with its reassembled chunks, in whatever order they arrive.

    Args:
        model: Model name this edge follows.
        max_bytes: Largest model blob accepted.
        timeout_s: Partial model blobs idle this long are dropped.
        cloud_key: The cloud's pinned key with the federation it signs for: a manifest it
            did not sign is refused and the held model kept (None: manifests are not
            checked).
    """

    def __init__(self, *, model: str, max_bytes: int, timeout_s: float = 300.0,
                 cloud_key: tuple[Verifier, str] | None = None) -> None:
        self.model = model
        self._cloud_key = cloud_key
        self.current: HeldModel | None = None
        self._manifest: Manifest | None = None
        self._decoded: tuple[BlobHeader, int, list[torch.Tensor]] | None = None
        # Room for two versions: a new one may start while the old one's chunks still arrive.
        self._parts = Reassembler(max_blob_bytes=max_bytes, max_total_bytes=2 * max_bytes,
                                  timeout_s=timeout_s)

    def take(self, payload: bytes, now: float) -> HeldModel | None:
        """Take a manifest or chunk frame; return the model when a newer version completes.

        Raises:
            ProtocolError: for a malformed frame or a blob failing its checks.
            SecurityError: UNSIGNED or BAD_SIGNATURE for a manifest the pinned cloud key did
                not sign (it is dropped; the held model stays).
        """
        if not payload:  # a cleared retained chunk of a superseded version
            return None
        msg = wire.unpack(payload)
        if isinstance(msg, Manifest) and msg.model == self.model:
            if self._cloud_key is not None:
                key, federation = self._cloud_key
                key.check(msg.sig, manifest_statement(federation=federation, manifest=msg),
                          what=f"manifest of version {msg.version}")
            self._manifest = msg
        elif isinstance(msg, ModelChunk) and msg.model == self.model:
            if self.current is not None and msg.version <= self.current.version:
                return None
            if self._decoded is not None and self._decoded[0].blob_id == msg.header.blob_id:
                return self._promote()  # a late duplicate of the blob waiting for its manifest
            done = self._parts.add(msg.header, msg.index, msg.data, now)
            if done is not None:
                tensors = decode_blob(done.header, done.blob, None)
                self._decoded = (done.header, msg.version, tensors)
        self._parts.expire(now)
        return self._promote()

    def _promote(self) -> HeldModel | None:
        man, dec = self._manifest, self._decoded
        # The manifest must describe exactly the blob we rebuilt (same id, hash and spec).
        if man is None or dec is None or (man.header, man.version) != dec[:2]:
            return None
        if self.current is not None and man.version <= self.current.version:
            return None
        self.current = HeldModel(version=man.version, arch=man.arch, spec=man.header.spec,
                                 tensors=dec[2])
        self._decoded = None
        return self.current
