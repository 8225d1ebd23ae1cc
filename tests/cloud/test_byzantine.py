"""Byzantine edges against the default defences, in-process with real training: 2 of 10
edges send their update sign-flipped, scaled x100, claiming 10⁹ samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.journal import UpdateRow
from fedstream.cloud.store import CloudStore
from fedstream.cloud.wiring import make_evaluator
from fedstream.edge_node.trainer import train_round
from fedstream.shared.learning.backends import BACKENDS
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.control import EdgeStatus, TrainParams

pytestmark = pytest.mark.slow

ARCH = Architecture.mlp((64, 32, 10))
EDGES, BYZANTINE, ROUNDS = 10, 2, 5
TRAIN = TrainParams(epochs=5, lr=0.05, momentum=0.9, batch_size=32)


def _federate(data_dir: Path, *, byzantine: int, defences: dict[str, float]) -> float:
    """Final test accuracy after ROUNDS sync rounds of EDGES edges, `byzantine` of them
    hostile."""
    cfg = CloudConfig(architecture=ArchitectureConfig.of(ARCH), data_dir=data_dir,
                      defences=defences, rounds={"deadline_s": 1e9})  # type: ignore[arg-type]
    store = CloudStore.open(data_dir)
    test = SOURCES.build("digits", split="test").load()
    coord = Coordinator.open(cfg=cfg, store=store, evaluate=make_evaluator(ARCH, test),
                             publish_model=lambda v: 0, publish_round=lambda s: None)
    coord.recover(now=0.0)
    parts = [SOURCES.build("digits", partitions=EDGES, partition=i, alpha=5.0).load()
             for i in range(EDGES)]
    for i in range(EDGES):
        coord.on_status(EdgeStatus(edge_id=f"e{i}", online=True), 0.0)
    codec = CODECS.build("f32")
    for r in range(ROUNDS):
        state = coord.start_round(now=float(r))
        base = coord.current.tensors
        for i, data in enumerate(parts):
            result = train_round(arch=ARCH, base=base, data=data, params=TRAIN,
                                 backend=BACKENDS.build("torch"), seed=100 * r + i)
            hostile = i < byzantine
            delta = [-100.0 * d for d in result.delta] if hostile else result.delta
            blob = codec.encode(delta)
            update_id = f"u{r}-{i}"
            row = UpdateRow(update_id=update_id, round_id=state.round_id, edge_id=f"e{i}",
                            status="accepted", samples=10**9 if hostile else result.samples,
                            bytes=len(blob), codec="f32",
                            spool=store.spool.put(state.round_id, update_id, blob),
                            base=state.base_version)
            store.journal.record_update(row)
            coord.on_update(row, now=float(r) + 0.5)
    accuracy = float(coord.current.metrics["accuracy"])
    store.close()
    return accuracy


def test_default_defences_keep_accuracy_within_two_points_of_a_clean_run(
        tmp_path: Path) -> None:
    """20% byzantine edges leave the default-defended model within 2 points of a clean run;
    with the defences off the same attack wrecks it."""
    # Prepare
    torch.manual_seed(0)

    # Execute
    clean = _federate(tmp_path / "clean", byzantine=0, defences={})
    attacked = _federate(tmp_path / "attacked", byzantine=BYZANTINE, defences={})
    undefended = _federate(tmp_path / "undefended", byzantine=BYZANTINE,
                           defences={"sample_cap": 0, "clip": 0})

    # Assert
    assert clean > 0.85
    assert attacked >= clean - 0.02, (clean, attacked)
    assert undefended < clean - 0.3, (clean, undefended)
