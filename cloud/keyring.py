"""The cloud's record of who may sign updates: enrolled edge keys, revocations, the sequence
numbers each edge has used, and an audit trail of every enrolment and revocation.

Its tables live in the journal's SQLite file (one file is the cloud's memory), on a
connection of their own.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import structlog

from fedstream.cloud._sqlite import open_wal, read, transact
from fedstream.shared.errors import ConfigError, Reason, SecurityError
from fedstream.shared.security.signing import Verifier

log = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    edge_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, enrolled_at REAL NOT NULL,
    revoked_at REAL);
CREATE TABLE IF NOT EXISTS update_seqs (
    edge_id TEXT NOT NULL, seq INTEGER NOT NULL, update_id TEXT NOT NULL,
    PRIMARY KEY (edge_id, seq));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
"""
# A sequence number this far below an edge's highest is refused without looking it up: an
# edge's outbox holds a handful of updates, never this many out of order.
REPLAY_WINDOW = 1024


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One enrolment or revocation, as recorded."""

    at: float
    action: str
    subject: str
    detail: str


class Keyring:
    """Edge signing keys, revocations and used sequence numbers.

    Args:
        path: The journal's database file.
        synchronous: SQLite's `synchronous` pragma, as the journal's.
    """

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self._db = open_wal(path, SCHEMA, synchronous=synchronous)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def enrol(self, edge_id: str, public: bytes, now: float) -> bool:
        """Register `edge_id`'s key; False if that very key was enrolled already.

        Raises:
            SecurityError: REVOKED for a revoked identity (it never comes back).
            ConfigError: BAD_CONFIG for another key than the one enrolled, or a key that is
                not Ed25519.
            StoreError: STORE_FAILED.
        """
        Verifier(public)  # refuses what is not a key before anything is stored

        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT public_key, revoked_at FROM identities WHERE edge_id = ?",
                             (edge_id,)).fetchone()
            if row is not None:
                if row[1] is not None:
                    raise SecurityError(Reason.REVOKED, f"edge {edge_id} was revoked; enrol "
                                                        "the gateway under a new identity")
                if bytes(row[0]) != public:
                    raise ConfigError(Reason.BAD_CONFIG, f"edge {edge_id} is enrolled with "
                                                         "another key; revoke it first")
                return False
            db.execute("INSERT INTO identities VALUES (?, ?, ?, NULL)", (edge_id, public, now))
            db.execute("INSERT INTO audit (at, action, subject, detail) VALUES (?, ?, ?, ?)",
                       (now, "enrolled", edge_id, public.hex()))
            return True

        fresh = transact(self._db, work)
        log.info("edge_enrolled" if fresh else "edge_enrolment_repeated", edge_id=edge_id)
        return fresh

    def revoke(self, edge_id: str, now: float) -> bool:
        """Revoke `edge_id`; False if it was revoked already.

        Raises:
            SecurityError: UNENROLLED for an identity never enrolled.
            StoreError: STORE_FAILED.
        """
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT revoked_at FROM identities WHERE edge_id = ?",
                             (edge_id,)).fetchone()
            if row is None:
                raise SecurityError(Reason.UNENROLLED, f"edge {edge_id} was never enrolled")
            if row[0] is not None:
                return False
            db.execute("UPDATE identities SET revoked_at = ? WHERE edge_id = ?", (now, edge_id))
            db.execute("INSERT INTO audit (at, action, subject) VALUES (?, ?, ?)",
                       (now, "revoked", edge_id))
            return True

        fresh = transact(self._db, work)
        log.warning("edge_revoked" if fresh else "edge_revocation_repeated", edge_id=edge_id)
        return fresh

    def enrolled(self, edge_id: str) -> bool:
        """Whether `edge_id` has a key on record (revoked or not): its updates are checked."""
        return bool(read(self._db, "SELECT 1 FROM identities WHERE edge_id = ?", (edge_id,)))

    def revoked(self, edge_id: str) -> bool:
        """Whether `edge_id` was revoked."""
        return bool(read(self._db, "SELECT 1 FROM identities WHERE edge_id = ? AND revoked_at "
                                   "IS NOT NULL", (edge_id,)))

    def verifier(self, edge_id: str) -> Verifier:
        """The checker of `edge_id`'s signatures.

        Raises:
            SecurityError: UNENROLLED without a key, REVOKED for a revoked identity.
            StoreError: STORE_FAILED.
        """
        rows = read(self._db, "SELECT public_key, revoked_at FROM identities WHERE edge_id = ?",
                    (edge_id,))
        if not rows:
            raise SecurityError(Reason.UNENROLLED, f"no signing key is enrolled for {edge_id}")
        if rows[0][1] is not None:
            raise SecurityError(Reason.REVOKED, f"edge {edge_id} was revoked")
        return Verifier(bytes(rows[0][0]))

    def check_seq(self, edge_id: str, seq: int, update_id: str) -> None:
        """Refuse a sequence number `edge_id` used for another update, or one far below its
        highest (reads only: `claim` records it).

        Raises:
            SecurityError: REPLAYED.
            StoreError: STORE_FAILED.
        """
        rows = read(self._db, "SELECT update_id FROM update_seqs WHERE edge_id = ? AND seq = ?",
                    (edge_id, seq))
        if rows and rows[0][0] != update_id:
            raise SecurityError(Reason.REPLAYED, f"sequence {seq} of {edge_id} was used by "
                                                 f"update {rows[0][0]}")
        top = read(self._db, "SELECT MAX(seq) FROM update_seqs WHERE edge_id = ?", (edge_id,))
        highest = top[0][0] or 0
        if not rows and seq <= highest - REPLAY_WINDOW:
            raise SecurityError(Reason.REPLAYED, f"sequence {seq} of {edge_id} is older than "
                                                 f"{REPLAY_WINDOW} below its highest, {highest}")

    def claim(self, edge_id: str, seq: int, update_id: str) -> None:
        """Record that `update_id` used `seq` (idempotent for the same update).

        Raises:
            SecurityError: REPLAYED if another update holds that number.
            StoreError: STORE_FAILED.
        """
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO update_seqs VALUES (?, ?, ?)",
                       (edge_id, seq, update_id))

        transact(self._db, work)
        self.check_seq(edge_id, seq, update_id)

    def audit(self) -> list[AuditEntry]:
        """Every enrolment and revocation, oldest first."""
        return [AuditEntry(at=at, action=action, subject=subject, detail=detail)
                for at, action, subject, detail in read(
                    self._db, "SELECT at, action, subject, detail FROM audit ORDER BY id")]
