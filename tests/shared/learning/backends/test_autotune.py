"""Tests for shared/learning/backends/autotune.py: cached choices need no measuring, a tuning
runs off the caller's thread, and measuring IPEX never loads it into the caller."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fedstream.shared.learning.backends import ipex_status
from fedstream.shared.learning.backends.autotune import AutoTuner, TuneParams, TuneState
from fedstream.shared.learning.backends.candidates import Candidate
from fedstream.shared.learning.backends.choice_cache import CACHE_FILE, ChoiceCache
from fedstream.shared.learning.backends.decision import Timing
from fedstream.shared.learning.backends.measure import Plan
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.protocol.arch import Architecture

ARCH = Architecture.mlp((16, 8, 3))
# Stock torch only, so nothing here imports IPEX into the test process.
PARAMS = TuneParams(preference="torch", precision="auto")


class FakeMeasure:
    """Records each call; bf16 measures twice as fast as fp32, with the same loss. With
    `gate`, each call waits until the gate is set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[Plan, tuple[str, ...]]] = []
        self.gate = gate

    def __call__(self, plan: Plan, candidates: Sequence[Candidate],
                 timeout_s: float) -> list[Timing]:
        self.calls.append((plan, tuple(c.label for c in candidates)))
        if self.gate is not None:
            assert self.gate.wait(30)
        return [Timing(candidate=c, step_s=0.001 if c.precision == "bf16" else 0.002,
                       loss=2.3) for c in candidates]


@pytest.fixture
def cache(tmp_path: Path) -> ChoiceCache:
    """An empty cache file in a data directory."""
    return ChoiceCache(tmp_path / CACHE_FILE)


def _native_bf16() -> None:
    if not detect_cpu().has_bf16:
        pytest.skip("one candidate only on a cpu without native bf16")


def test_a_restart_finds_the_choice_without_measuring(cache: ChoiceCache) -> None:
    """The first start measures and caches; a new tuner on the same file (a restart) is
    ready at once with the same choice and measures nothing."""
    # Prepare
    _native_bf16()
    first, again = FakeMeasure(), FakeMeasure()

    # Execute
    measured = AutoTuner(cache=cache, params=PARAMS, measure=first).start(ARCH, 32).result(30)
    restarted = AutoTuner(cache=ChoiceCache(cache.path), params=PARAMS,
                          measure=again).start(ARCH, 32)

    # Assert
    assert [c[1] for c in first.calls] == [("torch/fp32", "torch/bf16")]
    assert restarted.state is TuneState.READY and again.calls == []
    choice = restarted.result(0)
    assert (choice.backend.name, choice.backend.precision) == ("torch", "bf16")
    assert (measured.tuned, choice.tuned) == ("measured", "cached")
    assert choice.describe()["step_ms_torch_bf16"] == 1.0


def test_another_batch_size_is_measured_again(cache: ChoiceCache) -> None:
    """A key change (here the batch size) misses the cache and measures at the new size."""
    # Prepare
    _native_bf16()
    measure = FakeMeasure()
    tuner = AutoTuner(cache=cache, params=PARAMS, measure=measure)
    tuner.start(ARCH, 32).result(30)

    # Execute
    tuner.start(ARCH, 64).result(30)

    # Assert
    assert [plan.batch_size for plan, _ in measure.calls] == [32, 64]
    assert tuner.batch_hint(ARCH, default=8) == 64
    assert tuner.batch_hint(Architecture.mlp((4, 2)), default=8) == 8


def test_a_corrupt_cache_is_measured_again_with_a_warning(cache: ChoiceCache) -> None:
    """Garbage in the cache file: a warning, a fresh measurement, a good file after."""
    # Prepare
    _native_bf16()
    cache.path.write_text("{garbage")
    measure = FakeMeasure()

    # Execute
    with capture_logs() as logs:
        choice = AutoTuner(cache=cache, params=PARAMS, measure=measure).start(
            ARCH, 32).result(30)

    # Assert
    assert choice.tuned == "measured" and len(measure.calls) == 1
    assert "backend_cache_discarded" in [e["event"] for e in logs]
    assert json.loads(cache.path.read_text())["v"] == 1


def test_tuning_runs_off_the_callers_thread(cache: ChoiceCache) -> None:
    """`start` returns while measuring is still under way; `on_done` fires when it ends."""
    # Prepare
    _native_bf16()
    gate, done = threading.Event(), threading.Event()
    tuner = AutoTuner(cache=cache, params=PARAMS, measure=FakeMeasure(gate))

    # Execute
    tuning = tuner.start(ARCH, 32, on_done=done.set)
    while_tuning = (tuning.state, tuning.describe())
    with pytest.raises(TimeoutError):
        tuning.result(0.05)
    gate.set()

    # Assert
    assert while_tuning[0] is TuneState.TUNING
    assert while_tuning[1]["state"] == "tuning"
    assert "torch/fp32, torch/bf16" in str(while_tuning[1]["tuning"])
    assert done.wait(30) and tuning.state is TuneState.READY
    assert tuning.result(0).backend.precision == "bf16"


