"""Tests for cloud/strategies/ and cloud/continual.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedstream.cloud.continual import apply_delta, blend
from fedstream.cloud.strategies import STRATEGIES, ServerState, Strategy, clip_to_norm, flat_norm
from fedstream.cloud.strategies.fedavg import FedAvg
from fedstream.shared.errors import ConfigError, Reason

STATEFUL = ["fedavgm", "fedadam", "fedyogi", "fedadagrad"]


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _aggregate(strategy: Strategy, updates: list[list[torch.Tensor]],
               weights: list[float]) -> list[torch.Tensor]:
    agg = strategy.new_round()
    for delta, weight in zip(updates, weights, strict=True):
        agg.add(delta, weight)
    return agg.result()


def _scalars(*values: float) -> list[list[torch.Tensor]]:
    return [[_t(v)] for v in values]


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
    """Every strategy builds with no params, has a summary and its name, and aggregates five
    identical updates to that update."""
    # Prepare
    strategy = STRATEGIES.build(name)

    # Execute
    out = _aggregate(strategy, [[_t(1, -2)]] * 5, [4] * 5)
    delta, _ = strategy.step(out, None)

    # Assert
    assert STRATEGIES.summary(name).strip()
    assert strategy.name == name
    assert out[0].tolist() == [1.0, -2.0]
    assert [t.shape for t in delta] == [(2,)]


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


# --- the strategies -------------------------------------------------------------------------


def test_fedavg_strategy_step_is_identity() -> None:
    """FedAvg's server step returns the aggregate as new tensors and no state."""
    # Prepare
    strategy = STRATEGIES.build("fedavg")
    aggregate = [_t(1.5, -2)]

    # Execute
    delta, state = strategy.step(aggregate, None)
    delta[0][0] = 99.0

    # Assert
    assert state is None
    assert delta[0].tolist() == [99.0, -2.0]
    assert aggregate[0].tolist() == [1.5, -2.0]


def test_fedavgm_two_rounds_hand_computed() -> None:
    """Server momentum with lr 0.5, beta 0.9 over two rounds, the momentum carried in the state."""
    # Prepare
    strategy = STRATEGIES.build("fedavgm", server_lr=0.5, beta=0.9)
    # Round 1: FedAvg of [2, -4] (w 1) and [2, -4] (w 3) = [2, -4]; v1 = 0.9*0 + [2, -4]
    # = [2, -4]; apply 0.5 * v1 = [1, -2].
    # Round 2: aggregate [1, 1]; v2 = 0.9*[2, -4] + [1, 1] = [2.8, -2.6]; apply [1.4, -1.3].

    # Execute
    agg1 = _aggregate(strategy, [[_t(2, -4)], [_t(2, -4)]], [1, 3])
    delta1, state1 = strategy.step(agg1, None)
    delta2, state2 = strategy.step([_t(1, 1)], state1)

    # Assert
    assert state1 is not None and state2 is not None
    assert delta1[0].tolist() == [1.0, -2.0]
    assert state1["v"][0].tolist() == [2.0, -4.0]
    assert delta2[0].tolist() == pytest.approx([1.4, -1.3], rel=1e-6)
    assert state2["v"][0].tolist() == pytest.approx([2.8, -2.6], rel=1e-6)
    assert state2["v"][0].dtype == torch.float32


# eta 1, beta1 0.5, beta2 0.5, tau 0.5: m0 = 0, v0 = tau^2 = 0.25. Round 1: delta 1.2
# (delta^2 1.44), m1 = 0.5*0 + 0.5*1.2 = 0.6. Round 2: delta -0.4 (delta^2 0.16),
# m2 = 0.5*0.6 + 0.5*(-0.4) = 0.1. Each step is m / (sqrt(v) + 0.5).
FEDOPT_CASES = [
    # Adagrad: v1 = 0.25 + 1.44 = 1.69 (sqrt 1.3), step 0.6 / 1.8 = 1/3;
    #          v2 = 1.69 + 0.16 = 1.85.
    ("fedadagrad", 1.69, 0.6 / 1.8, 1.85, 0.1 / (math.sqrt(1.85) + 0.5)),
    # Adam: v1 = 0.5*0.25 + 0.5*1.44 = 0.845; v2 = 0.5*0.845 + 0.5*0.16 = 0.5025.
    ("fedadam", 0.845, 0.6 / (math.sqrt(0.845) + 0.5), 0.5025,
     0.1 / (math.sqrt(0.5025) + 0.5)),
    # Yogi: v0 - d^2 = 0.25 - 1.44 < 0, so v1 = 0.25 + 0.5*1.44 = 0.97;
    #       v1 - d^2 = 0.97 - 0.16 > 0, so v2 = 0.97 - 0.5*0.16 = 0.89.
    ("fedyogi", 0.97, 0.6 / (math.sqrt(0.97) + 0.5), 0.89, 0.1 / (math.sqrt(0.89) + 0.5)),
]


