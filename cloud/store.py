"""Where the cloud keeps what must survive a restart, under one data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedstream.cloud.journal import Journal
from fedstream.cloud.registry_store import ModelFiles
from fedstream.cloud.spool import Spool


@dataclass(frozen=True, slots=True)
class CloudStore:
    """The journal (SQLite), the spool of update blobs and the model files."""

    journal: Journal
    spool: Spool
    models: ModelFiles

    @classmethod
    def open(cls, data_dir: Path, *, synchronous: str = "NORMAL") -> CloudStore:
        """Open (or create) the store under `data_dir`."""
        return cls(journal=Journal(data_dir / "journal.db", synchronous=synchronous),
                   spool=Spool(data_dir / "spool"), models=ModelFiles(data_dir / "models"))
