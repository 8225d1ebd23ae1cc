"""The spool: verified update blobs kept until their round is aggregated."""

from __future__ import annotations

from pathlib import Path

from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.files import write_atomic


class Spool:
    """Verified update blobs, one file each, under `root/<round>/<update>.blob`.

    Args:
        root: The spool's directory.
        sync: fsync each blob (the journal's `synchronous = "FULL"`: power loss too); else a
            blob, like the journal's commits, survives a killed process, and its write costs
            no disk flush on the round's path (40 MiB each for a 10M-parameter model).
    """

    def __init__(self, root: Path, *, sync: bool = True) -> None:
        self.root = root
        self.sync = sync

    def put(self, round_id: str, update_id: str, blob: bytes | bytearray | memoryview) -> str:
        """Store a blob whole (see `sync`); returns its path relative to the spool root."""
        rel = f"{round_id}/{update_id}.blob"
        write_atomic(self.root / rel, blob, sync=self.sync)
        return rel

    def get(self, rel: str) -> bytearray:
        """Read a stored blob into a writable buffer (so decoding needs no second copy)."""
        path = self.root / rel
        try:
            with path.open("rb") as fh:
                buf = bytearray(path.stat().st_size)
                fh.readinto(buf)
                return buf
        except OSError as err:
            raise StoreError(Reason.STORE_FAILED, f"{rel}: {err}") from err
