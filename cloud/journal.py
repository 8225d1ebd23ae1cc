"""The cloud's memory: SQLite in WAL mode holding chunks in flight, updates, rounds and versions.

Chunks in flight are a row each here and their frames in one file per update beside the
journal (`chunks/`, cloud/chunk_files.py).

Durability: WAL with synchronous=NORMAL survives a killed process (what the fault tests do);
set `synchronous="FULL"` to also survive power loss at the cost of an fsync per commit.

An accepted update is pending until a version folds it in; the version row and the marks on
the updates it consumed are written in one transaction, so a crash can neither publish a
version and forget what it consumed nor mark updates consumed by a version that does not exist.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from fedstream.cloud._sqlite import open_wal, read, transact
from fedstream.cloud.chunk_files import ChunkFiles
from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.control import ReceiptStatus, RoundState, VersionStatus

log = structlog.get_logger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    blob_id TEXT NOT NULL, idx INTEGER NOT NULL, edge_id TEXT NOT NULL, frame BLOB NOT NULL,
    off INTEGER NOT NULL DEFAULT -1, len INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (blob_id, idx));
CREATE TABLE IF NOT EXISTS updates (
    update_id TEXT PRIMARY KEY, round_id TEXT NOT NULL, edge_id TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', samples INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, codec TEXT NOT NULL DEFAULT '',
    spool TEXT NOT NULL DEFAULT '', base INTEGER NOT NULL DEFAULT 0, applied INTEGER);
CREATE INDEX IF NOT EXISTS updates_round ON updates (round_id, status);
CREATE TABLE IF NOT EXISTS rounds (
    round_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY, parent INTEGER, round_id TEXT NOT NULL, path TEXT NOT NULL,
    lineage TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'promoted',
    reason TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS evals (
    version INTEGER NOT NULL, window TEXT NOT NULL, accuracy REAL NOT NULL,
    PRIMARY KEY (version, window));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release, with their definitions, for journals created before.
ADDED_COLUMNS = (("updates", "base", "INTEGER NOT NULL DEFAULT 0"),
                 ("updates", "applied", "INTEGER"),
                 # Where a chunk's frame is in its update's frames file (cloud/chunk_files.py);
                 # -1: in the row's own `frame` (a journal written before them).
                 ("chunks", "off", "INTEGER NOT NULL DEFAULT -1"),
                 ("chunks", "len", "INTEGER NOT NULL DEFAULT 0"),
                 ("versions", "status", "TEXT NOT NULL DEFAULT 'promoted'"),
                 ("versions", "reason", "TEXT NOT NULL DEFAULT ''"))
VERSION_COLUMNS = "version, parent, round_id, path, lineage, status, reason"
UPDATE_COLUMNS = ("update_id, round_id, edge_id, status, reason, samples, bytes, codec, spool, "
                  "base, applied")


@dataclass(frozen=True, slots=True)
class UpdateRow:
    """One update the cloud decided on (accepted or rejected)."""

    update_id: str
    round_id: str
    edge_id: str
    status: ReceiptStatus
    reason: str = ""
    samples: int = 0
    bytes: int = 0
    codec: str = ""
    spool: str = ""
    base: int = 0
    applied: int | None = None


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One model version in the registry and where its weights are.

    `status` is promoted (it was, or is, the served model) or rejected (a candidate the
    promotion gate refused, with the gate's `reason`).
    """

    version: int
    parent: int | None
    round_id: str
    path: str
    lineage: dict[str, Any]
    status: VersionStatus = VersionStatus.PROMOTED
    reason: str = ""

    @property
    def promoted(self) -> bool:
        """Whether this version was served."""
        return self.status == VersionStatus.PROMOTED