@pytest.mark.parametrize(("name", "v1", "step1", "v2", "step2"), FEDOPT_CASES)
def test_fedopt_two_rounds_hand_computed(name: str, v1: float, step1: float, v2: float,
                                         step2: float) -> None:
    """Each adaptive optimizer's moments and steps over two rounds match the hand computation."""
    # Prepare
    params: dict[str, object] = {"eta": 1.0, "beta1": 0.5, "tau": 0.5}
    if name != "fedadagrad":
        params["beta2"] = 0.5
    strategy = STRATEGIES.build(name, **params)

    # Execute
    delta1, state1 = strategy.step([_t(1.2)], None)
    delta2, state2 = strategy.step([_t(-0.4)], state1)

    # Assert
    assert state1 is not None and state2 is not None
    assert state1["m"][0].item() == pytest.approx(0.6, rel=1e-6)
    assert state1["v"][0].item() == pytest.approx(v1, rel=1e-6)
    assert delta1[0].item() == pytest.approx(step1, rel=1e-6)
    assert state2["m"][0].item() == pytest.approx(0.1, rel=1e-5)
    assert state2["v"][0].item() == pytest.approx(v2, rel=1e-6)
    assert delta2[0].item() == pytest.approx(step2, rel=1e-5)
    assert {t.dtype for t in [*state2["m"], *state2["v"], *delta2]} == {torch.float32}


def test_fedadam_defaults_are_the_papers() -> None:
    """With eta 0.01, beta1 0.9, beta2 0.99, tau 1e-3, one step from delta 1 is hand-computed."""
    # Prepare
    strategy = STRATEGIES.build("fedadam")
    # m = 0.1 * 1 = 0.1; v = 0.99 * 1e-6 + 0.01 * 1 = 0.01000099;
    # step = 0.01 * 0.1 / (sqrt(0.01000099) + 0.001).
    expected = 0.001 / (math.sqrt(0.01000099) + 0.001)

    # Execute
    delta, _ = strategy.step([_t(1)], None)

    # Assert
    assert delta[0].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", STATEFUL)
def test_server_step_changes_neither_state_nor_aggregate(name: str) -> None:
    """A server step leaves its aggregate and state as they were and shares no tensor with them."""
    # Prepare
    strategy = STRATEGIES.build(name)
    _, state = strategy.step([_t(1, -1), _t(3)], None)
    assert state is not None
    aggregate = [_t(0.5, 2), _t(-1)]
    before = {k: [t.clone() for t in v] for k, v in state.items()}

    # Execute
    delta, new_state = strategy.step(aggregate, state)
    assert new_state is not None
    for tensors in [delta, *new_state.values()]:
        for t in tensors:
            t.fill_(123.0)

    # Assert
    assert aggregate[0].tolist() == [0.5, 2.0] and aggregate[1].tolist() == [-1.0]
    for key, tensors in state.items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, before[key], strict=True))


@pytest.mark.parametrize("name", STATEFUL)
@pytest.mark.parametrize("state", [{}, {"m": [_t(1)], "v": [_t(1)]}])
def test_server_step_rejects_foreign_state(name: str, state: ServerState) -> None:
    """A state missing a key or shaped unlike the aggregate is a ValueError."""
    # Prepare
    strategy = STRATEGIES.build(name)

    # Execute / Assert
    with pytest.raises(ValueError, match="state"):
        strategy.step([_t(1, 2)], state)


