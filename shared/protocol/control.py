"""Control-plane messages: round state, edge status, model info and cloud data (the operator's
commands and their replies are in `commands.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeVar

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol._fields import (
    Scalar,
    Wire,
    opt_int,
    req,
    req_float,
    req_map,
    req_range,
    req_scalars,
)

E = TypeVar("E", bound=StrEnum)
MAX_BUFFER = 1 << 20


class RoundStatus(StrEnum):
    """Where a round or session is: open -> collecting -> aggregating -> published | failed."""

    OPEN = "open"
    COLLECTING = "collecting"
    AGGREGATING = "aggregating"
    PUBLISHED = "published"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Published or failed: the round is over."""
        return self in (RoundStatus.PUBLISHED, RoundStatus.FAILED)


class RoundMode(StrEnum):
    """A sync round, or an async (buffered, FedBuff-style) session."""

    SYNC = "sync"
    ASYNC = "async"


class VersionStatus(StrEnum):
    """A registered model version: served (now or before), or a candidate the gate refused."""

    PROMOTED = "promoted"
    REJECTED = "rejected"


def _declines(d: Mapping[str, Any], selection: Sequence[str]) -> dict[str, str]:
    """The `dec` map of a round frame: selected edge id -> reason code (absent: none)."""
    if "dec" not in d:
        return {}
    value = req_map(d, "dec")
    if not all(isinstance(v, str) for v in value.values()) or not set(value) <= set(selection):
        raise ProtocolError(Reason.BAD_FRAME,
                            "field 'dec' must map selected edge ids to reasons")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainParams:
    """Hyper-parameters the cloud hands to every edge of a round, and what data to train on.

    Attributes:
        epochs: Passes over the edge's training samples.
        lr: SGD learning rate.
        momentum: SGD momentum.
        batch_size: Samples per step.
        max_windows: Train on at most the newest this many samples (windows of a stream);
            0 takes them all.
        max_age_s: Train only on windows that end within this many seconds of the newest
            reading of a stream; 0 takes them all (a static data set has no age).
        min_samples: An edge with fewer samples than this, after the limits, declines the
            round with too_little_data instead of sending an update.
    """

    epochs: int
    lr: float
    momentum: float
    batch_size: int
    max_windows: int = 0
    max_age_s: float = 0.0
    min_samples: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.epochs <= 1000 and 0 < self.lr <= 10 and 0 <= self.momentum < 1
                and 1 <= self.batch_size <= 1 << 16 and 0 <= self.max_windows <= 1 << 40
                and 0 <= self.max_age_s <= 1e12 and 1 <= self.min_samples <= 1 << 40):
            raise ValueError(f"training parameters out of range: {self}")

    def to_wire(self) -> Wire:
        """Short stable keys; the data limits are omitted at their defaults, as frames from
        before them had none."""
        d: Wire = {"ep": self.epochs, "lr": self.lr, "mom": self.momentum, "bs": self.batch_size}
        if self.max_windows:
            d["win"] = self.max_windows
        if self.max_age_s:
            d["age"] = self.max_age_s
        if self.min_samples != 1:
            d["min"] = self.min_samples
        return d

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; out-of-range values are a protocol error."""
        try:
            return cls(epochs=req(d, "ep", int), lr=req_float(d, "lr"),
                       momentum=req_float(d, "mom"), batch_size=req(d, "bs", int),
                       max_windows=req(d, "win", int) if "win" in d else 0,
                       max_age_s=req_float(d, "age") if "age" in d else 0.0,
                       min_samples=req(d, "min", int) if "min" in d else 1)
        except ValueError as err:
            raise ProtocolError(Reason.BAD_FRAME, str(err)) from err


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundState:
    """The latest round as the cloud sees it; retained, republished on every change.

    A sync round (`mode` "sync") trains the selected edges once on `base_version` and
    aggregates when all have answered or the deadline passes. An async session (`mode`
    "async", FedBuff) stays "collecting" until its deadline or `round stop`: it aggregates
    every `buffer` accepted updates into a new version and moves `base_version` to it; it
    accepts updates trained on any of the last `max_staleness` versions before that one.
    """

    KIND: ClassVar[str] = "round"
    VERSION: ClassVar[int] = 1
    round_id: str
    model: str
    status: RoundStatus
    base_version: int
    deadline: float
    train: TrainParams
    codec: str
    selection: tuple[str, ...]
    quorum: int
    codec_params: Mapping[str, Scalar] = field(default_factory=dict)
    opened: float = 0.0
    received: int = 0
    result: Mapping[str, Scalar] = field(default_factory=dict)
    reason: str = ""
    mode: RoundMode = RoundMode.SYNC
    buffer: int = 0
    max_staleness: int = 0
    declined: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A status or mode given as its string ("open") becomes its member, so comparisons
        # by identity hold whoever built the state; an unknown string is a ValueError.
        object.__setattr__(self, "status", RoundStatus(self.status))
        object.__setattr__(self, "mode", RoundMode(self.mode))

    @property
    def is_async(self) -> bool:
        """True for an async (buffered, FedBuff-style) session."""
        return self.mode is RoundMode.ASYNC

    @property
    def expected(self) -> int:
        """Updates the round waits for before the deadline: one per selected edge that has
        not declined."""
        return len(self.selection) - len(self.declined)

    @property
    def terminal(self) -> bool:
        """True once the round is published or failed."""
        return self.status.terminal

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"round": self.round_id, "model": self.model, "st": str(self.status),
                "base": self.base_version, "dl": self.deadline, "train": self.train.to_wire(),
                "codec": self.codec, "cp": dict(self.codec_params), "op": self.opened,
                "sel": list(self.selection), "q": self.quorum,
                "rx": self.received, "res": dict(self.result), "why": self.reason,
                # Not "k": that key is every frame's kind (shared/protocol/wire.py).
                "mode": str(self.mode), "buf": self.buffer, "ms": self.max_staleness,
                "dec": dict(self.declined)}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; frames from before async sessions (no `mode`, `buf`, `ms`) are sync rounds,
        frames from before declines (no `dec`) have none."""
        status = _enum(d, "st", RoundStatus, "round status")
        mode = _enum(d, "mode", RoundMode, "round mode") if "mode" in d else RoundMode.SYNC
        selection = req(d, "sel", list)
        if not all(isinstance(e, str) for e in selection):
            raise ProtocolError(Reason.BAD_FRAME, "selection must list edge ids")
        return cls(round_id=req(d, "round", str), model=req(d, "model", str), status=status,
                   base_version=req_range(d, "base", 0, 1 << 53), deadline=req_float(d, "dl"),
                   train=TrainParams.from_wire(req_map(d, "train")), codec=req(d, "codec", str),
                   codec_params=req_scalars(d, "cp") if "cp" in d else {},
                   opened=req_float(d, "op") if "op" in d else 0.0,
                   selection=tuple(selection), quorum=req_range(d, "q", 0, 1 << 20),
                   received=req_range(d, "rx", 0, 1 << 53), result=req_scalars(d, "res"),
                   reason=req(d, "why", str), mode=mode,
                   buffer=req_range(d, "buf", 0, MAX_BUFFER) if "buf" in d else 0,
                   max_staleness=req_range(d, "ms", 0, 1 << 53) if "ms" in d else 0,
                   declined=_declines(d, selection))


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundProgress:
    """How many updates the open round has received, on a topic of its own: the round state
    (selection and all) goes to every edge, so it is announced on changes of status only,
    and the operator follows the count here.

    Args:
        round_id: The round.
        received: Updates accepted so far.
        expected: Updates the round waits for (`RoundState.expected`).
    """

    KIND: ClassVar[str] = "round_progress"
    VERSION: ClassVar[int] = 1
    round_id: str
    received: int
    expected: int

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"round": self.round_id, "rx": self.received, "exp": self.expected}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(round_id=req(d, "round", str), received=req_range(d, "rx", 0, 1 << 53),
                   expected=req_range(d, "exp", 0, 1 << 53))


