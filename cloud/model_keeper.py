"""The served model and how a candidate becomes it: fold updates into an aggregate, step the
strategy, blend, refine and judge with the cloud's data, save, publish if promoted; and the
operator's overrides (rollback, promote).

Every version is saved before it is announced, so a restart serves the newest promoted one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
import torch

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.continual import apply_delta, blend
from fedstream.cloud.continual_stage import ContinualStage
from fedstream.cloud.defences import bound
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.registry_store import ServerState
from fedstream.cloud.store import CloudStore
from fedstream.cloud.strategies import STRATEGIES
from fedstream.cloud.strategies.base import Strategy, flat_norm
from fedstream.cloud.versions import ModelVersion, VersionRegistry
from fedstream.shared.errors import FedstreamError, Reason
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.blobs import decode_with
from fedstream.shared.protocol.control import VersionStatus

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Folded:
    """What folding updates produced: the candidate's number and, if the gate refused it,
    why (the served model then stayed)."""

    candidate: int
    model_bytes: int
    rejected: Reason | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Judged:
    """A refined candidate with its metrics, scores per window and the gate's verdict."""

    tensors: list[torch.Tensor]
    metrics: dict[str, float | int | str]
    evals: dict[str, float] = field(default_factory=dict)
    rejected: Reason | None = None
    detail: str = ""
    lineage: dict[str, object] = field(default_factory=dict)


