"""Files that must be whole or absent (spooled updates, model versions, the edge outbox), and
the data directory they live in."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fedstream.shared.errors import Reason, StoreError


def write_atomic(path: Path, data: bytes | bytearray | memoryview, *,
                 mode: int = 0o644, sync: bool = True) -> None:
    """Write `data` to `path` so a crash leaves either the old file or the whole new one.

    `mode` is the file's permissions from its first byte (0o600 for a private key: never
    readable by others, not even for a moment); the umask still applies. `sync` flushes the
    file and its directory to the disk, so the rename also survives power loss; without it,
    a killed process still leaves the old file or the whole new one (the page cache has it).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a crash's leftover would keep its own mode
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        tmp.replace(path)
        if sync:
            fsync_path(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):  # e.g. the temp path is a directory
            tmp.unlink(missing_ok=True)
        raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries (a new or renamed file in it), to the disk.

    Raises:
        OSError: it cannot be opened or flushed.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_data_dir(path: Path) -> Path:
    """Create a service's data directory if needed and check it can be written, at start.

    Args:
        path: The configured `data_dir`.

    Returns:
        `path`.

    Raises:
        StoreError: store_failed naming the path and the `data_dir` key, e.g. for the default
            /var/lib/... when not run as root or by systemd, or a parent that is a file.
    """
    fix = "set data_dir in the config or FEDSTREAM_DATA_DIR"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(Reason.STORE_FAILED, f"data_dir {path} cannot be created "
                         f"({err.strerror or err}); {fix}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(Reason.STORE_FAILED, f"data_dir {path} is not writable; {fix}")
    return path