def test_median_hand_computed() -> None:
    """Per coordinate: median(1, 3, 2) = 2 and median(10, -2, 4) = 4, whatever the weights."""
    # Prepare
    strategy = STRATEGIES.build("median")
    updates = [[_t(1, 10)], [_t(3, -2)], [_t(2, 4)]]

    # Execute
    out = _aggregate(strategy, updates, [1, 100, 1])

    # Assert
    assert out[0].tolist() == [2.0, 4.0]


def test_median_of_an_even_count_averages_the_middle_two() -> None:
    """median(1, 2, 3, 10) = (2 + 3) / 2 = 2.5."""
    # Prepare
    strategy = STRATEGIES.build("median")

    # Execute
    out = _aggregate(strategy, _scalars(10, 2, 1, 3), [1] * 4)

    # Assert
    assert out[0].tolist() == [2.5]


@pytest.mark.parametrize(
    ("trim", "values", "expected"),
    [
        # n = 5, floor(0.2 * 5) = 1 per end: drop -50 and 100, mean(1, 3, 5) = 3.
        (0.2, [5, 1, 100, 3, -50], 3.0),
        # trim 0 drops nothing: the unweighted mean (5 + 1 + 100 + 3 - 49) / 5 = 12.
        (0.0, [5, 1, 100, 3, -49], 12.0),
        # default 0.1 with n = 10: floor(1.0) = 1 per end, drop 0 and 90, mean(1..8) = 4.5.
        (0.1, [90, 1, 2, 3, 4, 5, 6, 7, 8, 0], 4.5),
        # 0.29 * 100 lands just below 29 in floating point and still trims 29 per end: the
        # 29 values of 1000 go, leaving 42 zeros (trimming 28 would keep one 1000).
        (0.29, [0] * 71 + [1000] * 29, 0.0),
    ],
)
def test_trimmed_mean_hand_computed(trim: float, values: list[float], expected: float) -> None:
    """The unweighted mean of each coordinate after dropping floor(trim * n) values per end."""
    # Prepare
    strategy = STRATEGIES.build("trimmed_mean", trim=trim)
    weights = [float(i + 1) for i in range(len(values))]  # ignored: the mean is unweighted

    # Execute
    out = _aggregate(strategy, _scalars(*values), weights)

    # Assert
    assert out[0].item() == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(("select", "expected"), [(None, 2.0), (2, 1.6), (1, 1.0)])
def test_krum_hand_computed(select: int | None, expected: float) -> None:
    """Multi-Krum with f = 1 scores 0, 1, 2, 3, 100 as 5, 2, 2, 5, 19013 and averages the best."""
    # Prepare
    # n = 5, f = 1: each score sums the n - f - 2 = 2 smallest squared distances.
    # 0: 1 + 4 = 5; 1: 1 + 1 = 2; 2: 1 + 1 = 2; 3: 1 + 4 = 5; 100: 97^2 + 98^2 = 19013.
    # select None = n - f = 4 -> 0, 1, 2, 3 weighted 1, 2, 3, 4: (0 + 2 + 6 + 12) / 10 = 2.
    # select 2 -> 1, 2 weighted 2, 3: (2 + 6) / 5 = 1.6. select 1 -> tie, the earlier: 1.
    strategy = STRATEGIES.build("krum", byzantine=1, select=select)

    # Execute
    out = _aggregate(strategy, _scalars(0, 1, 2, 3, 100), [1, 2, 3, 4, 5])

    # Assert
    assert out[0].item() == pytest.approx(expected, rel=1e-7)


def test_krum_distance_spans_all_tensors() -> None:
    """An update normal in one tensor but far off in the other is left out."""
    # Prepare
    # (a, b): (0,0) (1,0) (0,1) (1,1) (0,50). Squared distances between the first four are 1
    # or 2, so each scores 1 + 1 = 2; (0,50) scores 49^2 + (1 + 49^2) = 4803. The best four
    # average to (0.5, 0.5).
    updates = [[_t(a), _t(b)] for a, b in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 50)]]
    strategy = STRATEGIES.build("krum")

    # Execute
    out = _aggregate(strategy, updates, [1] * 5)

    # Assert
    assert [t.tolist() for t in out] == [[0.5], [0.5]]


