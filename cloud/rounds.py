"""The round state machine: open -> collecting -> aggregating -> published | failed. Pure.

An async session (FedBuff, Nguyen et al. 2022) is one long "collecting" state whose base
version moves every time it publishes, ending published | failed at its deadline or on stop.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

from fedstream.shared.errors import FedstreamError, ProtocolError, Reason, Scope
from fedstream.shared.protocol._fields import Scalar
from fedstream.shared.protocol.control import (
    MAX_BUFFER,
    RoundMode,
    RoundState,
    RoundStatus,
    TrainParams,
)
from fedstream.shared.protocol.messages import UpdateMeta


def open_round(*, round_id: str, model: str, base_version: int, now: float, deadline_s: float,
               train: TrainParams, codec: str, codec_params: Mapping[str, Scalar],
               selection: tuple[str, ...], quorum: int) -> RoundState:
    """A new round waiting for updates from `selection`.

    Raises:
        FedstreamError: no_edges when the selection is empty.
    """
    if not selection:
        raise FedstreamError(Reason.NO_EDGES, "no edge is online")
    return RoundState(round_id=round_id, model=model, status=RoundStatus.OPEN,
                      base_version=base_version,
                      deadline=now + deadline_s, train=train, codec=codec,
                      codec_params=dict(codec_params), opened=now,
                      selection=tuple(sorted(selection)), quorum=min(quorum, len(selection)))


def open_session(*, round_id: str, model: str, base_version: int, now: float, deadline_s: float,
                 train: TrainParams, codec: str, codec_params: Mapping[str, Scalar],
                 online: tuple[str, ...], buffer: int, max_staleness: int) -> RoundState:
    """A new async session, collecting at once: aggregate every `buffer` accepted updates.

    `online` (the edges online at open) is informational: any edge may join later.

    Raises:
        FedstreamError: no_edges when nobody is online; bad_config for a buffer below 1 or a
            negative max_staleness.
    """
    if not online:
        raise FedstreamError(Reason.NO_EDGES, "no edge is online")
    if not 1 <= buffer <= MAX_BUFFER or max_staleness < 0:
        raise FedstreamError(Reason.BAD_CONFIG, f"buffer must be 1-{MAX_BUFFER} and "
                             f"max_staleness >= 0; got {buffer} and {max_staleness}")
    return RoundState(round_id=round_id, model=model, status=RoundStatus.COLLECTING,
                      mode=RoundMode.ASYNC,
                      base_version=base_version, deadline=now + deadline_s, train=train,
                      codec=codec, codec_params=dict(codec_params), opened=now,
                      selection=tuple(sorted(online)), quorum=1, buffer=buffer,
                      max_staleness=max_staleness)


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


def check_update(state: RoundState | None, meta: UpdateMeta,
                 counted: AbstractSet[tuple[str, int]]) -> None:
    """Reject an update that does not belong to the collecting round or session.

    A sync round takes one update per selected edge, trained on its base version. An async
    session takes updates from any edge trained on a version `v` with
    `base_version - max_staleness <= v <= base_version`. In both, `counted` holds the
    (edge id, base version) of every update already accepted: an edge contributes once per
    version it trained on (in a sync round, once).

    Raises:
        ProtocolError: stale_round, unknown_edge or duplicate_update, each of scope UPDATE.
    """
    if state is None or state.terminal or state.status is RoundStatus.AGGREGATING:
        raise ProtocolError(Reason.STALE_ROUND, f"round {meta.round_id} is not collecting",
                            scope=Scope.UPDATE)
    oldest = state.base_version - state.max_staleness if state.is_async else state.base_version
    if meta.round_id != state.round_id or not oldest <= meta.base_version <= state.base_version:
        window = (f"v{max(0, oldest)}..v{state.base_version}" if oldest < state.base_version
                  else f"v{state.base_version}")
        raise ProtocolError(Reason.STALE_ROUND,
                            f"update for round {meta.round_id} on v{meta.base_version}; "
                            f"open is {state.round_id} on {window}", scope=Scope.UPDATE)
    if not state.is_async and meta.edge_id not in state.selection:
        raise ProtocolError(Reason.UNKNOWN_EDGE, f"{meta.edge_id} not selected",
                            scope=Scope.UPDATE)
    if (meta.edge_id, meta.base_version) in counted:
        raise ProtocolError(Reason.DUPLICATE_UPDATE,
                            f"{meta.edge_id} already counted on v{meta.base_version}",
                            scope=Scope.UPDATE)


def staleness_weight(samples: float, staleness: int) -> float:
    """FedBuff's polynomial down-weighting of a stale update: `samples / sqrt(1 + staleness)`.

    `staleness` is how many versions the global model moved on since the update's base
    (0 for a fresh one), so a fresh update weighs its sample count, one a version behind
    `samples/sqrt(2)`, three behind half of it.

    Raises:
        ValueError: a negative staleness.
    """
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    return samples / math.sqrt(1 + staleness)


def record_update(state: RoundState, edge_id: str = "") -> RoundState:
    """Count one accepted update; an edge that had declined the round (and found data since)
    is waited for again, so its update does not close the round before the others'."""
    declined = {e: why for e, why in state.declined.items() if e != edge_id}
    return dataclasses.replace(state, status=RoundStatus.COLLECTING,
                               received=state.received + 1, declined=declined)


