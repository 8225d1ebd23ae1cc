"""Tests for cloud/finetune.py: batches mixing fresh and replay rows, anchors, and FineTuner."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from fedstream.cloud.anchors import anchor_penalty, fisher_diagonal
from fedstream.cloud.config import FinetuneConfig
from fedstream.cloud.finetune import (
    FineTuner,
    FinetuneResult,
    batch_split,
    mixed_batches,
    trained_layout,
)
from fedstream.cloud.replay import Arrays
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.isa import bf16_isa
from fedstream.shared.learning.model import load_tensors, tensors_of
from fedstream.shared.learning.models import Rows, build_model
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.learning.tasks import Classification, evaluate
from fedstream.shared.learning.training import prepare_sgd
from fedstream.shared.protocol.arch import Architecture

ARCH = Architecture.mlp((64, 32, 10))
EMPTY: Arrays = (np.zeros((0, 64), np.float32), np.zeros(0, np.int64))


def _digits() -> tuple[Arrays, Arrays]:
    """Two disjoint halves of the digits train split: fresh data and replay rows."""
    data = SOURCES.build("digits").load()
    x, y = np.array(data.features), np.array(data.labels)
    return (x[:600], y[:600]), (x[600:1200], y[600:1200])


def _start() -> list[torch.Tensor]:
    return tensors_of(build_model(ARCH, seed=0))


def _tuner(**params: object) -> FineTuner:
    defaults: dict[str, object] = {"steps": 60, "batch_size": 32, "lr": 0.05,
                                   "backend": "torch", "precision": "fp32"}
    return FineTuner(ARCH, FinetuneConfig(**{**defaults, **params}), seed=0)


def _tuner_or_skip(**params: object) -> FineTuner:
    try:
        return _tuner(**params)
    except ConfigError as err:
        if err.reason is Reason.BACKEND_UNAVAILABLE:
            pytest.skip(f"{params.get('backend')} unavailable: {err.detail}")
        raise


def _accuracy(tensors: list[torch.Tensor], data: Arrays) -> float:
    model = build_model(ARCH)
    load_tensors(model, tensors)
    return evaluate(model, Classification(), torch.tensor(data[0]),
                    torch.tensor(data[1]))["accuracy"]


def _distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(float((x - y).square().sum()) for x, y in zip(a, b, strict=True))


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("batch_size", "ratio", "fresh_rows", "replay_rows", "expected"),
    [
        (10, 0.3, 50, 50, (7, 3)),
        (10, 0.0, 50, 50, (10, 0)),
        (10, 1.0, 50, 50, (0, 10)),
        (64, 0.5, 1, 1, (32, 32)),
        (3, 0.5, 5, 5, (2, 1)),  # round(1.5) is 2
        (10, 0.3, 0, 50, (0, 10)),
        (10, 0.3, 50, 0, (10, 0)),
        (10, 1.0, 50, 0, (10, 0)),
        (10, 0.3, 0, 0, (0, 0)),
    ],
)
def test_batch_split(batch_size: int, ratio: float, fresh_rows: int, replay_rows: int,
                     expected: tuple[int, int]) -> None:
    """A batch takes round(size * (1 - ratio)) fresh rows, or all from the one non-empty source."""
    # Execute
    result = batch_split(batch_size, ratio, fresh_rows, replay_rows)

    # Assert
    assert result == expected


def test_mixed_batches_draw_the_split_from_each_source() -> None:
    """Every batch holds 7 fresh rows then 3 replay rows, each a row of its own source."""
    # Prepare
    fresh = (torch.arange(20.0).reshape(10, 2), torch.zeros(10, dtype=torch.long))
    replay = (-torch.arange(1.0, 41.0).reshape(20, 2), torch.ones(20, dtype=torch.long))
    gen = torch.Generator().manual_seed(0)

    # Execute
    batches = list(mixed_batches(fresh, replay, batch_size=10, replay_ratio=0.3, steps=4,
                                 generator=gen))

    # Assert
    assert len(batches) == 4
    for x, y in batches:
        assert y.tolist() == [0] * 7 + [1] * 3
        assert all(row in fresh[0].tolist() for row in x[:7].tolist())
        assert all(row in replay[0].tolist() for row in x[7:].tolist())


def test_mixed_batches_fill_from_replay_when_fresh_is_empty() -> None:
    """Without fresh rows the whole batch comes from replay, and the seed fixes the draw."""
    # Prepare
    fresh = (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    replay = (torch.arange(40.0).reshape(20, 2), torch.ones(20, dtype=torch.long))

    def draw(seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [x for x, _ in mixed_batches(fresh, replay, batch_size=8, replay_ratio=0.25,
                                            steps=3, generator=gen)]

    # Execute
    first, again, other = draw(1), draw(1), draw(2)

    # Assert
    assert [x.shape[0] for x in first] == [8, 8, 8]
    assert _equal(first, again)
    assert not _equal(first, other)


def test_mixed_batches_without_rows_is_an_error() -> None:
    """Two empty sources cannot make a batch; that is a clear error, not an empty concat."""
    # Prepare
    empty = (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    batches = mixed_batches(empty, empty, batch_size=4, replay_ratio=0.5, steps=1,
                            generator=torch.Generator())

    # Execute / Assert
    with pytest.raises(ValueError, match="fresh or replay"):
        next(batches)


@pytest.mark.parametrize("params", [{"steps": 0}, {}], ids=["steps-0", "no-rows"])
def test_nothing_to_do_returns_start_unchanged(params: dict[str, object]) -> None:
    """With steps 0 (and data), or with steps but no rows at all, `start` comes back as is."""
    # Prepare
    tuner = _tuner(**params)
    start = _start()
    data = _digits()[0] if params else EMPTY

    # Execute
    result = tuner.run(start, data, EMPTY, seed=0)

    # Assert
    assert _equal(result.tensors, start)
    assert result.tensors[0] is not start[0]
    assert (result.steps, result.samples, result.loss) == (0, 0, 0.0)


def test_finetuning_raises_accuracy_on_its_data() -> None:
    """Sixty steps on fresh + replay rows make the model far more accurate on those rows."""
    # Prepare
    fresh, replay = _digits()
    start = _start()

    # Execute
    result = _tuner().run(start, fresh, replay, seed=0)

    # Assert
    assert result.steps == 60
    assert result.samples == 60 * 32
    assert _accuracy(result.tensors, fresh) > _accuracy(start, fresh) + 0.4
    assert 0 < result.loss < 2.5


def test_l2sp_with_a_huge_weight_stays_near_start() -> None:
    """A strong L2-SP anchor keeps the weights far closer to start than no anchor does."""
    # Prepare
    fresh, replay = _digits()
    start = _start()

    # Execute
    free = _tuner().run(start, fresh, replay, seed=0)
    anchored = _tuner(anchor="l2sp", anchor_weight=15.0).run(start, fresh, replay, seed=0)

    # Assert
    assert anchored.anchor == "l2sp"
    assert _distance(anchored.tensors, start) < 0.01 * _distance(free.tensors, start)


def _conv_net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(Rows((1, 5)), torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(),
                               torch.nn.Linear(6, 3))


@pytest.mark.parametrize("make", [lambda: build_model(Architecture.mlp((5, 4, 3)), seed=1),
                                  _conv_net], ids=["mlp_one_pass", "conv_per_sample"])
def test_fisher_diagonal_is_the_mean_squared_per_sample_gradient(
        make: Callable[[], torch.nn.Module]) -> None:
    """The Fisher equals per-sample gradients squared one by one, scaled to max 1: in one
    pass for an MLP, sample by sample for a model with other layers."""
    # Prepare
    model = make()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 5, generator=gen), torch.randint(3, (12,), generator=gen)
    params = list(model.parameters())
    slow = [torch.zeros_like(p) for p in params]
    for i in range(12):
        loss = torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        for acc, g in zip(slow, torch.autograd.grad(loss, params), strict=True):
            acc.add_(g.square())
    top = max(float(s.max()) for s in slow)

    # Execute
    fisher = fisher_diagonal(model, x, y)

    # Assert
    assert [f.shape for f in fisher] == [p.shape for p in params]
    assert all(torch.allclose(f, s / top, atol=1e-6) for f, s in zip(fisher, slow, strict=True))
    assert max(float(f.max()) for f in fisher) == pytest.approx(1.0)


def test_ewc_penalty_is_zero_at_start_and_positive_away() -> None:
    """The EWC penalty vanishes at the anchor and grows once the weights move."""
    # Prepare
    fresh, _ = _digits()
    model = build_model(ARCH, seed=0)
    start = tensors_of(model)
    fisher = fisher_diagonal(model, torch.tensor(fresh[0][:64]), torch.tensor(fresh[1][:64]))
    penalty = anchor_penalty(2.0, start, fisher)

    # Execute
    with torch.no_grad():
        at_start = float(penalty(model))
        for p in model.parameters():
            p.add_(0.1)
        away = float(penalty(model))

    # Assert
    assert at_start == 0.0
    assert away == pytest.approx(0.5 * 2.0 * 0.01 * sum(float(f.sum()) for f in fisher),
                                 rel=1e-4)


@pytest.mark.parametrize("anchor", ["none", "ewc"])
def test_same_inputs_and_seed_give_identical_tensors(anchor: str) -> None:
    """A run is reproducible for a seed, and another seed draws other batches."""
    # Prepare
    fresh, replay = _digits()
    start = _start()
    tuner = _tuner(steps=20, anchor=anchor, anchor_weight=0.5)

    # Execute
    first, again = (tuner.run(start, fresh, replay, seed=3) for _ in range(2))
    other = tuner.run(start, fresh, replay, seed=4)

    # Assert
    assert _equal(first.tensors, again.tensors)
    assert not _equal(first.tensors, other.tensors)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["torch", "ipex"])
def test_every_backend_fine_tunes_with_an_ewc_anchor(backend: str, precision: str) -> None:
    """Each backend and precision learns, returns fp32 spec-order tensors and reports itself."""
    # Prepare
    fresh, replay = _digits()
    start = _start()
    tuner = _tuner_or_skip(backend=backend, precision=precision, anchor="ewc",
                           anchor_weight=0.5)
    model, _ = prepare_sgd(ARCH, start, tuner.backend, lr=0.1, momentum=0.0)

    # Execute
    with torch.no_grad():
        at_start = float(anchor_penalty(1.0, trained_layout(ARCH, start, tuner.backend))(model))
    result = tuner.run(start, fresh, replay, seed=0)

    # Assert
    assert at_start == 0.0  # the anchor lines up with IPEX's packed bf16 weights too
    assert [(t.dtype, t.shape) for t in result.tensors] == [
        (torch.float32, s.shape) for s in start]
    assert _accuracy(result.tensors, fresh) > _accuracy(start, fresh) + 0.4
    assert (result.backend, result.precision) == (backend, precision)
    assert (result.onednn_isa == "not_probed") is (precision == "fp32")
    assert result.isa == (bf16_isa(detect_cpu()) if precision == "bf16" else "none")


def test_run_logs_and_reports_flat_scalars() -> None:
    """Construction logs the chosen backend and why; each run logs and reports flat scalars."""
    # Prepare
    fresh, replay = _digits()

    # Execute
    with capture_logs() as logs:
        tuner = _tuner(steps=5, anchor="l2sp")
        result = tuner.run(_start(), fresh, replay, seed=0)

    # Assert
    events = {e["event"]: e for e in logs}
    selected = events["finetune_backend_selected"]
    assert (selected["backend"], selected["precision"]) == ("torch", "fp32")
    assert "precision fp32 requested" in selected["reason"]
    assert selected["isa"] in ("amx_bf16", "avx512_bf16", "none")
    info = result.info()
    assert {"backend", "precision", "isa", "onednn_isa", "steps", "samples", "loss",
            "seconds", "anchor"} <= info.keys()
    assert all(isinstance(v, str | int | float) for v in info.values())
    assert (info["steps"], info["samples"], info["anchor"]) == (5, 160, "l2sp")
    assert events["model_finetuned"]["loss"] == info["loss"]
    assert isinstance(result, FinetuneResult)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ((np.zeros((4, 63), np.float32), np.zeros(4, np.int64)), "features"),
        ((np.zeros((4, 64), np.float32), np.full(4, 10, np.int64)), "labels must lie"),
    ],
)
def test_data_that_does_not_fit_the_model_is_refused(data: Arrays, match: str) -> None:
    """Rows of the wrong width or labels past the model's classes are a clear ValueError."""
    # Prepare
    tuner = _tuner()

    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        tuner.run(_start(), EMPTY, data, seed=0)


def test_each_step_pings_the_watchdog() -> None:
    """`on_step` (the service's watchdog pulse) runs once per training step, so a long
    fine-tune on the service loop keeps the unit alive (one backend: nothing measured, so
    no waiting pings)."""
    # Prepare
    calls: list[None] = []
    tuner = FineTuner(ARCH, FinetuneConfig(steps=25, batch_size=32, backend="torch",
                                           precision="fp32"), seed=0,
                      on_step=lambda: calls.append(None))
    fresh, replay = _digits()

    # Execute
    result = tuner.run(_start(), fresh, replay, seed=1)

    # Assert
    assert result.steps == 25
    assert len(calls) == 25
