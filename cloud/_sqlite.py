"""SQLite plumbing shared by the cloud's stores: WAL files and retried transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog
import tenacity

from fedstream.shared.errors import Reason, StoreError

log = structlog.get_logger(__name__)
T = TypeVar("T")


def open_wal(path: Path, schema: str, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open (creating its directory) an SQLite file in WAL mode with `schema` applied.

    `synchronous="NORMAL"` survives a killed process; "FULL" also survives power loss at the
    cost of an fsync per commit.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        db.executescript(schema)
    except (sqlite3.Error, OSError) as err:
        raise StoreError(Reason.STORE_FAILED, f"{path}: {err}") from err
    return db


def _is_busy(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


@tenacity.retry(retry=tenacity.retry_if_exception(_is_busy), reraise=True,
                wait=tenacity.wait_exponential_jitter(multiplier=0.01, max=0.5, jitter=0.01),
                stop=tenacity.stop_after_delay(10),
                before_sleep=lambda rs: log.warning("retry_scheduled", op="sqlite",
                                                    attempt=rs.attempt_number))
def _attempt(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def transact(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` in one transaction, retrying while another process holds the lock.

    Raises:
        StoreError: store_failed for any SQLite error, a lock held past the retries too.
    """
    try:
        return _attempt(db, work)
    except sqlite3.Error as err:
        raise StoreError(Reason.STORE_FAILED, str(err)) from err


def read(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """All rows of one query.

    Raises:
        StoreError: store_failed for any SQLite error.
    """
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.Error as err:
        raise StoreError(Reason.STORE_FAILED, str(err)) from err
