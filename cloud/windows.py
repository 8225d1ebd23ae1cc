"""Time-stamped evaluation windows persisted in SQLite; the newest is held out from training.

A sample without a window name lands in `w{int(now // window_s)}`, the window of the clock
time it arrived at; a named one (a data file's stem, a batch's `window`) lands in that window.
Windows are ordered by the time they were first written to.

Each window is cut into an evaluation part and a training part by row position
(`eval_rows`): the cloud scores models on the first and trains only on the second, so its
accuracy matrix and promotion gate measure data it never fitted.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedstream.cloud._sqlite import open_wal, transact
from fedstream.cloud.replay import Arrays, check_batch

SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, created REAL NOT NULL, cols INTEGER NOT NULL,
    kept INTEGER NOT NULL DEFAULT 0, dropped INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS batches (
    name TEXT NOT NULL, seq INTEGER NOT NULL, x BLOB NOT NULL, y BLOB NOT NULL,
    PRIMARY KEY (name, seq));
"""


def eval_rows(start: int, count: int, fraction: float) -> npt.NDArray[np.bool_]:
    """Which of `count` rows at window positions `start`, `start + 1`, ... are evaluation
    rows: a share `fraction` spread evenly, fixed by position, so a growing window never moves
    a row from one part to the other."""
    pos = np.arange(start, start + count)
    mask: npt.NDArray[np.bool_] = np.floor((pos + 1) * fraction) > np.floor(pos * fraction)
    return mask


class EvalWindows:
    """Evaluation windows of at most `max_rows_per_window` samples each.

    Args:
        path: Its own SQLite file; created on first use.
        window_s: Length in seconds of a clock-named window.
        max_rows_per_window: Rows kept per window; later rows beyond it are dropped and counted.
        width: 0 for class labels, else the number of regression targets per sample.

    Raises:
        StoreError: STORE_FAILED when the file cannot be opened or written.
    """

    def __init__(self, path: Path, *, window_s: float, max_rows_per_window: int,
                 width: int = 0) -> None:
        if not window_s > 0 or max_rows_per_window < 1:
            raise ValueError(f"window_s must be > 0 and max_rows_per_window >= 1, got "
                             f"{window_s}, {max_rows_per_window}")
        self.path, self.window_s, self.cap = path, window_s, max_rows_per_window
        self.width = width
        self._db = open_wal(path, SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def window_of(self, now: float) -> str:
        """The clock-named window for time `now`."""
        return f"w{int(now // self.window_s)}"

    def add(self, features: np.ndarray, y: np.ndarray, now: float, name: str = "") -> int:
        """Append samples to window `name` (or the clock's); returns how many were kept.

        Raises:
            ValueError: wrong shapes, or a feature count other than the window's.
        """
        name = name or self.window_of(now)
        x, y = check_batch(features, y, None, self.width)

        def work(db: sqlite3.Connection) -> int:
            db.execute("INSERT OR IGNORE INTO windows (name, seq, created, cols) VALUES "
                       "(?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM windows), ?, ?)",
                       (name, now, x.shape[1]))
            cols, kept = db.execute("SELECT cols, kept FROM windows WHERE name = ?",
                                    (name,)).fetchone()
            if cols != x.shape[1]:
                raise ValueError(f"window {name!r} holds {cols} features, got {x.shape[1]}")
            take = max(0, min(len(y), self.cap - int(kept)))
            if take:
                db.execute("INSERT INTO batches VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 "
                           "FROM batches WHERE name = ?), ?, ?)",
                           (name, name, x[:take].tobytes(), y[:take].tobytes()))
            db.execute("UPDATE windows SET kept = kept + ?, dropped = dropped + ? "
                       "WHERE name = ?", (take, len(y) - take, name))
            return take
        return transact(self._db, work)

    def names(self) -> list[str]:
        """Every window, oldest first."""
        rows = self._db.execute("SELECT name FROM windows ORDER BY created, seq").fetchall()
        return [r[0] for r in rows]

    def get(self, name: str) -> Arrays:
        """The samples of window `name`, in arrival order; KeyError for an unknown window."""
        row = self._db.execute("SELECT cols FROM windows WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(name)
        parts = self._db.execute("SELECT x, y FROM batches WHERE name = ? ORDER BY seq",
                                 (name,)).fetchall()
        x = np.frombuffer(b"".join(p[0] for p in parts), dtype=np.float32).reshape(-1, row[0])
        ys = b"".join(p[1] for p in parts)
        if self.width:
            return x, np.frombuffer(ys, dtype=np.float32).reshape(len(x), self.width)
        return x, np.frombuffer(ys, dtype=np.int64)

    def parts(self, name: str, fraction: float) -> tuple[Arrays, Arrays]:
        """Window `name` cut into its evaluation rows and its training rows (`eval_rows`)."""
        x, y = self.get(name)
        scored = eval_rows(0, len(y), fraction)
        return (x[scored], y[scored]), (x[~scored], y[~scored])

    def offered(self, name: str) -> int:
        """Rows ever offered to window `name`, kept or beyond its cap (0 for a new one): the
        position the next row takes."""
        row = self._db.execute("SELECT kept + dropped FROM windows WHERE name = ?",
                               (name,)).fetchone()
        return int(row[0]) if row else 0

    def dropped(self, name: str) -> int:
        """Rows offered to window `name` beyond its cap (0 for an unknown window)."""
        row = self._db.execute("SELECT dropped FROM windows WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def newest(self) -> str | None:
        """The most recent window, held out from training; None before any sample."""
        names = self.names()
        return names[-1] if names else None

    def training_windows(self) -> list[str]:
        """Every window but the newest, oldest first."""
        return self.names()[:-1]
