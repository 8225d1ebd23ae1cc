"""Async sessions (FedBuff, Nguyen et al. 2022): any edge trains on whatever version it holds;
every `buffer` accepted updates are folded, down-weighted by staleness, into a new version,
until the session's deadline or `round stop` (P14)."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from fedstream.cloud import rounds
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.policies.base import Opening, RoundHost
from fedstream.shared.errors import Reason
from fedstream.shared.protocol.control import RoundMode, RoundState

log = structlog.get_logger(__name__)


class FedBuffSessions:
    """The async session policy.

    Args:
        host: The coordinator whose session this runs.
    """

    def __init__(self, host: RoundHost) -> None:
        self.host = host

    def open(self, now: float, opening: Opening) -> RoundState:
        """Open a session on the served version for whoever is online (any edge may join);
        a buffer of 0 means the number of edges online."""
        host, request, defaults = self.host, opening.request, self.host.cfg.rounds
        online = tuple(e.edge_id for e in host.edges.values() if e.online)
        buffer = (defaults.buffer if request.buffer is None else request.buffer) or len(online)
        max_staleness = (defaults.max_staleness if request.max_staleness is None
                         else request.max_staleness)
        deadline_s = defaults.session_s if request.deadline_s is None else request.deadline_s
        state = rounds.open_session(
            round_id=opening.round_id, model=host.cfg.model, base_version=host.current.version,
            now=now, deadline_s=deadline_s, train=opening.train, codec=opening.codec,
            codec_params=opening.codec_params, online=online, buffer=buffer,
            max_staleness=max_staleness)
        host.set_round(state)
        log.info("round_opened", round_id=state.round_id, mode=str(RoundMode.ASYNC),
                 base=host.current.version, online=list(state.selection), buffer=buffer,
                 max_staleness=max_staleness, deadline_s=deadline_s, codec=opening.codec,
                 codec_params=dict(opening.codec_params))
        return state

    def on_counted(self, now: float) -> None:
        """Fold a full buffer into a new version; end the session past its deadline."""
        state = self.host.round
        assert state is not None
        pending = self.host.store.journal.pending(state.round_id)
        if rounds.should_aggregate(state, len(pending)):
            self._next_version(pending, now)
        self.tick(now)

    def tick(self, now: float) -> None:
        """At the deadline, fold what is pending and end the session."""
        state = self.host.round
        if state is not None and rounds.should_close(state, now):
            self._end(now, Reason.NO_QUORUM)

    def stop(self, now: float) -> None:
        """Fold what is pending and end the session now."""
        self._end(now, Reason.ROUND_STOPPED)

    def resume(self, now: float, model_bytes: int) -> None:
        """Pick a session up after a restart; a version saved but not yet announced as the
        session's base (the cloud died in between) is announced now."""
        host = self.host
        state = host.round
        assert state is not None
        saved = host.keeper.registry.rows()[-1]
        if saved.round_id == state.round_id and not saved.promoted:
            # The cloud died after the gate refused a candidate, before ending the session.
            host.finish(rounds.to_failed(
                state, Reason(saved.reason), str(saved.lineage.get("gate", "")),
                result={**self._result(now, model_bytes), "candidate": saved.version}))
            return
        if state.base_version != host.current.version:
            host.set_round(rounds.to_next_version(state, host.current.version,
                                                  self._result(now, model_bytes)))
        else:
            host.announce(state)
        self.on_counted(now)

    def _next_version(self, pending: Sequence[UpdateRow], now: float) -> None:
        """Publish the pending updates, down-weighted by staleness, as the session's next
        version, and move the session onto it."""
        host = self.host
        state = host.round
        assert state is not None
        staleness = [host.current.version - r.base for r in pending]
        weights = [rounds.staleness_weight(r.samples, s)
                   for r, s in zip(pending, staleness, strict=True)]
        folded = host.keeper.fold(round_id=state.round_id, codec=state.codec, rows=pending,
                                  weights=weights, lineage={"mode": str(RoundMode.ASYNC),
                                                            "buffer": state.buffer,
                                                            "staleness_max": max(staleness)})
        result = self._result(now, folded.model_bytes)
        if folded.rejected is not None:
            # The session ends like a sync round: its edges trained on the served version
            # already (they would wait for a new one that never comes), and its version
            # numbers stay those of served models, so staleness keeps counting served ones.
            host.finish(rounds.to_failed(state, folded.rejected, folded.detail,
                                         result={**result, "candidate": folded.candidate}))
            return
        moved = rounds.to_next_version(state, host.current.version, result)
        host.counted = rounds.live_keys(moved, host.counted)
        host.set_round(moved)

    def _end(self, now: float, reason: Reason) -> None:
        """Fold what is pending, then end published, or failed with `reason` if the session
        never made a version."""
        state = self.host.round
        assert state is not None and state.is_async
        pending = self.host.store.journal.pending(state.round_id)
        if pending:
            self._next_version(pending, now)
            state = self.host.round
            assert state is not None
            if state.terminal:  # the gate refused the last candidate
                return
        if state.result.get("versions"):
            self.host.finish(rounds.to_published(
                state, {**state.result, "seconds": round(now - state.opened, 3)}))
        else:
            self.host.finish(rounds.to_failed(
                state, reason, f"{state.received} updates, no version published"))

    def _result(self, now: float, model_bytes: int) -> dict[str, float | int | str]:
        """What the session has published so far, from the journal (so a restart agrees)."""
        host = self.host
        state = host.round
        assert state is not None
        served = {r.version for r in host.keeper.registry.rows() if r.promoted}
        applied = [r for r in host.store.journal.accepted(state.round_id)
                   if r.applied in served]
        return {"seconds": round(now - state.opened, 3),
                "versions": len({r.applied for r in applied}), "updates": len(applied),
                "bytes_in": sum(r.bytes for r in applied), "version": host.current.version,
                **host.current.metrics, "model_bytes": model_bytes}
