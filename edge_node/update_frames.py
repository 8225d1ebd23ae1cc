"""An update's wire frames: its blob cut into chunks, each carrying the meta, signed when the
edge has a key (`shared/protocol/statements.py` says what the signature covers)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fedstream.shared.protocol import wire
from fedstream.shared.protocol.blobs import pack_blob
from fedstream.shared.protocol.messages import BlobHeader, Spec, UpdateChunk, UpdateMeta
from fedstream.shared.protocol.statements import update_statement
from fedstream.shared.security.signing import Signer


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateFraming:
    """How this edge frames its updates.

    Args:
        federation: Signed into every statement.
        model: Signed into every statement.
        chunk_size: Bytes per chunk.
        signer: This edge's key (None: updates go unsigned).
    """

    federation: str
    model: str
    chunk_size: int
    signer: Signer | None = None

    def frames(self, blob: bytes, spec: Spec, *, codec: str,
               meta: UpdateMeta) -> tuple[BlobHeader, list[bytes]]:
        """The header of `blob` and one frame per chunk, the meta signed if there is a key."""
        enc = pack_blob(blob, spec, codec=codec, chunk_size=self.chunk_size)
        if self.signer is not None:
            meta = dataclasses.replace(meta, sig=self.signer.sign(update_statement(
                federation=self.federation, model=self.model, meta=meta, header=enc.header)))
        return enc.header, [wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i,
                                                  data=view))
                            for i, view in enumerate(enc.chunks)]
