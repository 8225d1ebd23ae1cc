"""The model registry: every version's weights, lineage, status and scores, and which one is
served.

Versions are numbered in creation order. A promoted version was served; a rejected one is a
candidate the promotion gate refused, kept with the gate's reason. The served (current) model
is the newest promoted version, so a restart serves what was served before it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fedstream.cloud.journal import VersionRow
from fedstream.cloud.registry_store import ServerState
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.protocol.control import VersionStatus
from fedstream.shared.protocol.messages import Spec

Metrics = Mapping[str, float | int | str]


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One model version and its headline metrics."""

    version: int
    parent: int | None
    tensors: list[torch.Tensor]
    metrics: Metrics


class VersionRegistry:
    """Saves and loads versions through the cloud store.

    Args:
        store: Journal (rows, scores) and model files (weights, server state).
        spec: Tensor layout of the model.
    """

    def __init__(self, store: CloudStore, spec: Spec) -> None:
        self.store, self.spec = store, spec

    def rows(self) -> list[VersionRow]:
        """Every version, oldest first."""
        return self.store.journal.versions()

    def row(self, version: int) -> VersionRow:
        """One version's row.

        Raises:
            FedstreamError: bad_config for an unknown version, listing the known ones.
        """
        rows = {r.version: r for r in self.rows()}
        if version not in rows:
            raise FedstreamError(Reason.BAD_CONFIG, f"no version {version}; have {sorted(rows)}")
        return rows[version]

    def next_number(self) -> int:
        """The number the next version gets (rejected candidates take numbers too)."""
        rows = self.rows()
        return rows[-1].version + 1 if rows else 0

    def served(self) -> tuple[ModelVersion, ServerState | None] | None:
        """The newest promoted version and its server state; None for an empty registry."""
        promoted = [r for r in self.rows() if r.promoted]
        return self.load(promoted[-1]) if promoted else None

    def load(self, row: VersionRow) -> tuple[ModelVersion, ServerState | None]:
        """A version's weights and server state from its file."""
        tensors, state = self.store.models.load(row.path, self.spec)
        return ModelVersion(version=row.version, parent=row.parent, tensors=tensors,
                            metrics=row.lineage.get("metrics", {})), state

    def save(self, version: ModelVersion, state: ServerState | None, *, round_id: str,
             lineage: Mapping[str, object], applied: Sequence[str] = (),
             evals: Mapping[str, float] | None = None, reason: Reason | None = None) -> None:
        """Write the weights, then the row, its scores and the updates it consumed in one
        transaction; `reason` marks a candidate the gate rejected."""
        path = self.store.models.save(version.version, self.spec, version.tensors, state)
        self.store.journal.add_version(VersionRow(
            version=version.version, parent=version.parent, round_id=round_id, path=path,
            lineage={**lineage, "metrics": dict(version.metrics), "created": time.time()},
            status=VersionStatus.PROMOTED if reason is None else VersionStatus.REJECTED,
            reason="" if reason is None else str(reason)),
            applied=applied, evals=evals)

    def history(self, before: int) -> list[dict[str, float]]:
        """Per-window scores of the promoted versions older than `before`, oldest first: the
        rows of the accuracy matrix a new candidate is measured against."""
        scores = self.store.journal.evals()
        return [scores[r.version] for r in self.rows()
                if r.promoted and r.version < before and r.version in scores]
