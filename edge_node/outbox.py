"""Updates waiting for the cloud's receipt, kept on disk so a restart re-sends them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from fedstream.shared.errors import ProtocolError
from fedstream.shared.files import write_atomic
from fedstream.shared.protocol import wire

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Pending:
    """One update's frames, ready to (re-)publish."""

    update_id: str
    frames: list[bytes]


class Outbox:
    """A directory of `<update_id>.out` files, each the bundled chunk frames of one update.
    The edge that owns the directory is its only writer, so the ids held are counted in
    memory (the status asks on every loop pass)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._held = {path.stem for path in root.glob("*.out")}

    def put(self, update_id: str, frames: list[bytes]) -> None:
        """Keep an update durably until `remove` (atomic: whole or absent)."""
        write_atomic(self.root / f"{update_id}.out", wire.pack_frames(frames))
        self._held.add(update_id)

    def get(self, update_id: str) -> Pending | None:
        """One kept update; None if it is not here (or unreadable, which is logged)."""
        path = self.root / f"{update_id}.out"
        try:
            return Pending(update_id=update_id, frames=wire.unpack_frames(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ProtocolError) as err:
            log.error("outbox_entry_unreadable", path=str(path), detail=str(err))
            return None

    def remove(self, update_id: str) -> bool:
        """Drop an update once its receipt arrived; False if it was not here."""
        self._held.discard(update_id)
        try:
            (self.root / f"{update_id}.out").unlink()
        except FileNotFoundError:
            return False
        return True

    def pending(self, *, min_age_s: float = 0.0) -> list[Pending]:
        """Kept updates written at least `min_age_s` ago, oldest first; unreadable files are
        logged and set aside."""
        cutoff = time.time() - min_age_s
        items = []
        for path in sorted(self.root.glob("*.out"), key=lambda p: p.stat().st_mtime):
            if path.stat().st_mtime > cutoff:
                continue
            try:
                items.append(Pending(update_id=path.stem,
                                     frames=wire.unpack_frames(path.read_bytes())))
            except (OSError, ProtocolError) as err:
                log.error("outbox_entry_unreadable", path=str(path), detail=str(err))
                path.rename(path.with_suffix(".bad"))
                self._held.discard(path.stem)
        return items

    def __len__(self) -> int:
        return len(self._held)
