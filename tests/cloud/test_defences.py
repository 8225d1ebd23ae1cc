"""The defences' bounds computed by hand: capped weights, per-update scales, what they report."""

from __future__ import annotations

import pytest

from fedstream.cloud.defences import bound


def test_weights_are_capped_at_the_median_and_big_updates_scaled_to_it() -> None:
    """Weights above the median (x1) are capped there; norms above the median are scaled to
    it; the rest are untouched."""
    # Prepare / Execute
    got = bound([10, 20, 1e9], [1.0, 2.0, 200.0], sample_cap=1.0, clip=1.0, max_samples=1e6)

    # Assert
    assert got.weights == [10, 20, 20]
    assert got.scales == [1.0, 1.0, pytest.approx(0.01)]
    assert (got.capped, got.clipped, got.clip_norm) == (1, 1, 2.0)
    assert got.lineage() == {"defence_capped": 1, "defence_clipped": 1,
                             "defence_clip_norm": 2.0}


def test_factors_of_zero_turn_the_defences_off_but_not_the_absolute_cap() -> None:
    """With both factors 0 nothing is bounded but the absolute sample cap."""
    # Prepare / Execute
    got = bound([10, 5e6], [1.0, 1e6], sample_cap=0.0, clip=0.0, max_samples=1e6)

    # Assert
    assert got.weights == [10, 1e6] and got.scales == [1.0, 1.0]
    assert (got.capped, got.clipped, got.clip_norm) == (1, 0, None)
    assert "defence_clip_norm" not in got.lineage()


def test_a_factor_above_one_leaves_room_above_the_median() -> None:
    """clip = 3 bounds norms at three times the median; zero-norm updates keep scale 1."""
    # Prepare / Execute
    got = bound([1, 1, 1, 1], [0.0, 1.0, 2.0, 9.0], sample_cap=2.0, clip=3.0, max_samples=10)

    # Assert
    assert got.scales == [1.0, 1.0, 1.0, pytest.approx(4.5 / 9.0)]
    assert got.clip_norm == 4.5 and got.capped == 0


@pytest.mark.parametrize(("weights", "norms", "kwargs"), [
    ([], [], {}), ([1.0], [1.0, 2.0], {}), ([1.0], [1.0], {"clip": -1.0}),
    ([1.0], [1.0], {"max_samples": 0.0}),
])
def test_bad_input_is_a_value_error(weights: list[float], norms: list[float],
                                    kwargs: dict[str, float]) -> None:
    """No updates, mismatched lengths, a negative factor or no room for samples."""
    # Prepare
    args = {"sample_cap": 1.0, "clip": 1.0, "max_samples": 10.0, **kwargs}

    # Execute / Assert
    with pytest.raises(ValueError):
        bound(weights, norms, **args)
