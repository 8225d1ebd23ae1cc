"""The bearer-token store (cloud/inference/tokens.py) on a real SQLite file."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedstream.cloud.inference.tokens import TokenInfo, TokenStore, tokens_path
from fedstream.shared.errors import ConfigError, Reason, SecurityError, StoreError


class _Clock:
    """Unix seconds that move only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    """A clock at 1000.0."""
    return _Clock(1000.0)


@pytest.fixture
def store(tmp_path: Path, clock: _Clock) -> Iterator[TokenStore]:
    """An empty store in a fresh data directory, on the test clock."""
    with TokenStore.open(tmp_path, clock=clock) as opened:
        yield opened


def test_a_created_secret_checks_as_its_name_and_only_its_hash_is_kept(
    store: TokenStore, tmp_path: Path
) -> None:
    """`create` returns an fst_ secret that `check` maps to its name; the file holds its
    sha256, never the secret."""
    # Execute
    secret = store.create("ci-bot")
    name = store.check(secret)

    # Assert
    assert name == "ci-bot"
    assert secret.startswith("fst_") and len(secret) == 47
    with sqlite3.connect(tokens_path(tmp_path)) as raw:
        rows = raw.execute("SELECT * FROM tokens").fetchall()
    assert rows == [(hashlib.sha256(secret.encode()).hexdigest(), "ci-bot", 1000.0, None)]


def test_each_create_makes_a_new_secret(store: TokenStore) -> None:
    """Two tokens get different secrets, each checking as its own name."""
    # Execute
    a, b = store.create("a"), store.create("b")

    # Assert
    assert a != b
    assert (store.check(a), store.check(b)) == ("a", "b")


@pytest.mark.parametrize(
    "secret",
    ["", "fst_", "Bearer fst_x", "fst_" + "A" * 42, "fst_" + "A" * 44, "fst_" + "A" * 42 + "!",
     "xyz_" + "A" * 43, "fst_" + "A" * 100_000],
    ids=["empty", "prefix-only", "with-scheme", "short", "long", "bad-char", "bad-prefix",
         "huge"],
)
def test_malformed_and_unknown_secrets_are_unauthorised(store: TokenStore, secret: str) -> None:
    """Anything but a live token's secret raises UNAUTHORISED, with no hint which it was."""
    # Prepare
    store.create("ci-bot")

    # Execute
    with pytest.raises(SecurityError) as info:
        store.check(secret)

    # Assert
    assert info.value.reason is Reason.UNAUTHORISED
    assert info.value.detail == "unknown or revoked token"


def test_an_unknown_well_formed_secret_is_unauthorised(store: TokenStore) -> None:
    """A secret of the right shape that no token has is refused like any other."""
    # Prepare
    real = store.create("ci-bot")
    forged = real[:-1] + ("A" if real[-1] != "A" else "B")

    # Execute
    with pytest.raises(SecurityError) as info:
        store.check(forged)

    # Assert
    assert info.value.reason is Reason.UNAUTHORISED


def test_a_revocation_by_another_connection_holds_at_the_next_check(
    store: TokenStore, tmp_path: Path
) -> None:
    """A second store on the same file (another process, to SQLite) revokes a token; the
    first store's very next check refuses it."""
    # Prepare
    secret = store.create("ci-bot")
    assert store.check(secret) == "ci-bot"

    # Execute
    with TokenStore.open(tmp_path) as other:
        revoked = other.revoke("ci-bot")
    with pytest.raises(SecurityError) as info:
        store.check(secret)

    # Assert
    assert revoked is True
    assert info.value.reason is Reason.UNAUTHORISED


def test_revoking_twice_is_a_no_op_that_says_so(store: TokenStore, clock: _Clock) -> None:
    """The first revoke returns True and stamps the time; the second returns False and keeps
    the first stamp."""
    # Prepare
    store.create("ci-bot")
    clock.now = 2000.0

    # Execute
    first = store.revoke("ci-bot")
    clock.now = 3000.0
    second = store.revoke("ci-bot")

    # Assert
    assert (first, second) == (True, False)
    assert store.list() == (TokenInfo(name="ci-bot", created=1000.0, revoked=2000.0),)


def test_revoking_an_unknown_name_is_unknown_name(store: TokenStore) -> None:
    """A name no token ever had cannot be revoked: UNKNOWN_NAME pointing at `token list`."""
    # Execute
    with pytest.raises(ConfigError) as info:
        store.revoke("nobody")

    # Assert
    assert info.value.reason is Reason.UNKNOWN_NAME
    assert "'nobody'" in info.value.detail and "token list" in info.value.detail


def test_a_live_name_cannot_be_created_twice_but_a_revoked_one_can(
    store: TokenStore, clock: _Clock
) -> None:
    """Creating a live token's name again is BAD_CONFIG; once revoked, the name makes a new
    token, and the old secret stays refused."""
    # Prepare
    old = store.create("ci-bot")

    # Execute
    with pytest.raises(ConfigError) as info:
        store.create("ci-bot")
    store.revoke("ci-bot")
    clock.now = 1500.0
    new = store.create("ci-bot")

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert "already called 'ci-bot'" in info.value.detail and "revoke" in info.value.detail
    assert store.check(new) == "ci-bot"
    with pytest.raises(SecurityError):
        store.check(old)
    assert [(t.name, t.created, t.revoked is None) for t in store.list()] == [
        ("ci-bot", 1000.0, False), ("ci-bot", 1500.0, True)]


@pytest.mark.parametrize("name", ["", "two words", "a/b", "-lead", "x" * 65, "é"],
                         ids=["empty", "space", "slash", "leading-dash", "too-long", "accent"])
def test_names_are_plain_words(store: TokenStore, name: str) -> None:
    """A name that is not 1-64 letters, digits, '_', '.' or '-' is refused as BAD_CONFIG."""
    # Execute
    with pytest.raises(ConfigError) as info:
        store.create(name)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert store.list() == ()


def test_list_shows_every_token_oldest_first_without_secrets(
    store: TokenStore, clock: _Clock
) -> None:
    """`list` gives name, created and revoked for each token, in creation order."""
    # Prepare
    store.create("b")
    clock.now = 1001.0
    store.create("a")
    clock.now = 1002.0
    store.revoke("b")

    # Execute
    listed = store.list()

    # Assert
    assert listed == (TokenInfo(name="b", created=1000.0, revoked=1002.0),
                      TokenInfo(name="a", created=1001.0, revoked=None))


def test_an_unopenable_file_is_store_failed(tmp_path: Path) -> None:
    """A data directory that cannot exist (its parent is a file) fails with STORE_FAILED."""
    # Prepare
    (tmp_path / "file").write_text("")

    # Execute
    with pytest.raises(StoreError) as info:
        TokenStore.open(tmp_path / "file" / "data")

    # Assert
    assert info.value.reason is Reason.STORE_FAILED
