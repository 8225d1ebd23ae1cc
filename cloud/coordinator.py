"""The global model and its rounds: open, count updates, aggregate, blend, evaluate, publish.

No MQTT here: the service hands in decoded updates and the clock, and gets model versions and
round states back through the two publish callables.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
import torch

from fedstream.cloud import rounds
from fedstream.cloud.config import CloudConfig
from fedstream.cloud.continual import apply_delta, blend
from fedstream.cloud.intake import Update
from fedstream.cloud.strategies import STRATEGIES, Aggregator
from fedstream.shared.codecs import CODECS
from fedstream.shared.control import EdgeStatus, RoundState, TrainParams
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.model import build_mlp, spec_of, tensors_of

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One global model version."""

    version: int
    parent: int | None
    tensors: list[torch.Tensor]
    metrics: Mapping[str, float | int | str]


class Coordinator:
    """Runs rounds against the current global model.

    Args:
        cfg: Cloud configuration.
        evaluate: Accuracy of a set of model tensors on the held-out split.
        publish_model: Makes a version the current global model (retained on the broker) and
            returns the bytes of its blob.
        publish_round: Announces a round state (retained on the broker).
    """

    def __init__(self, *, cfg: CloudConfig, evaluate: Callable[[list[torch.Tensor]], float],
                 publish_model: Callable[[ModelVersion], int],
                 publish_round: Callable[[RoundState], None]) -> None:
        self.cfg = cfg
        self._evaluate = evaluate
        self._publish_model = publish_model
        self._publish_round = publish_round
        # A bad codec or strategy in the config fails at start, not at the first round.
        CODECS.build(cfg.rounds.codec, **cfg.rounds.codec_params)
        STRATEGIES.build(cfg.strategy)
        initial = build_mlp(cfg.layers, seed=cfg.seed)
        self.spec = spec_of(initial)
        self.current = ModelVersion(version=0, parent=None, tensors=tensors_of(initial),
                                    metrics={})
        self.round: RoundState | None = None
        self.edges: dict[str, EdgeStatus] = {}
        self._counted: set[str] = set()
        self._aggregator: Aggregator | None = None
        self._round_started = 0.0
        self._bytes_in = 0

    @property
    def counted(self) -> set[str]:
        """Edges whose update the open round has counted."""
        return self._counted

    def start(self) -> None:
        """Evaluate and publish the initial model."""
        acc = self._evaluate(self.current.tensors)
        self.current = dataclasses.replace(self.current, metrics={"accuracy": acc})
        self._publish_model(self.current)
        log.info("model_published", version=0, accuracy=round(acc, 4))

    def on_status(self, status: EdgeStatus) -> None:
        """Track which edges are online (the selection for the next round)."""
        self.edges[status.edge_id] = status

    def start_round(self, now: float, **overrides: float | int | str | bool) -> RoundState:
        """Open a round for every online edge.

        Args:
            now: The clock.
            overrides: `epochs`, `lr`, `momentum`, `batch_size`, `deadline_s`, `codec`, and
                codec parameters as `codec.<name>`; the rest come from the config.

        Raises:
            FedstreamError: round_in_progress, no_edges when none is online, bad_config or
                unknown_name for a bad override or codec.
        """
        if self.round is not None and not self.round.terminal:
            raise FedstreamError(Reason.ROUND_IN_PROGRESS, self.round.round_id)
        defaults = self.cfg.rounds
        try:
            train = TrainParams(epochs=int(overrides.get("epochs", defaults.epochs)),
                                lr=float(overrides.get("lr", defaults.lr)),
                                momentum=float(overrides.get("momentum", defaults.momentum)),
                                batch_size=int(overrides.get("batch_size", defaults.batch_size)))
        except ValueError as err:
            raise FedstreamError(Reason.BAD_CONFIG, str(err)) from err
        codec = str(overrides.get("codec", defaults.codec))
        codec_params = {k.removeprefix("codec."): v for k, v in overrides.items()
                        if k.startswith("codec.")} or dict(defaults.codec_params)
        CODECS.build(codec, **codec_params)  # refuse a bad codec before any edge trains
        online = tuple(e.edge_id for e in self.edges.values() if e.online)
        self.round = rounds.open_round(
            round_id=uuid.uuid4().hex[:12], model=self.cfg.model,
            base_version=self.current.version, now=now,
            deadline_s=float(overrides.get("deadline_s", defaults.deadline_s)), train=train,
            codec=codec, codec_params=codec_params, selection=online, quorum=defaults.quorum)
        self._counted = set()
        self._aggregator = STRATEGIES.build(self.cfg.strategy)
        self._round_started, self._bytes_in = time.monotonic(), 0
        log.info("round_opened", round_id=self.round.round_id, base=self.current.version,
                 selection=list(self.round.selection), codec=codec, codec_params=codec_params)
        self._publish_round(self.round)
        return self.round

    def on_update(self, update: Update, now: float) -> None:
        """Fold an accepted update into the open round's aggregate."""
        assert self.round is not None and self._aggregator is not None
        self._aggregator.add(update.delta, float(update.meta.samples))
        self._counted.add(update.meta.edge_id)
        self._bytes_in += update.header.size
        self.round = rounds.record_update(self.round)
        log.info("update_accepted", round_id=self.round.round_id, edge_id=update.meta.edge_id,
                 samples=update.meta.samples, loss=round(update.meta.loss, 4),
                 bytes=update.header.size, received=self.round.received,
                 expected=self.round.expected)
        self._publish_round(self.round)
        self.tick(now)

    def tick(self, now: float) -> None:
        """Close the round when every update is in or the deadline has passed."""
        state = self.round
        if state is None or not rounds.should_close(state, now):
            return
        if not rounds.has_quorum(state):
            self._finish(rounds.to_failed(state, Reason.NO_QUORUM,
                                          f"{state.received} of {state.quorum} updates"))
            return
        self._publish_round(rounds.to_aggregating(state))
        self._finish(self._aggregate(state))

    def _aggregate(self, state: RoundState) -> RoundState:
        assert self._aggregator is not None
        candidate = apply_delta(self.current.tensors, self._aggregator.result())
        tensors = blend(self.current.tensors, candidate, self.cfg.blend_alpha)
        acc = self._evaluate(tensors)
        self.current = ModelVersion(version=self.current.version + 1,
                                    parent=self.current.version, tensors=tensors,
                                    metrics={"accuracy": acc, "round": state.round_id})
        model_bytes = self._publish_model(self.current)
        log.info("model_published", version=self.current.version, accuracy=round(acc, 4))
        return rounds.to_published(state, {
            "version": self.current.version, "accuracy": round(acc, 4),
            "seconds": round(time.monotonic() - self._round_started, 3),
            "bytes_in": self._bytes_in, "model_bytes": model_bytes, "updates": state.received})

    def _finish(self, state: RoundState) -> None:
        self.round = state
        self._aggregator = None
        log.info("round_closed", round_id=state.round_id, status=state.status,
                 reason=state.reason or None, **state.result)
        self._publish_round(state)
