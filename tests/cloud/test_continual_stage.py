"""The continual stage: which data fine-tuning sees, and a diverging fine-tune never becomes a
candidate. Real replay buffer, windows and fine-tuner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.continual_stage import ContinualStage
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.finetune import FineTuner
from fedstream.cloud.store import CloudStore
from fedstream.cloud.windows import eval_rows
from fedstream.shared.errors import Reason
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol.arch import Architecture, TaskKind

ARCH = Architecture.mlp((64, 16, 10))
ARCH_CFG = ArchitectureConfig.of(ARCH)


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[DataIntake]:
    """Three windows of 100 digits rows (30 of them for evaluation): a, b, then the newest c."""
    cfg = CloudConfig(architecture=ARCH_CFG, data_dir=tmp_path, continual={"enabled": True})  # type: ignore[arg-type]
    store = CloudStore.open(tmp_path)
    opened = DataIntake.open(cfg, store)
    data = SOURCES.build("digits").load()
    for i, name in enumerate("abc"):
        opened.add(data.features[i * 100:(i + 1) * 100], data.labels[i * 100:(i + 1) * 100],
                   now=float(i), window=name)
    yield opened
    opened.windows.close()
    opened.replay.close()
    store.close()


def _stage(intake: DataIntake, **finetune: object) -> ContinualStage:
    cfg = CloudConfig(architecture=ARCH_CFG, continual={"enabled": True, "finetune": {  # type: ignore[arg-type]
        "steps": 20, "backend": "torch", "precision": "fp32", **finetune}})
    tuner = FineTuner(ARCH, cfg.continual.finetune, 0)
    return ContinualStage(data=intake, arch=ARCH, cfg=cfg.continual, tuner=tuner)


def test_fine_tunes_on_the_newest_training_window(intake: DataIntake) -> None:
    """The fresh data is window b (c, the newest, is held out); the weights move."""
    # Prepare
    start = tensors_of(build_model(ARCH, seed=0))

    # Execute
    tuned, info = _stage(intake).refine(start, seed=1)

    # Assert
    assert info["fresh_window"] == "b" and info["steps"] == 20
    assert info["backend"] == "torch" and info["precision"] == "fp32"
    assert not all(torch.equal(a, b) for a, b in zip(tuned, start, strict=True))


def test_without_a_tuner_the_aggregate_passes_through(intake: DataIntake) -> None:
    """finetune.steps = 0: no tuner, the tensors come back untouched and nothing is recorded."""
    # Prepare
    cfg = CloudConfig(architecture=ARCH_CFG, continual={"enabled": True})  # type: ignore[arg-type]
    stage = ContinualStage(data=intake, arch=ARCH, cfg=cfg.continual, tuner=None)
    start = tensors_of(build_model(ARCH, seed=0))

    # Execute
    tuned, info = stage.refine(start, seed=1)

    # Assert
    assert tuned is start and info == {}


def test_a_diverging_fine_tune_keeps_the_aggregate(intake: DataIntake) -> None:
    """Features of 1e30 overflow the logits to NaN: the stage keeps the aggregate's weights and
    says the fine-tune diverged, so no NaN model is scored, gated or served."""
    # Prepare
    huge = np.full((20, 64), 1e30, dtype=np.float32)
    intake.add(huge, np.arange(20) % 10, now=3.0, window="d")
    intake.add(huge[:1], np.zeros(1, np.int64), now=4.0, window="e")
    start = tensors_of(build_model(ARCH, seed=0))

    # Execute
    tuned, info = _stage(intake, lr=10.0, replay_ratio=0.0).refine(start, seed=1)

    # Assert
    assert info["fresh_window"] == "d" and info["diverged"] is True
    assert all(torch.equal(a, b) for a, b in zip(tuned, start, strict=True))


def test_scores_every_large_enough_window_oldest_first(intake: DataIntake) -> None:
    """`score` names each window in arrival order with an accuracy in [0, 1]."""
    # Prepare / Execute
    scores = _stage(intake).score(tensors_of(build_model(ARCH, seed=0)))

    # Assert
    assert list(scores) == ["a", "b", "c"]
    assert all(0 <= v <= 1 for v in scores.values())


def test_windows_below_the_minimum_size_are_not_scored(intake: DataIntake) -> None:
    """A window of 60 rows has 18 evaluation rows (below min_window_rows = 20): it is left out
    of the scores, so a handful of rows cannot decide the gate."""
    # Prepare
    data = SOURCES.build("digits").load()
    intake.add(data.features[:60], data.labels[:60], now=9.0, window="small")

    # Execute
    scores = _stage(intake).score(tensors_of(build_model(ARCH, seed=0)))

    # Assert
    assert list(scores) == ["a", "b", "c"]


def test_scores_only_the_evaluation_rows(intake: DataIntake) -> None:
    """Relabelling a window's training rows changes nothing in its score: models are scored
    on the evaluation rows alone, the rows the cloud never trains on."""
    # Prepare
    stage = _stage(intake)
    tensors = tensors_of(build_model(ARCH, seed=0))
    data = SOURCES.build("digits").load()
    x, y = data.features[400:500], data.labels[400:500].copy()
    intake.add(x, y, now=5.0, window="d")
    train = ~eval_rows(0, 100, 0.3)
    y[train] = (y[train] + 1) % 10
    intake.add(x, y, now=6.0, window="e")

    # Execute
    scores = stage.score(tensors)

    # Assert
    assert scores["d"] == scores["e"]


REGRESSION = Architecture(family="mlp", input_shape=(4,), task=TaskKind.REGRESSION, outputs=1,
                          params={"hidden": (8,)})


def test_a_regression_model_is_tuned_scored_by_mae_and_gated_by_its_rise(tmp_path: Path) -> None:
    """With a regression model the cloud's own targets drive fine-tuning (EWC anchor on the
    squared error's Fisher), windows are scored by MAE, and the gate promotes the candidate
    whose error fell and refuses the same pair the other way round."""
    # Prepare
    rng = np.random.default_rng(0)
    cfg = CloudConfig(architecture=ArchitectureConfig.of(REGRESSION), data_dir=tmp_path,
                      continual={"enabled": True, "finetune": {  # type: ignore[arg-type]
                          "steps": 200, "lr": 0.05, "anchor": "ewc", "anchor_weight": 0.01,
                          "backend": "torch", "precision": "fp32"}})
    intake = DataIntake.open(cfg, CloudStore.open(tmp_path))
    for i, name in enumerate("abc"):
        x = rng.standard_normal((100, 4)).astype(np.float32)
        intake.add(x, x.sum(axis=1, keepdims=True), now=float(i), window=name)
    stage = ContinualStage(data=intake, arch=REGRESSION, cfg=cfg.continual,
                           tuner=FineTuner(REGRESSION, cfg.continual.finetune, 0))
    start = tensors_of(build_model(REGRESSION, seed=0))

    # Execute
    tuned, info = stage.refine(start, seed=1)
    better = stage.assess(tuned, start, history=[])
    worse = stage.assess(start, tuned, history=[])

    # Assert
    assert stage.metric.name == "mae" and info["steps"] == 200
    assert all(better.evals[w] < better.serving_evals[w] for w in "abc")
    assert better.verdict.promote and better.metrics.to_dict()["avg_mae"] < 1.0
    assert not worse.verdict.promote and worse.verdict.reason is Reason.REGRESSED_NEWEST
