"""The global model and its rounds: open, count updates, aggregate, blend, refine, judge,
publish.

Two modes, each a policy in `cloud/policies/`: a sync round aggregates once, when every
selected edge answered or the deadline passed; an async session (FedBuff) aggregates every
`buffer` accepted updates into a new version until its deadline or `stop_round`. The
coordinator does what both share (checking a round request, counting updates, recovery) and
hands the rest to the open round's policy.

Every decision goes to the store before it is announced, so a restarted cloud (or one whose
tick failed half-way) picks up the open round where it was, through `recover`, and,
aggregating the same accepted updates in the same order (by update id), reaches the same
model bit for bit; an async session's pending updates (accepted, not yet in a version) stay
pending. No MQTT here: the service hands in accepted updates and
the clock, and gets model versions and round states out through two callables.

With continual learning on, every aggregate becomes a candidate: fine-tuned on the cloud's
data, scored on the evaluation windows and promoted only if the gate lets it; a rejected
candidate is kept in the registry and the served model stays. A replayed fine-tune reaches
the same weights only on the same backend and precision: pin `finetune.precision` (not
"auto", which measures at start) where restarts must be bit-exact.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import TypeVar

import structlog
import torch

from fedstream.cloud import rounds
from fedstream.cloud.config import CloudConfig
from fedstream.cloud.continual_stage import ContinualStage
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.model_keeper import ModelKeeper
from fedstream.cloud.policies import FedBuffSessions, Opening, RoundPolicy, SyncRounds
from fedstream.cloud.store import CloudStore
from fedstream.cloud.versions import ModelVersion
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import (
    EdgeStatus,
    RoundMode,
    RoundProgress,
    RoundState,
    TrainParams,
)
from fedstream.shared.protocol.messages import Spec

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Coordinator:
    """Runs rounds against the current global model.

    Build one with `open`; the constructor only assigns.

    Args:
        cfg: Cloud configuration.
        store: Journal, spool and model files.
        keeper: The served model and how candidates become it.
        publish_round: Announces a round state (retained on the broker).
        round: The latest round, from the journal.
        publish_progress: Announces the count of a round's updates (`_progress`); None: not
            announced (a coordinator driven by tests or benchmarks).
        counted: (edge id, base version) of each update the open round accepted: an edge
            contributes once per version it trained on.
    """

    def __init__(self, *, cfg: CloudConfig, store: CloudStore, keeper: ModelKeeper,
                 publish_round: Callable[[RoundState], None], round: RoundState | None,
                 counted: set[tuple[str, int]],
                 publish_progress: Callable[[RoundProgress], None] | None = None) -> None:
        self.cfg, self.store, self.keeper = cfg, store, keeper
        self._publish_round = publish_round
        self._publish_progress = publish_progress
        self._round = round
        self.counted = counted
        self.edges: dict[str, EdgeStatus] = {}
        self._model_bytes = 0
        self._policies: dict[RoundMode, RoundPolicy] = {
            RoundMode.SYNC: SyncRounds(self), RoundMode.ASYNC: FedBuffSessions(self)}

    @classmethod
    def open(cls, *, cfg: CloudConfig, store: CloudStore,
             evaluate: Callable[[list[torch.Tensor]], dict[str, float]],
             publish_model: Callable[[ModelVersion], int],
             publish_round: Callable[[RoundState], None],
             publish_progress: Callable[[RoundProgress], None] | None = None,
             stage: ContinualStage | None = None) -> Coordinator:
        """The coordinator of the cloud whose state is in `store`.

        Args:
            cfg: Cloud configuration.
            store: Journal, spool and model files.
            evaluate: Every metric of the task for a set of model tensors on the held-out split.
            publish_model: Makes a version the current global model (retained on the
                broker) and returns the bytes of its blob.
            publish_round: Announces a round state (retained on the broker).
            publish_progress: Announces a round's count of updates (None: not announced).
            stage: Fine-tunes and judges candidates; None publishes every aggregate.

        Raises:
            ConfigError: unknown_name or bad_config for the configured codec or strategy
                (at start, not at the first round).
        """
        CODECS.build(cfg.rounds.codec, **cfg.rounds.codec_params)
        keeper = ModelKeeper.open(cfg=cfg, store=store, evaluate=evaluate,
                                  publish_model=publish_model, stage=stage)
        last = store.journal.last_round()
        accepted = [] if last is None else store.journal.accepted(last.round_id)
        if last is not None and not last.terminal and last.received != len(accepted):
            # The cloud died between an update's verdict and saving the round that counts it:
            # the journal's verdicts are the truth.
            last = dataclasses.replace(last, received=len(accepted))
        counted = set() if last is None else rounds.live_keys(
            last, {(row.edge_id, row.base) for row in accepted})
        return cls(cfg=cfg, store=store, keeper=keeper, publish_round=publish_round,
                   round=last, counted=counted, publish_progress=publish_progress)

    @property
    def round(self) -> RoundState | None:
        """The latest round, in whatever state."""
        return self._round

    @property
    def current(self) -> ModelVersion:
        """The served model."""
        return self.keeper.current

    @property
    def spec(self) -> Spec:
        """The model's tensor spec."""
        return self.keeper.spec

    def recover(self, now: float, *, republish: bool = True) -> None:
        """Announce the current model and the last round again and resume the open round from
        the journal: what a start does, and what the service does after a step failed
        half-way (`republish` False when the served model was announced already)."""
        if republish:
            # Every version of a model is one blob size: the spec's, in f32.
            self._model_bytes = self.keeper.publish_model(self.current)
            log.info("model_published", version=self.current.version, **self.current.metrics)
        state = self._round
        if state is None:
            return
        if state.terminal:
            self._publish_round(state)  # its announcement may be what failed
            return
        log.info("round_resumed", round_id=state.round_id, status=state.status,
                 received=state.received, mode=state.mode)
        self._policies[state.mode].resume(now, self._model_bytes)

    def on_status(self, status: EdgeStatus, now: float) -> None:
        """Track which edges are online (the selection for the next round); an edge that
        declines the open sync round is no longer waited for."""
        self.edges[status.edge_id] = status
        state = self._round
        if state is None or not status.declined or status.declined != state.round_id:
            return
        declined = rounds.record_decline(state, status.edge_id, status.decline_reason,
                                         self.counted)
        if declined is None:
            return
        log.info("round_declined", round_id=state.round_id, edge_id=status.edge_id,
                 reason=status.decline_reason, expected=declined.expected)
        self.set_round(declined)
        self._policies[declined.mode].tick(now)

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
                batch_size=_given(request.batch_size, defaults.batch_size),
                max_windows=_given(request.max_windows, defaults.max_windows),
                max_age_s=_given(request.max_age_s, defaults.max_age_s),
                min_samples=_given(request.min_samples, defaults.min_samples))
        except ValueError as err:
            raise FedstreamError(Reason.BAD_CONFIG, str(err)) from err
        codec = _given(request.codec, defaults.codec)
        codec_params = dict(request.codec_params or defaults.codec_params)
        CODECS.build(codec, **codec_params)  # refuse a bad codec before any edge trains
        opening = Opening(round_id=uuid.uuid4().hex[:12], request=request, train=train,
                          codec=codec, codec_params=codec_params)
        self.counted = set()
        return self._policies[mode].open(now, opening)

    def on_update(self, row: UpdateRow, now: float,
                  delta: list[torch.Tensor] | None = None) -> None:
        """Count an update the service has accepted and spooled; its decoded `delta`, if
        given, is kept for the fold (`ModelKeeper.take`)."""
        state = self._round
        assert state is not None
        self.counted.add((row.edge_id, row.base))
        if delta is not None:
            self.keeper.take(row.update_id, delta)
        counted = rounds.record_update(state, row.edge_id)
        if counted.status is state.status:
            self._progress(counted)
        else:
            self.set_round(counted)  # the first update: open -> collecting
        log.info("update_accepted", round_id=row.round_id, edge_id=row.edge_id,
                 update_id=row.update_id, samples=row.samples, bytes=row.bytes, base=row.base,
                 received=state.received + 1, expected=state.expected)
        self._policies[state.mode].on_counted(now)

    def stop_round(self, now: float) -> RoundState | None:
        """End the open round now: a sync round fails with round_stopped; an async session
        aggregates what is pending and ends. With nothing open, the last round is returned."""
        state = self._round
        if state is None or state.terminal:
            return state
        log.info("round_stopped", round_id=state.round_id, mode=state.mode,
                 received=state.received)
        self._policies[state.mode].stop(now)
        return self._round

    def tick(self, now: float) -> None:
        """Close the round when every update is in or the deadline has passed."""
        state = self._round
        if state is not None and not state.terminal:
            self._policies[state.mode].tick(now)

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
        if self._round is not None and not self._round.terminal:
            raise FedstreamError(Reason.ROUND_IN_PROGRESS, self._round.round_id)

    def set_round(self, state: RoundState) -> None:
        """Save a round state in the journal, then announce it."""
        self._round = state
        self.store.journal.save_round(state)
        self._publish_round(state)

    def _progress(self, state: RoundState) -> None:
        """Save a round state whose change is one more update received, and announce the
        count alone (`RoundProgress`): the round state goes to every edge, and once per
        update that would grow with the square of the fleet. Its next change of status
        announces the state with the count."""
        self._round = state
        self.store.journal.save_round(state)
        if self._publish_progress is not None:
            self._publish_progress(RoundProgress(round_id=state.round_id,
                                                 received=state.received,
                                                 expected=state.expected))

    def announce(self, state: RoundState) -> None:
        """Announce a round state that is saved already (after a restart)."""
        self._publish_round(state)

    def finish(self, state: RoundState) -> None:
        """Save and announce a terminal round state, with the round's canonical log line."""
        self.keeper.release()
        self.set_round(state)
        log.info("round_closed", round_id=state.round_id, status=state.status,
                 reason=state.reason or None, **state.result)


def _given(value: T | None, default: T) -> T:
    """The operator's value, or the config's when the operator left it to the cloud."""
    return default if value is None else value
