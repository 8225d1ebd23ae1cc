"""Files that must be whole or absent: update blobs and model weights, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from fedstream.shared.errors import Reason, StoreError


def write_atomic(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` so a crash leaves either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err


class Spool:
    """Verified update blobs, one file each, under `root/<round>/<update>.blob`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, round_id: str, update_id: str, blob: bytes | bytearray | memoryview) -> str:
        """Store a blob durably; returns its path relative to the spool root."""
        rel = f"{round_id}/{update_id}.blob"
        write_atomic(self.root / rel, blob)
        return rel

    def get(self, rel: str) -> bytes:
        """Read a stored blob."""
        try:
            return (self.root / rel).read_bytes()
        except OSError as err:
            raise StoreError(Reason.STORE_FAILED, f"{rel}: {err}") from err
