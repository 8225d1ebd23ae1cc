"""Tests for fedstream/progress.py: a line per change off a terminal, a live bar on one."""

from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING

from fedstream.console import console_for
from fedstream.progress import follow_fleet, follow_round
from fedstream.shared.protocol.control import RoundStatus

if TYPE_CHECKING:
    from conftest import Replies  # this folder's: the fixed replies


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_change_of_a_round_is_one_line(replies: Replies) -> None:
    """Each new status or count prints once; a repeated state prints nothing."""
    # Prepare
    out = io.StringIO()
    opened = dataclasses.replace(replies.open, status=RoundStatus.OPEN, received=0)
    states = [opened, opened, replies.open,
              dataclasses.replace(replies.open, status=RoundStatus.AGGREGATING, received=2)]

    # Execute
    with follow_round(console_for(out)) as progress:
        for state in states:
            progress(state)

    # Assert
    assert out.getvalue() == ("  open        0/2 updates\n"
                              "  collecting  1/2 updates\n"
                              "  aggregating 2/2 updates\n")


def test_off_a_terminal_a_session_prints_each_version_once(replies: Replies) -> None:
    """A session's line comes with each version it publishes."""
    # Prepare
    out = io.StringIO()
    later = dataclasses.replace(replies.session, received=9,
                                result={"version": 6, "accuracy": 0.9})

    # Execute
    with follow_round(console_for(out)) as progress:
        for state in (replies.session, replies.session, later):
            progress(state)

    # Assert
    assert out.getvalue() == ("  published v5: -, 7 updates received\n"
                              "  published v6: accuracy 0.9, 9 updates received\n")


def test_on_a_terminal_a_round_is_a_bar_of_updates_to_the_deadline(replies: Replies) -> None:
    """The bar names the round and its status and counts updates against those expected."""
    # Prepare
    out = _Terminal()

    # Execute
    with follow_round(console_for(out)) as progress:
        progress(replies.open)

    # Assert
    shown = out.getvalue()
    assert "round r3 collecting" in shown and "1/2 updates" in shown
    assert "deadline passed" in shown  # the fixed round's deadline is long gone


def test_the_fleet_wait_is_silent_off_a_terminal_and_a_bar_on_one() -> None:
    """No output for a pipe (or no stream); on a terminal, edges ready of those awaited."""
    # Prepare
    pipe, terminal = io.StringIO(), _Terminal()

    # Execute
    for out in (None, pipe, terminal):
        with follow_fleet(out, edges=3, timeout_s=60) as progress:
            progress(0, False)
            progress(2, True)

    # Assert
    assert pipe.getvalue() == ""
    assert "2/3 edges ready" in terminal.getvalue() and "fleet starting" in terminal.getvalue()
