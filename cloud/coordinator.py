"""The global model and its rounds: open, count updates, aggregate, blend, refine, judge,
publish.

Two modes. A sync round aggregates once, when every selected edge answered or the deadline
passed. An async session (FedBuff, Nguyen et al. 2022) aggregates every `buffer` accepted
updates into a new version, each weighted by `rounds.staleness_weight`, until its deadline or
`stop_round`.

Every decision goes to the store before it is announced, so a restarted cloud picks up the
open round where it was and, aggregating the same accepted updates in the same order (by
update id), reaches the same model bit for bit; an async session's pending updates (accepted,
not yet in a version) stay pending. No MQTT here: the service hands in accepted updates and
the clock, and gets model versions and round states out through two callables.

With continual learning on, every aggregate becomes a candidate: fine-tuned on the cloud's
data, scored on the evaluation windows and promoted only if the gate lets it; a rejected
candidate is kept in the registry and the served model stays. A replayed fine-tune reaches
the same weights only on the same backend and precision: pin `finetune.precision` (not
"auto", which measures at start) where restarts must be bit-exact.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import structlog
import torch

from fedstream.cloud import rounds
from fedstream.cloud.config import CloudConfig
from fedstream.cloud.continual_stage import ContinualStage
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.model_keeper import ModelKeeper
from fedstream.cloud.store import CloudStore
from fedstream.cloud.versions import ModelVersion
from fedstream.shared.codecs import CODECS
from fedstream.shared.commands import RoundStart
from fedstream.shared.control import EdgeStatus, RoundMode, RoundState, RoundStatus, TrainParams
from fedstream.shared.errors import FedstreamError, Reason

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Coordinator:
    """Runs rounds against the current global model.

    Args:
        cfg: Cloud configuration.
        store: Journal, spool and model files.
        evaluate: Accuracy of a set of model tensors on the held-out split.
        publish_model: Makes a version the current global model (retained on the broker) and
            returns the bytes of its blob.
        publish_round: Announces a round state (retained on the broker).
        stage: Fine-tunes and judges candidates; None publishes every aggregate.
    """

    def __init__(self, *, cfg: CloudConfig, store: CloudStore,
                 evaluate: Callable[[list[torch.Tensor]], float],
                 publish_model: Callable[[ModelVersion], int],
                 publish_round: Callable[[RoundState], None],
                 stage: ContinualStage | None = None) -> None:
        self.cfg, self.store = cfg, store
        self._publish_round = publish_round
        # A bad codec or strategy in the config fails at start, not at the first round.
        CODECS.build(cfg.rounds.codec, **cfg.rounds.codec_params)
        self.keeper = ModelKeeper(cfg=cfg, store=store, evaluate=evaluate,
                                  publish_model=publish_model, stage=stage)
        self.spec = self.keeper.spec
        self.round: RoundState | None = store.journal.last_round()
        self.edges: dict[str, EdgeStatus] = {}
        # (edge id, base version) of each update the current round accepted, rebuilt from the
        # journal: an edge contributes once per version it trained on.
        self.counted: set[tuple[str, int]] = set() if self.round is None else _recent(
            self.round, {(row.edge_id, row.base)
                         for row in store.journal.accepted(self.round.round_id)})

    @property
    def current(self) -> ModelVersion:
        """The served model."""
        return self.keeper.current

    def start(self, now: float) -> None:
        """Republish the current model and resume a round that was cut off by a restart."""
        model_bytes = self.keeper.publish_model(self.current)
        log.info("model_published", version=self.current.version, **self.current.metrics)
        if self.round is not None and not self.round.terminal:
            log.info("round_resumed", round_id=self.round.round_id, status=self.round.status,
                     received=self.round.received, mode=self.round.mode)
            if self.round.is_async:
                self._resume_session(now, model_bytes)
                return
            self._publish_round(self.round)
            if self.round.status is RoundStatus.AGGREGATING:
                self._finish(self._aggregate(self.round, now))
            else:
                self.tick(now)

    def on_status(self, status: EdgeStatus) -> None:
        """Track which edges are online (the selection for the next round)."""
        self.edges[status.edge_id] = status

    def start_round(self, now: float, request: RoundStart | None = None) -> RoundState:
        """Open a sync round for the selected online edges, or an async session.

        Args:
            now: The clock.
            request: What the operator asked for (None: nothing); a field left None takes
                the config's value.
                A sync round takes a selection: `fraction` (a random share of the online
                edges, seeded by the config seed and the round id) or `edges`. An async
                session takes `buffer` (K; 0 means the number of edges online) and
                `max_staleness`, and any edge may join it.

        Raises:
            FedstreamError: round_in_progress, no_edges when none is online, bad_config for
                the other mode's fields or a value out of range, unknown_name for an unknown
                codec.
        """
        self._refuse_during_round()
        request = request or RoundStart()
        defaults = self.cfg.rounds
        mode = request.mode or RoundMode.SYNC
        misplaced = request.given().keys() & (
            {"fraction", "edges"} if mode is RoundMode.ASYNC else {"buffer", "max_staleness"})
        if misplaced:
            raise FedstreamError(Reason.BAD_CONFIG, f"mode {str(mode)!r} (one of "
                                 f"{tuple(str(m) for m in RoundMode)}) does not take "
                                 f"{sorted(misplaced)}")
        try:
            train = TrainParams(
                epochs=_given(request.epochs, defaults.epochs),
                lr=_given(request.lr, defaults.lr),
                momentum=_given(request.momentum, defaults.momentum),
                batch_size=_given(request.batch_size, defaults.batch_size))
        except ValueError as err:
            raise FedstreamError(Reason.BAD_CONFIG, str(err)) from err
        codec = _given(request.codec, defaults.codec)
        codec_params = dict(request.codec_params or defaults.codec_params)
        CODECS.build(codec, **codec_params)  # refuse a bad codec before any edge trains
        round_id = uuid.uuid4().hex[:12]
        if mode is RoundMode.ASYNC:
            return self._open_session(now, round_id, train=train, codec=codec,
                                      codec_params=codec_params, request=request)
        selection = rounds.select_edges(
            [e.edge_id for e in self.edges.values() if e.online],
            fraction=_given(request.fraction, defaults.fraction),
            edges=request.edges or (), seed=f"{self.cfg.seed}:{round_id}")
        state = rounds.open_round(
            round_id=round_id, model=self.cfg.model,
            base_version=self.current.version, now=now,
            deadline_s=_given(request.deadline_s, defaults.deadline_s), train=train,
            codec=codec, codec_params=codec_params, selection=selection, quorum=defaults.quorum)
        self.counted = set()
        self._set_round(state)
        log.info("round_opened", round_id=state.round_id, base=self.current.version,
                 selection=list(state.selection), codec=codec, codec_params=codec_params)
        return state

    def _open_session(self, now: float, round_id: str, *, train: TrainParams, codec: str,
                      codec_params: Mapping[str, float | int | str | bool],
                      request: RoundStart) -> RoundState:
        defaults = self.cfg.rounds
        online = tuple(e.edge_id for e in self.edges.values() if e.online)
        buffer = _given(request.buffer, defaults.buffer) or len(online)
        max_staleness = _given(request.max_staleness, defaults.max_staleness)
        deadline_s = _given(request.deadline_s, defaults.session_s)
        state = rounds.open_session(
            round_id=round_id, model=self.cfg.model, base_version=self.current.version,
            now=now, deadline_s=deadline_s, train=train, codec=codec, codec_params=codec_params,
            online=online, buffer=buffer, max_staleness=max_staleness)
        self.counted = set()
        self._set_round(state)
        log.info("round_opened", round_id=round_id, mode=str(RoundMode.ASYNC),
                 base=self.current.version,
                 online=list(state.selection), buffer=buffer, max_staleness=max_staleness,
                 deadline_s=deadline_s, codec=codec, codec_params=dict(codec_params))
        return state

    def on_update(self, row: UpdateRow, now: float) -> None:
        """Count an update the service has accepted and spooled."""
        assert self.round is not None
        self.counted.add((row.edge_id, row.base))
        self._set_round(rounds.record_update(self.round))
        log.info("update_accepted", round_id=row.round_id, edge_id=row.edge_id,
                 update_id=row.update_id, samples=row.samples, bytes=row.bytes, base=row.base,
                 received=self.round.received, expected=self.round.expected)
        if self.round.is_async:
            self._advance_session(now)
        else:
            self.tick(now)

    def stop_round(self, now: float) -> RoundState | None:
        """End the open round now: a sync round fails with round_stopped; an async session
        aggregates what is pending and ends. With nothing open, the last round is returned."""
        state = self.round
        if state is None or state.terminal:
            return state
        log.info("round_stopped", round_id=state.round_id, mode=state.mode,
                 received=state.received)
        if state.is_async:
            self._end_session(now, Reason.ROUND_STOPPED)
        else:
            self._finish(rounds.to_failed(state, Reason.ROUND_STOPPED,
                                          f"{state.received} of {state.expected} updates"))
        return self.round

    def tick(self, now: float) -> None:
        """Close the round when every update is in or the deadline has passed."""
        state = self.round
        if state is None or not rounds.should_close(state, now):
            return
        if state.is_async:
            self._end_session(now, Reason.NO_QUORUM)
            return
        if not rounds.has_quorum(state):
            self._finish(rounds.to_failed(state, Reason.NO_QUORUM,
                                          f"{state.received} of {state.quorum} updates"))
            return
        self._set_round(rounds.to_aggregating(state))
        self._finish(self._aggregate(state, now))

    def _aggregate(self, state: RoundState, now: float) -> RoundState:
        rows = self.store.journal.accepted(state.round_id)
        result: dict[str, float | int | str] = {
            "seconds": round(now - state.opened, 3), "updates": len(rows),
            "bytes_in": sum(r.bytes for r in rows)}
        folded = self.keeper.announce_saved(state.round_id) or self.keeper.fold(
            round_id=state.round_id, codec=state.codec, rows=rows,
            weights=[float(r.samples) for r in rows], lineage={})
        result.update({"version": self.current.version, **self.current.metrics,
                       "model_bytes": folded.model_bytes, "candidate": folded.candidate})
        if folded.rejected is not None:
            return rounds.to_failed(state, folded.rejected, folded.detail, result=result)
        return rounds.to_published(state, result)

    # -- async sessions ---------------------------------------------------------------------
    def _advance_session(self, now: float) -> None:
        """Fold a full buffer into a new version; end the session past its deadline."""
        state = self.round
        assert state is not None
        pending = self.store.journal.pending(state.round_id)
        if rounds.should_aggregate(state, len(pending)):
            self._next_version(state, pending, now)
        if self.round is not None and rounds.should_close(self.round, now):
            self._end_session(now, Reason.NO_QUORUM)

    def _next_version(self, state: RoundState, pending: Sequence[UpdateRow], now: float) -> None:
        """Publish the pending updates, down-weighted by staleness, as the session's next
        version, and move the session onto it."""
        staleness = [self.current.version - r.base for r in pending]
        weights = [rounds.staleness_weight(r.samples, s)
                   for r, s in zip(pending, staleness, strict=True)]
        folded = self.keeper.fold(round_id=state.round_id, codec=state.codec, rows=pending,
                                  weights=weights, lineage={"mode": str(RoundMode.ASYNC),
                                                            "buffer": state.buffer,
                                                            "staleness_max": max(staleness)})
        result = self._session_result(state, now, folded.model_bytes)
        if folded.rejected is not None:
            # The session ends like a sync round: its edges trained on the served version
            # already (they would wait for a new one that never comes), and its version
            # numbers stay those of served models, so staleness keeps counting served ones.
            self._finish(rounds.to_failed(state, folded.rejected, folded.detail,
                                          result={**result, "candidate": folded.candidate}))
            return
        moved = rounds.to_next_version(state, self.current.version, result)
        self.counted = _recent(moved, self.counted)
        self._set_round(moved)

    def _end_session(self, now: float, reason: Reason) -> None:
        """Fold what is pending, then end published, or failed with `reason` if the session
        never made a version."""
        state = self.round
        assert state is not None and state.is_async
        pending = self.store.journal.pending(state.round_id)
        if pending:
            self._next_version(state, pending, now)
            state = self.round
            assert state is not None
            if state.terminal:  # the gate refused the last candidate
                return
        if state.result.get("versions"):
            self._finish(rounds.to_published(state, {**state.result,
                                                     "seconds": round(now - state.opened, 3)}))
        else:
            self._finish(rounds.to_failed(state, reason,
                                          f"{state.received} updates, no version published"))

    def _resume_session(self, now: float, model_bytes: int) -> None:
        """Pick a session up after a restart; a version saved but not yet announced as the
        session's base (the cloud died in between) is announced now."""
        state = self.round
        assert state is not None
        saved = self.keeper.registry.rows()[-1]
        if saved.round_id == state.round_id and not saved.promoted:
            # The cloud died after the gate refused a candidate, before ending the session.
            self._finish(rounds.to_failed(
                state, Reason(saved.reason), str(saved.lineage.get("gate", "")),
                result={**self._session_result(state, now, model_bytes),
                        "candidate": saved.version}))
            return
        if state.base_version != self.current.version:
            self._set_round(rounds.to_next_version(
                state, self.current.version, self._session_result(state, now, model_bytes)))
        else:
            self._publish_round(state)
        self._advance_session(now)

    def _session_result(self, state: RoundState, now: float,
                        model_bytes: int) -> dict[str, float | int | str]:
        """What the session has published so far, from the journal (so a restart agrees)."""
        served = {r.version for r in self.keeper.registry.rows() if r.promoted}
        applied = [r for r in self.store.journal.accepted(state.round_id)
                   if r.applied in served]
        return {"seconds": round(now - state.opened, 3),
                "versions": len({r.applied for r in applied}), "updates": len(applied),
                "bytes_in": sum(r.bytes for r in applied), "version": self.current.version,
                **self.current.metrics, "model_bytes": model_bytes}

    def rollback(self, version: int) -> ModelVersion:
        """Publish the weights of an earlier version as a new current version.

        Raises:
            FedstreamError: round_in_progress, or bad_config for an unknown version.
        """
        self._refuse_during_round()
        return self.keeper.rollback(version)

    def promote(self, version: int) -> ModelVersion:
        """Serve a candidate the gate rejected (see `ModelKeeper.promote`).

        Raises:
            FedstreamError: round_in_progress, bad_config or not_candidate.
        """
        self._refuse_during_round()
        return self.keeper.promote(version)

    def _refuse_during_round(self) -> None:
        if self.round is not None and not self.round.terminal:
            raise FedstreamError(Reason.ROUND_IN_PROGRESS, self.round.round_id)

    def _set_round(self, state: RoundState) -> None:
        self.round = state
        self.store.journal.save_round(state)
        self._publish_round(state)

    def _finish(self, state: RoundState) -> None:
        self._set_round(state)
        log.info("round_closed", round_id=state.round_id, status=state.status,
                 reason=state.reason or None, **state.result)


def _given(value: T | None, default: T) -> T:
    """The operator's value, or the config's when the operator left it to the cloud."""
    return default if value is None else value


def _recent(state: RoundState, counted: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """The duplicate keys still worth keeping: an async session refuses updates on versions
    older than its staleness window as stale anyway, so their keys can go (bounded memory)."""
    if not state.is_async:
        return counted
    return {key for key in counted if key[1] >= state.base_version - state.max_staleness}
