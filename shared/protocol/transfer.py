"""Resuming a cut-off upload (P17): the edge's probe and the cloud's list of missing chunks.

An edge that reconnects, restarts or waited too long for a receipt does not send its update
again: it sends an `UpdateProbe` on its update topic. The cloud answers on the edge's receipt
topic with the update's recorded `Receipt` if it was decided, or with `MissingChunks` naming
the chunk index runs it does not hold durably; the edge sends those chunks only. The cloud also
sends `MissingChunks` unprompted when a partial update goes idle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol._fields import Wire, req, req_range
from fedstream.shared.protocol.messages import MAX_CHUNKS, blob_id_of

# More runs than this means a chunk in every other slot is missing: the edge sends it all.
MAX_RUNS = 1024

Runs = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateProbe:
    """An edge asks what became of one of its updates (sent on its own update topic)."""

    KIND: ClassVar[str] = "probe"
    VERSION: ClassVar[int] = 1
    edge_id: str
    update_id: str
    round_id: str
    count: int

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"edge": self.edge_id, "upd": self.update_id, "round": self.round_id,
                "n": self.count}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse and range-check."""
        return cls(edge_id=req(d, "edge", str), update_id=blob_id_of(d, "upd"),
                   round_id=req(d, "round", str), count=req_range(d, "n", 1, MAX_CHUNKS))


@dataclass(frozen=True, slots=True, kw_only=True)
class MissingChunks:
    """The cloud holds part of an update: `runs` are the half-open index ranges it lacks.

    Not final: the edge keeps the update in its outbox and sends the chunks named.
    """

    KIND: ClassVar[str] = "missing"
    VERSION: ClassVar[int] = 1
    update_id: str
    count: int
    runs: Runs

    def __post_init__(self) -> None:
        last = 0
        for start, end in self.runs:
            if not last <= start < end <= self.count:
                raise ValueError(f"runs {self.runs} are not sorted, disjoint runs of "
                                 f"[0, {self.count})")
            last = end
        if len(self.runs) > MAX_RUNS:
            raise ValueError(f"{len(self.runs)} runs > {MAX_RUNS}")

    @property
    def indices(self) -> list[int]:
        """Every missing chunk index, ascending."""
        return [i for start, end in self.runs for i in range(start, end)]

    def to_wire(self) -> Wire:
        """Runs as a flat list `[start0, end0, start1, end1, ...]`."""
        return {"upd": self.update_id, "n": self.count,
                "miss": [i for run in self.runs for i in run]}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; runs must be sorted, disjoint and inside the chunk count."""
        flat: list[Any] = req(d, "miss", list)
        if len(flat) % 2 or not all(type(i) is int for i in flat):
            raise ProtocolError(Reason.BAD_FRAME, "'miss' must be pairs of ints")
        try:
            return cls(update_id=blob_id_of(d, "upd"), count=req_range(d, "n", 1, MAX_CHUNKS),
                       runs=tuple(zip(flat[::2], flat[1::2], strict=True)))
        except ValueError as err:
            raise ProtocolError(Reason.BAD_FRAME, str(err)) from err


def capped(runs: Runs, count: int) -> Runs:
    """`runs`, or the whole blob when there are too many to list."""
    return runs if len(runs) <= MAX_RUNS else ((0, count),)
