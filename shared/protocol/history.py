"""The operator's look back: the rounds the cloud's journal holds (`round_list`, P13).

Kept apart from `commands.py` (one message per verb there too) so that module stays under
its size budget; `commands.py` registers both in `COMMANDS` and `ANSWERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from fedstream.shared.protocol._fields import Wire, req_list_of, req_range
from fedstream.shared.protocol.control import RoundState

# Rounds answered when the operator names no limit, and the most one answer holds (a round
# state is a few hundred bytes plus its selection; the answer must stay one small frame).
DEFAULT_ROUNDS = 20
MAX_ROUNDS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundList:
    """Ask for the newest `limit` rounds and sessions the journal holds, in any state."""

    KIND: ClassVar[str] = "round_list"
    VERB: ClassVar[str] = "round_list"
    VERSION: ClassVar[int] = 1
    limit: int = DEFAULT_ROUNDS

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_ROUNDS:
            raise ValueError(f"limit {self.limit} outside [1, {MAX_ROUNDS}]")

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"n": self.limit}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; a missing `n` is the default limit."""
        return cls(limit=req_range(d, "n", 1, MAX_ROUNDS) if "n" in d else DEFAULT_ROUNDS)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundListReply:
    """The rounds, newest first, each in its last saved state (status, result, reason)."""

    KIND: ClassVar[str] = "round_list_reply"
    VERSION: ClassVar[int] = 1
    rounds: tuple[RoundState, ...]

    def to_wire(self) -> Wire:
        """Each round in its own wire form (P11)."""
        return {"rounds": [r.to_wire() for r in self.rounds]}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(rounds=req_list_of(d, "rounds", RoundState.from_wire))
