"""The replay buffer: reservoir sampling over every offered sample, persisted in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from fedstream.cloud.replay import ReplayBuffer
from fedstream.shared.errors import StoreError


def _stream(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose one feature is their index in the stream and whose label is index % 10."""
    index = np.arange(start, stop)
    return index.astype(np.float32).reshape(-1, 1), index % 10


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[ReplayBuffer]:
    """A fresh buffer of 100 one-feature samples, closed afterwards."""
    opened = ReplayBuffer(tmp_path / "replay.db", capacity=100, cols=1, seed=7)
    yield opened
    opened.close()


def test_fills_before_replacing(buffer: ReplayBuffer) -> None:
    """The first `capacity` samples are all kept, in order."""
    # Prepare
    x, y = _stream(0, 60)

    # Execute
    written = buffer.add(x, y)

    # Assert
    assert written == 60
    assert len(buffer) == 60 and buffer.seen == 60
    assert buffer.arrays()[0][:, 0].tolist() == list(range(60))


def test_never_exceeds_capacity(buffer: ReplayBuffer) -> None:
    """Over 10,000 samples in batches of 250 the buffer never holds more than 100 rows."""
    # Prepare
    sizes = []

    # Execute
    for start in range(0, 10_000, 250):
        buffer.add(*_stream(start, start + 250))
        sizes.append(len(buffer.arrays()[1]))

    # Assert
    assert max(sizes) == 100 == len(buffer)
    assert buffer.seen == 10_000


def test_keeps_a_uniform_sample(buffer: ReplayBuffer) -> None:
    """After 10,000 samples the kept indices average near 5,000 and span the whole stream."""
    # Prepare
    for start in range(0, 10_000, 500):
        buffer.add(*_stream(start, start + 500))

    # Execute
    kept = buffer.arrays()[0][:, 0]

    # Assert: the mean of 100 uniform draws on [0, 10000) has sd ~289; allow ~5 sd.
    assert 3500 < kept.mean() < 6500
    assert len(set(kept.tolist())) == 100
    assert (kept < 5000).sum() > 20 and (kept >= 5000).sum() > 20


def test_reopened_buffer_continues_the_same_reservoir(tmp_path: Path) -> None:
    """A buffer closed and reopened halfway ends identical to one fed the stream without a break."""
    # Prepare
    steady = ReplayBuffer(tmp_path / "a.db", capacity=100, cols=1, seed=3)
    broken = ReplayBuffer(tmp_path / "b.db", capacity=100, cols=1, seed=3)
    for start in range(0, 5000, 250):
        steady.add(*_stream(start, start + 250))
        broken.add(*_stream(start, start + 250))
    before = broken.arrays()
    broken.close()

    # Execute
    broken = ReplayBuffer(tmp_path / "b.db", capacity=100, cols=1, seed=999)
    reopened = broken.arrays()
    for start in range(5000, 10_000, 250):
        steady.add(*_stream(start, start + 250))
        broken.add(*_stream(start, start + 250))

    # Assert
    assert np.array_equal(reopened[0], before[0]) and np.array_equal(reopened[1], before[1])
    assert broken.seen == steady.seen == 10_000
    assert np.array_equal(broken.arrays()[0], steady.arrays()[0])
    assert np.array_equal(broken.arrays()[1], steady.arrays()[1])
    steady.close()
    broken.close()


def test_sample_is_deterministic_and_distinct(buffer: ReplayBuffer) -> None:
    """`sample` gives the same distinct rows for the same seed and at most what is kept."""
    # Prepare
    buffer.add(*_stream(0, 50))

    # Execute
    first, again, everything = buffer.sample(10, 1), buffer.sample(10, 1), buffer.sample(80, 1)

    # Assert
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert len(set(first[0][:, 0].tolist())) == 10
    assert len(everything[1]) == 50
    assert (first[1] == first[0][:, 0].astype(np.int64) % 10).all()


