"""The edge's durable sample store: sensor readings in one SQLite file, bounded by age and rows.

A reading is keyed by (channel, t); the first value stored for a key wins, so re-deliveries
(QoS 1 resends, retained messages after a reconnect) change nothing and a window once read
never changes under a model trained on it. `add` never leaves more than `max_rows` rows (it
evicts the oldest t, across channels, in its transaction); `prune(now)` drops t older than
`now - max_age_s`. Freed pages are reused and `journal_size_limit` trims the WAL, so disk stays
bounded. Units are not stored: each channel's config names its unit and intake enforces it.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt
import structlog

from fedstream.edge_node.sensors.reading import Reading
from fedstream.shared.errors import Reason, StoreError

log = structlog.get_logger(__name__)
T = TypeVar("T")
Series = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (channel TEXT NOT NULL, t REAL NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (channel, t)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_t ON readings (t);
"""
_WAL_LIMIT_BYTES = 64 * 1024 * 1024


class Synchronous(StrEnum):
    """SQLite `synchronous`: NORMAL survives a killed process, FULL also a power cut."""

    NORMAL = "NORMAL"
    FULL = "FULL"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreParams:
    """Bounds of the sample store.

    Args:
        max_rows: Rows kept at most, an int >= 1; the oldest by t go first.
        max_age_s: Seconds of readings kept, > 0; `math.inf` keeps them until the row cap.
        synchronous: NORMAL (an fsync per checkpoint) or FULL (an fsync per commit).

    Raises:
        ValueError: a value out of range or of the wrong type.
    """

    max_rows: int = 1_000_000
    max_age_s: float = 7 * 24 * 3600.0
    synchronous: Synchronous = Synchronous.NORMAL

    def __post_init__(self) -> None:
        if type(self.max_rows) is not int or self.max_rows < 1:
            raise ValueError(f"max_rows must be an int >= 1; got {self.max_rows!r}")
        if not isinstance(self.max_age_s, int | float) or not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be a number > 0; got {self.max_age_s!r}")
        Synchronous(self.synchronous)  # ValueError for anything but NORMAL or FULL


class SampleStore:
    """Readings in one WAL-mode SQLite file, safe to share between a writer and a reader thread.

    Build it with `SampleStore.open`; the constructor only assigns.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, params: StoreParams, rows: int) -> None:
        self._db, self.path, self.params, self._rows = db, path, params, rows
        self._lock = threading.Lock()  # one connection: statements of two threads must not mix
        self._evicted = 0  # rows `add` evicted for the cap since the last `prune`

    @classmethod
    def open(cls, path: Path, params: StoreParams) -> Self:
        """Open (creating it and its directory) the store at `path`.

        Raises:
            StoreError: STORE_FAILED, naming `path`, when it cannot be created or read.
        """
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={Synchronous(params.synchronous).value}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            db.executescript(SCHEMA)
            rows = int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
        except (sqlite3.Error, OSError) as err:
            if db is not None:
                db.close()
            raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err
        log.info("store_opened", path=str(path), rows=rows)
        return cls(db, path, params, rows)

    def close(self) -> None:
        """Close the file; the store is unusable afterwards."""
        with self._lock:
            self._db.close()

    def add(self, readings: Sequence[Reading]) -> int:
        """Store a batch in one transaction, then evict the oldest rows beyond `max_rows`.

        Returns:
            How many rows were new; readings whose (channel, t) is stored already are ignored.

        Raises:
            ValueError: a reading's t or value is not finite (nothing of the batch is stored).
            StoreError: STORE_FAILED when SQLite fails (nothing of the batch is stored).
        """
        if not readings:
            return 0
        bad = next((r for r in readings if not (math.isfinite(r.t) and math.isfinite(r.value))),
                   None)
        if bad is not None:
            raise ValueError(f"reading not finite: {bad!r}")

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            new = db.executemany("INSERT OR IGNORE INTO readings (channel, t, value) VALUES "
                                 "(?, ?, ?)", ((r.channel, r.t, r.value) for r in readings))
            return new.rowcount, self._evict_beyond_cap(db, self._rows + new.rowcount)

        with self._lock:
            new, evicted = self._transact(work)
            self._rows += new - evicted
            self._evicted += evicted
        return new

    def prune(self, now: float) -> int:
        """Delete rows with t older than `now - max_age_s`, then the oldest beyond `max_rows`
        (a store reopened with a smaller cap); logs what went since the last prune.

        Returns:
            How many rows this call deleted.

        Raises:
            StoreError: STORE_FAILED when SQLite fails (nothing is deleted).
        """
        cutoff = now - self.params.max_age_s

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            aged = db.execute("DELETE FROM readings WHERE t < ?", (cutoff,)).rowcount
            return aged, self._evict_beyond_cap(db, self._rows - aged)

        with self._lock:
            aged, capped = self._transact(work)
            self._rows -= aged + capped
            evicted, self._evicted = self._evicted + capped, 0
        if aged or evicted:
            log.info("readings_pruned", by_age=aged, by_cap=evicted, rows=self._rows)
        return aged + capped

    def count(self) -> int:
        """Rows stored."""
        return self._rows

    def span(self) -> tuple[float, float] | None:
        """The (oldest, newest) t stored, across channels; None when empty."""
        lo, hi = self._read("SELECT MIN(t), MAX(t) FROM readings", ())[0]
        return None if lo is None else (float(lo), float(hi))

    def window(self, channels: Iterable[str], since: float, until: float) -> dict[str, Series]:
        """Each channel's readings with `since <= t < until`, ordered by t.

        Returns:
            channel -> (t, value), two float64 arrays of equal length (empty without readings).
        """
        out: dict[str, Series] = {}
        for channel in channels:
            rows = self._read("SELECT t, value FROM readings WHERE channel = ? AND t >= ? "
                              "AND t < ? ORDER BY t", (channel, since, until))
            both = np.array(rows, dtype=np.float64).reshape(-1, 2)
            out[channel] = (both[:, 0].copy(), both[:, 1].copy())
        return out

    def _evict_beyond_cap(self, db: sqlite3.Connection, rows: int) -> int:
        excess = max(0, rows - self.params.max_rows)
        if excess:
            db.execute("DELETE FROM readings WHERE (channel, t) IN (SELECT channel, t FROM "
                       "readings ORDER BY t, channel LIMIT ?)", (excess,))
        return excess

    def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one transaction; the caller holds `_lock` (row counts follow commits)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreError(Reason.STORE_FAILED, f"{self.path}: {err}") from err
        return result

    def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as err:
                raise StoreError(Reason.STORE_FAILED, f"{self.path}: {err}") from err
