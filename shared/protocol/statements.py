"""What a signature covers: the canonical bytes of an update's or a manifest's claims.

An edge signs each update over (purpose, federation, model, round or session id, base
version, edge id, blob sha256 and codec, sample count, per-edge sequence number); the cloud
signs each manifest over (purpose, federation, model, version, parent, the blob header with
its sha256 and tensor spec, the architecture). The purpose string keeps a signature made for
one kind of object from being taken for another; the federation and model keep one made for
one federation from counting in another. The update id is not signed: the same signed update
under a fresh id is a replay, refused by its sequence number. Pure: no keys here
(`shared/security/signing.py`).
"""

from __future__ import annotations

from fedstream.shared.protocol import wire
from fedstream.shared.protocol.messages import BlobHeader, Manifest, UpdateMeta

UPDATE_PURPOSE = "fedstream/update/v1"
MANIFEST_PURPOSE = "fedstream/manifest/v1"


def update_statement(*, federation: str, model: str, meta: UpdateMeta,
                     header: BlobHeader) -> bytes:
    """The bytes an edge signs for one update (the meta's own signature excluded)."""
    return wire.canonical([UPDATE_PURPOSE, federation, model, meta.round_id,
                           meta.base_version, meta.edge_id, header.sha256, header.codec,
                           meta.samples, meta.seq])


def manifest_statement(*, federation: str, manifest: Manifest) -> bytes:
    """The bytes the cloud signs for one manifest (its metrics and signature excluded: the
    metrics describe the version, they do not make it)."""
    return wire.canonical([MANIFEST_PURPOSE, federation, manifest.model, manifest.version,
                           manifest.parent, manifest.header.to_wire(),
                           manifest.arch.to_wire()])