class ReceiptStatus(StrEnum):
    """The final verdict on an update."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """The end-to-end ack of one update: its final verdict, as recorded in the cloud's journal.
    The edge drops the update from its outbox on receipt."""

    KIND: ClassVar[str] = "receipt"
    VERSION: ClassVar[int] = 1
    update_id: str
    round_id: str
    status: ReceiptStatus
    reason: str = ""
    detail: str = ""

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"upd": self.update_id, "round": self.round_id, "st": str(self.status),
                "why": self.reason, "detail": self.detail}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        status: str = req(d, "st", str)
        try:
            verdict = ReceiptStatus(status)
        except ValueError:
            raise ProtocolError(Reason.BAD_FRAME, f"unknown receipt status {status!r}") from None
        return cls(update_id=req(d, "upd", str), round_id=req(d, "round", str), status=verdict,
                   reason=req(d, "why", str), detail=req(d, "detail", str))


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeStatus:
    """What an edge reports about itself (retained; the last will says offline).

    Attributes:
        edge_id: The edge.
        online: False in the last will and the goodbye.
        version: The global model version it holds.
        samples: Samples it trained on last (or holds, before its first round).
        backend: Training backend and precision, and why.
        last_round: The round it last trained for.
        declined: A round it will not train for, and `decline_reason` why (too_little_data).
        decline_reason: A reason code, empty unless `declined` is set.
        data: What its data source holds: readings stored, windows, drops by reason.
    """

    KIND: ClassVar[str] = "status"
    VERSION: ClassVar[int] = 1
    edge_id: str
    online: bool
    version: int | None = None
    samples: int = 0
    backend: Mapping[str, Scalar] = field(default_factory=dict)
    last_round: str = ""
    declined: str = ""
    decline_reason: str = ""
    data: Mapping[str, Scalar] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        """Short stable keys; declines and data were added without a version bump."""
        return {"edge": self.edge_id, "on": self.online, "ver": self.version,
                "ns": self.samples, "be": dict(self.backend), "lr": self.last_round,
                "dec": self.declined, "dwhy": self.decline_reason, "data": dict(self.data)}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; a frame from before declines and data has neither."""
        return cls(edge_id=req(d, "edge", str), online=req(d, "on", bool),
                   version=opt_int(d, "ver"),
                   samples=req_range(d, "ns", 0, 1 << 40), backend=req_scalars(d, "be"),
                   last_round=req(d, "lr", str),
                   declined=req(d, "dec", str) if "dec" in d else "",
                   decline_reason=req(d, "dwhy", str) if "dwhy" in d else "",
                   data=req_scalars(d, "data") if "data" in d else {})


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """One registered model version, as the CLI shows it: lineage, whether it was promoted
    (or why the gate rejected it), and its accuracy per evaluation window."""

    version: int
    parent: int | None
    round_id: str
    lineage: Mapping[str, Scalar] = field(default_factory=dict)
    status: VersionStatus = VersionStatus.PROMOTED
    reason: str = ""
    evals: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", VersionStatus(self.status))

    def to_wire(self) -> Wire:
        """Short stable keys; status, reason and evals were added without a version bump."""
        return {"ver": self.version, "parent": self.parent, "round": self.round_id,
                "lin": dict(self.lineage), "st": str(self.status), "why": self.reason,
                "ev": dict(self.evals)}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; a sender from before the gate omits status (promoted), reason and evals."""
        return cls(version=req_range(d, "ver", 0, 1 << 53), parent=opt_int(d, "parent"),
                   round_id=req(d, "round", str), lineage=req_scalars(d, "lin"),
                   status=(_enum(d, "st", VersionStatus, "version status") if "st" in d
                           else VersionStatus.PROMOTED),
                   reason=req(d, "why", str) if "why" in d else "",
                   evals=req_scalars(d, "ev") if "ev" in d else {})


def _enum(d: Mapping[str, Any], key: str, kind: type[E], what: str) -> E:
    """A string field that must name a member of `kind`."""
    value: str = req(d, key, str)
    try:
        return kind(value)
    except ValueError:
        raise ProtocolError(Reason.BAD_FRAME, f"unknown {what} {value!r}") from None
