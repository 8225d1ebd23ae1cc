"""The cloud's own data: frames from the data topic and files from the data directory land in
the replay buffer and evaluation windows; bad input is refused and stores nothing."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture, TaskKind
from fedstream.shared.protocol.data import DataBatch

ARCH = Architecture.mlp((4, 3, 2))
ARCH_CFG = ArchitectureConfig.of(ARCH)


def _cloud_cfg(tmp_path: Path, **continual: object) -> CloudConfig:
    return CloudConfig(architecture=ARCH_CFG, data_dir=tmp_path / "cloud",
                       continual={"enabled": True, "replay_capacity": 5, "window_s": 60.0,
                                  **continual})  # type: ignore[arg-type]


def _intake(tmp_path: Path, **continual: object) -> tuple[DataIntake, CloudStore]:
    cfg = _cloud_cfg(tmp_path, **continual)
    store = CloudStore.open(cfg.data_dir)
    return DataIntake.open(cfg, store), store


def test_batch_lands_in_its_window_and_the_bounded_replay(tmp_path: Path) -> None:
    """Eight rows at t=61 s go to window w1 whole; the replay is offered the 6 training rows
    (eval_fraction 0.3 keeps rows 3 and 6 for evaluation) and keeps its capacity of 5."""
    # Prepare
    intake, _ = _intake(tmp_path)
    x = np.arange(32, dtype=np.float32).reshape(8, 4) / 32
    y = np.array([0, 1] * 4)

    # Execute
    rows = intake.take(wire.pack(DataBatch.of(x, y)), now=61.0)

    # Assert
    assert rows == 8
    assert intake.windows.names() == ["w1"]
    kept_x, kept_y = intake.windows.get("w1")
    assert np.array_equal(kept_x, x) and np.array_equal(kept_y, y)
    assert len(intake.replay) == 5 and intake.replay.seen == 6


def _bad_frames() -> list[tuple[bytes, Reason]]:
    good = DataBatch.of(np.zeros((2, 4)), [0, 1]).to_wire()
    nan = DataBatch.of([[np.nan, 0, 0, 0]], [0])
    return [
        (wire.pack(DataBatch.of(np.zeros((2, 3)), [0, 1])), Reason.SPEC_MISMATCH),
        (wire.pack(DataBatch.of(np.zeros((2, 4)), [0, 2])), Reason.BAD_FRAME),
        (wire.pack(nan), Reason.NON_FINITE),
        (wire.pack(DataBatch.of(np.zeros((2, 4)), np.zeros((2, 2)))), Reason.SPEC_MISMATCH),
        (msgpack.packb({"v": 1, "k": "data", **good, "r": 3}), Reason.SIZE_MISMATCH),
        (b"\xc1", Reason.NOT_MSGPACK),
    ]


@pytest.mark.parametrize(("frame", "reason"), _bad_frames())
def test_bad_batches_are_refused_and_store_nothing(tmp_path: Path, frame: bytes,
                                                   reason: Reason) -> None:
    """Wrong width, a label the model cannot output, NaN, regression targets for this
    classifier, a wrong row count or garbage: a
    ProtocolError with its reason, and neither store changes."""
    # Prepare
    intake, _ = _intake(tmp_path)

    # Execute
    with pytest.raises(ProtocolError) as caught:
        intake.take(frame, now=0.0)

    # Assert
    assert caught.value.reason is reason
    assert intake.windows.names() == [] and len(intake.replay) == 0


def test_data_directory_is_loaded_once_across_restarts(tmp_path: Path) -> None:
    """Files of the configured directory become windows named by their stem, once: a restarted
    cloud does not load them again."""
    # Prepare
    files = tmp_path / "files"
    files.mkdir()
    np.savez(files / "day1.npz", x=np.ones((3, 4), dtype=np.float32), y=np.array([0, 1, 0]))
    (files / "day2.csv").write_text("a,b,c,d,label\n1,2,3,4,1\n")

    # Execute
    _, store = _intake(tmp_path, data_dir=files)
    store.close()
    again, _ = _intake(tmp_path, data_dir=files)

    # Assert
    assert again.windows.names() == ["day1", "day2"]
    assert len(again.windows.get("day1")[1]) == 3 and len(again.windows.get("day2")[1]) == 1
    assert again.replay.seen == 4


def test_replay_takes_only_the_training_rows(tmp_path: Path) -> None:
    """With eval_fraction 0.5, every second row of a window is for evaluation only: the replay
    buffer never sees it, across batches too."""
    # Prepare
    intake, _ = _intake(tmp_path, replay_capacity=100, eval_fraction=0.5)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)

    # Execute
    intake.add(x[:3], np.zeros(3, np.int64), now=0.0, window="w")
    intake.add(x[3:], np.zeros(7, np.int64), now=1.0, window="w")

    # Assert: rows 1, 3, 5, 7, 9 are the evaluation rows.
    assert sorted(intake.replay.arrays()[0][:, 0].tolist()) == [0, 8, 16, 24, 32]
    (ex, _), (tx, _) = intake.windows.parts("w", 0.5)
    assert ex[:, 0].tolist() == [4, 12, 20, 28, 36] and len(tx) == 5


REGRESSION = Architecture(family="mlp", input_shape=(4,), task=TaskKind.REGRESSION, outputs=2,
                          params={"hidden": (3,)})


@pytest.mark.parametrize(("y", "stored"), [(np.ones((3, 2)), True), (np.ones((3, 1)), False),
                                           (np.array([0, 1, 0]), False)])
def test_a_regression_model_takes_targets_of_its_width_only(tmp_path: Path, y: np.ndarray,
                                                             stored: bool) -> None:
    """The cloud of a regression model keeps float targets [N, outputs]; targets of another
    width or class labels are a spec mismatch that stores nothing."""
    # Prepare
    cfg = CloudConfig(architecture=ArchitectureConfig.of(REGRESSION),
                      data_dir=tmp_path / "cloud", continual={"enabled": True})  # type: ignore[arg-type]
    intake = DataIntake.open(cfg, CloudStore.open(cfg.data_dir))
    frame = wire.pack(DataBatch.of(np.zeros((3, 4)), y, window="w"))

    # Execute
    if stored:
        kept = intake.take(frame, now=0.0)
    else:
        with pytest.raises(ProtocolError) as caught:
            intake.take(frame, now=0.0)

    # Assert
    if stored:
        assert kept == 3 and intake.windows.get("w")[1].shape == (3, 2)
    else:
        assert caught.value.reason is Reason.SPEC_MISMATCH and intake.windows.names() == []
