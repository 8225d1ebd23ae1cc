"""A failed round, told apart from a slow one: its reason, what that means, what to do, and
the exit code the CLI leaves with."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from fedstream import describe
from fedstream.shared.errors import REASONS, FedstreamError, Reason
from fedstream.shared.protocol.control import RoundState

# Round failures whose reason is its own exit code (a script can tell "too few updates" from
# "the gate refused" from "stopped"); the rest exit as round_failed.
OWN_EXIT_CODES = frozenset({Reason.NO_QUORUM, Reason.ROUND_STOPPED, Reason.REGRESSED_NEWEST,
                            Reason.REGRESSED_PAST})

_GATE = ("the served model stays; compare the candidate with `fedstream model show "
         "{candidate}`, or serve it anyway with `fedstream model promote {candidate}`")
# What an operator can do about each way a round ends without a model. `{candidate}` is the
# rejected version, where the round made one.
REMEDIES: dict[Reason, str] = {
    Reason.NO_QUORUM: ("fewer than quorum updates arrived before the deadline: check "
                       "`fedstream edges` (offline edges, declines and their reasons), raise "
                       "rounds.deadline_s (or --deadline) or lower rounds.quorum"),
    Reason.ROUND_STOPPED: "`fedstream round stop` ended it; start a new round when ready",
    Reason.REGRESSED_NEWEST: _GATE,
    Reason.REGRESSED_PAST: _GATE,
    Reason.STORE_FAILED: ("the cloud could not write its journal or spool: check the disk and "
                          "the permissions of its data_dir, then start a new round"),
    Reason.INTERNAL: "the cloud's log has the traceback (tick_failed); start a new round",
}
# An async session fails only when it published nothing at all.
_SESSION_REMEDIES: dict[Reason, str] = {
    Reason.NO_QUORUM: ("no update arrived before the session's deadline: check `fedstream "
                       "edges`, give the session longer (--deadline) or a smaller --buffer"),
}
_ELSE = "the cloud's log has the round's round_closed line; start a new round when fixed"


def meaning(reason: str) -> str:
    """What a reason code means (its help line), or "" for a code this CLI does not know."""
    try:
        return REASONS[Reason(reason)].help
    except ValueError:
        return ""


def what_to_do(r: RoundState) -> str:
    """The operator's next step after round `r` failed."""
    try:
        reason = Reason(r.reason)
    except ValueError:
        return _ELSE
    text = (_SESSION_REMEDIES if r.is_async else {}).get(reason) or REMEDIES.get(reason, _ELSE)
    return text.format(candidate=r.result.get("candidate", "V"))


def failure_view(r: RoundState) -> Table:
    """Three lines: the round and its reason, what it means, what to do."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row(Text("failed", style="bold red"),
                 Text(f"{'session' if r.is_async else 'round'} {r.round_id}: "
                      f"{describe.outcome(r)}", style="red"))
    grid.add_row("meaning", Text(meaning(r.reason) or describe.NONE))
    grid.add_row("to do", Text(what_to_do(r)))
    return grid


def round_error(r: RoundState) -> FedstreamError:
    """The error a waiting `round start` exits with: the round's own reason where it has its
    own exit code, round_failed otherwise."""
    reason = Reason(r.reason) if r.reason in OWN_EXIT_CODES else Reason.ROUND_FAILED
    return FedstreamError(reason, f"round {r.round_id} {describe.outcome(r)}")
