"""The cloud's keyring: enrolment and revocation (idempotent, audited), sequence numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedstream.cloud.keyring import REPLAY_WINDOW, Keyring
from fedstream.shared.errors import ConfigError, Reason, SecurityError

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Keyring]:
    """A keyring in a fresh journal file."""
    ring = Keyring(tmp_path / "journal.db")
    yield ring
    ring.close()


def test_enrol_and_revoke_are_idempotent_and_audited(keys: Keyring, tmp_path: Path) -> None:
    """Enrolling the same key twice and revoking twice change nothing the second time; the
    audit holds one entry of each, and survives a reopen."""
    # Prepare / Execute
    first, again = keys.enrol("e1", KEY_A, 1.0), keys.enrol("e1", KEY_A, 2.0)
    revoked, revoked_again = keys.revoke("e1", 3.0), keys.revoke("e1", 4.0)
    reopened = Keyring(tmp_path / "journal.db")

    # Assert
    assert (first, again, revoked, revoked_again) == (True, False, True, False)
    assert [(e.at, e.action, e.subject) for e in reopened.audit()] == [
        (1.0, "enrolled", "e1"), (3.0, "revoked", "e1")]
    assert reopened.revoked("e1") and reopened.enrolled("e1")
    reopened.close()


def test_another_key_for_a_live_edge_and_a_revoked_edge_coming_back_are_refused(
    keys: Keyring,
) -> None:
    """A second key for e1 is bad_config (revoke first); a revoked e1 never re-enrols; a
    revoked edge's verifier is refused `revoked`, an unknown one's `unenrolled`."""
    # Prepare
    keys.enrol("e1", KEY_A, 1.0)

    # Execute
    with pytest.raises(ConfigError) as other_key:
        keys.enrol("e1", KEY_B, 2.0)
    keys.revoke("e1", 3.0)
    with pytest.raises(SecurityError) as comeback:
        keys.enrol("e1", KEY_A, 4.0)
    with pytest.raises(SecurityError) as revoked:
        keys.verifier("e1")
    with pytest.raises(SecurityError) as unknown:
        keys.verifier("e9")
    with pytest.raises(SecurityError) as revoke_unknown:
        keys.revoke("e9", 5.0)

    # Assert
    assert other_key.value.reason is Reason.BAD_CONFIG
    assert comeback.value.reason is revoked.value.reason is Reason.REVOKED
    assert unknown.value.reason is revoke_unknown.value.reason is Reason.UNENROLLED
    assert [e.action for e in keys.audit()] == ["enrolled", "revoked"]


def test_a_sequence_number_belongs_to_one_update(keys: Keyring) -> None:
    """Claiming (e1, 5) for u1 twice is fine; u2 with 5 is replayed; e2's 5 is its own."""
    # Prepare
    keys.claim("e1", 5, "u1")

    # Execute
    keys.claim("e1", 5, "u1")
    keys.check_seq("e2", 5, "u9")
    with pytest.raises(SecurityError) as info:
        keys.check_seq("e1", 5, "u2")
    with pytest.raises(SecurityError) as claimed:
        keys.claim("e1", 5, "u2")

    # Assert
    assert info.value.reason is claimed.value.reason is Reason.REPLAYED


def test_a_number_far_below_the_highest_is_replayed_one_inside_the_window_is_not(
    keys: Keyring,
) -> None:
    """Out-of-order numbers within the window pass; one a window below the highest fails."""
    # Prepare
    top = REPLAY_WINDOW + 10
    keys.claim("e1", top, "u-top")

    # Execute
    keys.check_seq("e1", top - REPLAY_WINDOW + 1, "u-late")
    with pytest.raises(SecurityError) as info:
        keys.check_seq("e1", top - REPLAY_WINDOW, "u-old")

    # Assert
    assert info.value.reason is Reason.REPLAYED


def test_a_key_of_the_wrong_length_is_refused_before_it_is_stored(keys: Keyring) -> None:
    """31 bytes: bad_config, and nothing enrolled."""
    # Prepare / Execute
    with pytest.raises(ConfigError):
        keys.enrol("e1", KEY_A[:31], 1.0)

    # Assert
    assert not keys.enrolled("e1") and keys.audit() == []
