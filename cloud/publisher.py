"""Publishes global model versions as retained chunks + manifest, clearing superseded chunks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.messages import BlobHeader, Manifest, ModelChunk, Spec
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.statements import manifest_statement
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.security.signing import Signer


class ModelPublisher:
    """Makes a model version the retained global model of one federation; with a `signer`,
    every manifest carries the cloud's signature (edges pinning its key refuse any other)."""

    def __init__(self, *, mqtt: MqttClient, topics: Topics, model: str, spec: Spec,
                 arch: Architecture, chunk_size: int, signer: Signer | None = None) -> None:
        self._mqtt, self._topics, self._model = mqtt, topics, model
        self._spec, self._arch, self._chunk_size = spec, arch, chunk_size
        self._signer = signer
        self._previous: tuple[int, BlobHeader] | None = None

    def publish(self, *, version: int, parent: int | None, tensors: Sequence[torch.Tensor],
                metrics: dict[str, float | int | str]) -> int:
        """Publish chunks, then the manifest, then clear the previous version's chunks
        (without waiting for the broker's confirmations of the clears). Publishing the same
        version again (a restart announcing a version saved before it died) clears nothing.

        Chunks go first: every chunk carries the blob header, so an edge can start on them
        before the manifest arrives, and a manifest never points at missing chunks.

        Returns:
            The size of the model blob in bytes.
        """
        enc = encode_blob(tensors, self._spec, codec="f32", chunk_size=self._chunk_size)
        self._mqtt.publish_many(
            ((self._topics.model_chunk(self._model, version, i),
              wire.pack(ModelChunk(header=enc.header, model=self._model, version=version,
                                   index=i, data=view)))
             for i, view in enumerate(enc.chunks)),
            retain=True)
        manifest = Manifest(model=self._model, version=version, parent=parent,
                            header=enc.header, arch=self._arch, metrics=metrics)
        if self._signer is not None:
            manifest = dataclasses.replace(manifest, sig=self._signer.sign(manifest_statement(
                federation=self._topics.federation, manifest=manifest)))
        self._mqtt.publish(self._topics.manifest(self._model), wire.pack(manifest), retain=True)
        if self._previous is not None and self._previous[0] != version:
            # Not waited for: the new version is out, and a chunk the broker fails to clear
            # only takes its space (logged), it is never served as the model.
            old_version, old = self._previous
            for i in range(old.count):
                self._mqtt.publish_unwaited(
                    self._topics.model_chunk(self._model, old_version, i), b"", retain=True)
        self._previous = (version, enc.header)
        return enc.header.size
