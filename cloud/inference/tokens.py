"""Bearer tokens for the HTTP inference door: their sha256 in `data_dir/tokens.sqlite`.

The file is the tokens' own, apart from the journal: `fedstream token create|revoke` writes it
while the service runs and reads it. A secret is shown once, when it is made; only its digest
is kept. Every check is one indexed read in autocommit mode, so it sees the last committed
revocation of any process: no cache to invalidate (see `check`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from fedstream.cloud._sqlite import open_wal, read, transact
from fedstream.shared.errors import ConfigError, Reason, SecurityError

TOKENS_FILE = "tokens.sqlite"
PREFIX = "fst_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What `create` makes: the prefix and 43 URL-safe characters (32 random bytes). Anything else
# is refused before it is hashed or looked up.
_SECRET_RE = re.compile(rf"^{PREFIX}[A-Za-z0-9_-]{{43}}$")
_UNKNOWN = "unknown or revoked token"

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL, revoked REAL);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_live ON tokens (name) WHERE revoked IS NULL;
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """One token as `list` shows it: never its secret.

    Args:
        name: What the token is called (its bucket and its log name).
        created: When it was made, Unix seconds.
        revoked: When it was revoked, Unix seconds; None while it is live.
    """

    name: str
    created: float
    revoked: float | None


def tokens_path(data_dir: Path) -> Path:
    """Where the cloud whose data directory is `data_dir` keeps its tokens."""
    return data_dir / TOKENS_FILE


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Creates, revokes, lists and checks bearer tokens.

    Args:
        db: An open connection with `SCHEMA` applied (see `open`).
        clock: Unix time, for the created and revoked stamps.
    """

    def __init__(self, db: sqlite3.Connection, *, clock: Callable[[], float] = time.time,
                 ) -> None:
        self._db, self._clock = db, clock
        self._lock = threading.Lock()  # one connection; the CLI or the HTTP thread uses it

    @classmethod
    def open(cls, data_dir: Path, *, clock: Callable[[], float] = time.time) -> TokenStore:
        """The token store of `data_dir`, created empty if it is not there.

        Raises:
            StoreError: STORE_FAILED when the file cannot be opened or created.
        """
        return cls(open_wal(tokens_path(data_dir), SCHEMA), clock=clock)

    def create(self, name: str) -> str:
        """Make a token called `name` and return its secret, the only time it is seen.

        Raises:
            ConfigError: BAD_CONFIG for a name that is not a plain word, or one a live token
                already has.
            StoreError: STORE_FAILED when the file cannot be written.
        """
        if not NAME_RE.match(name):
            raise ConfigError(Reason.BAD_CONFIG, f"token name {name!r} must be 1-64 letters, "
                              "digits, '_', '.' or '-', starting with a letter or digit")
        secret = PREFIX + secrets.token_urlsafe(32)

        def insert(db: sqlite3.Connection) -> None:
            # Checked inside the write transaction, so two creators cannot both pass it.
            if db.execute("SELECT 1 FROM tokens WHERE name = ? AND revoked IS NULL",
                          (name,)).fetchone():
                raise ConfigError(Reason.BAD_CONFIG, f"a live token is already called "
                                  f"{name!r}: revoke it first, or pick another name")
            db.execute("INSERT INTO tokens (digest, name, created) VALUES (?, ?, ?)",
                       (_digest(secret), name, self._clock()))

        with self._lock:
            transact(self._db, insert)
        return secret

    def revoke(self, name: str) -> bool:
        """Revoke the live token called `name`; its next request is refused, in any process.

        Returns:
            True when it was revoked now; False when it had been already (nothing changes).

        Raises:
            ConfigError: UNKNOWN_NAME when no token was ever called `name`.
            StoreError: STORE_FAILED when the file cannot be written.
        """
        def mark(db: sqlite3.Connection) -> bool:
            done = db.execute("UPDATE tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
                              (self._clock(), name))
            if done.rowcount:
                return True
            if db.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
                return False
            raise ConfigError(Reason.UNKNOWN_NAME, f"no token is called {name!r} "
                              "(`fedstream token list` shows them)")

        with self._lock:
            return transact(self._db, mark)

    def list(self) -> tuple[TokenInfo, ...]:
        """Every token ever made, oldest first, revoked ones included; no secrets.

        Raises:
            StoreError: STORE_FAILED when the file cannot be read.
        """
        with self._lock:
            rows = read(self._db, "SELECT name, created, revoked FROM tokens "
                                  "ORDER BY created, name")
        return tuple(TokenInfo(name=n, created=c, revoked=r) for n, c, r in rows)

    def check(self, secret: str) -> str:
        """The name of the live token whose secret this is.

        It costs one primary-key read: about 4 us with 1000 tokens, of which asking SQLite
        whether the file changed (`PRAGMA data_version`) before a cached lookup would still
        take 2 us. Saving the other 2 us (well under 1% of a predict request) is not worth a
        cache that could serve a stale revocation. The lookup is by the secret's digest, so
        its timing tells nothing about any stored secret; the digests are compared once more
        in constant time all the same.

        Raises:
            SecurityError: UNAUTHORISED for a secret that is malformed, unknown or revoked.
            StoreError: STORE_FAILED when the file cannot be read.
        """
        if not _SECRET_RE.match(secret):
            raise SecurityError(Reason.UNAUTHORISED, _UNKNOWN)
        digest = _digest(secret)
        with self._lock:
            rows = read(self._db, "SELECT digest, name FROM tokens "
                                  "WHERE digest = ? AND revoked IS NULL", (digest,))
        if not rows or not hmac.compare_digest(rows[0][0], digest):
            raise SecurityError(Reason.UNAUTHORISED, _UNKNOWN)
        return str(rows[0][1])

    def close(self) -> None:
        """Close the file (again: no-op)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, _type: type[BaseException] | None, _value: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()
