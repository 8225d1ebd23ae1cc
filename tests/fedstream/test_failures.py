"""Tests for fedstream/failures.py: a failed round says why, what that means and what to do,
and picks the exit code."""

from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING

import pytest

from fedstream.console import console_for, emit
from fedstream.failures import OWN_EXIT_CODES, REMEDIES, failure_view, round_error, what_to_do
from fedstream.shared.errors import REASONS, Reason
from fedstream.shared.protocol.control import RoundStatus

if TYPE_CHECKING:
    from conftest import Replies  # this folder's: the fixed replies


def test_a_failed_round_prints_reason_meaning_and_what_to_do(replies: Replies) -> None:
    """The three lines name the round and reason with detail, the reason's help line and the
    operator's next step."""
    # Prepare
    out = io.StringIO()

    # Execute
    emit(console_for(out), failure_view(replies.failed))

    # Assert
    lines = out.getvalue().splitlines()
    assert lines[0] == "failed   round r2: no_quorum: 1 of 2 updates"
    assert lines[1] == f"meaning  {REASONS[Reason.NO_QUORUM].help}"
    assert lines[2].startswith("to do    fewer than quorum updates arrived before the deadline: "
                               "check `fedstream edges`")
    assert "rounds.deadline_s" in out.getvalue() and "rounds.quorum" in out.getvalue()


def test_a_gate_refusal_names_the_candidate_to_show_or_promote(replies: Replies) -> None:
    """The remedy of a regressed candidate names its version in the commands to run."""
    # Prepare
    refused = dataclasses.replace(replies.failed, reason="regressed_past",
                                  result={"candidate": 4, "detail": "lost 0.2"})

    # Execute
    text = what_to_do(refused)

    # Assert
    assert "`fedstream model show 4`" in text and "`fedstream model promote 4`" in text


def test_a_session_that_published_nothing_suggests_a_longer_session(replies: Replies) -> None:
    """An async session's no_quorum has its own remedy (a session has no quorum)."""
    # Prepare
    ended = dataclasses.replace(replies.session, status=RoundStatus.FAILED, reason="no_quorum")

    # Execute
    text = what_to_do(ended)

    # Assert
    assert "--deadline" in text and "--buffer" in text and "quorum" not in text


def test_an_unknown_reason_still_says_where_to_look(replies: Replies) -> None:
    """A reason this CLI does not know (a newer cloud's) points at the cloud's log."""
    # Prepare
    odd = dataclasses.replace(replies.failed, reason="cosmic_rays")

    # Execute
    text = what_to_do(odd)

    # Assert
    assert "log" in text


@pytest.mark.parametrize(("reason", "exit_reason"), [
    ("no_quorum", Reason.NO_QUORUM),
    ("round_stopped", Reason.ROUND_STOPPED),
    ("regressed_newest", Reason.REGRESSED_NEWEST),
    ("regressed_past", Reason.REGRESSED_PAST),
    ("store_failed", Reason.ROUND_FAILED),
])
def test_round_error_exits_with_own_code_or_round_failed(replies: Replies, reason: str,
                                                         exit_reason: Reason) -> None:
    """no_quorum, round_stopped and the gate's reasons exit with their own code, the rest
    round_failed; the detail names the round and its reason."""
    # Execute
    err = round_error(dataclasses.replace(replies.failed, reason=reason))

    # Assert
    assert err.reason is exit_reason
    assert err.exit_code == REASONS[exit_reason].exit_code
    assert err.detail.startswith(f"round r2 {reason}")


def test_every_remedy_is_for_a_known_reason_with_help() -> None:
    """Each reason with a remedy, and each with its own exit code, has a help line."""
    # Execute / Assert
    assert all(reason in REASONS for reason in (*REMEDIES, *OWN_EXIT_CODES))
    assert set(REMEDIES) >= OWN_EXIT_CODES
