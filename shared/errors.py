"""The one error tree: each failure carries a reason code shared by logs, replies, exit codes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why something failed; the same string appears in logs, replies and CLI messages."""

    # configuration (exit codes 10-29)
    BAD_CONFIG = "bad_config"
    CONFIG_NOT_FOUND = "config_not_found"
    UNKNOWN_NAME = "unknown_name"
    BAD_DATA = "bad_data"
    # wire protocol (30-59)
    NOT_MSGPACK = "not_msgpack"
    BAD_FRAME = "bad_frame"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_CODEC = "unknown_codec"
    CHUNK_OUT_OF_RANGE = "chunk_out_of_range"
    HEADER_CONFLICT = "header_conflict"
    SIZE_MISMATCH = "size_mismatch"
    BAD_HASH = "bad_hash"
    OVERSIZED = "oversized"
    NON_FINITE = "non_finite"
    SPEC_MISMATCH = "spec_mismatch"
    STALE_ROUND = "stale_round"
    UNKNOWN_EDGE = "unknown_edge"
    DUPLICATE_UPDATE = "duplicate_update"
    # transport (60-79)
    BROKER_UNREACHABLE = "broker_unreachable"
    PUBLISH_FAILED = "publish_failed"
    NO_REPLY = "no_reply"
    BROKER_FAILED = "broker_failed"
    BROKER_UNKNOWN_HOST = "broker_unknown_host"
    BROKER_REFUSED = "broker_refused"
    # round lifecycle, store and serving (80-99)
    ROUND_IN_PROGRESS = "round_in_progress"
    NO_EDGES = "no_edges"
    ROUND_FAILED = "round_failed"
    NO_QUORUM = "no_quorum"
    STORE_FAILED = "store_failed"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    ROUND_STOPPED = "round_stopped"
    REGRESSED_NEWEST = "regressed_newest"
    REGRESSED_PAST = "regressed_past"
    NOT_CANDIDATE = "not_candidate"
    OVERLOADED = "overloaded"
    NO_MODEL = "no_model"
    INTERNAL = "internal"
    TOO_LITTLE_DATA = "too_little_data"
    BACKEND_TUNING = "backend_tuning"
    # identity and authorisation (100-119)
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    REVOKED = "revoked"
    UNENROLLED = "unenrolled"
    UNAUTHORISED = "unauthorised"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    """Help line and process exit code for one reason."""

    help: str
    exit_code: int


