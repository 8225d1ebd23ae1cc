"""The round state machine: open -> collecting -> aggregating -> published | failed. Pure."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence

from fedstream.shared._fields import Scalar
from fedstream.shared.control import RoundState, TrainParams
from fedstream.shared.errors import FedstreamError, ProtocolError, Reason
from fedstream.shared.messages import UpdateMeta


def open_round(*, round_id: str, model: str, base_version: int, now: float, deadline_s: float,
               train: TrainParams, codec: str, codec_params: Mapping[str, Scalar],
               selection: tuple[str, ...], quorum: int) -> RoundState:
    """A new round waiting for updates from `selection`.

    Raises:
        FedstreamError: no_edges when the selection is empty.
    """
    if not selection:
        raise FedstreamError(Reason.NO_EDGES, "no edge is online")
    return RoundState(round_id=round_id, model=model, status="open", base_version=base_version,
                      deadline=now + deadline_s, train=train, codec=codec,
                      codec_params=dict(codec_params), opened=now,
                      selection=tuple(sorted(selection)), quorum=min(quorum, len(selection)))


def select_edges(online: Sequence[str], *, fraction: float = 1.0, edges: Sequence[str] = (),
                 seed: str = "") -> tuple[str, ...]:
    """Which online edges take part: a named list, or a seeded random fraction of them.

    Raises:
        FedstreamError: no_edges when the selection is empty, bad_config for a bad fraction or
            a named edge that is not online.
    """
    if not 0 < fraction <= 1:
        raise FedstreamError(Reason.BAD_CONFIG, f"fraction must be in (0, 1], got {fraction}")
    pool = sorted(set(online))
    if edges:
        offline = sorted(set(edges) - set(pool))
        if offline:
            raise FedstreamError(Reason.BAD_CONFIG, f"not online: {', '.join(offline)}")
        return tuple(sorted(set(edges)))
    if not pool:
        raise FedstreamError(Reason.NO_EDGES, "no edge is online")
    count = max(1, round(fraction * len(pool)))
    return tuple(sorted(random.Random(seed).sample(pool, count)))


def check_update(state: RoundState | None, meta: UpdateMeta, counted: set[str]) -> None:
    """Reject an update that does not belong to the collecting round.

    Raises:
        ProtocolError: stale_round, unknown_edge or duplicate_update.
    """
    if state is None or state.terminal or state.status == "aggregating":
        raise ProtocolError(Reason.STALE_ROUND, f"round {meta.round_id} is not collecting")
    if meta.round_id != state.round_id or meta.base_version != state.base_version:
        raise ProtocolError(Reason.STALE_ROUND,
                            f"update for round {meta.round_id} on v{meta.base_version}; "
                            f"open is {state.round_id} on v{state.base_version}")
    if meta.edge_id not in state.selection:
        raise ProtocolError(Reason.UNKNOWN_EDGE, f"{meta.edge_id} not selected")
    if meta.edge_id in counted:
        raise ProtocolError(Reason.DUPLICATE_UPDATE, f"{meta.edge_id} already counted")


def record_update(state: RoundState) -> RoundState:
    """Count one accepted update."""
    return dataclasses.replace(state, status="collecting", received=state.received + 1)


def should_close(state: RoundState, now: float) -> bool:
    """Every selected edge answered, or the deadline passed."""
    return not state.terminal and state.status != "aggregating" and (
        state.received >= state.expected or now >= state.deadline
    )


def has_quorum(state: RoundState) -> bool:
    """Enough updates to aggregate."""
    return state.received >= max(1, state.quorum)


def to_aggregating(state: RoundState) -> RoundState:
    """Collection is over; the aggregate is being computed."""
    return dataclasses.replace(state, status="aggregating")


def to_published(state: RoundState, result: dict[str, float | int | str]) -> RoundState:
    """The new model version is out."""
    return dataclasses.replace(state, status="published", result=result)


def to_failed(state: RoundState, reason: Reason, detail: str = "") -> RoundState:
    """The round ended without a new model."""
    return dataclasses.replace(state, status="failed", reason=str(reason),
                               result={"detail": detail} if detail else {})