@pytest.mark.parametrize(("byzantine", "count"), [(1, 4), (0, 2), (2, 6)])
def test_krum_needs_2f_plus_3_updates(byzantine: int, count: int) -> None:
    """Fewer than 2f + 3 updates is a ValueError that says how many are needed."""
    # Prepare
    strategy = STRATEGIES.build("krum", byzantine=byzantine)

    # Execute / Assert
    with pytest.raises(ValueError, match=rf"2f \+ 3 = {2 * byzantine + 3}"):
        _aggregate(strategy, _scalars(*range(count)), [1] * count)


def test_krum_cannot_select_more_than_it_has() -> None:
    """select larger than the number of updates is a ValueError."""
    # Prepare
    strategy = STRATEGIES.build("krum", select=6)

    # Execute / Assert
    with pytest.raises(ValueError, match="select 6 of 5"):
        _aggregate(strategy, _scalars(*range(5)), [1] * 5)


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("median", {}, 2.0),                    # median(1, 2, 2, 3, 1e6) = 2
        ("trimmed_mean", {"trim": 0.2}, 7 / 3),  # drop 1 and 1e6: mean(2, 2, 3)
        ("krum", {}, 2.0),                       # 1e6 scores worst; mean(1, 2, 3, 2) = 2
    ],
)
def test_robust_strategies_shrug_off_an_outlier(name: str, params: dict[str, object],
                                                expected: float) -> None:
    """One 1e6 update barely moves median, trimmed mean and krum while it drags FedAvg far off."""
    # Prepare
    updates = _scalars(1, 2, 3, 2, 1e6)
    weights = [1.0] * 5

    # Execute
    robust = _aggregate(STRATEGIES.build(name, **params), updates, weights)
    mean = _aggregate(STRATEGIES.build("fedavg"), updates, weights)

    # Assert
    assert robust[0].item() == pytest.approx(expected, rel=1e-7)
    assert mean[0].item() == pytest.approx((8 + 1e6) / 5, rel=1e-7)


# --- clipping -------------------------------------------------------------------------------


def test_flat_norm_spans_all_tensors() -> None:
    """The norm of [3], [4] is sqrt(9 + 16) = 5, and of [1, 2], [2] sqrt(1 + 4 + 4) = 3."""
    # Prepare / Execute / Assert
    assert flat_norm([_t(3), _t(4)]) == 5.0
    assert flat_norm([_t(1, 2), _t(2)]) == 3.0


def test_clip_to_norm_hand_computed() -> None:
    """A delta of norm 5 clipped to 1 is scaled by 1/5; one of norm 0.5 is left as it is."""
    # Prepare
    long, short = [_t(3), _t(4)], [_t(0.3, 0.4)]

    # Execute
    clipped_long = clip_to_norm(long, 1.0)
    clipped_short = clip_to_norm(short, 1.0)

    # Assert
    assert [t.tolist() for t in clipped_long] == [[pytest.approx(0.6)], [pytest.approx(0.8)]]
    assert flat_norm(clipped_long) == pytest.approx(1.0, rel=1e-7)
    assert torch.equal(clipped_short[0], _t(0.3, 0.4))
    assert [t.tolist() for t in long] == [[3.0], [4.0]]