REASONS: dict[Reason, ReasonInfo] = {
    Reason.BAD_CONFIG: ReasonInfo("a config value is missing or invalid", 10),
    Reason.CONFIG_NOT_FOUND: ReasonInfo("the config file does not exist", 11),
    Reason.UNKNOWN_NAME: ReasonInfo("nothing (unit, identity or token) goes by that name", 12),
    Reason.BAD_DATA: ReasonInfo("a data file is unreadable or malformed", 13),
    Reason.NOT_MSGPACK: ReasonInfo("the payload is not msgpack", 30),
    Reason.BAD_FRAME: ReasonInfo("a field is missing or of the wrong type or range", 31),
    Reason.UNSUPPORTED_VERSION: ReasonInfo("the message format version is newer than ours", 32),
    Reason.UNKNOWN_KIND: ReasonInfo("the message kind is not known", 33),
    Reason.UNKNOWN_CODEC: ReasonInfo("the blob codec is not known", 34),
    Reason.CHUNK_OUT_OF_RANGE: ReasonInfo("a chunk index is outside its blob", 35),
    Reason.HEADER_CONFLICT: ReasonInfo("chunks of one blob disagree on its header", 36),
    Reason.SIZE_MISMATCH: ReasonInfo("a chunk or blob has the wrong byte length", 37),
    Reason.BAD_HASH: ReasonInfo("the reassembled blob fails its sha256 check", 38),
    Reason.OVERSIZED: ReasonInfo("a blob exceeds the configured memory bound", 39),
    Reason.NON_FINITE: ReasonInfo("decoded tensors hold NaN or Inf", 40),
    Reason.SPEC_MISMATCH: ReasonInfo("the tensors do not match the model's spec", 41),
    Reason.STALE_ROUND: ReasonInfo("the update names a round or base version that is not open", 42),
    Reason.UNKNOWN_EDGE: ReasonInfo("the edge is not selected for this round", 43),
    Reason.DUPLICATE_UPDATE: ReasonInfo("the update was already counted", 44),
    Reason.BROKER_UNREACHABLE: ReasonInfo("the MQTT broker cannot be reached", 60),
    Reason.PUBLISH_FAILED: ReasonInfo("the broker refused or did not confirm a publish", 61),
    Reason.NO_REPLY: ReasonInfo("the cloud service did not answer in time", 62),
    Reason.BROKER_FAILED: ReasonInfo("the broker process failed to start or stop", 63),
    Reason.BROKER_UNKNOWN_HOST: ReasonInfo("the broker host name does not resolve", 64),
    Reason.BROKER_REFUSED: ReasonInfo(
        "the broker refused the session (bad credentials or not authorised)", 65),
    Reason.ROUND_IN_PROGRESS: ReasonInfo("a round is already open", 80),
    Reason.NO_EDGES: ReasonInfo("no edge is online to take part", 81),
    Reason.ROUND_FAILED: ReasonInfo("the round ended without a new model", 82),
    Reason.NO_QUORUM: ReasonInfo("the deadline passed before enough updates arrived", 83),
    Reason.STORE_FAILED: ReasonInfo("the journal or spool could not be read or written", 84),
    Reason.BACKEND_UNAVAILABLE: ReasonInfo("the requested training backend cannot run here", 85),
    Reason.ROUND_STOPPED: ReasonInfo("the operator stopped the round before it ended", 86),
    Reason.REGRESSED_NEWEST: ReasonInfo(
        "the candidate lost more than the tolerance on the newest evaluation window", 87),
    Reason.REGRESSED_PAST: ReasonInfo(
        "the candidate lost more than the tolerance on the past evaluation windows", 88),
    Reason.NOT_CANDIDATE: ReasonInfo("that version is not a rejected candidate", 89),
    Reason.OVERLOADED: ReasonInfo("the inference queue is full; retry later", 90),
    Reason.NO_MODEL: ReasonInfo("no promoted model is being served yet", 91),
    Reason.INTERNAL: ReasonInfo("the service failed on this request; its log has why", 92),
    Reason.TOO_LITTLE_DATA: ReasonInfo(
        "the edge holds too few usable windows for the round's limits", 93),
    Reason.BACKEND_TUNING: ReasonInfo(
        "the edge is still measuring its training backend; it trains once that is done", 94),
    Reason.UNSIGNED: ReasonInfo("a signature is required and the object carries none", 100),
    Reason.BAD_SIGNATURE: ReasonInfo(
        "the signature does not match the object and the signer's enrolled key", 101),
    Reason.REPLAYED: ReasonInfo(
        "the signed update's sequence number is not above the signer's last accepted one", 102),
    Reason.REVOKED: ReasonInfo("the signer's identity was revoked", 103),
    Reason.UNENROLLED: ReasonInfo("no signing key is enrolled for that identity", 104),
    Reason.UNAUTHORISED: ReasonInfo("no valid credential for this request", 105),
    Reason.RATE_LIMITED: ReasonInfo("the credential's request rate is exceeded; retry later", 106),
}


class FedstreamError(Exception):
    """Base of every error fedstream raises on purpose."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail

    @property
    def exit_code(self) -> int:
        """Process exit code for this error's reason."""
        return REASONS[self.reason].exit_code


class ConfigError(FedstreamError):
    """Configuration or user-supplied data is invalid."""


class Scope(StrEnum):
    """What a rejected frame condemns: itself only, or the whole update it belongs to."""

    FRAME = "frame"
    UPDATE = "update"


class ProtocolError(FedstreamError):
    """Bad input from the wire.

    Args:
        reason: Why.
        detail: What exactly, for the log and the receipt.
        scope: `FRAME` (the default) when only this frame is refused and its update may still
            complete from good frames; `UPDATE` when the update as a whole is refused (it gets
            a final receipt and its edge drops it).
    """

    def __init__(self, reason: Reason, detail: str = "", *, scope: Scope = Scope.FRAME) -> None:
        super().__init__(reason, detail)
        self.scope = scope


class TransportError(FedstreamError):
    """The broker or the network failed."""


class StoreError(FedstreamError):
    """The journal, spool or disk failed."""


class SecurityError(FedstreamError):
    """A signature, identity or credential check failed."""
