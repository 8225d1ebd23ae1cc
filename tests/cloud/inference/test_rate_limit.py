"""The per-key token buckets (cloud/inference/rate.py), on a clock of plain floats."""

from __future__ import annotations

import pytest

from fedstream.cloud.inference.rate import RateLimiter, RateParams


def _takes(limiter: RateLimiter, key: str, times: list[float]) -> list[float]:
    return [limiter.take(key, t) for t in times]


def test_a_burst_is_allowed_then_the_next_waits_for_one_refill() -> None:
    """With rate 2/s and burst 3, three requests at t=0 pass; the fourth waits 0.5 s."""
    # Prepare
    limiter = RateLimiter(RateParams(rate_per_s=2.0, burst=3))

    # Execute
    waits = _takes(limiter, "a", [0.0, 0.0, 0.0, 0.0])

    # Assert
    assert waits == [0.0, 0.0, 0.0, 0.5]


@pytest.mark.parametrize(
    ("times", "waits"),
    [
        # burst 1, rate 2/s: one every 0.5 s; 0.25 s after a pass half a token is back.
        ([0.0, 0.25, 0.5], [0.0, 0.25, 0.0]),
        # a refused request spends nothing: at 0.5 the token that came back is still there.
        ([0.0, 0.1, 0.2, 0.5], [0.0, 0.4, 0.3, 0.0]),
        # idle for long, the bucket holds one (the burst), not the 5 s worth of refill.
        ([0.0, 5.0, 5.0], [0.0, 0.0, 0.5]),
    ],
    ids=["steady", "refusals-cost-nothing", "capped-at-burst"],
)
def test_waits_follow_the_refill(times: list[float], waits: list[float]) -> None:
    """The wait is the time until one whole token is back, hand-worked for rate 2/s."""
    # Prepare
    limiter = RateLimiter(RateParams(rate_per_s=2.0, burst=1))

    # Execute
    got = _takes(limiter, "a", times)

    # Assert
    assert got == pytest.approx(waits)


def test_keys_have_their_own_buckets() -> None:
    """One key spending its burst leaves another's untouched."""
    # Prepare
    limiter = RateLimiter(RateParams(rate_per_s=1.0, burst=1))
    limiter.take("a", 0.0)

    # Execute
    a, b = limiter.take("a", 0.0), limiter.take("b", 0.0)

    # Assert
    assert (a, b) == (1.0, 0.0)


def test_a_clock_stepping_back_refills_nothing() -> None:
    """A time earlier than the last one neither refills nor drains the bucket."""
    # Prepare
    limiter = RateLimiter(RateParams(rate_per_s=1.0, burst=1))
    limiter.take("a", 10.0)

    # Execute
    wait = limiter.take("a", 4.0)

    # Assert
    assert wait == 1.0


def test_refilled_keys_are_forgotten() -> None:
    """A key whose bucket has refilled to the burst is dropped on the next call."""
    # Prepare
    limiter = RateLimiter(RateParams(rate_per_s=1.0, burst=2))
    limiter.take("a", 0.0)
    limiter.take("b", 1.0)

    # Execute
    limiter.take("c", 2.0)  # a: 1 + 2 s x 1/s >= 2, full; b: 1 + 1 = 2, full
    after = len(limiter)

    # Assert
    assert after == 1


def test_memory_is_bounded_by_max_keys() -> None:
    """Many busy keys keep at most `max_keys` buckets; the least recent one starts over."""
    # Prepare
    limiter = RateLimiter(RateParams(rate_per_s=1.0, burst=1, max_keys=3))

    # Execute
    for i in range(100):
        limiter.take(f"k{i}", 0.0)
    first_again = limiter.take("k0", 0.0)

    # Assert
    assert len(limiter) == 3
    assert first_again == 0.0  # evicted, so it got a fresh burst


@pytest.mark.parametrize(
    "params",
    [dict(rate_per_s=0.0, burst=1), dict(rate_per_s=float("inf"), burst=1),
     dict(rate_per_s=float("nan"), burst=1), dict(rate_per_s=1.0, burst=0),
     dict(rate_per_s=1.0, burst=1, max_keys=0)],
    ids=["zero-rate", "inf-rate", "nan-rate", "zero-burst", "no-keys"],
)
def test_params_are_checked(params: dict[str, float]) -> None:
    """A rate that is not a positive number, or a burst or key bound below 1, is refused."""
    # Execute / Assert
    with pytest.raises(ValueError, match="must be"):
        RateParams(**params)  # type: ignore[arg-type]
