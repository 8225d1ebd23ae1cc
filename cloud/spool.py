"""The spool: verified update blobs kept until their round is aggregated."""

from __future__ import annotations

from pathlib import Path

from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.files import write_atomic


class Spool:
    """Verified update blobs, one file each, under `root/<round>/<update>.blob`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, round_id: str, update_id: str, blob: bytes | bytearray | memoryview) -> str:
        """Store a blob durably; returns its path relative to the spool root."""
        rel = f"{round_id}/{update_id}.blob"
        write_atomic(self.root / rel, blob)
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
