"""Operator commands and the cloud's replies (P13): one message per verb, on `cmd/<verb>`.

A command's kind names its verb (`VERB`, the topic's last segment). The cloud answers with
the reply type of that verb, or with a `Reply` (ok false, a reason and a detail) when it
refuses; the data topic (P15) answers with a `Reply` too. A v1 `cmd` frame (`{verb, args}`,
from before one message per verb) is read by `upgrade_cmd_v1`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol._fields import (
    Scalar,
    Wire,
    req,
    req_float,
    req_list_of,
    req_map,
    req_range,
    req_scalars,
)
from fedstream.shared.protocol.control import EdgeStatus, ModelInfo, RoundMode, RoundState
from fedstream.shared.protocol.enrolment import EdgeEnrol, EdgeRevoke
from fedstream.shared.protocol.history import RoundList, RoundListReply

T = TypeVar("T")
MAX_EDGES = 1 << 16
MAX_VERSION = 1 << 53


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundStart:
    """Open a sync round or, with `mode` async, a session (P13, P14).

    Every field left None takes the cloud's configured default. A sync round takes a selection
    (`fraction` or `edges`), an async session `buffer` (0: the edges online) and
    `max_staleness`; the cloud refuses the other mode's fields with bad_config, and checks
    every range (training parameters, codec and its parameters) itself.
    """

    KIND: ClassVar[str] = "round_start"
    VERB: ClassVar[str] = "round_start"
    VERSION: ClassVar[int] = 1
    epochs: int | None = None
    lr: float | None = None
    momentum: float | None = None
    batch_size: int | None = None
    deadline_s: float | None = None
    codec: str | None = None
    codec_params: Mapping[str, Scalar] | None = None
    mode: RoundMode | None = None
    fraction: float | None = None
    edges: tuple[str, ...] | None = None
    buffer: int | None = None
    max_staleness: int | None = None
    max_windows: int | None = None
    max_age_s: float | None = None
    min_samples: int | None = None

    def given(self) -> dict[str, object]:
        """The fields that are set (not None), by name: what the operator asked for."""
        return {name: value for name, value in (
            ("epochs", self.epochs), ("lr", self.lr), ("momentum", self.momentum),
            ("batch_size", self.batch_size), ("deadline_s", self.deadline_s),
            ("codec", self.codec), ("codec_params", self.codec_params), ("mode", self.mode),
            ("fraction", self.fraction), ("edges", self.edges), ("buffer", self.buffer),
            ("max_staleness", self.max_staleness), ("max_windows", self.max_windows),
            ("max_age_s", self.max_age_s), ("min_samples", self.min_samples))
            if value is not None}

    def to_wire(self) -> Wire:
        """Short stable keys; a field left to the cloud's default is omitted."""
        d: Wire = {"ep": self.epochs, "lr": self.lr, "mom": self.momentum,
                   "bs": self.batch_size, "dl": self.deadline_s, "codec": self.codec,
                   "cp": None if self.codec_params is None else dict(self.codec_params),
                   "mode": None if self.mode is None else str(self.mode),
                   "frac": self.fraction,
                   "edges": None if self.edges is None else list(self.edges),
                   "buf": self.buffer, "ms": self.max_staleness, "win": self.max_windows,
                   "age": self.max_age_s, "min": self.min_samples}
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; types are checked here, ranges by the cloud (bad_config)."""
        return cls(epochs=_opt(d, "ep", _int), lr=_opt(d, "lr", req_float),
                   momentum=_opt(d, "mom", req_float), batch_size=_opt(d, "bs", _int),
                   deadline_s=_opt(d, "dl", req_float), codec=_opt(d, "codec", _str),
                   codec_params=_opt(d, "cp", req_scalars), mode=_opt(d, "mode", _mode),
                   fraction=_opt(d, "frac", req_float), edges=_opt(d, "edges", _edges),
                   buffer=_opt(d, "buf", _int), max_staleness=_opt(d, "ms", _int),
                   max_windows=_opt(d, "win", _int), max_age_s=_opt(d, "age", req_float),
                   min_samples=_opt(d, "min", _int))


class _NoArgs:
    """Wire form of a command without arguments (mixed into its frozen dataclass)."""

    __slots__ = ()

    def to_wire(self) -> Wire:
        """No fields."""
        return {}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls()


class _VersionArg:
    """Wire form of a command naming one model version (mixed into its frozen dataclass)."""

    __slots__ = ()
    version: int

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"ver": self.version}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(version=req_range(d, "ver", 0, MAX_VERSION))  # type: ignore[call-arg]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundStop(_NoArgs):
    """End the open round or session now; with nothing open, the last round is answered."""

    KIND: ClassVar[str] = "round_stop"
    VERB: ClassVar[str] = "round_stop"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusQuery(_NoArgs):
    """Ask for the fleet view (kind `status_query`: `status` is an edge's status)."""

    KIND: ClassVar[str] = "status_query"
    VERB: ClassVar[str] = "status"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelList(_NoArgs):
    """Ask for every registered model version."""

    KIND: ClassVar[str] = "model_list"
    VERB: ClassVar[str] = "model_list"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRollback(_VersionArg):
    """Republish the weights of an earlier version as a new current version."""

    KIND: ClassVar[str] = "model_rollback"
    VERB: ClassVar[str] = "model_rollback"
    VERSION: ClassVar[int] = 1
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPromote(_VersionArg):
    """Serve a candidate the promotion gate rejected."""

    KIND: ClassVar[str] = "model_promote"
    VERB: ClassVar[str] = "model_promote"
    VERSION: ClassVar[int] = 1
    version: int


Command = (RoundStart | RoundStop | StatusQuery | ModelList | ModelRollback | ModelPromote
           | EdgeEnrol | EdgeRevoke | RoundList)
COMMANDS: tuple[type[Command], ...] = (RoundStart, RoundStop, StatusQuery, ModelList,
                                       ModelRollback, ModelPromote, EdgeEnrol, EdgeRevoke,
                                       RoundList)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A plain answer: ok with a detail (the data topic's "N rows stored"), or a refusal with
    its reason code. Every command is refused with one of these."""

    KIND: ClassVar[str] = "reply"
    VERSION: ClassVar[int] = 1
    ok: bool
    reason: str = ""
    detail: str = ""

    def to_wire(self) -> Wire:
        """Short stable keys (a v1 reader of the old, wider reply reads these three too)."""
        return {"ok": self.ok, "why": self.reason, "detail": self.detail}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse; the old reply's other keys are ignored."""
        return cls(ok=req(d, "ok", bool), reason=req(d, "why", str),
                   detail=req(d, "detail", str))


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundReply:
    """The answer to `RoundStart` (the round opened) and `RoundStop` (how it ended; None when
    no round ever ran)."""

    KIND: ClassVar[str] = "round_reply"
    VERSION: ClassVar[int] = 1
    round: RoundState | None
    model_version: int

    def to_wire(self) -> Wire:
        """The round in its own wire form."""
        return {"round": None if self.round is None else self.round.to_wire(),
                "ver": self.model_version}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(round=_opt(d, "round", _round),
                   model_version=req_range(d, "ver", 0, MAX_VERSION))


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReply:
    """The fleet view: the last round, the edges seen, the served model, counters."""

    KIND: ClassVar[str] = "status_reply"
    VERSION: ClassVar[int] = 1
    round: RoundState | None
    edges: tuple[EdgeStatus, ...]
    model_version: int
    model_metrics: Mapping[str, Scalar] = field(default_factory=dict)
    rejections: Mapping[str, Scalar] = field(default_factory=dict)
    intake_bytes: int = 0
    serving: Mapping[str, Scalar] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        """Nested messages in their own wire forms; `srv` is the inference service's counters
        (empty when it is off)."""
        return {"round": None if self.round is None else self.round.to_wire(),
                "edges": [e.to_wire() for e in self.edges], "ver": self.model_version,
                "metrics": dict(self.model_metrics), "rej": dict(self.rejections),
                "ib": self.intake_bytes, "srv": dict(self.serving)}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(round=_opt(d, "round", _round),
                   edges=req_list_of(d, "edges", EdgeStatus.from_wire),
                   model_version=req_range(d, "ver", 0, MAX_VERSION),
                   model_metrics=req_scalars(d, "metrics"), rejections=req_scalars(d, "rej"),
                   intake_bytes=req_range(d, "ib", 0, MAX_VERSION),
                   serving=req_scalars(d, "srv"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelListReply:
    """Every registered version with its lineage, gate verdict and evaluation scores."""

    KIND: ClassVar[str] = "model_list_reply"
    VERSION: ClassVar[int] = 1
    model_version: int
    versions: tuple[ModelInfo, ...]

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"ver": self.model_version, "vers": [v.to_wire() for v in self.versions]}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(model_version=req_range(d, "ver", 0, MAX_VERSION),
                   versions=req_list_of(d, "vers", ModelInfo.from_wire))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelVersionReply:
    """The answer to `ModelRollback` and `ModelPromote`: the version now served."""

    KIND: ClassVar[str] = "model_version_reply"
    VERSION: ClassVar[int] = 1
    model_version: int

    def to_wire(self) -> Wire:
        """Short stable keys."""
        return {"ver": self.model_version}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Parse."""
        return cls(model_version=req_range(d, "ver", 0, MAX_VERSION))


Answer = Reply | RoundReply | StatusReply | ModelListReply | ModelVersionReply | RoundListReply
ANSWERS: tuple[type[Answer], ...] = (Reply, RoundReply, StatusReply, ModelListReply,
                                     ModelVersionReply, RoundListReply)


def upgrade_cmd_v1(d: Mapping[str, Any]) -> Command:
    """A v1 `cmd` frame, `{verb, args}` with scalar args, as the command it asked for.

    Arguments are converted as the cloud of v1 did (`int(...)`, `float(...)`, codec params as
    `codec.<name>`, `edges` comma-separated); keys it did not read are ignored.

    Raises:
        ProtocolError: bad_frame for an argument that does not convert or a version that is
            not an int; unknown_kind for an unknown verb.
    """
    verb: str = req(d, "verb", str)
    args = req_scalars(d, "args")
    if verb == "round_start":
        return _round_start_v1(args)
    if verb in ("model_rollback", "model_promote"):
        target = args.get("version")
        if not isinstance(target, int) or isinstance(target, bool) or target < 0:
            raise ProtocolError(Reason.BAD_FRAME, f"{verb} needs an int version")
        return (ModelRollback if verb == "model_rollback" else ModelPromote)(version=target)
    plain: dict[str, type[RoundStop | StatusQuery | ModelList]] = {
        "round_stop": RoundStop, "status": StatusQuery, "model_list": ModelList}
    if verb not in plain:
        raise ProtocolError(Reason.UNKNOWN_KIND, f"unknown verb {verb!r}")
    return plain[verb]()


def _round_start_v1(args: Mapping[str, Scalar]) -> RoundStart:
    def get(key: str, cast: Callable[[Scalar], T]) -> T | None:
        if key not in args:
            return None
        try:
            return cast(args[key])
        except ValueError as err:
            raise ProtocolError(Reason.BAD_FRAME, f"round_start {key}: {err}") from err

    codec_params = {k.removeprefix("codec."): v for k, v in args.items()
                    if k.startswith("codec.")}
    named = get("edges", str)
    return RoundStart(epochs=get("epochs", int), lr=get("lr", float),
                      momentum=get("momentum", float), batch_size=get("batch_size", int),
                      deadline_s=get("deadline_s", float), codec=get("codec", str),
                      codec_params=codec_params or None,
                      mode=get("mode", lambda v: _mode_of(str(v))),
                      fraction=get("fraction", float),
                      edges=None if named is None else tuple(e for e in named.split(",") if e),
                      buffer=get("buffer", int), max_staleness=get("max_staleness", int))


def _opt(d: Mapping[str, Any], key: str,
         read: Callable[[Mapping[str, Any], str], T]) -> T | None:
    """An optional field: absent or nil is None."""
    return None if d.get(key) is None else read(d, key)


def _int(d: Mapping[str, Any], key: str) -> int:
    value: int = req(d, key, int)
    return value


def _str(d: Mapping[str, Any], key: str) -> str:
    value: str = req(d, key, str)
    return value


def _mode(d: Mapping[str, Any], key: str) -> RoundMode:
    return _mode_of(_str(d, key))


def _mode_of(text: str) -> RoundMode:
    try:
        return RoundMode(text)
    except ValueError:
        raise ProtocolError(Reason.BAD_FRAME, f"unknown round mode {text!r}") from None


def _edges(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value: list[Any] = req(d, key, list)
    if len(value) > MAX_EDGES or not all(isinstance(e, str) for e in value):
        raise ProtocolError(Reason.BAD_FRAME, f"{key!r} must list at most {MAX_EDGES} edge ids")
    return tuple(value)


def _round(d: Mapping[str, Any], key: str) -> RoundState:
    return RoundState.from_wire(req_map(d, key))
