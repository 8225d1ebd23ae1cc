"""When an edge trains: a pure decision from the round state, the model it holds and what it
trained last. Sync rounds train once, on exactly their base version; async sessions train once
per model version the edge holds."""

from __future__ import annotations

from enum import StrEnum

from fedstream.shared.protocol.control import RoundState, RoundStatus


class Step(StrEnum):
    """What to do about the pending round."""

    TRAIN = "train"
    WAIT = "wait"  # the model to train on is still arriving, or was already trained on
    DROP = "drop"  # nothing more to do for this round
    STALE = "stale"  # the edge holds a newer model than the round's base: skip the round


def next_step(state: RoundState, *, edge_id: str, held: int | None,
              trained: tuple[str, int] | None) -> Step:
    """Decide for one round state.

    Args:
        state: The latest state of the round or session.
        edge_id: This edge.
        held: The model version the edge holds completely, or None.
        trained: (round id, version) of the edge's last training, or None.
    """
    if state.terminal or state.status is RoundStatus.AGGREGATING:
        return Step.DROP
    done = trained[1] if trained is not None and trained[0] == state.round_id else None
    if not state.is_async and (edge_id not in state.selection or done is not None):
        return Step.DROP
    if held is None or held < state.base_version:
        return Step.WAIT
    if state.is_async:
        return Step.WAIT if done is not None and held <= done else Step.TRAIN
    return Step.STALE if held > state.base_version else Step.TRAIN
