"""Tests for shared/learning/backends/children.py and measure.py: candidates measured for real
in child processes, on a small model."""

from __future__ import annotations

import math

import pytest

from fedstream.shared.learning.backends import ipex_status
from fedstream.shared.learning.backends.candidates import Candidate, candidates_here
from fedstream.shared.learning.backends.children import measure_in_children
from fedstream.shared.learning.backends.measure import Plan, measure, settled
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.protocol.arch import Architecture

ARCH = Architecture.mlp((16, 8, 3))
QUICK = Plan(arch=ARCH, batch_size=8, threads=1, check_steps=3, target_s=0.01, repeats=2)

pytestmark = pytest.mark.slow


def test_every_candidate_here_is_measured_in_children() -> None:
    """One finite timing per candidate, in order; IPEX is a candidate only where it matches
    torch, bf16 only where the CPU has it; every loss is close to stock fp32's."""
    # Prepare
    candidates, notes = candidates_here(preference="auto", precision="auto", cpu=detect_cpu())

    # Execute
    timings = measure_in_children(QUICK, candidates, timeout_s=240)

    # Assert
    labels = [t.candidate.label for t in timings]
    assert labels == [c.label for c in candidates]
    assert ("ipex/fp32" in labels) is ipex_status()[0]
    assert ("torch/bf16" in labels) is detect_cpu().has_bf16
    assert ("ipex left out" in notes) is not ipex_status()[0]
    assert all(t.ok and 0 < t.step_s < 1 for t in timings), timings
    assert all(math.isclose(t.loss, timings[0].loss, rel_tol=0.02) for t in timings)


def test_a_failing_candidate_is_reported_and_the_rest_measured() -> None:
    """A candidate the child cannot build carries its error; its neighbours are measured."""
    # Prepare
    candidates = [Candidate.parse("torch/fp32"), Candidate.parse("nope/fp32")]

    # Execute
    timings = measure_in_children(QUICK, candidates, timeout_s=240)

    # Assert
    assert timings[0].ok
    assert not timings[1].ok and "unknown_name" in timings[1].error


def test_a_child_past_its_deadline_is_killed_and_reported() -> None:
    """No child can import torch in 10 ms: every candidate fails with the timeout."""
    # Execute
    timings = measure_in_children(QUICK, [Candidate.parse("torch/fp32")], timeout_s=0.01)

    # Assert
    assert [t.error for t in timings] == ["measuring timed out"]


def test_measure_in_process_gives_the_same_losses_for_the_same_seed() -> None:
    """Two runs from one seed give identical check losses: every candidate faces the same
    weights and batches."""
    # Prepare
    stock = [Candidate.parse("torch/fp32")]

    # Execute
    first, again = measure(QUICK, stock), measure(QUICK, stock)

    # Assert
    assert first[0].loss == again[0].loss


@pytest.mark.parametrize(("times", "repeats", "expected"), [
    ([1.0, 1.04], 2, True), ([1.0, 1.2], 2, False), ([1.0, 3.0, 1.01], 3, True),
    ([1.0, 1.0], 3, False), ([1.0], 1, False),
])
def test_settled_needs_two_best_repeats_that_agree(times: list[float], repeats: int,
                                                   expected: bool) -> None:
    """Repeats settle once there are enough and the two best agree within 5%."""
    # Execute / Assert
    assert settled(times, repeats) is expected
