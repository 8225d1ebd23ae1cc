"""Tests for cloud/strategies/ and cloud/continual.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedstream.cloud.continual import apply_delta, blend
from fedstream.cloud.strategies import STRATEGIES
from fedstream.cloud.strategies.fedavg import FedAvg
from fedstream.shared.errors import ConfigError, Reason


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_fedavg_hand_computed() -> None:
    """[1,2] with weight 1 and [3,6] with weight 3 average to [(1+9)/4, (2+18)/4] = [2.5, 5]."""
    # Prepare
    agg = FedAvg()

    # Execute
    agg.add([_t(1, 2)], 1)
    agg.add([_t(3, 6)], 3)
    out = agg.result()

    # Assert
    assert len(out) == 1
    assert out[0].dtype == torch.float32
    assert out[0].tolist() == [2.5, 5.0]


def test_fedavg_several_tensors() -> None:
    """Each tensor of an update is averaged on its own, keeping its shape."""
    # Prepare
    agg = FedAvg()

    # Execute
    agg.add([torch.tensor([[2.0, 4.0]]), _t(10)], 2)
    agg.add([torch.tensor([[8.0, 1.0]]), _t(-2)], 2)
    out = agg.result()

    # Assert
    assert out[0].shape == (1, 2)
    assert out[0].tolist() == [[5.0, 2.5]]
    assert out[1].tolist() == [4.0]


def test_fedavg_single_update_is_itself() -> None:
    """With one update, the weighted mean is that update whatever its weight."""
    # Prepare
    agg = FedAvg()

    # Execute
    agg.add([_t(0.5, -1.5)], 7)

    # Assert
    assert agg.result()[0].tolist() == [0.5, -1.5]


def test_fedavg_streaming_matches_numpy() -> None:
    """Twenty seeded updates folded in one at a time equal numpy's weighted mean to 1e-6."""
    # Prepare
    rng = np.random.default_rng(20240601)
    shapes = [(3, 4), (4,)]
    updates = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(20)]
    weights = rng.integers(1, 500, size=20).astype(np.float64)
    agg = FedAvg()

    # Execute
    for delta, weight in zip(updates, weights, strict=True):
        agg.add([torch.from_numpy(t) for t in delta], float(weight))
    out = agg.result()

    # Assert
    for i, shape in enumerate(shapes):
        stacked = np.stack([u[i].astype(np.float64) for u in updates])
        expected = np.average(stacked, axis=0, weights=weights)
        assert out[i].shape == shape
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=0, atol=1e-6)


def test_fedavg_does_not_change_its_inputs() -> None:
    """Adding an update leaves the caller's tensors as they were."""
    # Prepare
    delta = [_t(1, 2)]
    agg = FedAvg()

    # Execute
    agg.add(delta, 3)
    agg.add([_t(5, 5)], 1)
    agg.result()

    # Assert
    assert delta[0].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("weight", [0, 0.0, -1, -0.5])
def test_fedavg_rejects_non_positive_weight(weight: float) -> None:
    """An update with zero or negative weight is a ValueError and is not counted."""
    # Prepare
    agg = FedAvg()
    agg.add([_t(1, 1)], 1)

    # Execute
    with pytest.raises(ValueError, match="weight"):
        agg.add([_t(9, 9)], weight)

    # Assert
    assert agg.result()[0].tolist() == [1.0, 1.0]


def test_fedavg_rejects_first_update_with_zero_weight() -> None:
    """A zero weight is refused even on the first update, leaving nothing to read."""
    # Prepare
    agg = FedAvg()

    # Execute
    with pytest.raises(ValueError, match="weight"):
        agg.add([_t(1, 1)], 0)

    # Assert
    with pytest.raises(ValueError, match="no update"):
        agg.result()


@pytest.mark.parametrize("count", [1, 3])
def test_fedavg_rejects_mismatched_tensor_count(count: int) -> None:
    """An update with another number of tensors than the first is a ValueError."""
    # Prepare
    agg = FedAvg()
    agg.add([_t(1), _t(2)], 1)

    # Execute
    with pytest.raises(ValueError, match="tensors"):
        agg.add([_t(3)] * count, 1)

    # Assert
    assert [t.tolist() for t in agg.result()] == [[1.0], [2.0]]


def test_fedavg_result_with_nothing_added() -> None:
    """Reading the result before any update is a ValueError."""
    # Prepare
    agg = FedAvg()

    # Execute / Assert
    with pytest.raises(ValueError, match="no update"):
        agg.result()


def test_fedavg_rejects_mismatched_shape() -> None:
    """An update whose tensor shapes differ from the first update's is a ValueError."""
    # Prepare
    agg = FedAvg()
    agg.add([_t(1, 2)], 1)

    # Execute / Assert
    with pytest.raises(ValueError):
        agg.add([_t(5)], 1)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_registry_is_complete(name: str) -> None:
    """Every strategy builds with no params, has a summary and averages one update to itself."""
    # Prepare
    agg = STRATEGIES.build(name)

    # Execute
    agg.add([_t(1, -2)], 4)
    out = agg.result()

    # Assert
    assert STRATEGIES.summary(name).strip()
    assert out[0].tolist() == [1.0, -2.0]


def test_strategy_registry_unknown_name() -> None:
    """An unknown strategy name is a ConfigError that lists the known ones."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        STRATEGIES.build("fedmagic")

    # Assert
    assert info.value.reason is Reason.UNKNOWN_NAME
    assert "fedavg" in info.value.detail


def test_blend_alpha_one_returns_the_aggregate() -> None:
    """alpha=1 returns the aggregate's values as new tensors, ignoring the serving model."""
    # Prepare
    serving = [_t(0, 4)]
    aggregate = [_t(4, 8)]

    # Execute
    out = blend(serving, aggregate, 1.0)
    out[0][0] = 99.0

    # Assert
    assert out[0].tolist() == [99.0, 8.0]
    assert aggregate[0].tolist() == [4.0, 8.0]


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [(0.25, [1.0, 5.0]), (0.5, [2.0, 6.0]), (0.75, [3.0, 7.0])],
)
def test_blend_hand_computed(alpha: float, expected: list[float]) -> None:
    """`(1 - alpha) * [0, 4] + alpha * [4, 8]`, e.g. alpha=0.25 gives [1, 5]."""
    # Prepare
    serving = [_t(0, 4)]
    aggregate = [_t(4, 8)]

    # Execute
    out = blend(serving, aggregate, alpha)

    # Assert
    assert out[0].tolist() == expected
    assert serving[0].tolist() == [0.0, 4.0]


@pytest.mark.parametrize("alpha", [0.0, -0.25, 1.0001, 2.0, float("nan")])
def test_blend_rejects_alpha_outside_unit_interval(alpha: float) -> None:
    """alpha must lie in (0, 1]; anything else (NaN included) is a ValueError."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="alpha"):
        blend([_t(0)], [_t(1)], alpha)


def test_apply_delta() -> None:
    """`apply_delta` adds tensor by tensor: [1, 2] + [0.5, -1] = [1.5, 1]."""
    # Prepare
    base = [_t(1, 2), _t(10)]
    delta = [_t(0.5, -1), _t(-10)]

    # Execute
    out = apply_delta(base, delta)

    # Assert
    assert [t.tolist() for t in out] == [[1.5, 1.0], [0.0]]
    assert base[0].tolist() == [1.0, 2.0]


def test_apply_delta_rejects_tensor_count_mismatch() -> None:
    """A delta with another tensor count than the base is refused, not silently truncated."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError):
        apply_delta([_t(1), _t(2)], [_t(1)])
