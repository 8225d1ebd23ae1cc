"""The edge's durable sample store: sensor readings and label spans in one SQLite file, bounded
by age and rows.

A reading is keyed by (channel, t); the first value stored for a key wins, so re-deliveries
(QoS 1 resends, retained messages after a reconnect) change nothing and a window once read
never changes under a model trained on it. `add` never leaves more than `max_rows` rows (it
evicts the oldest t, across channels, in its transaction); `prune(now)` drops t older than
`now - max_age_s`. Freed pages are reused and `journal_size_limit` trims the WAL, so disk stays
bounded. Units are not stored: each channel's config names its unit and intake enforces it.

Label spans (`[from, to)` with a class) live beside the readings. A span stored again (the same
label and bounds, a QoS 1 resend) changes nothing; otherwise spans keep their arrival order,
because where two overlap the later one wins (`label_spans`). `prune` drops the spans that end
at or before the oldest reading kept, or before the age cutoff, and `add_spans` keeps at most
`max_spans`, the earliest-ending going first.
"""

from __future__ import annotations

import functools
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
from fedstream.shared.learning.series.windows import LabelSpan

log = structlog.get_logger(__name__)
T = TypeVar("T")
Series = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (channel TEXT NOT NULL, t REAL NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (channel, t)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_t ON readings (t);
CREATE TABLE IF NOT EXISTS labels (seq INTEGER PRIMARY KEY, label INTEGER NOT NULL,
    t_from REAL NOT NULL, t_to REAL NOT NULL, UNIQUE (t_from, t_to, label));
CREATE INDEX IF NOT EXISTS labels_to ON labels (t_to);
"""
_WAL_LIMIT_BYTES = 64 * 1024 * 1024
# Rows per INSERT statement, as powers of two (each statement text is compiled once and
# cached): the largest takes 768 parameters, under the 999 of SQLite before 3.32.
_INSERT_SIZES = (256, 64, 16, 4, 1)


def _insert(db: sqlite3.Connection, readings: Sequence[Reading]) -> int:
    """INSERT OR IGNORE the readings in order, many rows per statement; the number new.

    `executemany` steps SQLite once per row and releases the GIL around every step: with
    paho's thread busy parsing a flood, each step then waits for the GIL, and the writer fell
    to ~20k rows/s here against ~80k with one step per 256 rows (bench/sensor_intake.py
    measures the whole path). Rows keep their order, so the first of a repeated key wins.
    """
    new, i = 0, 0
    for size in _INSERT_SIZES:
        sql = _insert_sql(size)
        while len(readings) - i >= size:
            args = [x for r in readings[i:i + size] for x in (r.channel, r.t, r.value)]
            new += db.execute(sql, args).rowcount
            i += size
    return new


@functools.cache
def _insert_sql(rows: int) -> str:
    return ("INSERT OR IGNORE INTO readings (channel, t, value) VALUES "
            + ", ".join(["(?, ?, ?)"] * rows))


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
        max_spans: Label spans kept at most, an int >= 1; the earliest-ending go first.
        synchronous: NORMAL (an fsync per checkpoint) or FULL (an fsync per commit).

    Raises:
        ValueError: a value out of range or of the wrong type.
    """

    max_rows: int = 1_000_000
    max_age_s: float = 7 * 24 * 3600.0
    max_spans: int = 100_000
    synchronous: Synchronous = Synchronous.NORMAL

    def __post_init__(self) -> None:
        if type(self.max_rows) is not int or self.max_rows < 1:
            raise ValueError(f"max_rows must be an int >= 1; got {self.max_rows!r}")
        if not isinstance(self.max_age_s, int | float) or not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be a number > 0; got {self.max_age_s!r}")
        if type(self.max_spans) is not int or self.max_spans < 1:
            raise ValueError(f"max_spans must be an int >= 1; got {self.max_spans!r}")
        Synchronous(self.synchronous)  # ValueError for anything but NORMAL or FULL


class SampleStore:
    """Readings and label spans in one WAL-mode SQLite file, safe to share between writer and
    reader threads.

    Build it with `SampleStore.open`; the constructor only assigns.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, params: StoreParams, rows: int,
                 spans: int = 0) -> None:
        self._db, self.path, self.params, self._rows = db, path, params, rows
        self._spans = spans
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
            spans = int(db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
        except (sqlite3.Error, OSError) as err:
            if db is not None:
                db.close()
            raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err
        log.info("store_opened", path=str(path), rows=rows, spans=spans)
        return cls(db, path, params, rows, spans)

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
            new = _insert(db, readings)
            return new, self._evict_beyond_cap(db, self._rows + new)

        with self._lock:
            new, evicted = self._transact(work)
            self._rows += new - evicted
            self._evicted += evicted
        return new

    def add_spans(self, spans: Sequence[LabelSpan]) -> int:
        """Store label spans in one transaction, then evict the earliest-ending beyond
        `max_spans`.

        Returns:
            How many spans were new; a span stored already (same label and bounds) is ignored.

        Raises:
            StoreError: STORE_FAILED when SQLite fails (nothing of the batch is stored).
        """
        if not spans:
            return 0

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            new = db.executemany("INSERT OR IGNORE INTO labels (label, t_from, t_to) VALUES "
                                 "(?, ?, ?)", ((s.label, s.start, s.end) for s in spans))
            return new.rowcount, self._evict_spans(db, self._spans + new.rowcount)

        with self._lock:
            new, evicted = self._transact(work)
            self._spans += new - evicted
        return new

    def spans(self, since: float, until: float) -> list[LabelSpan]:
        """The spans overlapping `[since, until)`, in the order they were first stored."""
        rows = self._read("SELECT label, t_from, t_to FROM labels WHERE t_to > ? AND t_from < ? "
                          "ORDER BY seq", (since, until))
        return [LabelSpan(label=int(k), start=float(a), end=float(b)) for k, a, b in rows]

    def span_count(self) -> int:
        """Label spans stored."""
        return self._spans

    def prune(self, now: float) -> int:
        """Delete rows with t older than `now - max_age_s`, then the oldest beyond `max_rows`
        (a store reopened with a smaller cap), then the label spans that end at or before the
        oldest row left or before `now - max_age_s`; logs what went since the last prune.

        Returns:
            How many rows (readings) this call deleted.

        Raises:
            StoreError: STORE_FAILED when SQLite fails (nothing is deleted).
        """
        cutoff = now - self.params.max_age_s

        def work(db: sqlite3.Connection) -> tuple[int, int, int]:
            aged = db.execute("DELETE FROM readings WHERE t < ?", (cutoff,)).rowcount
            capped = self._evict_beyond_cap(db, self._rows - aged)
            oldest = db.execute("SELECT MIN(t) FROM readings").fetchone()[0]
            spans = db.execute("DELETE FROM labels WHERE t_to < ? OR t_to <= ?",
                               (cutoff, -math.inf if oldest is None else oldest)).rowcount
            return aged, capped, spans + self._evict_spans(db, self._spans - spans)

        with self._lock:
            aged, capped, spans = self._transact(work)
            self._rows -= aged + capped
            self._spans -= spans
            evicted, self._evicted = self._evicted + capped, 0
        if aged or evicted or spans:
            log.info("readings_pruned", by_age=aged, by_cap=evicted, rows=self._rows,
                     spans_pruned=spans, spans=self._spans)
        return aged + capped

    def count(self) -> int:
        """Rows stored."""
        return self._rows

    def span(self, channels: Iterable[str] | None = None) -> tuple[float, float] | None:
        """The (oldest, newest) t stored, across all channels or the ones named; None when
        they hold no readings."""
        if channels is None:
            found = [self._read("SELECT MIN(t), MAX(t) FROM readings", ())[0]]
        else:  # one primary-key lookup per end and channel, whatever the store holds
            found = [self._read("SELECT MIN(t), MAX(t) FROM readings WHERE channel = ?",
                                (c,))[0] for c in channels]
        ends = [(lo, hi) for lo, hi in found if lo is not None]
        if not ends:
            return None
        return float(min(lo for lo, _ in ends)), float(max(hi for _, hi in ends))

    def window(self, channels: Iterable[str], since: float, until: float, *,
               neighbours: bool = False) -> dict[str, Series]:
        """Each channel's readings with `since <= t < until`, ordered by t.

        Args:
            channels: The channels to read.
            since: Earliest t (inclusive).
            until: Latest t (exclusive).
            neighbours: Also the last reading before `since` and the first at or after
                `until`, so that holding or interpolating over `[since, until)` needs nothing
                else from the store.

        Returns:
            channel -> (t, value), two float64 arrays of equal length (empty without readings).
        """
        out: dict[str, Series] = {}
        for channel in channels:
            rows = self._read("SELECT t, value FROM readings WHERE channel = ? AND t >= ? "
                              "AND t < ? ORDER BY t", (channel, since, until))
            if neighbours:
                before = self._read("SELECT t, value FROM readings WHERE channel = ? AND t < ? "
                                    "ORDER BY t DESC LIMIT 1", (channel, since))
                after = self._read("SELECT t, value FROM readings WHERE channel = ? AND t >= ? "
                                   "ORDER BY t LIMIT 1", (channel, until))
                rows = before + rows + after
            both = np.array(rows, dtype=np.float64).reshape(-1, 2)
            out[channel] = (both[:, 0].copy(), both[:, 1].copy())
        return out

    def _evict_beyond_cap(self, db: sqlite3.Connection, rows: int) -> int:
        excess = max(0, rows - self.params.max_rows)
        if excess:
            db.execute("DELETE FROM readings WHERE (channel, t) IN (SELECT channel, t FROM "
                       "readings ORDER BY t, channel LIMIT ?)", (excess,))
        return excess

    def _evict_spans(self, db: sqlite3.Connection, spans: int) -> int:
        excess = max(0, spans - self.params.max_spans)
        if excess:
            db.execute("DELETE FROM labels WHERE seq IN (SELECT seq FROM labels ORDER BY t_to, "
                       "seq LIMIT ?)", (excess,))
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
