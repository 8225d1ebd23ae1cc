"""A bounded replay buffer: reservoir sampling (Vitter's Algorithm R) persisted in SQLite.

Every sample ever offered has the same chance, `capacity / seen`, of being in the buffer. The
slots, the `seen` count and the generator state are written in one transaction per `add`, so a
reopened buffer holds the same rows and continues the same reservoir. Each slot remembers its
evaluation window, so training can leave out the held-out newest one.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedstream.cloud._sqlite import open_wal, transact
from fedstream.shared.errors import Reason, StoreError

# Features [N, D] and what a model learns from them: int64 labels [N], or float32 targets
# [N, width] for a regression model (width 0 means labels throughout this module).
Arrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64] | npt.NDArray[np.float32]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (slot INTEGER PRIMARY KEY, x BLOB NOT NULL, y INTEGER NOT NULL,
                                  w TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def check_batch(features: np.ndarray, y: np.ndarray, cols: int | None,
                width: int = 0) -> Arrays:
    """Features as float32 [N, cols] and labels as int64 [N] (`width` 0) or targets as
    float32 [N, width], or ValueError."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    out: npt.NDArray[np.int64] | npt.NDArray[np.float32] = (
        np.ascontiguousarray(y, dtype=np.float32) if width
        else np.ascontiguousarray(y, dtype=np.int64))
    shape: tuple[int, ...] = (x.shape[0], width) if width else (x.shape[0],)
    if x.ndim != 2 or (cols is not None and x.shape[1] != cols) or out.shape != shape:
        raise ValueError(f"expected features [N, {cols or 'D'}] and "
                         f"{f'targets [N, {width}]' if width else 'labels [N]'}, "
                         f"got {features.shape} and {y.shape}")
    return x, out


def empty_arrays(cols: int, width: int = 0) -> Arrays:
    """No samples, in the shapes `check_batch` gives."""
    return (np.zeros((0, cols), np.float32),
            np.zeros((0, width), np.float32) if width else np.zeros(0, np.int64))



class ReplayBuffer:
    """At most `capacity` samples of `cols` features, a uniform sample of all ever offered.

    Args:
        path: Its own SQLite file; created on first use.
        capacity: Most samples kept (at least 1).
        cols: Features per sample.
        width: 0 for class labels, else the number of regression targets per sample (kept
            as float32 bytes in the slot's `y`).
        seed: Seeds the generator of a new buffer; a reopened one continues its saved state.

    Raises:
        StoreError: STORE_FAILED for an unreadable file, or one made with another capacity,
            cols or width.
    """

    def __init__(self, path: Path, *, capacity: int, cols: int, width: int = 0,
                 seed: int = 0) -> None:
        if capacity < 1 or cols < 1 or width < 0:
            raise ValueError(f"capacity and cols must be >= 1 and width >= 0, got {capacity}, "
                             f"{cols}, {width}")
        self.path, self.capacity, self.cols, self.width = path, capacity, cols, width
        self._db = open_wal(path, SCHEMA)
        if "w" not in {r[1] for r in self._db.execute("PRAGMA table_info(slots)")}:
            # Buffers written before slots remembered their window.
            self._db.execute("ALTER TABLE slots ADD COLUMN w TEXT NOT NULL DEFAULT ''")
        self._rng = np.random.default_rng(seed)
        fresh = {"capacity": str(capacity), "cols": str(cols), "width": str(width), "seen": "0",
                 "rng": json.dumps(self._rng.bit_generator.state)}
        meta = transact(self._db, lambda db: _load_meta(db, fresh))
        shape = ("capacity", "cols", "width")
        if [meta[k] for k in shape] != [fresh[k] for k in shape]:
            self._db.close()
            raise StoreError(Reason.STORE_FAILED, f"{path}: made for capacity "
                             f"{meta['capacity']}, cols {meta['cols']} and width "
                             f"{meta['width']}")
        self._seen = int(meta["seen"])
        self._rng.bit_generator.state = json.loads(meta["rng"])

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @property
    def seen(self) -> int:
        """Samples ever offered."""
        return self._seen

    def __len__(self) -> int:
        return min(self._seen, self.capacity)

    def add(self, features: np.ndarray, y: np.ndarray, window: str = "") -> int:
        """Offer samples of evaluation window `window` in order; returns how many slots were
        written (one transaction)."""
        x, y = check_batch(features, y, self.cols, self.width)
        state = self._rng.bit_generator.state
        # One uniform draw per sample, so the stream does not depend on how it is batched.
        offered = self._seen + np.arange(len(y))
        draws = np.minimum((self._rng.random(len(y)) * (offered + 1)).astype(np.int64), offered)
        slots = np.where(offered < self.capacity, offered, draws)
        written = {int(s): i for i, s in enumerate(slots) if s < self.capacity}  # last wins
        meta = {"seen": str(self._seen + len(y)),
                "rng": json.dumps(self._rng.bit_generator.state)}

        def work(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO slots VALUES (?, ?, ?, ?)",
                           [(s, x[i].tobytes(), y[i].tobytes() if self.width else int(y[i]),
                             window) for s, i in written.items()])
            db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                           [(v, k) for k, v in meta.items()])
        try:
            transact(self._db, work)
        except BaseException:
            self._rng.bit_generator.state = state  # nothing was written: undo the draws
            raise
        self._seen += len(y)
        return len(written)

    def arrays(self, *, exclude: str | None = None) -> Arrays:
        """Every kept sample, in slot order, but those of window `exclude`."""
        rows = self._db.execute("SELECT x, y FROM slots WHERE w IS NOT ? ORDER BY slot",
                                (exclude,)).fetchall()
        x = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32)
        if not self.width:
            return x.reshape(len(rows), self.cols), np.array([r[1] for r in rows], np.int64)
        y = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return x.reshape(len(rows), self.cols), y.reshape(len(rows), self.width)

    def sample(self, n: int, rng_seed: int, *, exclude: str | None = None) -> Arrays:
        """Up to `n` distinct kept samples outside window `exclude`, chosen uniformly by a
        generator seeded `rng_seed`."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        x, y = self.arrays(exclude=exclude)
        pick = np.sort(np.random.default_rng(rng_seed).choice(len(y), min(n, len(y)),
                                                               replace=False))
        return x[pick], y[pick]


def _load_meta(db: sqlite3.Connection, fresh: dict[str, str]) -> dict[str, str]:
    db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", fresh.items())
    return dict(db.execute("SELECT key, value FROM meta").fetchall())
