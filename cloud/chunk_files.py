"""The frames of updates still arriving, one append-only file per update.

The journal keeps a small row per chunk (its update, index, sender, and where its frame is);
the frames themselves go here, `root/<update id>.frames`, because 64 KiB blobs written into
SQLite cost a WAL write, a checkpoint copy and, when the update is decided, a delete of every
row's pages: most of a large round's time at the cloud. A frame is written before its row is
committed, and the row names its offset, so a killed process leaves at worst bytes no row
points at; `sweep` removes files no row names at start. With `sync` a flush fsyncs the files
it touched before their rows commit (power loss too, as the journal's FULL).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.files import fsync_path
from fedstream.shared.protocol.messages import BLOB_ID

SUFFIX = ".frames"


class ChunkFiles:
    """Frames by update id; see the module doc.

    Args:
        root: The directory (created on first use).
        sync: fsync the files a flush touched (`synced`) before their rows commit.
    """

    def __init__(self, root: Path, *, sync: bool = False) -> None:
        self.root, self.sync = root, sync
        self._touched: set[str] = set()

    def _path(self, blob_id: str) -> Path:
        if BLOB_ID.fullmatch(blob_id) is None:  # ids come checked from the wire (P5)
            raise ValueError(f"not a blob id: {blob_id!r}")
        return self.root / f"{blob_id}{SUFFIX}"

    def append(self, blob_id: str, frame: bytes) -> int:
        """Add `frame` to its update's file; returns its offset there.

        Raises:
            StoreError: store_failed when the file cannot be written.
        """
        path = self._path(blob_id)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                offset = os.lseek(fd, 0, os.SEEK_END)
                view = memoryview(frame)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as err:
            raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err
        self._touched.add(blob_id)
        return offset

    def synced(self) -> None:
        """With `sync`, flush the files appended to since the last call (and the directory,
        which may hold new ones) to the disk.

        Raises:
            StoreError: store_failed when a file cannot be flushed.
        """
        touched, self._touched = self._touched, set()
        if not self.sync or not touched:
            return
        try:
            for blob_id in sorted(touched):
                fsync_path(self._path(blob_id))
            fsync_path(self.root)
        except OSError as err:
            raise StoreError(Reason.STORE_FAILED, f"{self.root}: {err}") from err

    def read(self, blob_id: str, offset: int, length: int) -> bytes:
        """The frame at `offset`.

        Raises:
            StoreError: store_failed when the file is missing or shorter than its rows say.
        """
        path = self._path(blob_id)
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                frame = fh.read(length)
        except OSError as err:
            raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err
        if len(frame) != length:
            raise StoreError(Reason.STORE_FAILED, f"{path}: {length} bytes at {offset} expected,"
                             f" {len(frame)} there")
        return frame

    def drop(self, blob_id: str) -> None:
        """Forget an update's frames (its verdict is recorded, or its rows are gone)."""
        self._touched.discard(blob_id)
        with contextlib.suppress(OSError):
            self._path(blob_id).unlink(missing_ok=True)

    def sweep(self, keep: Iterable[str]) -> int:
        """Remove the files of updates not in `keep` (the ones rows name); returns how many.
        Only the journal's writer may call it: another process's frames may await rows."""
        kept = {f"{blob_id}{SUFFIX}" for blob_id in keep}
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.root.iterdir():
                if path.suffix == SUFFIX and path.name not in kept:
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed += 1
        return removed