@pytest.mark.parametrize(("x_shape", "y_shape"), [((5, 2), (5,)), ((5,), (5,)), ((5, 1), (4,))])
def test_rejects_wrong_shapes(buffer: ReplayBuffer, x_shape: tuple[int, ...],
                              y_shape: tuple[int, ...]) -> None:
    """Features not [N, cols] or labels not [N] are a ValueError and nothing is stored."""
    # Prepare
    x, y = np.zeros(x_shape, dtype=np.float32), np.zeros(y_shape, dtype=np.int64)

    # Execute / Assert
    with pytest.raises(ValueError, match="expected features"):
        buffer.add(x, y)
    assert buffer.seen == 0


def test_reopen_with_other_capacity_is_a_store_error(tmp_path: Path) -> None:
    """A buffer file made for one capacity refuses to open with another."""
    # Prepare
    ReplayBuffer(tmp_path / "r.db", capacity=100, cols=1).close()

    # Execute / Assert
    with pytest.raises(StoreError, match="capacity 100"):
        ReplayBuffer(tmp_path / "r.db", capacity=50, cols=1)


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    """A path that is a directory is a store error, not a raw sqlite3 error."""
    # Prepare
    (tmp_path / "dir.db").mkdir()

    # Execute / Assert
    with pytest.raises(StoreError):
        ReplayBuffer(tmp_path / "dir.db", capacity=10, cols=1)


def test_samples_remember_their_window_and_can_be_left_out(buffer: ReplayBuffer) -> None:
    """Training leaves out the held-out newest window: `exclude` drops exactly its rows."""
    # Prepare
    buffer.add(*_stream(0, 30), "w1")
    buffer.add(*_stream(30, 50), "w2")

    # Execute
    without_w2 = buffer.arrays(exclude="w2")[0][:, 0]
    sampled = buffer.sample(100, rng_seed=1, exclude="w1")[0][:, 0]

    # Assert
    assert without_w2.tolist() == list(range(30))
    assert sorted(sampled.tolist()) == list(range(30, 50))
    assert len(buffer.arrays()[1]) == 50


def test_buffer_from_before_window_tags_opens_with_untagged_rows(tmp_path: Path) -> None:
    """A buffer file written before slots had a window column gains it; old rows are kept."""
    # Prepare
    path = tmp_path / "replay.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE slots (slot INTEGER PRIMARY KEY, x BLOB NOT NULL, "
                   "y INTEGER NOT NULL)")
        db.execute("INSERT INTO slots VALUES (0, ?, 3)", (np.float32([7.0]).tobytes(),))
        db.commit()

    # Execute
    opened = ReplayBuffer(path, capacity=100, cols=1)
    try:
        kept = opened.arrays(exclude="w9")
    finally:
        opened.close()

    # Assert
    assert kept[0].tolist() == [[7.0]] and kept[1].tolist() == [3]


def test_regression_targets_are_kept_as_rows_of_floats(tmp_path: Path) -> None:
    """A buffer for a regression model keeps float32 targets [N, width] per slot, survives a
    reopen, and refuses a reopen with another width."""
    # Prepare
    path = tmp_path / "replay.db"
    buffer = ReplayBuffer(path, capacity=10, cols=1, width=2, seed=3)
    x = np.arange(4, dtype=np.float32).reshape(-1, 1)
    y = np.stack([x[:, 0] / 2, -x[:, 0]], axis=1)

    # Execute
    buffer.add(x, y)
    buffer.close()
    again = ReplayBuffer(path, capacity=10, cols=1, width=2, seed=3)
    got = again.arrays()
    again.close()
    with pytest.raises(StoreError, match="width 2"):
        ReplayBuffer(path, capacity=10, cols=1, width=3)

    # Assert
    assert got[1].dtype == np.float32 and got[1].tolist() == y.tolist()
    with pytest.raises(ValueError, match=r"targets \[N, 2\]"):
        ReplayBuffer(tmp_path / "other.db", capacity=10, cols=1, width=2).add(x, x[:, 0])