class Journal:
    """All durable state of one cloud service, in one SQLite file.

    Args:
        path: The database file; its directory is created.
        synchronous: SQLite's `synchronous` pragma ("NORMAL" or "FULL").
    """

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self._db = open_wal(path, SCHEMA, synchronous=synchronous)
        self._frames = ChunkFiles(path.parent / "chunks", sync=synchronous == "FULL")
        self._chunks: list[tuple[str, int, str, int, int]] = []
        self._run(_migrate)
        self.path = path

    def close(self) -> None:
        """Write what `put_chunk` holds, then close the database."""
        try:
            self.flush()
        finally:
            self._db.close()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.flush()
        return read(self._db, sql, params)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one transaction (retried while another process holds the lock),
        after the chunks `put_chunk` holds: every read and write sees them."""
        self.flush()
        return transact(self._db, work)

    # -- chunks of updates still arriving --------------------------------------------------
    def put_chunk(self, blob_id: str, index: int, edge_id: str, frame: bytes) -> None:
        """Keep a received chunk frame (idempotent by blob id and index): the frame goes to
        its update's frames file now, its row with the next `flush` (or any other operation)
        and the others held, in one transaction: a commit per 64 KiB chunk cost more than the
        rest of its handling. The caller acks the chunk's message only after that flush.

        Raises:
            StoreError: store_failed when the frame cannot be written.
        """
        offset = self._frames.append(blob_id, frame)
        self._chunks.append((blob_id, index, edge_id, offset, len(frame)))

    def flush(self) -> None:
        """Commit the rows of the chunks `put_chunk` holds, in one transaction (with
        synchronous FULL, after their frames are on the disk).

        Raises:
            StoreError: store_failed; those chunks are not kept (as one failed write would
                not be): what they leave missing, their edges' probes fill.
        """
        held, self._chunks = self._chunks, []
        if held:
            self._frames.synced()
            transact(self._db, lambda db: db.executemany(
                "INSERT OR IGNORE INTO chunks (blob_id, idx, edge_id, frame, off, len) "
                "VALUES (?, ?, ?, x'', ?, ?)", held))

    def sweep_frames(self) -> int:
        """Remove frames files no chunk row names (a crash between a frame and its row, or
        between a verdict and its file's removal); returns how many. For the journal's one
        writer, at start: another process's frames may still await their rows."""
        return self._frames.sweep(b for (b,) in self._read("SELECT DISTINCT blob_id FROM chunks"))

    def chunk_frames(self, blob_id: str | None = None) -> Iterator[tuple[str, bytes]]:
        """Kept chunk frames with their sender (of one blob, or all), for replay."""
        # The rows first, then each blob's frames whole before the first of them is handed
        # on: the caller may decide that blob on the way, deleting its rows and its file.
        columns = "blob_id, edge_id, frame, off, len"
        rows = (self._read(f"SELECT {columns} FROM chunks ORDER BY blob_id, idx")
                if blob_id is None else
                self._read(f"SELECT {columns} FROM chunks WHERE blob_id = ? ORDER BY idx",
                           (blob_id,)))
        for _, group in itertools.groupby(rows, key=lambda row: row[0]):
            yield from [(edge_id, frame if offset < 0 else self._frames.read(blob, offset, size))
                        for blob, edge_id, frame, offset, size in group]

    def chunk_indices(self, blob_id: str) -> list[int]:
        """The indices of a blob's kept chunks, ascending."""
        return [i for (i,) in self._read(
            "SELECT idx FROM chunks WHERE blob_id = ? ORDER BY idx", (blob_id,))]

    def drop_chunks(self, blob_id: str) -> None:
        """Forget the chunks of a blob (completed, rejected or expired)."""
        self._run(lambda db: db.execute("DELETE FROM chunks WHERE blob_id = ?", (blob_id,)))
        self._frames.drop(blob_id)

    # -- updates ---------------------------------------------------------------------------
    def record_update(self, row: UpdateRow) -> None:
        """Record the verdict on an update and drop its chunks, in one transaction; a second
        verdict on the same update is ignored (the first one stands)."""
        def work(db: sqlite3.Connection) -> None:
            db.execute(f"INSERT OR IGNORE INTO updates ({UPDATE_COLUMNS}) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (row.update_id, row.round_id, row.edge_id, row.status, row.reason,
                        row.samples, row.bytes, row.codec, row.spool, row.base, row.applied))
            db.execute("DELETE FROM chunks WHERE blob_id = ?", (row.update_id,))
        self._run(work)
        self._frames.drop(row.update_id)

    def update(self, update_id: str) -> UpdateRow | None:
        """The decision on an update, if one was made."""
        rows = self._read(f"SELECT {UPDATE_COLUMNS} FROM updates WHERE update_id = ?",
                          (update_id,))
        return _update_row(rows[0]) if rows else None

    def accepted(self, round_id: str) -> list[UpdateRow]:
        """Accepted updates of a round, in update-id order (the aggregation order)."""
        rows = self._read(f"SELECT {UPDATE_COLUMNS} FROM updates WHERE round_id = ? AND "
                          "status = 'accepted' ORDER BY update_id", (round_id,))
        return [_update_row(r) for r in rows]

    def pending(self, round_id: str) -> list[UpdateRow]:
        """Accepted updates of a round that no version has folded in yet, in update-id order."""
        rows = self._read(f"SELECT {UPDATE_COLUMNS} FROM updates WHERE round_id = ? AND "
                          "status = 'accepted' AND applied IS NULL ORDER BY update_id",
                          (round_id,))
        return [_update_row(r) for r in rows]

    # -- rounds ----------------------------------------------------------------------------
    def save_round(self, state: RoundState) -> None:
        """Persist a round's latest state."""
        self._run(lambda db: db.execute(
            "INSERT INTO rounds VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM rounds), ?, ?)"
            " ON CONFLICT (round_id) DO UPDATE SET status = excluded.status, "
            "state = excluded.state", (state.round_id, state.status, wire.pack(state))))

    def last_round(self) -> RoundState | None:
        """The most recently opened round, in whatever state."""
        rows = self._read("SELECT state FROM rounds ORDER BY seq DESC LIMIT 1")
        return wire.expect(rows[0][0], RoundState) if rows else None

    def rounds(self, limit: int) -> list[RoundState]:
        """The `limit` most recently opened rounds, newest first, each in its saved state."""
        rows = self._read("SELECT state FROM rounds ORDER BY seq DESC LIMIT ?", (limit,))
        return [wire.expect(state, RoundState) for (state,) in rows]

    # -- versions --------------------------------------------------------------------------
    def add_version(self, row: VersionRow, *, applied: Sequence[str] = (),
                    evals: Mapping[str, float] | None = None) -> None:
        """Record a model version (its file must already be durable) with its accuracy per
        evaluation window and, in the same transaction, mark the updates it folded in as
        applied to it.

        Raises:
            StoreError: store_failed for a version recorded before, or an update in `applied`
                that is unknown, not accepted or already applied (nothing is written then).
        """
        def work(db: sqlite3.Connection) -> None:
            db.execute(f"INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (row.version, row.parent, row.round_id, row.path,
                        json.dumps(row.lineage), row.status, row.reason))
            db.executemany("INSERT INTO evals VALUES (?, ?, ?)",
                           [(row.version, w, acc) for w, acc in (evals or {}).items()])
            marked = db.executemany(
                "UPDATE updates SET applied = ? WHERE update_id = ? AND status = 'accepted' "
                "AND applied IS NULL", [(row.version, u) for u in applied]).rowcount
            if marked != len(applied):
                raise StoreError(Reason.STORE_FAILED,
                                 f"v{row.version}: {len(applied) - marked} of {len(applied)} "
                                 "updates are unknown, rejected or applied already")
        self._run(work)

    def versions(self) -> list[VersionRow]:
        """Every version, oldest first."""
        rows = self._read(f"SELECT {VERSION_COLUMNS} FROM versions ORDER BY version")
        return [VersionRow(v, p, r, path, json.loads(lin), VersionStatus(status), reason)
                for v, p, r, path, lin, status, reason in rows]

    def set_status(self, version: int, status: VersionStatus, note: Mapping[str, Any]) -> None:
        """Change a version's status (a candidate promoted by hand), keeping the gate's reason
        and adding `note` to its lineage, in one transaction."""
        def work(db: sqlite3.Connection) -> None:
            (lineage,) = db.execute("SELECT lineage FROM versions WHERE version = ?",
                                    (version,)).fetchone()
            db.execute("UPDATE versions SET status = ?, lineage = ? WHERE version = ?",
                       (str(status), json.dumps({**json.loads(lineage), **note}), version))
        self._run(work)

    def evals(self) -> dict[int, dict[str, float]]:
        """Accuracy per evaluation window of every version that was scored on any."""
        table: dict[int, dict[str, float]] = {}
        for version, window, acc in self._read(
                "SELECT version, window, accuracy FROM evals ORDER BY version, rowid"):
            table.setdefault(version, {})[window] = acc
        return table

    def set_meta(self, key: str, value: str) -> None:
        """Store a small named value (e.g. the current version after a rollback)."""
        self._run(lambda db: db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
            "excluded.value", (key, value)))

    def meta(self, key: str) -> str | None:
        """A named value, if set."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None


def _update_row(values: Sequence[Any]) -> UpdateRow:
    update_id, round_id, edge_id, status, reason, samples, size, codec, spool, base, applied = (
        values)
    return UpdateRow(update_id=update_id, round_id=round_id, edge_id=edge_id,
                     status=ReceiptStatus(status), reason=reason, samples=samples, bytes=size,
                     codec=codec, spool=spool, base=base, applied=applied)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a journal written by an older release up to this schema.

    Before async sessions every round was a sync round on one base version that published at
    most one version: an old update row's base is its round's base version (read from the
    saved round state), and an accepted one was applied to its round's version, if any.
    """
    for table, column, definition in ADDED_COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column in have:
            continue
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        if (table, column) == ("updates", "base"):
            for (state,) in db.execute("SELECT state FROM rounds").fetchall():
                saved: RoundState = wire.expect(state, RoundState)
                db.execute("UPDATE updates SET base = ? WHERE round_id = ?",
                           (saved.base_version, saved.round_id))
        if (table, column) == ("updates", "applied"):
            db.execute("UPDATE updates SET applied = (SELECT MAX(version) FROM versions WHERE "
                       "versions.round_id = updates.round_id AND versions.round_id != '') "
                       "WHERE status = 'accepted'")
        log.info("journal_migrated", table=table, column=column)