class ModelKeeper:
    """Owns the served model, the strategy's server state and the registry.

    Build one with `open`; the constructor only assigns.

    Args:
        cfg: Cloud configuration.
        store: Journal, spool and model files.
        evaluate: Every metric of the task for a set of model tensors on the held-out split.
        publish_model: Makes a version the served model (retained on the broker) and returns
            the bytes of its blob.
        strategy: The aggregation strategy.
        registry: The versions saved in `store`.
        current: The served model.
        server_state: The strategy's server state after `current`.
        stage: Fine-tunes and judges candidates; None promotes every aggregate.
    """

    def __init__(self, *, cfg: CloudConfig, store: CloudStore,
                 evaluate: Callable[[list[torch.Tensor]], dict[str, float]],
                 publish_model: Callable[[ModelVersion], int], strategy: Strategy,
                 registry: VersionRegistry, current: ModelVersion,
                 server_state: ServerState | None, stage: ContinualStage | None) -> None:
        self.cfg, self.store, self.stage = cfg, store, stage
        self._evaluate = evaluate
        self.publish_model = publish_model
        self.strategy, self.registry = strategy, registry
        self.spec = registry.spec
        self.current, self.server_state = current, server_state
        # Update id -> (decoded delta, its norm) of accepted updates not folded yet (`take`).
        self._taken: dict[str, tuple[list[torch.Tensor], float]] = {}

    @classmethod
    def open(cls, *, cfg: CloudConfig, store: CloudStore,
             evaluate: Callable[[list[torch.Tensor]], dict[str, float]],
             publish_model: Callable[[ModelVersion], int],
             stage: ContinualStage | None = None) -> ModelKeeper:
        """The keeper of the versions in `store`; a new store gets the seeded initial model
        as v0, scored and saved.

        Raises:
            ConfigError: unknown_name or bad_config for the configured strategy.
        """
        strategy = STRATEGIES.build(cfg.strategy, **cfg.strategy_params)
        initial = build_model(cfg.architecture.build(), seed=cfg.seed)
        registry = VersionRegistry(store, spec_of(initial))
        served = registry.served()
        if served is None:
            tensors = tensors_of(initial)
            scores = stage.score(tensors) if stage is not None else {}
            first = ModelVersion(version=0, parent=None, tensors=tensors,
                                 metrics=_rounded(evaluate(tensors)))
            registry.save(first, None, round_id="", evals=scores,
                          lineage={"origin": "initial", "seed": cfg.seed})
            served = (first, None)
        return cls(cfg=cfg, store=store, evaluate=evaluate, publish_model=publish_model,
                   strategy=strategy, registry=registry, current=served[0],
                   server_state=served[1], stage=stage)

    def take(self, update_id: str, delta: list[torch.Tensor]) -> None:
        """Keep an accepted update's decoded delta and its norm for the fold, so that its
        decoding and norm are done as it arrives, not when the round closes (and its spooled
        copy is not read back). Kept while all taken fit in `intake.max_total_bytes` (as
        float32), a budget of their own: the cloud's update memory is then at most twice it
        (partials in reassembly, and accepted updates waiting for the fold). One that does not
        fit is decoded from the spool by the fold, as after a restart."""
        size = 4 * sum(t.numel for t in self.spec)
        if (len(self._taken) + 1) * size <= self.cfg.intake.max_total_bytes:
            self._taken[update_id] = (delta, flat_norm(delta))

    def release(self) -> None:
        """Forget the deltas taken (their round is over)."""
        self._taken.clear()

    def fold(self, *, round_id: str, codec: str, rows: Sequence[UpdateRow],
             weights: Sequence[float], lineage: Mapping[str, object]) -> Folded:
        """Aggregate `rows` with `weights` into the next candidate: bound each update's weight
        and norm (cloud/defences.py), server step, blend, refine, evaluate, judge, save
        (marking `rows` applied in the same transaction) and, if the gate lets it, publish it
        as the served model."""
        # The norms first, then the aggregate of the bounded updates. Updates taken as they
        # arrived are in memory with their norms; the others are read and decoded once when
        # the round's deltas fit in what the intake may hold in memory, else read again for
        # the second pass (one update in memory at a time).
        taken = [self._taken.get(row.update_id) for row in rows]
        fits = len(rows) * 4 * sum(t.numel for t in self.spec) <= self.cfg.intake.max_total_bytes
        read = [None if kept or not fits else self._delta(row)
                for row, kept in zip(rows, taken, strict=True)]

        def delta_of(i: int) -> list[torch.Tensor]:
            kept, decoded = taken[i], read[i]
            if kept is not None:
                return kept[0]
            return decoded if decoded is not None else self._delta(rows[i])

        norms = [kept[1] if kept is not None else flat_norm(delta_of(i))
                 for i, kept in enumerate(taken)]
        d = self.cfg.defences
        bounds = bound(weights, norms, sample_cap=d.sample_cap, clip=d.clip,
                       max_samples=d.max_samples)
        agg = self.strategy.new_round()
        # Update-id order, on every replay.
        for i, (weight, scale) in enumerate(zip(bounds.weights, bounds.scales, strict=True)):
            delta = delta_of(i)
            agg.add(delta if scale == 1.0 else [t * scale for t in delta], weight)
        aggregate = agg.result()
        del agg  # the sums are twice the model, the deltas n times: free them
        taken.clear()
        read.clear()
        self.release()
        delta, state_after = self.strategy.step(aggregate, self.server_state)
        candidate = apply_delta(self.current.tensors, delta)
        tensors = blend(self.current.tensors, candidate, self.cfg.blend_alpha)
        number = self.registry.next_number()
        judged = self._judge(number, tensors)
        new = ModelVersion(version=number, parent=self.current.version,
                           tensors=judged.tensors, metrics=judged.metrics)
        self.registry.save(new, state_after, round_id=round_id, lineage={
            "round": round_id, "strategy": self.cfg.strategy, "codec": codec,
            "blend_alpha": self.cfg.blend_alpha, "edges": sorted(r.edge_id for r in rows),
            **bounds.lineage(), **judged.lineage, **lineage}, applied=[r.update_id for r in rows],
            evals=judged.evals, reason=judged.rejected)
        if judged.rejected is not None:
            log.warning("candidate_rejected", version=number, reason=str(judged.rejected),
                        detail=judged.detail, serving=self.current.version,
                        round_id=round_id, **new.metrics)
            return Folded(candidate=number, model_bytes=0, rejected=judged.rejected,
                          detail=judged.detail)
        self.current, self.server_state = new, state_after
        model_bytes = self.publish_model(new)
        log.info("model_published", version=new.version, parent=new.parent,
                 round_id=round_id, updates=len(rows), **new.metrics)
        return Folded(candidate=number, model_bytes=model_bytes)

    def _delta(self, row: UpdateRow) -> list[torch.Tensor]:
        return decode_with(row.codec, self.store.spool.get(row.spool), self.spec)

    def announce_saved(self, round_id: str) -> Folded | None:
        """If the newest saved version came from `round_id` (the cloud died between saving
        and announcing it), announce the served model again and say what the round made."""
        saved = self.registry.rows()[-1]
        if saved.round_id != round_id:
            return None
        return Folded(candidate=saved.version, model_bytes=self.publish_model(self.current),
                      rejected=None if saved.promoted else Reason(saved.reason),
                      detail=str(saved.lineage.get("gate", "")))

    def _judge(self, number: int, tensors: list[torch.Tensor]) -> Judged:
        """Refine a candidate with the cloud's data and score it; without a continual stage
        it is only evaluated on the held-out set."""
        if self.stage is not None:
            tensors, tuned = self.stage.refine(tensors, seed=self.cfg.seed * 100_003 + number)
        metrics: dict[str, float | int | str] = dict(_rounded(self._evaluate(tensors)))
        if self.stage is None:
            return Judged(tensors=tensors, metrics=metrics)
        assessed = self.stage.assess(tensors, self.current.tensors,
                                     self.registry.history(number))
        verdict = assessed.verdict
        return Judged(tensors=tensors, metrics={**metrics, **assessed.metrics.to_dict()},
                      evals=assessed.evals, rejected=verdict.reason, detail=verdict.detail,
                      lineage={"finetune": tuned, "gate": verdict.detail,
                               "serving_evals": assessed.serving_evals})

    def rollback(self, version: int) -> ModelVersion:
        """Serve the weights of an earlier version as a new version.

        Raises:
            FedstreamError: bad_config for an unknown version.
        """
        new = self._republish(version, {"rollback_of": version})
        log.info("model_rolled_back", version=new.version, restored=version)
        return new

    def promote(self, version: int) -> ModelVersion:
        """Serve a candidate the gate rejected, by hand. A candidate newer than the served
        model becomes the served model itself; an older one is republished as a new version.

        Raises:
            FedstreamError: bad_config for an unknown version; not_candidate for a version
                that is not a rejected candidate.
        """
        row = self.registry.row(version)
        if row.promoted:
            raise FedstreamError(Reason.NOT_CANDIDATE, f"v{version} is already promoted")
        if version < self.current.version:
            new = self._republish(version, {"promoted_from": version})
        else:
            self.store.journal.set_status(version, VersionStatus.PROMOTED,
                                          {"promoted_by": "hand"})
            new, self.server_state = self.registry.load(row)
            self.current = new
            self.publish_model(new)
        log.info("model_promoted", version=new.version, candidate=version, by="hand",
                 gate_reason=row.reason)
        return new

    def _republish(self, version: int, lineage: dict[str, object]) -> ModelVersion:
        """Serve an earlier version's weights as a new version, scored like any other (an
        operator's choice: the gate does not judge it)."""
        old, state = self.registry.load(self.registry.row(version))
        number = self.registry.next_number()
        metrics = dict(old.metrics)
        scores: dict[str, float] = {}
        if self.stage is not None:
            scores, measured = self.stage.measure(old.tensors, self.registry.history(number))
            metrics.update(measured.to_dict())
        new = ModelVersion(version=number, parent=version, tensors=old.tensors, metrics=metrics)
        self.registry.save(new, state, round_id="", lineage=lineage, evals=scores)
        self.current, self.server_state = new, state
        self.publish_model(new)
        return new


def _rounded(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores as the registry and manifests show them (4 decimals)."""
    return {k: round(v, 4) for k, v in scores.items()}