def test_clip_to_norm_rejects_non_positive_bound() -> None:
    """A bound of zero is a ValueError."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="max_norm"):
        clip_to_norm([_t(1)], 0.0)


def test_fedavg_clips_each_update_before_averaging() -> None:
    """With clip_norm 1: [3, 4] becomes [0.6, 0.8], [0.3, 0.4] stays; mean [0.45, 0.6]."""
    # Prepare
    strategy = STRATEGIES.build("fedavg", clip_norm=1.0)

    # Execute
    out = _aggregate(strategy, [[_t(3, 4)], [_t(0.3, 0.4)]], [1, 1])

    # Assert
    assert out[0].tolist() == pytest.approx([0.45, 0.6], rel=1e-6)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_clips(name: str) -> None:
    """Every strategy takes clip_norm: five updates of norm 5, clipped to 1, give [0.6, 0.8]."""
    # Prepare
    strategy = STRATEGIES.build(name, clip_norm=1)
    update = [_t(3, 4)]

    # Execute
    out = _aggregate(strategy, [update] * 5, [1] * 5)

    # Assert
    assert out[0].tolist() == pytest.approx([0.6, 0.8], rel=1e-6)
    assert update[0].tolist() == [3.0, 4.0]


# --- contract for every strategy ------------------------------------------------------------


def _seeded_updates(seed: int, count: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(3, 2, generator=gen), torch.randn(4, generator=gen)]
            for _ in range(count)]


def _two_rounds(name: str) -> list[torch.Tensor]:
    strategy = STRATEGIES.build(name, clip_norm=2.5)
    state: ServerState | None = None
    out: list[torch.Tensor] = []
    for seed in (1, 2):
        aggregate = _aggregate(strategy, _seeded_updates(seed, 7), [3, 1, 4, 1, 5, 9, 2])
        delta, state = strategy.step(aggregate, state)
        out += [*aggregate, *delta, *[t for ts in (state or {}).values() for t in ts]]
    return out


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_is_deterministic(name: str) -> None:
    """The same updates in the same order give bit-identical aggregates, deltas and states."""
    # Prepare / Execute
    first, second = _two_rounds(name), _two_rounds(name)

    # Assert
    assert len(first) == len(second)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_aggregator_leaves_its_inputs_alone(name: str) -> None:
    """Adding updates and reading the result changes no caller tensor, even with clipping on."""
    # Prepare
    updates = _seeded_updates(3, 5)
    before = [[t.clone() for t in u] for u in updates]

    # Execute
    out = _aggregate(STRATEGIES.build(name, clip_norm=0.5), updates, [1] * 5)
    for t in out:
        t.fill_(7.0)

    # Assert
    for u, b in zip(updates, before, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(u, b, strict=True))


@pytest.mark.parametrize("name", STRATEGIES.names())
@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf")])
def test_every_aggregator_rejects_bad_weights(name: str, weight: float) -> None:
    """A zero, negative, NaN or infinite weight is a ValueError."""
    # Prepare
    agg = STRATEGIES.build(name).new_round()

    # Execute / Assert
    with pytest.raises(ValueError, match="weight"):
        agg.add([_t(1)], weight)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_aggregator_refuses_an_empty_result_and_foreign_shapes(name: str) -> None:
    """Reading an empty round or adding an update shaped unlike the first is a ValueError."""
    # Prepare
    agg = STRATEGIES.build(name).new_round()

    # Execute / Assert
    with pytest.raises(ValueError, match="no update"):
        agg.result()
    agg.add([_t(1, 2)], 1)
    with pytest.raises(ValueError, match="tensors"):
        agg.add([_t(1, 2, 3)], 1)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fedavg", {"clip_norm": 0}),
        ("fedavg", {"clip_norm": -1.0}),
        ("fedavg", {"clip_norm": float("nan")}),
        ("fedavg", {"clip_norm": True}),
        ("median", {"clip_norm": "1"}),
        ("fedavgm", {"server_lr": 0}),
        ("fedavgm", {"beta": 1.0}),
        ("fedavgm", {"beta": -0.1}),
        ("fedadam", {"eta": 0}),
        ("fedadam", {"beta1": 1.0}),
        ("fedyogi", {"beta2": 1.5}),
        ("fedadagrad", {"tau": 0}),
        ("fedadagrad", {"eta": float("inf")}),
        ("trimmed_mean", {"trim": 0.5}),
        ("trimmed_mean", {"trim": -0.1}),
        ("krum", {"byzantine": -1}),
        ("krum", {"byzantine": 1.5}),
        ("krum", {"select": 0}),
        ("krum", {"select": True}),
        # unknown parameters, refused by the registry itself
        ("fedadagrad", {"beta2": 0.99}),
        ("fedavg", {"trim": 0.1}),
    ],
)
def test_bad_params_are_config_errors(name: str, params: dict[str, object]) -> None:
    """An out-of-range, mistyped or unknown parameter is a ConfigError with reason bad_config."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        STRATEGIES.build(name, **params)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fedavg", {"clip_norm": 1}),
        ("fedavgm", {"beta": 0, "server_lr": 2}),
        ("fedadam", {"beta1": 0.0, "beta2": 0.0}),
        ("trimmed_mean", {"trim": 0}),
        ("krum", {"byzantine": 0, "select": 1}),
    ],
)
def test_edge_params_are_accepted(name: str, params: dict[str, object]) -> None:
    """Values on the closed end of each range, and ints for floats, are valid."""
    # Prepare / Execute
    strategy = STRATEGIES.build(name, **params)

    # Assert
    assert strategy.name == name