def record_decline(state: RoundState, edge_id: str, reason: str,
                   counted: AbstractSet[tuple[str, int]]) -> RoundState | None:
    """A selected edge of a sync round will not send an update (too little data); the round
    no longer waits for it. None when nothing changes: another mode, an edge not selected,
    already declined or whose update is already counted, a round no longer collecting."""
    if (state.is_async or state.terminal or state.status is RoundStatus.AGGREGATING
            or edge_id not in state.selection or edge_id in state.declined
            or any(edge == edge_id for edge, _ in counted)):
        return None
    return dataclasses.replace(state, declined={**state.declined, edge_id: reason})


def should_close(state: RoundState, now: float) -> bool:
    """Every selected edge answered, or the deadline passed (an async session: the deadline)."""
    return not state.terminal and state.status is not RoundStatus.AGGREGATING and (
        (not state.is_async and state.received >= state.expected) or now >= state.deadline
    )


def should_aggregate(state: RoundState, pending: int) -> bool:
    """An async session has a full buffer of updates not yet folded into a version."""
    return state.is_async and not state.terminal and pending >= max(1, state.buffer)


def to_next_version(state: RoundState, version: int,
                    result: Mapping[str, Scalar]) -> RoundState:
    """An async session published `version`: later updates train on it; still collecting."""
    return dataclasses.replace(state, status=RoundStatus.COLLECTING, base_version=version,
                               result=dict(result))


def has_quorum(state: RoundState) -> bool:
    """Enough updates to aggregate."""
    return state.received >= max(1, state.quorum)


def to_aggregating(state: RoundState) -> RoundState:
    """Collection is over; the aggregate is being computed."""
    return dataclasses.replace(state, status=RoundStatus.AGGREGATING)


def to_published(state: RoundState, result: dict[str, float | int | str]) -> RoundState:
    """The new model version is out."""
    return dataclasses.replace(state, status=RoundStatus.PUBLISHED, result=result)


def to_failed(state: RoundState, reason: Reason, detail: str = "",
              result: Mapping[str, float | int | str] | None = None) -> RoundState:
    """The round ended without a new model (`result` says what it did produce, e.g. a
    candidate the gate rejected)."""
    return dataclasses.replace(state, status=RoundStatus.FAILED, reason=str(reason),
                               result={**(result or {}), **({"detail": detail} if detail
                                                            else {})})


def live_keys(state: RoundState, counted: AbstractSet[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (edge id, base version) duplicate keys still worth keeping: an async session refuses
    updates on versions older than its staleness window as stale anyway, so their keys can go
    (bounded memory); a sync round keeps all of its (one per selected edge)."""
    if not state.is_async:
        return set(counted)
    return {key for key in counted if key[1] >= state.base_version - state.max_staleness}