def test_only_one_candidate_needs_no_measuring(cache: ChoiceCache) -> None:
    """A config naming backend and precision is built at once, unmeasured and uncached."""
    # Prepare
    measure = FakeMeasure()

    # Execute
    tuning = AutoTuner(cache=cache, params=TuneParams(preference="torch", precision="fp32"),
                       measure=measure).start(ARCH, 32)

    # Assert
    assert tuning.state is TuneState.READY and measure.calls == []
    choice = tuning.result(0)
    assert choice.tuned == "only_candidate"
    assert "precision fp32 requested" in choice.reason
    assert not cache.path.exists()


def test_nothing_measured_falls_back_to_stock_fp32_uncached(cache: ChoiceCache) -> None:
    """When every child fails, stock torch fp32 trains, and the next start tries again."""
    # Prepare
    _native_bf16()

    def broken(plan: Plan, candidates: Sequence[Candidate], timeout_s: float) -> list[Timing]:
        return [Timing(candidate=c, step_s=math.inf, loss=math.nan, error="timed out")
                for c in candidates]

    # Execute
    choice = AutoTuner(cache=cache, params=PARAMS, measure=broken).start(ARCH, 32).result(30)

    # Assert
    assert (choice.backend.name, choice.backend.precision, choice.tuned) == (
        "torch", "fp32", "fallback")
    assert "timed out" in choice.reason
    assert not cache.path.exists()


_CHILD = """
import dataclasses, json, sys
from fedstream.shared.learning.backends.autotune import AutoTuner, TuneParams
from fedstream.shared.learning.backends.children import measure_in_children
from fedstream.shared.protocol.arch import Architecture

measured = []

def ipex_loses(plan, candidates, timeout_s):
    # Real children measure every candidate; IPEX's times are then made to lose, so the
    # choice is stock torch whatever this machine's speeds.
    timings = measure_in_children(plan, candidates, timeout_s)
    measured.extend(t.candidate.label for t in timings if t.ok)
    return [t if t.candidate.backend == "torch" else dataclasses.replace(t, step_s=1e3)
            for t in timings]

tuner = AutoTuner(cache=None, params=TuneParams(), measure=ipex_loses)
choice = tuner.start(Architecture.mlp((16, 8, 3)), 8).result(240)
print(json.dumps({"backend": choice.backend.name, "measured": measured,
                  "ipex_loaded": "intel_extension_for_pytorch" in sys.modules}))
"""


@pytest.mark.slow
def test_measuring_ipex_keeps_it_out_of_the_caller() -> None:
    """Every usable candidate is measured for real in child processes (IPEX too, where it
    matches torch); with stock torch chosen, IPEX was never imported by the caller."""
    # Execute
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD)], capture_output=True,
                          text=True, timeout=280, check=False)

    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["backend"] == "torch"
    assert got["ipex_loaded"] is False
    assert any(m.startswith("ipex/") for m in got["measured"]) is ipex_status()[0]
    assert "torch/fp32" in got["measured"]


_PRELOAD = """
import json, sys
from pathlib import Path
from fedstream.shared.learning.backends.autotune import AutoTuner, TuneParams
from fedstream.shared.learning.backends.candidates import Candidate, candidates_here
from fedstream.shared.learning.backends.choice_cache import ChoiceCache, ChoiceKey
from fedstream.shared.learning.backends.decision import Decision
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.protocol.arch import Architecture

cache = ChoiceCache(Path(sys.argv[1]))
tuner = AutoTuner(cache=cache, params=TuneParams())
candidates, _ = candidates_here(preference="auto", precision="auto", cpu=detect_cpu())
chosen = Candidate.parse(sys.argv[2])
cache.put(ChoiceKey.here(tuner.plan(Architecture.mlp((64, 10)), 32), candidates,
                         tolerance=tuner.params.tolerance, cpu=detect_cpu()),
          Decision(chosen=chosen, reason="test"))
tuner.preload()
print(json.dumps({"ipex_loaded": "intel_extension_for_pytorch" in sys.modules,
                  "optim_warm": "torch._dynamo" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("chosen", ["torch/fp32", "ipex/fp32"])
def test_preload_loads_ipex_only_when_it_was_the_last_choice(tmp_path: Path,
                                                             chosen: str) -> None:
    """A restarted service loads IPEX before going online exactly when its newest cached
    choice (for any model) is IPEX, and always warms torch.optim's lazy imports."""
    # Prepare
    if chosen.startswith("ipex") and not ipex_status()[0]:
        pytest.skip(ipex_status()[1])

    # Execute
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_PRELOAD),
                           str(tmp_path / CACHE_FILE), chosen], capture_output=True, text=True,
                          timeout=240, check=False)

    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"ipex_loaded": chosen.startswith("ipex"), "optim_warm": True}
