"""Sync rounds: the selected edges train once on the base version; the round aggregates when
all have answered, or at the deadline with quorum."""

from __future__ import annotations

import structlog

from fedstream.cloud import rounds
from fedstream.cloud.policies.base import Opening, RoundHost
from fedstream.shared.errors import Reason
from fedstream.shared.protocol.control import RoundState, RoundStatus

log = structlog.get_logger(__name__)


class SyncRounds:
    """The sync round policy.

    Args:
        host: The coordinator whose round this runs.
    """

    def __init__(self, host: RoundHost) -> None:
        self.host = host

    def open(self, now: float, opening: Opening) -> RoundState:
        """Select edges (named, or a fraction seeded by the config seed and the round id) and
        open a round for them on the served version."""
        host, request, defaults = self.host, opening.request, self.host.cfg.rounds
        selection = rounds.select_edges(
            [e.edge_id for e in host.edges.values() if e.online],
            fraction=defaults.fraction if request.fraction is None else request.fraction,
            edges=request.edges or (), seed=f"{host.cfg.seed}:{opening.round_id}")
        deadline_s = defaults.deadline_s if request.deadline_s is None else request.deadline_s
        state = rounds.open_round(
            round_id=opening.round_id, model=host.cfg.model,
            base_version=host.current.version, now=now, deadline_s=deadline_s,
            train=opening.train, codec=opening.codec, codec_params=opening.codec_params,
            selection=selection, quorum=defaults.quorum)
        host.set_round(state)
        log.info("round_opened", round_id=state.round_id, base=host.current.version,
                 selection=list(state.selection), codec=opening.codec,
                 codec_params=dict(opening.codec_params))
        return state

    def on_counted(self, now: float) -> None:
        """The last selected edge's update closes the round at once."""
        self.tick(now)

    def tick(self, now: float) -> None:
        """Aggregate when every selected edge answered, or at the deadline with quorum; fail
        with no_quorum at the deadline without."""
        state = self.host.round
        if state is None or not rounds.should_close(state, now):
            return
        if not rounds.has_quorum(state):
            declined = "".join(f"; {edge} declined: {why}"
                               for edge, why in sorted(state.declined.items()))
            self.host.finish(rounds.to_failed(
                state, Reason.NO_QUORUM, f"{state.received} of {state.quorum} updates{declined}"))
            return
        self.host.set_round(rounds.to_aggregating(state))
        self._aggregate(now)

    def stop(self, now: float) -> None:
        """A stopped sync round fails with round_stopped: a partial average is not what the
        operator asked for."""
        state = self.host.round
        assert state is not None
        self.host.finish(rounds.to_failed(state, Reason.ROUND_STOPPED,
                                          f"{state.received} of {state.expected} updates"))

    def resume(self, now: float, model_bytes: int) -> None:
        """Announce the round again; finish an aggregation the cloud was in, else go on."""
        state = self.host.round
        assert state is not None
        self.host.announce(state)
        if state.status is RoundStatus.AGGREGATING:
            self._aggregate(now)
        else:
            self.tick(now)

    def _aggregate(self, now: float) -> None:
        """Fold the round's accepted updates, weighted by samples, in update-id order; a
        version saved before a crash is announced instead of folded again."""
        host = self.host
        state = host.round
        assert state is not None
        rows = host.store.journal.accepted(state.round_id)
        result: dict[str, float | int | str] = {
            "seconds": round(now - state.opened, 3), "updates": len(rows),
            "bytes_in": sum(r.bytes for r in rows)}
        folded = host.keeper.announce_saved(state.round_id) or host.keeper.fold(
            round_id=state.round_id, codec=state.codec, rows=rows,
            weights=[float(r.samples) for r in rows], lineage={})
        result.update({"version": host.current.version, **host.current.metrics,
                       "model_bytes": folded.model_bytes, "candidate": folded.candidate})
        if folded.rejected is not None:
            host.finish(rounds.to_failed(state, folded.rejected, folded.detail, result=result))
        else:
            host.finish(rounds.to_published(state, result))
