"""Where the cloud keeps what must survive a restart, under one data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedstream.cloud.journal import Journal
from fedstream.cloud.keyring import Keyring
from fedstream.cloud.registry_store import ModelFiles
from fedstream.cloud.spool import Spool


@dataclass(frozen=True, slots=True)
class CloudStore:
    """The journal (SQLite, with the keyring's tables), the spool of update blobs and the
    model files."""

    journal: Journal
    spool: Spool
    models: ModelFiles
    keys: Keyring

    @classmethod
    def open(cls, data_dir: Path, *, synchronous: str = "NORMAL") -> CloudStore:
        """Open (or create) the store under `data_dir`."""
        path = data_dir / "journal.db"
        return cls(journal=Journal(path, synchronous=synchronous),
                   spool=Spool(data_dir / "spool", sync=synchronous == "FULL"),
                   models=ModelFiles(data_dir / "models"),
                   keys=Keyring(path, synchronous=synchronous))

    def close(self) -> None:
        """Close the journal's connections."""
        self.keys.close()
        self.journal.close()
