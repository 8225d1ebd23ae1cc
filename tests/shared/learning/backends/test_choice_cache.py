"""Tests for shared/learning/backends/choice_cache.py: a choice is found only under its exact
key, and a bad file means measuring again, never a crash."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fedstream.shared.learning.backends.candidates import Candidate
from fedstream.shared.learning.backends.choice_cache import CACHE_FILE, ChoiceCache, ChoiceKey
from fedstream.shared.learning.backends.decision import Decision, Timing
from fedstream.shared.learning.backends.measure import Plan
from fedstream.shared.learning.cpu import parse_cpuinfo
from fedstream.shared.protocol.arch import Architecture

ARCH = Architecture.mlp((64, 100, 100, 10))
STOCK, BF16 = Candidate.parse("torch/fp32"), Candidate.parse("torch/bf16")
AMX = parse_cpuinfo("model name\t: Xeon\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n")
KEY = ChoiceKey(plan=Plan(arch=ARCH, batch_size=32, threads=2), candidates=(STOCK, BF16),
                tolerance=0.02, cpu=AMX, torch="2.8.0+cpu", ipex="2.8.0")
DECISION = Decision(chosen=BF16, reason="torch/bf16: fastest of 2 measured", timings=(
    Timing(candidate=STOCK, step_s=0.002, loss=2.3), Timing(candidate=BF16, step_s=0.001,
                                                            loss=2.31)))


@pytest.fixture
def cache(tmp_path: Path) -> ChoiceCache:
    """An empty cache in a data directory that does not exist yet."""
    return ChoiceCache(tmp_path / "data" / CACHE_FILE)


def test_a_choice_is_found_under_its_key(cache: ChoiceCache) -> None:
    """What was put comes back equal, from a new cache object on the same file (a restart)."""
    # Execute
    cache.put(KEY, DECISION)
    got = ChoiceCache(cache.path).get(KEY)

    # Assert
    assert got == DECISION


@pytest.mark.parametrize("change", [
    {"plan": Plan(arch=Architecture.mlp((64, 200, 10)), batch_size=32, threads=2)},
    {"plan": Plan(arch=ARCH, batch_size=64, threads=2)},
    {"plan": Plan(arch=ARCH, batch_size=32, threads=1)},
    {"candidates": (STOCK,)},
    {"tolerance": 0.05},
    {"cpu": parse_cpuinfo("model name\t: Xeon\nflags\t\t: avx512f\n")},
    {"torch": "2.9.0+cpu"},
    {"ipex": None},
], ids=["arch", "batch", "threads", "candidates", "tolerance", "cpu", "torch", "ipex"])
def test_any_change_of_key_misses(cache: ChoiceCache, change: dict[str, object]) -> None:
    """Another model, batch size, thread count, candidate set, tolerance, CPU or library
    version finds nothing, so the caller measures again."""
    # Prepare
    cache.put(KEY, DECISION)

    # Execute
    got = cache.get(dataclasses.replace(KEY, **change))  # type: ignore[arg-type]

    # Assert
    assert got is None
    assert cache.get(KEY) == DECISION  # the old entry is still there


@pytest.mark.parametrize("text", ["{not json", "[]", '{"v": 99, "entries": []}',
                                  '{"v": 1, "entries": "x"}', "\udcff"],
                         ids=["not-json", "list", "other-format", "bad-entries", "not-utf8"])
def test_a_corrupt_file_is_a_miss_with_a_warning(cache: ChoiceCache, text: str) -> None:
    """A file that is not a cache of this format is logged and read as empty; the next put
    replaces it with a good one."""
    # Prepare
    cache.path.parent.mkdir(parents=True)
    cache.path.write_bytes(text.encode(errors="surrogateescape"))

    # Execute
    with capture_logs() as logs:
        got = cache.get(KEY)
        cache.put(KEY, DECISION)

    # Assert
    assert got is None
    assert [e["event"] for e in logs] == ["backend_cache_discarded"] * 2
    assert cache.get(KEY) == DECISION


def test_a_bad_entry_under_the_right_key_is_a_miss(cache: ChoiceCache) -> None:
    """An entry whose choice no longer parses is ignored with a warning."""
    # Prepare
    cache.put(KEY, DECISION)
    body = json.loads(cache.path.read_text())
    body["entries"][0]["choice"]["chosen"] = "torch/fp16"
    cache.path.write_text(json.dumps(body))

    # Execute
    with capture_logs() as logs:
        got = cache.get(KEY)

    # Assert
    assert got is None
    assert [e["event"] for e in logs] == ["backend_cache_discarded"]


def test_newest_like_and_last_batch_ignore_the_model(cache: ChoiceCache) -> None:
    """Before a restarted service knows its model: the newest choice made on this machine
    the same way, and the batch size last tuned for an architecture."""
    # Prepare
    other = dataclasses.replace(KEY, plan=Plan(arch=ARCH, batch_size=64, threads=2))
    cache.put(KEY, DECISION)
    cache.put(other, dataclasses.replace(DECISION, chosen=STOCK))
    elsewhere = dataclasses.replace(KEY, torch="2.9.0", plan=Plan(
        arch=Architecture.mlp((8, 2)), batch_size=1, threads=2))

    # Execute
    newest = cache.newest_like(dataclasses.replace(KEY, plan=elsewhere.plan))

    # Assert
    assert newest is not None and newest.chosen == STOCK
    assert cache.newest_like(elsewhere) is None
    assert cache.last_batch(KEY.plan) == 64
    assert cache.last_batch(elsewhere.plan) is None


def test_a_failed_write_is_logged_not_raised(tmp_path: Path) -> None:
    """A cache whose file cannot be written (its path is a directory) warns and goes on."""
    # Prepare
    path = tmp_path / CACHE_FILE
    path.mkdir()
    cache = ChoiceCache(path)

    # Execute
    with capture_logs() as logs:
        cache.put(KEY, DECISION)

    # Assert
    assert "backend_cache_write_failed" in [e["event"] for e in logs]
