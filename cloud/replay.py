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

Arrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (slot INTEGER PRIMARY KEY, x BLOB NOT NULL, y INTEGER NOT NULL,
                                  w TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def check_batch(features: np.ndarray, labels: np.ndarray, cols: int | None) -> Arrays:
    """Features as float32 [N, cols] and labels as int64 [N], or ValueError."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    y = np.ascontiguousarray(labels, dtype=np.int64)
    if x.ndim != 2 or (cols is not None and x.shape[1] != cols) or y.shape != (x.shape[0],):
        raise ValueError(f"expected features [N, {cols or 'D'}] and labels [N], "
                         f"got {features.shape} and {labels.shape}")
    return x, y


class ReplayBuffer:
    """At most `capacity` samples of `cols` features, a uniform sample of all ever offered.

    Args:
        path: Its own SQLite file; created on first use.
        capacity: Most samples kept (at least 1).
        cols: Features per sample.
        seed: Seeds the generator of a new buffer; a reopened one continues its saved state.

    Raises:
        StoreError: STORE_FAILED for an unreadable file, or one made with another capacity/cols.
    """

    def __init__(self, path: Path, *, capacity: int, cols: int, seed: int = 0) -> None:
        if capacity < 1 or cols < 1:
            raise ValueError(f"capacity and cols must be >= 1, got {capacity}, {cols}")
        self.path, self.capacity, self.cols = path, capacity, cols
        self._db = open_wal(path, SCHEMA)
        if "w" not in {r[1] for r in self._db.execute("PRAGMA table_info(slots)")}:
            # Buffers written before slots remembered their window.
            self._db.execute("ALTER TABLE slots ADD COLUMN w TEXT NOT NULL DEFAULT ''")
        self._rng = np.random.default_rng(seed)
        fresh = {"capacity": str(capacity), "cols": str(cols), "seen": "0",
                 "rng": json.dumps(self._rng.bit_generator.state)}
        meta = transact(self._db, lambda db: _load_meta(db, fresh))
        if (meta["capacity"], meta["cols"]) != (fresh["capacity"], fresh["cols"]):
            self._db.close()
            raise StoreError(Reason.STORE_FAILED, f"{path}: made for capacity "
                             f"{meta['capacity']} and cols {meta['cols']}")
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

    def add(self, features: np.ndarray, labels: np.ndarray, window: str = "") -> int:
        """Offer samples of evaluation window `window` in order; returns how many slots were
        written (one transaction)."""
        x, y = check_batch(features, labels, self.cols)
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
                           [(s, x[i].tobytes(), int(y[i]), window)
                            for s, i in written.items()])
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
        return x.reshape(len(rows), self.cols), np.array([r[1] for r in rows], dtype=np.int64)

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
