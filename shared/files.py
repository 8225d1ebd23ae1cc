"""Files that must be whole or absent (spooled updates, model versions, the edge outbox)."""

from __future__ import annotations

import contextlib
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
        with contextlib.suppress(OSError):  # e.g. the temp path is a directory
            tmp.unlink(missing_ok=True)
        raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err
